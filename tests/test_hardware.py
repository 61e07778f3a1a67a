"""CPU detection against /proc/cpuinfo and against faked boards, and the backend choice."""
from __future__ import annotations

import dataclasses
import platform
import struct
from pathlib import Path

import pytest

from lila.errors import LilaError
from lila.hardware import CpuInfo, choose_backend, detect, supported_families
from lila.hardware import backends
from lila.hardware.cpu import normalize_arch, parse_sysctl, read_linux

linux_only = pytest.mark.skipif(platform.system() != "Linux", reason="reads /proc/cpuinfo")


def cpu(arch: str = "x86_64", *features: str) -> CpuInfo:
    return CpuInfo(arch=arch, model="test", physical_cores=4, logical_cores=8,
                   performance_cores=None, usable_cpus=8, features=frozenset(features),
                   total_memory=8 << 30, available_memory=4 << 30)


# ---- the real machine ----

@linux_only
def test_flags_agree_with_proc_cpuinfo():
    text = Path("/proc/cpuinfo").read_text()
    line = next(l for l in text.splitlines() if l.split(":")[0].strip() in ("flags", "Features"))
    if normalize_arch(platform.machine()) == "aarch64" and line.startswith("flags"):
        pytest.skip("qemu-user shows the host's /proc/cpuinfo (the hwcaps are checked in "
                    "tests/arm64/run.py against the emulated CPU)")
    assert detect().features == frozenset(line.split(":", 1)[1].split())


def test_arm64_hwcaps_decode_as_linux_names(tmp_path):
    from lila.hardware.arm64 import AT_HWCAP, AT_HWCAP2, hwcap_features
    auxv = tmp_path / "auxv"
    pairs = [(6, 4096), (AT_HWCAP, 1 << 0 | 1 << 1 | 1 << 20 | 1 << 22), (AT_HWCAP2, 1 << 13),
             (0, 0), (AT_HWCAP, 0)]   # nothing after AT_NULL counts
    auxv.write_bytes(b"".join(struct.pack("=QQ", *pair) for pair in pairs))
    assert hwcap_features(auxv) == {"fp", "asimd", "asimddp", "sve", "i8mm"}
    auxv.write_bytes(struct.pack("=QQ", AT_HWCAP, 0b11))    # a Cortex-A72: no dotprod
    assert hwcap_features(auxv) == {"fp", "asimd"}
    assert hwcap_features(tmp_path / "missing") is None


def test_detected_counts_are_sane():
    info = detect()
    assert 1 <= info.physical_cores <= info.logical_cores
    assert 1 <= info.usable_cpus <= info.logical_cores
    assert 1 <= info.default_threads <= info.physical_cores
    assert 0 < info.available_memory <= info.total_memory
    assert info.arch == normalize_arch(platform.machine())
    text = info.describe()
    assert f"{info.default_threads} threads by default" in text and info.arch in text


# ---- faked boards ----

def fake_linux(root: Path, cores: list[dict], extra: str = "") -> Path:
    """cores: per logical CPU, its cpuinfo fields plus "_freq" (kHz) and "_siblings"."""
    blocks = []
    for n, core in enumerate(cores):
        fields = {k: v for k, v in core.items() if not k.startswith("_")}
        blocks.append("\n".join([f"processor\t: {n}"] + [f"{k}\t: {v}" for k, v in fields.items()]))
        base = root / f"sys/devices/system/cpu/cpu{n}"
        (base / "topology").mkdir(parents=True)
        (base / "topology/core_cpus_list").write_text(core.get("_siblings", str(n)) + "\n")
        if "_freq" in core:
            (base / "cpufreq").mkdir()
            (base / "cpufreq/cpuinfo_max_freq").write_text(f"{core['_freq']}\n")
    (root / "proc").mkdir()
    (root / "proc/cpuinfo").write_text("\n\n".join(blocks) + "\n\n" + extra)
    return root


ARM_FEATURES = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"


def arm_core(part: str, freq: int | None) -> dict:
    core = {"BogoMIPS": "48.00", "Features": ARM_FEATURES, "CPU implementer": "0x41",
            "CPU architecture": "8", "CPU variant": "0x0", "CPU part": part, "CPU revision": "0"}
    if freq is not None:
        core["_freq"] = freq
    return core


