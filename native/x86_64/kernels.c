/* The x86-64 manifest: which kernel implements each op, per kernel family.
 *
 * Kernels live in <op>[_<type>]_<isa>.S. avx512 and avx512-vnni use their own kernel
 * where one exists and the avx2 one otherwise (every AVX-512 CPU runs AVX2 code); the
 * VNNI family differs only in its integer dot products (vpdpbusd).
 */
#include "lila_manifest.h"

TYPED_OPS(gemv, avx2)
TYPED_OPS(gemm, avx2)
TYPED_OPS(gemv, avx512)
TYPED_OPS(gemm, avx512)
TYPED_OPS(gemv, avx512vnni)
TYPED_OPS(gemm, avx512vnni)
EMBED_OPS(avx2)
ROW_OPS(avx2)
ROW_OPS(avx512)

static lila_kernels tables[3];

size_t lila_fill_kernel_tables(const lila_kernels **filled)
{
    lila_kernels *avx2 = &tables[0], *avx512 = &tables[1], *avx512vnni = &tables[2];
    avx2->name = "avx2";
    FILL_TYPED(avx2, gemv, avx2, avx2)
    FILL_TYPED(avx2, gemm, avx2, avx2)
    FILL_ROW(avx2, avx2, avx2)
    FILL_EMBED(avx2, avx2)

    avx512->name = "avx512";
    FILL_TYPED(avx512, gemv, avx512, avx2)
    FILL_TYPED(avx512, gemm, avx512, avx2)
    FILL_ROW(avx512, avx512, avx2)
    FILL_EMBED(avx512, avx2)

    *avx512vnni = *avx512;
    avx512vnni->name = "avx512-vnni";
    FILL_TYPED(avx512vnni, gemv, avx512vnni, avx512)
    FILL_TYPED(avx512vnni, gemm, avx512vnni, avx512)

    *filled = tables;
    return sizeof tables / sizeof tables[0];
}
