"""Low-memory mode: weights stream from file-backed maps, so a model larger than the
memory it may use still runs, with the same results.

The main test runs a synthetic model (Q4_0 layers, an F16 embedding tied to the output,
which is converted to Q8_0 at load) in a subprocess inside a memory cgroup whose limit
is well below the model, where a cgroup can be made (v1 or v2, as root), and checks
that it switches the mode on by itself, reaches the limit, and produces exactly the
tokens and logits of an unconstrained run. RLIMIT_AS is no substitute: it counts the
mapped file itself, so it refuses the very mapping this mode relies on. Everywhere, it
also measures the anonymous resident set, which the converted weights must not be in.
"""
from __future__ import annotations

import json
import mmap
import os
import shutil
import subprocess
import sys
import tempfile
from collections import namedtuple
from pathlib import Path

import gguf
import numpy as np
import psutil
import pytest

from lila.errors import LilaError
from lila.hardware import memory
from lila.executor.memory import CONVERTED, MAPPED, MB, streaming
from lila.executor.weights import SpillFile, matmul_weight
from lila.formats.gguf import MADV_COLD, GGUFFile

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="resident set split and cgroups are Linux's")

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 128 * MB           # the cgroup's limit: under half the model file
PROMPT = list(range(1, 9))
GENERATE = """
import json, sys
import numpy as np
import lila
from lila.hardware.memory import resident_set
path, mode, logits_out = sys.argv[1:]
with lila.load(path, threads=2, n_ctx=64, max_batch=16,
               low_memory={"on": True, "off": False, "auto": None}[mode]) as model:
    completion = model.generate(PROMPT, max_tokens=8, greedy=True, ignore_eos=True)
    completion.text()   # a completion generates as it is read
    tokens = completion.tokens
    np.save(logits_out, model.logits(PROMPT + tokens))
    print(json.dumps({"tokens": tokens, "low_memory": model.low_memory, **resident_set()}))
""".replace("PROMPT", repr(PROMPT))


# --- the decision --------------------------------------------------------------------------

NEEDS = {MAPPED: 300 * MB, CONVERTED: 100 * MB, "KV cache (fp16)": 40 * MB, "activations": 10 * MB}


def test_streaming_is_on_only_when_the_model_does_not_fit(monkeypatch):
    monkeypatch.delenv("LILA_LOW_MEMORY", raising=False)
    assert streaming(NEEDS, None, 1000 * MB) == (False, None)
    on, notice = streaming(NEEDS, None, 200 * MB)
    assert on and notice == "model needs 450 MB, 200 MB available: streaming weights from disk (slower)"


def test_streaming_forced_either_way(monkeypatch):
    monkeypatch.delenv("LILA_LOW_MEMORY", raising=False)
    assert streaming(NEEDS, True, 1000 * MB) == (True, None)     # asked for: no notice
    with pytest.raises(LilaError, match="needs about 450 MB .* only 200 MB is available.*--low-memory"):
        streaming(NEEDS, False, 200 * MB)
    monkeypatch.setenv("LILA_LOW_MEMORY", "1")
    assert streaming(NEEDS, None, 1000 * MB) == (True, None)
    assert streaming(NEEDS, False, 1000 * MB) == (False, None)   # the argument wins
    monkeypatch.setenv("LILA_LOW_MEMORY", "0")
    with pytest.raises(LilaError, match="needs about 450 MB"):
        streaming(NEEDS, None, 200 * MB)
    monkeypatch.setenv("LILA_LOW_MEMORY", "yes")
    with pytest.raises(LilaError, match="LILA_LOW_MEMORY is 'yes'; set it to 1"):
        streaming(NEEDS, None, 1000 * MB)


def test_what_cannot_stream_must_fit(monkeypatch):
    monkeypatch.delenv("LILA_LOW_MEMORY", raising=False)
    for forced in (None, True):
        with pytest.raises(LilaError, match=r"even streaming its weights from disk, the model needs "
                                            r"about 50 MB \(KV cache \(fp16\) 40 MB, activations 10 MB\) "
                                            r"but only 49 MB is available"):
            streaming(NEEDS, forced, 49 * MB)


