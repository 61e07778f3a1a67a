/* Softmax of one row, in place, NEON: x[i] = exp(x[i] - max x) / sum_j exp(x[j] - max x).
 *
 * void lila_softmax_neon(float *x, size_t n);      n >= 1
 *
 * Three passes over x, sixteen floats a step, then four, then one at a time
 * (steps_neon.inc: a single float goes through the vector code on lane 0), so nothing
 * outside the n floats is touched:
 *   1. m = max x, in four vector accumulators from -inf (a single float is loaded into
 *      all four lanes, where it cannot raise the max);
 *   2. x[i] = e = exp(x[i] - m) (exp_neon.inc, four groups in flight), s += e, with s
 *      summed in double: a long row (32k keys) summed in fp32 lanes drifts by ~1e-6,
 *      which would scale every probability by that;
 *   3. x[i] *= 1 / s (one division in double, rounded once to fp32).
 * Subtracting m keeps every exp argument <= 0, so nothing overflows and the largest
 * term is exactly 1 (s >= 1). Masked scores (-inf) give exp(-inf) = +0, exactly. A row
 * that is all -inf (no key visible) has m = -inf and comes out NaN, as in numpy; fmax
 * passes a NaN in x on to m, so a NaN score poisons the row rather than vanishing.
 *
 * Registers: v0-v3 x (EXi), v4-v7 e (ETi), v16-v27 exp's scratch (pass 1: the four
 * maxima v16-v19), v8-v12 exp's constants, v13 m then 1 / s, v14 v15 v28 v29 the
 * double sums (d8-d15 saved). A single float's step zeroes lanes 1-3 of e before the
 * sum.
 */
#define X       x0      /* the row */
#define N       x1
#define PL      x9      /* load cursor */
#define PS      x10     /* store cursor */
#define LEFT    x11     /* floats left */

#include "exp_neon.inc"
#include "steps_neon.inc"

M        .req v13   /* m, then 1 / s in lane 0 */
SUMA0    .req v14   /* the double sums: two pairs, a group adds to one */
SUMB0    .req v15
SUMA1    .req v28
SUMB1    .req v29

        .section .rodata
        EXP_CONSTANTS

        .text

/* 1. v\acc = max(v\acc, v\x); a single float is loaded into all four lanes */
        .macro  max_acc x, acc
        fmax    v\acc\().4s, v\acc\().4s, v\x\().4s
        .endm
        .macro  max_step w
        .if     \w == 1
        ld1r    {v0.4s}, [PL], #4
        .else
        LDW     \w, PL, 0, 1, 2, 3
        .endif
        EACH    \w, max_acc, 0, 1, 2, 3, 16, 17, 18, 19
        .endm

/* 2. e = exp(x - m) stored, and added in double to the pair of sums \p */
        .macro  sub_m i
        fsub    EX\i\().4s, EX\i\().4s, M.4s
        .endm
        .macro  widen_add i, p
        fcvtl   EU\i\().2d, ET\i\().2s
        fcvtl2  EB\i\().2d, ET\i\().4s
        fadd    SUMA\p\().2d, SUMA\p\().2d, EU\i\().2d
        fadd    SUMB\p\().2d, SUMB\p\().2d, EB\i\().2d
        .endm
        .macro  exp_step w
        LDW     \w, PL, 0, 1, 2, 3
        EACH    \w, sub_m, 0, 1, 2, 3
        .if     \w == 16
        EXP_NEON 0, 1, 2, 3
        .else
        EXP_NEON 0
        .endif
        .if     \w == 1
        fmov    s4, s4                          /* lanes 1-3 held exp(-m): not in the sum */
        .endif
        STW     \w, PS, 4, 5, 6, 7
        EACH    \w, widen_add, 0, 1, 2, 3, 0, 1, 0, 1
        .endm

        .globl  lila_softmax_neon
        .type   lila_softmax_neon, %function
        .p2align 4
lila_softmax_neon:
        PUSH_D8_D15

        /* 1. max */
        mov     w9, #0xff800000                 /* -inf */
        dup     v16.4s, w9
        mov     v17.16b, v16.16b
        mov     v18.16b, v16.16b
        mov     v19.16b, v16.16b
        mov     PL, X
        mov     LEFT, N
        STEPS   LEFT, max_step
        FOLD4   fmax, 16, 17, 18, 19
        fmaxv   s16, v16.4s
        dup     M.4s, v16.s[0]

        /* 2. exp and sum */
        EXP_LOAD x9
        movi    SUMA0.2d, #0
        movi    SUMB0.2d, #0
        movi    SUMA1.2d, #0
        movi    SUMB1.2d, #0
        mov     PL, X
        mov     PS, X
        mov     LEFT, N
        STEPS   LEFT, exp_step
        fadd    SUMA0.2d, SUMA0.2d, SUMB0.2d
        fadd    SUMA1.2d, SUMA1.2d, SUMB1.2d
        fadd    SUMA0.2d, SUMA0.2d, SUMA1.2d
        faddp   d14, SUMA0.2d                   /* s */
        fmov    d16, #1.0
        fdiv    d16, d16, d14
        fcvt    s13, d16                        /* 1 / s */

        /* 3. normalise */
        mov     PL, X
        mov     PS, X
        mov     LEFT, N
        STEPS   LEFT, SCALE_STEP, 16, PL, PS, M.s[0]
        POP_D8_D15
        ret
        .size   lila_softmax_neon, . - lila_softmax_neon

        .section .note.GNU-stack, "", %progbits
