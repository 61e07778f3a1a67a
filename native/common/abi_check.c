/* The build writes lila_abi.inc for the assembly from its own reading of lila_kernels.h
 * (lila/native/build.py, through cffi); this file only compiles if the C compiler, for
 * the architecture being built, agrees with every number in it. */
#include <stddef.h>
#include "lila_kernels.h"
#include "lila_abi.inc"

_Static_assert(offsetof(lila_q8, d) == LILA_Q8_D, "lila_q8.d");
_Static_assert(offsetof(lila_q8, s) == LILA_Q8_S, "lila_q8.s");
_Static_assert(offsetof(lila_q8, qs) == LILA_Q8_QS, "lila_q8.qs");
_Static_assert(sizeof(lila_q8) == LILA_Q8_BYTES, "sizeof(lila_q8)");

#define CHECK_TYPE(NAME, name, id, values, bytes, kernels, ...)                         \
    _Static_assert(LILA_##NAME##_BLOCK_VALUES == (values) && LILA_##NAME##_BLOCK_BYTES == (bytes) \
                   && (id) < LILA_NTYPES, #NAME);
LILA_WEIGHT_TYPES(CHECK_TYPE, 0)