# --- available memory under cgroups ----------------------------------------------------------

def fake_cgroups(monkeypatch, tmp_path: Path, proc: str, files: dict[str, str]) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "proc").write_text(proc)
    monkeypatch.setattr(memory, "CGROUP_ROOT", tmp_path / "cg")
    monkeypatch.setattr(memory, "PROC_CGROUP", tmp_path / "proc")
    vm = namedtuple("vm", "available total")(available=8 << 30, total=16 << 30)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: vm)


def test_available_memory_is_capped_by_a_cgroup_v1_limit(monkeypatch, tmp_path):
    no_limit = str(9223372036854771712)
    fake_cgroups(monkeypatch, tmp_path, "5:cpu,cpuacct:/x\n4:memory:/a/b\n0::/\n", {
        "cg/memory/memory.limit_in_bytes": no_limit,
        "cg/memory/a/memory.limit_in_bytes": no_limit,
        "cg/memory/a/b/memory.limit_in_bytes": str(300 * MB),
        "cg/memory/a/b/memory.usage_in_bytes": str(100 * MB),
        # page cache is reclaimable: it counts as available
        "cg/memory/a/b/memory.stat": f"cache 1\ntotal_active_file {20 * MB}\ntotal_inactive_file {30 * MB}\n",
    })
    assert memory.available_memory() == 250 * MB


def test_available_memory_is_capped_by_a_cgroup_v2_limit(monkeypatch, tmp_path):
    fake_cgroups(monkeypatch, tmp_path, "0::/a/b\n", {
        "cg/cgroup.controllers": "cpuset cpu io memory pids",
        "cg/a/memory.max": str(400 * MB),
        "cg/a/memory.current": str(300 * MB),
        "cg/a/memory.stat": "anon 1\nactive_file 0\ninactive_file 0\n",
        "cg/a/b/memory.max": "max",
    })
    assert memory.available_memory() == 100 * MB     # the parent's limit binds


def test_available_memory_in_a_container_and_without_cgroups(monkeypatch, tmp_path):
    # a container's cgroup path names the host's hierarchy; its mount is its own root
    fake_cgroups(monkeypatch, tmp_path, "0::/docker/abc\n", {
        "cg/cgroup.controllers": "memory",
        "cg/memory.max": str(64 * MB), "cg/memory.current": "0", "cg/memory.stat": "",
    })
    assert memory.available_memory() == 64 * MB
    (tmp_path / "proc").unlink()
    assert memory.available_memory() == 8 << 30


# --- converted weights ------------------------------------------------------------------------

@pytest.fixture
def f16_gguf(tmp_path):
    path = tmp_path / "f16.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        writer.add_tensor(name, rng.standard_normal((48, 256)).astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with GGUFFile.open(path) as file:
        yield file


def mapping_of(array: np.ndarray) -> str:
    """The /proc/self/maps line of the mapping that holds array's first byte."""
    address = array.ctypes.data
    for line in Path("/proc/self/maps").read_text().splitlines():
        start, end = (int(x, 16) for x in line.split()[0].split("-"))
        if start <= address < end:
            return line
    raise AssertionError("not mapped")


def test_converted_weights_are_file_backed_in_low_memory_mode(f16_gguf, tmp_path):
    spill = SpillFile(tmp_path / "spill", 1 << 20)
    for name in ("a", "b"):
        kind, anonymous = matmul_weight(f16_gguf, name)
        kind_spilled, spilled = matmul_weight(f16_gguf, name, spill)
        assert kind == kind_spilled == gguf.GGMLQuantizationType.Q8_0
        assert np.array_equal(spilled, anonymous) and not spilled.flags.writeable
        inode = int(mapping_of(spilled).split()[4])
        assert inode != 0 and int(mapping_of(anonymous).split()[4]) == 0
    assert not list((tmp_path / "spill").iterdir())   # unlinked: nothing left behind


