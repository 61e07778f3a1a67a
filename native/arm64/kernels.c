/* The ARM64 manifest: which kernel implements each op, per kernel family.
 *
 * Kernels live in <op>[_<type>]_<isa>.S. neon runs on every ARMv8-A core (Cortex-A72,
 * the Raspberry Pi 4); neon-dotprod differs only in its integer dot products, which
 * use sdot (ARMv8.2 dot-product extension: Cortex-A76, the Raspberry Pi 5), and takes
 * every other kernel from neon.
 */
#include "lila_manifest.h"

DECLARE_KERNELS(neon)
DECLARE_KERNELS(neondot)

static lila_kernels tables[2];

size_t lila_fill_kernel_tables(const lila_kernels **filled)
{
    lila_kernels *neon = &tables[0], *neondot = &tables[1];
    neon->name = "neon";
    FILL_LAYER(neon, neon)

    *neondot = *neon;
    neondot->name = "neon-dotprod";
    FILL_LAYER(neondot, neondot)

    *filled = tables;
    return sizeof tables / sizeof tables[0];
}
