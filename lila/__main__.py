from lila.cli.main import main

raise SystemExit(main())