def test_the_source_of_converted_weights_is_advised_cold(f16_gguf, monkeypatch):
    """Once converted, a tensor's own pages are never read again: the OS is told so
    (MADV_COLD), for exactly the pages wholly inside the tensor."""
    advised = []
    monkeypatch.setattr(GGUFFile, "advise_unused", lambda self, name: advised.append(name))
    matmul_weight(f16_gguf, "a")
    assert advised == ["a"]
    monkeypatch.undo()

    class Recorder:
        def madvise(self, option, start, length):
            calls.append((option, start, length))

    calls, mapped = [], f16_gguf._mm
    f16_gguf._mm = Recorder()
    try:
        f16_gguf.advise_unused("a")
    finally:
        f16_gguf._mm = mapped
    info, page = f16_gguf.tensors["a"], mmap.PAGESIZE
    [(option, start, length)] = calls
    assert option == MADV_COLD and start % page == 0 and length % page == 0
    assert info.offset <= start and start + length <= info.offset + info.nbytes
    assert length > info.nbytes - 2 * page
    f16_gguf.advise_unused("a")   # the real call: a hint, never an error


def test_a_spill_file_without_room_is_a_clear_error(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(LilaError, match=r"writes the \d+ MB of converted weights to .* which has "
                                        r"\d+ MB free; set LILA_HOME"):
        SpillFile(tmp_path, free + (1 << 30))
    (tmp_path / "file").write_text("")
    with pytest.raises(LilaError, match="cannot write converted weights to"):
        SpillFile(tmp_path / "file" / "sub", 1)


# --- a model larger than its memory limit --------------------------------------------------------

# Each test that takes the big model is slow: writing it takes about 3 s, a run of it 2 to 4 s.

@pytest.fixture(scope="module")
def big_model():
    """A 324 MB model: 6 layers of dim 2048 in Q4_0 and a tied F16 embedding, which is
    converted (102 MB of Q8_0). Written under the repository, not /tmp, which may be a
    tmpfs: its pages could not be dropped, and the test would prove nothing."""
    directory = Path(tempfile.mkdtemp(prefix=".lila-test-", dir=ROOT))
    path = directory / "big.gguf"
    try:
        subprocess.run([sys.executable, str(ROOT / "bench/synthetic_gguf.py"), "--out", str(path),
                        "--dim", "2048", "--layers", "6", "--ffn", "4096", "--embed-type", "f16",
                        "--context", "512"], check=True, capture_output=True, timeout=300)
        yield path
    finally:
        shutil.rmtree(directory)


class MemoryCgroup:
    """A new memory cgroup with a limit, where this process may make one."""

    def __init__(self, directory: Path, version: int):
        self.directory, self.version = directory, version

    @classmethod
    def make(cls, limit: int) -> "MemoryCgroup | None":
        name = f"lila-test-{os.getpid()}"
        v1, v2 = Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup")
        # swap set to nothing where the files exist: anonymous memory has no way out
        if (v1 / "memory.limit_in_bytes").is_file():
            cgroup, settings = cls(v1 / name, 1), {"memory.limit_in_bytes": limit, "memory.swappiness": 0}
        elif "memory" in read_or_empty(v2 / "cgroup.subtree_control").split():
            cgroup, settings = cls(v2 / name, 2), {"memory.max": limit, "memory.swap.max": 0}
        else:
            return None
        try:
            cgroup.directory.mkdir()
        except OSError:   # not root, or a read-only cgroup fs (a container)
            return None
        try:
            for file, value in settings.items():
                if (cgroup.directory / file).exists():
                    (cgroup.directory / file).write_text(str(value))
        except OSError:
            cgroup.remove()
            return None
        return cgroup

    def command(self, argv: list[str]) -> list[str]:
        # the shell moves itself into the cgroup, then becomes the command
        return ["sh", "-c", f'echo $$ > {self.directory}/cgroup.procs && exec "$@"', "sh", *argv]

    def limit_was_reached(self) -> bool:
        if self.version == 1:
            return int((self.directory / "memory.failcnt").read_text()) > 0
        events = dict(line.split() for line in (self.directory / "memory.events").read_text().splitlines())
        return int(events["max"]) > 0

    def remove(self) -> None:
        self.directory.rmdir()


def read_or_empty(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def on_tmpfs(path: Path) -> bool:
    mounts = [p for p in psutil.disk_partitions(all=True) if path.is_relative_to(p.mountpoint)]
    return max(mounts, key=lambda p: len(p.mountpoint)).fstype in ("tmpfs", "ramfs")


def generate(model: Path, mode: str, cgroup: MemoryCgroup | None = None) -> tuple[dict, np.ndarray, str]:
    logits = model.with_name(f"logits-{mode}.npy")
    env = {k: v for k, v in os.environ.items() if k != "LILA_LOW_MEMORY"}
    env["LILA_HOME"] = str(model.parent)    # where the spill file goes
    argv = [sys.executable, "-c", GENERATE, str(model), mode, str(logits)]
    r = subprocess.run(cgroup.command(argv) if cgroup else argv, capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-2000:]}"
    return json.loads(r.stdout.splitlines()[-1]), np.load(logits), r.stderr


def drop_from_page_cache(path: Path) -> None:
    """So that the capped process reads the file itself, and its pages count against its
    limit: pages already cached stay charged to whoever read them first."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def unconstrained(big_model):
    """The run with the weights in memory, which a streamed run must reproduce exactly."""
    run, logits, _ = generate(big_model, "off")
    assert run["low_memory"] is False and len(run["tokens"]) == 8
    return run, logits


def assert_streamed_like(unconstrained, big_model, streamed: dict, streamed_logits) -> None:
    normal, normal_logits = unconstrained
    with GGUFFile.open(big_model) as file:
        from lila.executor import memory_estimate
        from lila.models import describe
        converted = memory_estimate(describe(file), n_ctx=64, max_batch=16)[CONVERTED]
    assert converted > 90 * MB
    assert streamed["low_memory"] is True
    assert streamed["tokens"] == normal["tokens"]
    assert np.array_equal(streamed_logits, normal_logits)
    # the converted weights are anonymous memory in normal mode, and not when streaming
    assert normal["anonymous"] - streamed["anonymous"] > 0.8 * converted
    assert streamed["anonymous"] < converted


@pytest.mark.slow
def test_streamed_weights_give_the_same_results(big_model, unconstrained):
    streamed, streamed_logits, _ = generate(big_model, "on")
    assert_streamed_like(unconstrained, big_model, streamed, streamed_logits)


@pytest.mark.slow
def test_a_model_larger_than_its_memory_streams_with_the_same_results(big_model, unconstrained):
    cgroup = None if on_tmpfs(big_model) else MemoryCgroup.make(LIMIT)
    if cgroup is None:
        pytest.skip("no memory cgroup can be made here (it takes root, and a model file off "
                    "tmpfs): only the streamed run without a limit was checked")
    assert big_model.stat().st_size > 2 * LIMIT
    try:
        drop_from_page_cache(big_model)
        streamed, streamed_logits, stderr = generate(big_model, "auto", cgroup)
        reached = cgroup.limit_was_reached()
    finally:
        cgroup.remove()
    assert "streaming weights from disk" in stderr      # on by itself, from the cgroup's limit
    assert reached, "the run fitted under the limit: the test proves nothing"
    assert_streamed_like(unconstrained, big_model, streamed, streamed_logits)


@pytest.mark.slow
def test_bench_shows_the_mode_and_the_resident_set(big_model):
    r = subprocess.run([sys.executable, "-m", "lila", "bench", str(big_model), "--low-memory",
                        "-p", "4", "-n", "2", "-r", "1", "--threads", "2", "--json"],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "LILA_HOME": str(big_model.parent)})
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.splitlines()[-1])
    assert result["low_memory"] is True
    assert result["anonymous_mb"] + result["file_backed_mb"] == pytest.approx(result["resident_mb"], abs=1)
    line = next(line for line in r.stdout.splitlines() if line.startswith("memory "))
    assert "MB anonymous" in line and "weights streaming from disk (low-memory mode)" in line