def test_rk3588_uses_its_four_big_cores(tmp_path):
    # Two A76 clusters at different clocks and one A55 cluster: the A76s are the fast ones.
    cores = ([arm_core("0xd05", 1800000)] * 4 + [arm_core("0xd0b", 2256000)] * 2
             + [arm_core("0xd0b", 2400000)] * 2)
    found = read_linux(fake_linux(tmp_path, cores), "aarch64")
    assert (found.physical, found.logical, found.performance) == (8, 8, 4)
    assert {"asimd", "asimddp"} <= found.features
    assert found.model == "4x Cortex-A55 + 4x Cortex-A76"
    info = dataclasses.replace(cpu("aarch64"), physical_cores=8, performance_cores=4)
    assert info.default_threads == 4


def test_homogeneous_board_uses_every_core(tmp_path):
    root = fake_linux(tmp_path, [arm_core("0xd0b", 2400000)] * 4,
                      extra="Revision\t: d04170\nModel\t: Raspberry Pi 5 Model B Rev 1.0\n")
    found = read_linux(root, "aarch64")
    assert (found.physical, found.performance) == (4, None)
    assert found.model == "Raspberry Pi 5 Model B Rev 1.0, 4x Cortex-A76"


def test_clusters_told_apart_by_frequency_alone(tmp_path):
    cores = [{"Features": ARM_FEATURES, "_freq": f} for f in [1400000] * 4 + [2000000] * 2]
    assert read_linux(fake_linux(tmp_path, cores), "aarch64").performance == 2


def test_unlike_cores_without_frequencies_are_not_guessed(tmp_path):
    cores = [arm_core("0xd05", None)] * 2 + [arm_core("0xd0b", None)] * 2
    assert read_linux(fake_linux(tmp_path, cores), "aarch64").performance is None


def test_intel_hybrid_counts_physical_p_cores(tmp_path):
    # 8 P-cores with two threads each (logical 0-15), then 8 E-cores (16-23).
    p = [{"model name": "12th Gen Intel(R) Core(TM) i9-12900K", "flags": "avx2 fma f16c avx_vnni",
          "_siblings": f"{n - n % 2}-{n - n % 2 + 1}", "_freq": 5100000 if n < 4 else 4900000}
         for n in range(16)]
    e = [{"model name": p[0]["model name"], "flags": p[0]["flags"], "_freq": 3900000}] * 8
    root = fake_linux(tmp_path, p + e)
    (root / "sys/devices/cpu_core").mkdir(parents=True)
    (root / "sys/devices/cpu_core/cpus").write_text("0-15\n")
    found = read_linux(root, "x86_64")
    assert (found.physical, found.logical, found.performance) == (16, 24, 8)
    assert found.model.startswith("12th Gen") and "avx_vnni" in found.features


def test_x86_boost_clocks_are_not_mistaken_for_clusters(tmp_path):
    cores = [{"model name": "Xeon", "flags": "avx2", "_freq": f} for f in (5300000, 5300000, 4800000, 4800000)]
    assert read_linux(fake_linux(tmp_path, cores), "x86_64").performance is None


def test_apple_silicon_sysctl():
    found = parse_sysctl("\n".join([
        "hw.ncpu: 10", "hw.physicalcpu: 10", "hw.logicalcpu: 10", "hw.nperflevels: 2",
        "hw.perflevel0.physicalcpu: 8", "hw.perflevel1.physicalcpu: 2",
        "hw.optional.AdvSIMD: 1", "hw.optional.arm.FEAT_DotProd: 1", "hw.optional.arm.FEAT_I8MM: 0",
        "hw.optional.arm.FEAT_FP16: 1", "machdep.cpu.brand_string: Apple M1 Pro"]))
    assert (found.model, found.physical, found.logical, found.performance) == ("Apple M1 Pro", 10, 10, 8)
    assert found.features == {"asimd", "asimddp", "asimdhp"}


def test_intel_mac_sysctl():
    found = parse_sysctl("\n".join([
        "hw.physicalcpu: 28", "hw.logicalcpu: 56", "hw.optional.avx1_0: 1", "hw.optional.avx2_0: 1",
        "hw.optional.fma: 1", "hw.optional.f16c: 1", "hw.optional.avx512f: 1",
        "hw.optional.avx512bw: 1", "hw.optional.avx512vl: 1",
        "machdep.cpu.leaf7_features: RDWRFSGS AVX2 AVX512F AVX512VNNI",
        "machdep.cpu.brand_string: Intel(R) Xeon(R) W-3275M CPU @ 2.50GHz"]))
    assert (found.physical, found.logical, found.performance) == (28, 56, None)
    assert {"avx2", "avx512f", "avx512_vnni"} <= found.features


