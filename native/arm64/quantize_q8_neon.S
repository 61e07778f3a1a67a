/* lila_quantize_q8_neon: fp32 row -> lila_q8 blocks.
 *
 * void lila_quantize_q8_neon(const float *x, size_t n, lila_q8 *out);   n % 32 == 0
 *
 * Per block of 32: d = max|x| / 127, q = round_half_even(x * (1 / d)) (q = 0 when d == 0),
 * s = d * sum(q); bit-exact against tests/kernel_reference.quantize_q8 (the macro in
 * quantize_q8_neon.inc says how). Reads exactly n floats and writes n / 32 blocks.
 */
#define X       x0      /* input row, advanced a block at a time */
#define NB      x1      /* blocks left */
#define OUT     x2      /* next lila_q8 */

#include "quantize_q8_neon.inc"

        .text
        .globl  lila_quantize_q8_neon
        .type   lila_quantize_q8_neon, %function
        .p2align 4
lila_quantize_q8_neon:
        lsr     NB, NB, #5
        cbz     NB, 2f
        Q8_CONSTANTS
1:      ld1     {v0.4s-v3.4s}, [X], #64
        ld1     {v4.4s-v7.4s}, [X], #64
        Q8_BLOCK OUT
        subs    NB, NB, #1
        b.ne    1b
2:      ret
        .size   lila_quantize_q8_neon, . - lila_quantize_q8_neon

        .section .note.GNU-stack, "", %progbits
