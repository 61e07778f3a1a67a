/* Q4_K weight x q8 activation products, ARMv8.2 NEON with the dot-product extension
 * (Cortex-A76, Raspberry Pi 5): matmul_q4_k_neon.S with sdot (4 signed byte products
 * summed into each i32 lane) in place of smull + smlal2. Symbols lila_gemv_q4_k_neondot,
 * lila_gemm_q4_k_neondot. */
#define DOTPROD 1
#include "matmul_q4_k_neon.S"
