"""x86-64 features straight from the CPU: cpuid says what it has, xgetbv what the OS
saves on a context switch. A vector extension is usable only if both agree (a kernel
with AVX-512 disabled in XCR0 would fault), the check numpy and llama.cpp also make.

Names are Linux's /proc/cpuinfo names, so the detector can cross-check the two.
"""
from __future__ import annotations

# (leaf, subleaf, register index in eax ebx ecx edx, bit) -> name
CPUID_BITS = {
    (1, 0, 2, 20): "sse4_2", (1, 0, 2, 12): "fma", (1, 0, 2, 28): "avx", (1, 0, 2, 29): "f16c",
    (7, 0, 1, 5): "avx2", (7, 0, 1, 16): "avx512f", (7, 0, 1, 30): "avx512bw",
    (7, 0, 1, 31): "avx512vl", (7, 0, 2, 11): "avx512_vnni", (7, 1, 0, 4): "avx_vnni",
    (7, 1, 0, 5): "avx512_bf16", (7, 0, 3, 24): "amx_tile", (7, 0, 3, 25): "amx_int8",
    (7, 0, 3, 22): "amx_bf16",
}
OSXSAVE = (1, 0, 2, 27)
XCR0_AVX = 0b110                    # SSE and YMM state
XCR0_AVX512 = 0b11100110            # plus opmask, ZMM_Hi256, Hi16_ZMM
XCR0_AMX = 0b11 << 17               # XTILECFG, XTILEDATA
NEEDS_STATE = {
    "fma": XCR0_AVX, "avx": XCR0_AVX, "f16c": XCR0_AVX, "avx2": XCR0_AVX, "avx_vnni": XCR0_AVX,
    "avx512f": XCR0_AVX512, "avx512bw": XCR0_AVX512, "avx512vl": XCR0_AVX512,
    "avx512_vnni": XCR0_AVX512, "avx512_bf16": XCR0_AVX512,
    "amx_tile": XCR0_AMX, "amx_int8": XCR0_AMX, "amx_bf16": XCR0_AMX,
}


def cpuid_features(native) -> frozenset[str]:
    """The features of CPUID_BITS this CPU has and the OS enables, via the native
    library's lila_cpuid and lila_xgetbv."""
    regs = native.ffi.new("uint32_t[4]")

    def cpuid(leaf: int, subleaf: int) -> tuple[int, ...]:
        native.lib.lila_cpuid(leaf, subleaf, regs)
        return tuple(regs)

    max_leaf = cpuid(0, 0)[0]
    leaves = {(leaf, sub): cpuid(leaf, sub) if leaf <= max_leaf else (0, 0, 0, 0)
              for leaf, sub in {(1, 0), (7, 0), (7, 1)}}

    def bit(leaf: int, sub: int, reg: int, n: int) -> bool:
        return bool(leaves[(leaf, sub)][reg] >> n & 1)

    xcr0 = native.lib.lila_xgetbv(0) if bit(*OSXSAVE) else 0
    found = set()
    for where, name in CPUID_BITS.items():
        state = NEEDS_STATE.get(name, 0)
        if bit(*where) and xcr0 & state == state:
            found.add(name)
    return frozenset(found)