# ---- kernel families and the backend ----

@pytest.fixture
def everything_built(monkeypatch):
    """The choice as on an installation that has every backend."""
    monkeypatch.delenv("LILA_BACKEND", raising=False)
    monkeypatch.setattr(backends, "unavailable", lambda backend: None)


@pytest.mark.parametrize("arch,features,best,backend,kernels", [
    ("x86_64", ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni"),
     "avx512-vnni", "avx512", "avx512-vnni"),
    ("x86_64", ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl"), "avx512", "avx512", "avx512"),
    ("x86_64", ("avx2", "fma", "f16c", "avx512f"), "avx2", "avx2", "avx2"),
    ("x86_64", ("avx", "avx2"), "generic", "numba", None),    # AVX2 without FMA: none of ours
    ("aarch64", ("asimd", "asimddp", "i8mm"), "neon-dotprod", "neon", "neon-dotprod"),
    ("aarch64", ("asimd",), "neon", "neon", "neon"),
    ("riscv64", ("avx2", "fma", "f16c"), "generic", "numba", None),   # another arch's names
])
def test_best_kernel_family_and_backend(everything_built, arch, features, best, backend, kernels):
    info = cpu(arch, *features)
    assert supported_families(info)[0].name == best
    choice = choose_backend(info)
    assert (choice.name, choice.kernels, choice.kernel_family) == (backend, kernels, best)


def test_without_a_native_build_numba_runs(monkeypatch):
    monkeypatch.delenv("LILA_BACKEND", raising=False)
    monkeypatch.setattr(backends, "unavailable",
                        lambda b: "native kernels not built" if b.name in backends.NATIVE else None)
    choice = choose_backend(cpu("x86_64", "avx2", "fma", "f16c"))
    assert choice.name == "numba" and "avx2: native kernels not built" in choice.reason
    with pytest.raises(LilaError, match="backend avx2 cannot run here: native kernels not built"):
        choose_backend(cpu("x86_64", "avx2", "fma", "f16c"), "avx2")


def test_override_and_environment(everything_built, monkeypatch):
    info = cpu("x86_64", "avx2", "fma", "f16c")
    assert choose_backend(info, "reference").name == "reference"
    assert choose_backend(info, "auto").name == "avx2"
    assert choose_backend(info, "numba").name == "numba"
    with pytest.raises(LilaError, match=r"unknown backend 'fast' \(from --backend\); "
                                        r"available: avx512, avx2, neon, numba, reference"):
        choose_backend(info, "fast")
    monkeypatch.setenv("LILA_BACKEND", "avx9")
    with pytest.raises(LilaError, match="from LILA_BACKEND"):
        choose_backend(info)
    assert choose_backend(info, "reference").name == "reference"   # the argument wins
    monkeypatch.setenv("LILA_BACKEND", "reference")
    assert "LILA_BACKEND" in choose_backend(info).reason
    with pytest.raises(LilaError, match="backend avx512 needs avx512 kernels"):
        choose_backend(info, "avx512")


def test_avx2_runs_on_avx512_and_not_on_arm(everything_built):
    avx512 = cpu("x86_64", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl")
    assert choose_backend(avx512, "avx2").kernels == "avx2"
    with pytest.raises(LilaError, match="needs avx2 kernels"):
        choose_backend(cpu("aarch64", "asimd"), "avx2")


def test_every_backend_has_an_executor():
    from lila.executor import backend_class
    for backend in backends.BACKENDS:
        choice = backends.BackendChoice(backend.name, "", "generic", executor=backend.executor)
        executor = backend_class(choice)
        assert callable(executor.forward) and callable(executor.memory_estimate)


@linux_only
@pytest.mark.skipif(platform.machine() != "x86_64", reason="cpuid is an x86 instruction")
def test_cpuid_and_xgetbv_agree_with_the_os():
    from lila.hardware.x86 import CPUID_BITS, cpuid_features
    from lila.native import library
    native = library()
    assert native is not None, "the native library is part of `make setup`"
    text = Path("/proc/cpuinfo").read_text()
    line = next(l for l in text.splitlines() if l.split(":")[0].strip() == "flags")
    assert cpuid_features(native) == frozenset(line.split(":", 1)[1].split()) & set(CPUID_BITS.values())
