"""The CPU Lila runs on: architecture, cores, instruction-set features and memory.

Feature names are Linux's /proc/cpuinfo names ("avx2", "avx512_vnni", "asimddp") on every
OS. On Linux those flags already account for the OS: the kernel clears a flag whose
register state it does not save (it checks XCR0 through xgetbv), so a listed feature can
be used.
"""
from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil

from lila.hardware.memory import available_memory

# What `lila detect` shows; `features` holds every flag the OS reports.
NOTABLE = {
    "x86_64": ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
               "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16"),
    "aarch64": ("asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2"),
}

# Arm Ltd. (implementer 0x41) core names by /proc/cpuinfo "CPU part", to name the clusters
# of a big.LITTLE board ("4x Cortex-A76 + 4x Cortex-A55").
ARM_PARTS = {
    0xd03: "Cortex-A53", 0xd04: "Cortex-A35", 0xd05: "Cortex-A55", 0xd07: "Cortex-A57",
    0xd08: "Cortex-A72", 0xd09: "Cortex-A73", 0xd0a: "Cortex-A75", 0xd0b: "Cortex-A76",
    0xd0c: "Neoverse-N1", 0xd0d: "Cortex-A77", 0xd40: "Neoverse-V1", 0xd41: "Cortex-A78",
    0xd44: "Cortex-X1", 0xd46: "Cortex-A510", 0xd47: "Cortex-A710", 0xd48: "Cortex-X2",
    0xd49: "Neoverse-N2", 0xd4d: "Cortex-A715", 0xd4e: "Cortex-X3", 0xd4f: "Neoverse-V2",
    0xd80: "Cortex-A520", 0xd81: "Cortex-A720", 0xd82: "Cortex-X4",
}

# macOS sysctl names -> the Linux names.
MACOS_FEATURES = {
    "hw.optional.sse4_2": "sse4_2", "hw.optional.avx1_0": "avx", "hw.optional.avx2_0": "avx2",
    "hw.optional.fma": "fma", "hw.optional.f16c": "f16c", "hw.optional.avx512f": "avx512f",
    "hw.optional.avx512bw": "avx512bw", "hw.optional.avx512vl": "avx512vl",
    "hw.optional.AdvSIMD": "asimd", "hw.optional.neon": "asimd",
    "hw.optional.arm.FEAT_FP16": "asimdhp", "hw.optional.arm.FEAT_DotProd": "asimddp",
    "hw.optional.arm.FEAT_I8MM": "i8mm", "hw.optional.arm.FEAT_BF16": "bf16",
}


@dataclass(frozen=True)
class Cores:
    """What the OS says about the processor itself."""
    model: str
    physical: int
    logical: int
    performance: int | None      # None: the cores are all alike, or it cannot be told
    features: frozenset[str]


@dataclass(frozen=True)
class CpuInfo:
    arch: str                    # "x86_64", "aarch64", or what the OS calls anything else
    model: str
    physical_cores: int
    logical_cores: int
    performance_cores: int | None
    usable_cpus: int             # logical CPUs this process may run on (taskset, cpuset)
    features: frozenset[str]
    total_memory: int            # bytes
    available_memory: int

    @property
    def default_threads(self) -> int:
        """The performance cores (physical cores where all are alike): on big.LITTLE
        boards, threads on the slow cores hold the fast ones back at every barrier."""
        return max(1, min(self.performance_cores or self.physical_cores, self.usable_cpus))

    def has(self, *features: str) -> bool:
        return all(f in self.features for f in features)

    def describe(self) -> str:
        perf = f", {self.performance_cores} performance" if self.performance_cores else ""
        notable = [f for f in NOTABLE.get(self.arch, ()) if f in self.features]
        gib = 1 << 30
        return "\n".join([
            f"cpu: {self.model or 'unknown'} ({self.arch})",
            f"cores: {self.physical_cores} physical, {self.logical_cores} logical{perf}; "
            f"{self.default_threads} threads by default",
            f"features: {' '.join(notable) or 'none that Lila uses'}",
            f"memory: {self.total_memory / gib:.1f} GiB total, "
            f"{self.available_memory / gib:.1f} GiB available",
        ])


def detect() -> CpuInfo:
    arch = normalize_arch(platform.machine())
    system = platform.system()
    if system == "Linux":
        cores = read_linux(Path("/"), arch)
    elif system == "Darwin":
        cores = read_macos()
    else:   # no feature source wired up: the generic kernels are the safe choice
        logical = psutil.cpu_count() or 1
        cores = Cores(platform.processor(), psutil.cpu_count(logical=False) or logical,
                      logical, None, frozenset())
    if arch == "x86_64":
        cores = _with_cpuid(cores)
    if arch == "aarch64" and system == "Linux":
        cores = _with_hwcaps(cores)
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:   # not on macOS or Windows
        usable = cores.logical
    return CpuInfo(arch, cores.model, cores.physical, cores.logical, cores.performance,
                   usable, cores.features, psutil.virtual_memory().total, available_memory())


def _with_cpuid(cores: Cores) -> Cores:
    """The vector features as cpuid and xgetbv report them, where the native library
    (which has the two instructions) is built; the OS's list otherwise."""
    from lila.hardware.x86 import CPUID_BITS, cpuid_features
    from lila.native import library
    native = library()
    if native is None:
        return cores
    others = cores.features - set(CPUID_BITS.values())
    return dataclasses.replace(cores, features=others | cpuid_features(native))


def _with_hwcaps(cores: Cores) -> Cores:
    """The features as the kernel's hwcaps list them (/proc/cpuinfo's Features line says
    the same on a real board, but under qemu-user it is the host's)."""
    from lila.hardware.arm64 import hwcap_features
    features = hwcap_features()
    return cores if features is None else dataclasses.replace(cores, features=features)


