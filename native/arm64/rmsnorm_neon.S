/* lila_rmsnorm_neon, lila_rmsnorm_q8_neon: RMS normalisation of one row.
 *
 * void lila_rmsnorm_neon(const float *x, const float *w, size_t n, float eps, float *out);
 * void lila_rmsnorm_q8_neon(const float *x, const float *w, size_t n, float eps,
 *                           lila_q8 *out);                              n % 32 == 0
 *
 * Pass 1: sum of x^2 by fused multiply-adds into four vector accumulators (16 partial
 * sums, which also keeps the fp32 rounding error near that of a pairwise sum; the last
 * n % 4 go into lane 0 of the first), scale = 1 / sqrt(sum / n + eps), with true
 * divisions (once a row).
 * Pass 2: y = (x * scale) * w, stored (rmsnorm; out may be x, every element is read
 * before its own slot is written) or quantized a block of 32 at a time to lila_q8 with
 * the same macro as lila_quantize_q8_neon, so the fp32 row is never written and the
 * codes are those of rmsnorm followed by quantize_q8, bit for bit (for n % 32 == 0
 * both take the same steps). rmsnorm takes any n: 16 floats a step, then 4, then one
 * at a time (steps_neon.inc), never past the n floats.
 *
 * Registers: v0-v7 x (then y), v16-v19 the sums (pass 1) and the q8 macro's scratch,
 * w in v4-v7 (rmsnorm) or v20-v27 (rmsnorm_q8), s24 eps (pass 1), s28 scale, s29-s31
 * the q8 macro's constants.
 */
#define X       x0      /* input row */
#define W       x1      /* norm weights */
#define N       x2      /* elements */
#define OUT     x3      /* output row (rmsnorm) or lila_q8 blocks (rmsnorm_q8) */
#define PX      x9      /* x cursor */
#define PW      x10     /* w cursor */
#define PO      x11     /* out cursor */
#define LEFT    x12     /* elements (or blocks) left */

#include "quantize_q8_neon.inc"
#include "steps_neon.inc"

/* v\acc += v\x * v\x */
        .macro  sq_acc x, acc
        fmla    v\acc\().4s, v\x\().4s, v\x\().4s
        .endm

        .macro  sumsq_step w
        LDW     \w, PX, 0, 1, 2, 3
        EACH    \w, sq_acc, 0, 1, 2, 3, 16, 17, 18, 19
        .endm

/* s0 (eps) -> s28 = 1 / sqrt(sum(x^2) / n + eps); PX, LEFT clobbered */
        .macro  SUMSQ_SCALE
        fmov    s24, s0                         /* s0 is about to hold data */
        movi    v16.4s, #0
        movi    v17.4s, #0
        movi    v18.4s, #0
        movi    v19.4s, #0
        mov     PX, X
        mov     LEFT, N
        STEPS   LEFT, sumsq_step
        FOLD4   fadd, 16, 17, 18, 19
        faddp   v16.4s, v16.4s, v16.4s
        faddp   s16, v16.2s
        ucvtf   s17, N
        fdiv    s16, s16, s17                   /* mean */
        fadd    s16, s16, s24                   /* + eps */
        fsqrt   s16, s16                        /* rms */
        fmov    s17, #1.0
        fdiv    s28, s17, s16                   /* 1 / rms */
        .endm

/* v\k = (v\k * scale) * v\w */
        .macro  norm_mul k, w
        fmul    v\k\().4s, v\k\().4s, v28.s[0]
        fmul    v\k\().4s, v\k\().4s, v\w\().4s
        .endm

        .macro  norm_step w
        LDW     \w, PX, 0, 1, 2, 3
        LDW     \w, PW, 4, 5, 6, 7
        EACH    \w, norm_mul, 0, 1, 2, 3, 4, 5, 6, 7
        STW     \w, PO, 0, 1, 2, 3
        .endm

        .text
        .globl  lila_rmsnorm_neon
        .type   lila_rmsnorm_neon, %function
        .p2align 4
lila_rmsnorm_neon:
        cbz     N, 9f
        SUMSQ_SCALE
        mov     PX, X
        mov     PW, W
        mov     PO, OUT
        mov     LEFT, N
        STEPS   LEFT, norm_step
9:      ret
        .size   lila_rmsnorm_neon, . - lila_rmsnorm_neon

        .globl  lila_rmsnorm_q8_neon
        .type   lila_rmsnorm_q8_neon, %function
        .p2align 4
lila_rmsnorm_q8_neon:
        cmp     N, #32
        b.lo    9f
        SUMSQ_SCALE
        Q8_CONSTANTS
        mov     PX, X
        mov     PW, W
        mov     PO, OUT
        lsr     LEFT, N, #5
1:      ld1     {v0.4s-v3.4s}, [PX], #64
        ld1     {v4.4s-v7.4s}, [PX], #64
        ld1     {v20.4s-v23.4s}, [PW], #64
        ld1     {v24.4s-v27.4s}, [PW], #64
        norm_mul 0, 20
        norm_mul 1, 21
        norm_mul 2, 22
        norm_mul 3, 23
        norm_mul 4, 24
        norm_mul 5, 25
        norm_mul 6, 26
        norm_mul 7, 27
        Q8_BLOCK PO
        subs    LEFT, LEFT, #1
        b.ne    1b
9:      ret
        .size   lila_rmsnorm_q8_neon, . - lila_rmsnorm_q8_neon

        .section .note.GNU-stack, "", %progbits
