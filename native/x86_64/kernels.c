/* The x86-64 manifest: which kernel implements each op, per kernel family.
 *
 * Kernels live in <op>[_<type>]_<isa>.S. avx512 and avx512-vnni use their own kernel
 * where one exists and the avx2 one otherwise (every AVX-512 CPU runs AVX2 code); the
 * VNNI family differs only in its integer dot products (vpdpbusd).
 */
#include "lila_manifest.h"

DECLARE_KERNELS(avx2)
DECLARE_KERNELS(avx512)
DECLARE_KERNELS(avx512vnni)

static lila_kernels tables[3];

size_t lila_fill_kernel_tables(const lila_kernels **filled)
{
    lila_kernels *avx2 = &tables[0], *avx512 = &tables[1], *avx512vnni = &tables[2];
    avx2->name = "avx2";
    FILL_LAYER(avx2, avx2)

    *avx512 = *avx2;
    avx512->name = "avx512";
    FILL_LAYER(avx512, avx512)

    *avx512vnni = *avx512;
    avx512vnni->name = "avx512-vnni";
    FILL_LAYER(avx512vnni, avx512vnni)

    *filled = tables;
    return sizeof tables / sizeof tables[0];
}
