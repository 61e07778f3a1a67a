/* The x86-64 manifest: which kernel implements each op, per kernel family.
 *
 * Kernels live in <op>[_<type>]_<isa>.S. avx512 and avx512-vnni use their own kernel
 * where one exists and the avx2 one otherwise (every AVX-512 CPU runs AVX2 code); the
 * VNNI family differs only in its integer dot products (vpdpbusd).
 */
#include <string.h>
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

static lila_kernels avx2, avx512, avx512vnni;

static void fill_tables(void)
{
    avx2.name = "avx2";
    FILL_TYPED((&avx2), gemv, avx2, avx2)
    FILL_TYPED((&avx2), gemm, avx2, avx2)
    FILL_ROW((&avx2), avx2, avx2)
    FILL_EMBED((&avx2), avx2)

    avx512.name = "avx512";
    FILL_TYPED((&avx512), gemv, avx512, avx2)
    FILL_TYPED((&avx512), gemm, avx512, avx2)
    FILL_ROW((&avx512), avx512, avx2)
    FILL_EMBED((&avx512), avx2)

    avx512vnni = avx512;
    avx512vnni.name = "avx512-vnni";
    FILL_TYPED((&avx512vnni), gemv, avx512vnni, avx512)
    FILL_TYPED((&avx512vnni), gemm, avx512vnni, avx512)
}

const lila_kernels *lila_kernel_table(const char *family)
{
    static int filled;
    if (!filled) {   /* called from Python before any thread starts */
        fill_tables();
        filled = 1;
    }
    if (strcmp(family, avx2.name) == 0) return &avx2;
    if (strcmp(family, avx512.name) == 0) return &avx512;
    if (strcmp(family, avx512vnni.name) == 0) return &avx512vnni;
    return NULL;
}
