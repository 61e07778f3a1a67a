/* Q4_1 weights x q8 activations, NEON with the ARMv8.2 dot product (sdot): the neon
 * kernel's source built with DOTPROD (lila_gemv_q4_1_neondot, lila_gemm_q4_1_neondot). */
#define DOTPROD
#include "matmul_q4_1_neon.S"
