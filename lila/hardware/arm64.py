"""ARM64 features as the Linux kernel hands them to every process: the hwcap words of the
auxiliary vector (getauxval(AT_HWCAP) and AT_HWCAP2). They list only what the CPU has
and the kernel supports, and they are what the CPU really is under emulation too
(qemu-user reports its emulated CPU there, while /proc/cpuinfo shows the host's).

Names are Linux's /proc/cpuinfo names (arch/arm64/include/uapi/asm/hwcap.h).
"""
from __future__ import annotations

import struct
from pathlib import Path

AT_HWCAP, AT_HWCAP2 = 16, 26

HWCAP = ("fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics", "fphp",
         "asimdhp", "cpuid", "asimdrdm", "jscvt", "fcma", "lrcpc", "dcpop", "sha3", "sm3",
         "sm4", "asimddp", "sha512", "sve", "asimdfhm", "dit", "uscat", "ilrcpc", "flagm",
         "ssbs", "sb", "paca", "pacg")
HWCAP2 = ("dcpodp", "sve2", "sveaes", "svepmull", "svebitperm", "svesha3", "svesm4", "flagm2",
          "frint", "svei8mm", "svef32mm", "svef64mm", "svebf16", "i8mm", "bf16", "dgh", "rng",
          "bti", "mte")


def decode_hwcaps(hwcap: int, hwcap2: int) -> frozenset[str]:
    """The feature names set in the two hwcap words."""
    return frozenset([name for bit, name in enumerate(HWCAP) if hwcap >> bit & 1]
                     + [name for bit, name in enumerate(HWCAP2) if hwcap2 >> bit & 1])


def read_auxv(data: bytes) -> dict[int, int]:
    """/proc/self/auxv: (type, value) pairs of native unsigned longs, up to AT_NULL."""
    entries = {}
    for key, value in struct.iter_unpack("=QQ", data[:len(data) // 16 * 16]):
        if key == 0:
            break
        entries[key] = value
    return entries


def hwcap_features(auxv: Path = Path("/proc/self/auxv")) -> frozenset[str] | None:
    """This process's hwcap features, or None where the auxiliary vector cannot be read."""
    try:
        entries = read_auxv(auxv.read_bytes())
    except OSError:
        return None
    if AT_HWCAP not in entries:
        return None
    return decode_hwcaps(entries[AT_HWCAP], entries.get(AT_HWCAP2, 0))
