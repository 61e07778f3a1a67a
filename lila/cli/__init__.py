"""The `lila` command: a thin dispatcher to one module per subcommand."""
