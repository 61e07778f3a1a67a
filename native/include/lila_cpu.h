/* CPU identification, for the detector (lila/hardware/cpu.py). x86-64 only. */
#ifndef LILA_CPU_H
#define LILA_CPU_H
#include <stdint.h>
/* cdef begin */
void lila_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t out[4]);
uint64_t lila_xgetbv(uint32_t index);
/* cdef end */
#endif