def normalize_arch(machine: str) -> str:
    m = machine.lower()
    if m in ("x86_64", "amd64", "x64"):
        return "x86_64"
    if m in ("aarch64", "arm64"):
        return "aarch64"
    return m or "unknown"


# ---- Linux: /proc/cpuinfo and sysfs, read under a root so tests can fake a board ----

def read_linux(root: Path, arch: str) -> Cores:
    blocks = _cpuinfo_blocks(_read(root / "proc/cpuinfo") or "")
    procs = {int(b["processor"]): b for b in blocks if b.get("processor", "").isdigit()}
    cpus = sorted(procs) or list(range(os.cpu_count() or 1))
    first = procs[cpus[0]] if procs else {}
    features = frozenset((first.get("flags") or first.get("Features") or "").split())
    core_of = _physical_cores(root, cpus)
    fast = _performance_cpus(root, arch, cpus, procs)
    performance = len({core_of[c] for c in fast}) if fast else None
    return Cores(_linux_model(blocks, procs), len(set(core_of.values())), len(cpus),
                 performance, features)


def _cpuinfo_blocks(text: str) -> list[dict[str, str]]:
    blocks = []
    for chunk in text.split("\n\n"):
        fields = {}
        for line in chunk.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        if fields:
            blocks.append(fields)
    return blocks


def _linux_model(blocks: list[dict[str, str]], procs: dict[int, dict[str, str]]) -> str:
    for b in blocks:
        if b.get("model name"):
            return b["model name"]
    # ARM: name each cluster's core, and add the board's name where the kernel gives it.
    counts: dict[str, int] = {}
    for b in procs.values():
        if "CPU part" in b:
            part = int(b["CPU part"], 16)
            name = (ARM_PARTS.get(part, f"part {part:#x}") if b.get("CPU implementer") == "0x41"
                    else f"implementer {b.get('CPU implementer')} part {part:#x}")
            counts[name] = counts.get(name, 0) + 1
    board = next((b[k] for b in blocks for k in ("Model", "Hardware") if b.get(k)), "")
    cores = " + ".join(f"{n}x {name}" for name, n in counts.items())
    return ", ".join(s for s in (board, cores) if s)


def _physical_cores(root: Path, cpus: list[int]) -> dict[int, str]:
    """Each logical CPU -> the physical core it is on (its SMT siblings share one)."""
    core_of = {}
    for c in cpus:
        topology = root / f"sys/devices/system/cpu/cpu{c}/topology"
        siblings = _read(topology / "core_cpus_list") or _read(topology / "thread_siblings_list")
        # Without topology (some containers), count every logical CPU as a core.
        core_of[c] = siblings.strip() if siblings else str(c)
    return core_of


def _performance_cpus(root: Path, arch: str, cpus: list[int],
                      procs: dict[int, dict[str, str]]) -> set[int] | None:
    """The logical CPUs of the fast cores, or None where all cores are alike or the
    kinds cannot be told apart."""
    if arch == "x86_64":
        # Intel hybrids: the kernel has one perf PMU for the P-cores and one for the
        # E-cores. Max frequencies would mislead here: "favored" cores boost higher.
        listed = _read(root / "sys/devices/cpu_core/cpus")
        return _cpu_list(listed) & set(cpus) if listed else None
    # ARM: cores of one kind share a "CPU part"; without one, a max frequency.
    base = root / "sys/devices/system/cpu"
    speed = {c: _read_int(base / f"cpu{c}/cpufreq/cpuinfo_max_freq") for c in cpus}
    part = {c: procs.get(c, {}).get("CPU part") for c in cpus}
    kind = part if None not in part.values() else speed
    if None in speed.values() or None in kind.values() or len(set(kind.values())) < 2:
        return None
    # The kind whose fastest core is slowest is the LITTLE cluster; the others are fast.
    top = {k: max(speed[c] for c in cpus if kind[c] == k) for k in set(kind.values())}
    slowest = min(top.values())
    fast = {c for c in cpus if top[kind[c]] > slowest}
    return fast or None


def _cpu_list(text: str) -> set[int]:
    """"0-3,8,10-11" -> {0, 1, 2, 3, 8, 10, 11}"""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if part:
            lo, _, hi = part.partition("-")
            cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    return int(text) if text and text.strip().isdigit() else None


# ---- macOS: sysctl ----

def read_macos() -> Cores:
    out = subprocess.run(["sysctl", "hw", "machdep.cpu"], capture_output=True, text=True,
                         check=False).stdout
    return parse_sysctl(out)


def parse_sysctl(text: str) -> Cores:
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            values[key] = value.strip()
    features = {name for key, name in MACOS_FEATURES.items() if values.get(key) == "1"}
    # hw.optional has no VNNI entry; leaf 7 of cpuid does, and AVX-512 state is on.
    if "avx512f" in features and "AVX512VNNI" in values.get("machdep.cpu.leaf7_features", ""):
        features.add("avx512_vnni")
    logical = int(values.get("hw.logicalcpu", 0)) or psutil.cpu_count() or 1
    physical = int(values.get("hw.physicalcpu", 0)) or logical
    # Apple silicon: perflevel0 is the performance cluster.
    hybrid = int(values.get("hw.nperflevels", 1)) > 1
    performance = int(values.get("hw.perflevel0.physicalcpu", 0)) if hybrid else 0
    return Cores(values.get("machdep.cpu.brand_string", ""), physical, logical,
                 performance or None, frozenset(features))
