/* lila_to_f16_neon: fp32 -> fp16, round to nearest even.
 *
 * void lila_to_f16_neon(const float *x, size_t n, uint16_t *out);
 *
 * fcvtn / fcvtn2 round as FPCR says, which on Linux is to nearest even, with IEEE half
 * precision (AHP clear) and no flushing (FZ clear): they overflow to inf and keep
 * subnormals, as numpy's astype(float16) does. 16 floats a step, then 4, then one at a
 * time (steps_neon.inc), so every access stays inside the arrays for any n.
 */
#define X       x0      /* input row */
#define N       x1      /* elements left */
#define OUT     x2      /* fp16 output */

#include "steps_neon.inc"

        .macro  f16_step w
        LDW     \w, X, 0, 1, 2, 3
        fcvtn   v4.4h, v0.4s
        .if     \w == 16
        fcvtn   v5.4h, v2.4s
        fcvtn2  v4.8h, v1.4s
        fcvtn2  v5.8h, v3.4s
        st1     {v4.8h, v5.8h}, [OUT], #32
        .elseif \w == 4
        str     d4, [OUT], #8
        .else
        str     h4, [OUT], #2
        .endif
        .endm

        .text
        .globl  lila_to_f16_neon
        .type   lila_to_f16_neon, %function
        .p2align 4
lila_to_f16_neon:
        STEPS   N, f16_step
        ret
        .size   lila_to_f16_neon, . - lila_to_f16_neon

        .section .note.GNU-stack, "", %progbits
