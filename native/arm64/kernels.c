/* The ARM64 manifest: which kernel implements each op, per kernel family.
 *
 * Kernels live in <op>[_<type>]_<isa>.S. neon runs on every ARMv8-A core (Cortex-A72,
 * the Raspberry Pi 4); neon-dotprod differs only in its integer dot products, which
 * use sdot (ARMv8.2 dot-product extension: Cortex-A76, the Raspberry Pi 5), and takes
 * every other kernel from neon.
 */
#include <string.h>
#include "lila_manifest.h"

TYPED_OPS(gemv, neon)
TYPED_OPS(gemm, neon)
TYPED_OPS(gemv, neondot)
TYPED_OPS(gemm, neondot)
EMBED_OPS(neon)
ROW_OPS(neon)

static lila_kernels neon, neondot;

static void fill_tables(void)
{
    neon.name = "neon";
    FILL_TYPED((&neon), gemv, neon, neon)
    FILL_TYPED((&neon), gemm, neon, neon)
    FILL_ROW((&neon), neon, neon)
    FILL_EMBED((&neon), neon)

    neondot = neon;
    neondot.name = "neon-dotprod";
    FILL_TYPED((&neondot), gemv, neondot, neon)
    FILL_TYPED((&neondot), gemm, neondot, neon)
}

const lila_kernels *lila_kernel_table(const char *family)
{
    static int filled;
    if (!filled) {   /* called from Python before any thread starts */
        fill_tables();
        filled = 1;
    }
    if (strcmp(family, neon.name) == 0) return &neon;
    if (strcmp(family, neondot.name) == 0) return &neondot;
    return NULL;
}
