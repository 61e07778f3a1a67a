/* Q8_0 weights x q8 activations, NEON with the ARMv8.2 dot product (sdot): the neon
 * kernel's source built with DOTPROD (lila_gemv_q8_0_neondot, lila_gemm_q8_0_neondot). */
#define DOTPROD
#include "matmul_q8_0_neon.S"
