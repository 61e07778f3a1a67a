/* Rotary position embedding, NEON, in place, over `heads` heads of head_dim floats.
 *
 * void lila_rope_neox_neon(float *x, size_t heads, size_t head_dim, size_t rot_dim,
 *                          const float *cos_sin);
 * void lila_rope_interleaved_neon(float *x, size_t heads, size_t head_dim,
 *                                 size_t rot_dim, const float *cos_sin);
 *
 * cos_sin: half = rot_dim / 2 cosines, then half sines. Pair j (j < half) of a head is
 * rotated by angle j:  a' = a cos - b sin,  b' = b cos + a sin  (one product rounded,
 * the other fused in: fmul, then fmls / fmla).
 *   neox:        a = x[j], b = x[j + half]: a and b are plain vectors, half apart.
 *   interleaved: a = x[2j], b = x[2j + 1]: ld2 splits four pairs into a vector of a's
 *                and one of b's, and st2 zips them back, so the arithmetic is neox's.
 * Eight pairs a step, then four, then one at a time (steps_neon.inc; a single pair is
 * the same vector code on lane 0), so nothing past rot_dim is read or written; dims
 * rot_dim..head_dim are left alone. Each head reads its a and b through load cursors
 * and writes them through store cursors that trail them.
 *
 * Registers: v0-v1 cos, v2-v3 sin, v4-v7 a and b, v16-v19 a' and b'.
 */
#define X       x0      /* head 0; advances one head at a time */
#define HEADS   x1
#define HDB     x2      /* head_dim, then in bytes */
#define HALF    x3      /* rot_dim, then half */
#define COS     x4
#define SIN     x5      /* COS + half floats */
#define C       x6      /* cos cursor */
#define S       x7      /* sin cursor */
#define LA      x8      /* a loads (interleaved: a and b) */
#define LB      x9      /* neox: b loads */
#define SA      x10     /* a stores (interleaved: a and b) */
#define SB      x11     /* neox: b stores */
#define LEFT    x12     /* pairs left in this head */

#include "steps_neon.inc"

/* v\oa = v\a cos - v\b sin, v\ob = v\b cos + v\a sin (cos in v\c, sin in v\s) */
        .macro  rot a, b, c, s, oa, ob
        fmul    v\oa\().4s, v\a\().4s, v\c\().4s
        fmul    v\ob\().4s, v\b\().4s, v\c\().4s
        fmls    v\oa\().4s, v\b\().4s, v\s\().4s
        fmla    v\ob\().4s, v\a\().4s, v\s\().4s
        .endm

        .macro  neox_step w
        LDW     \w, C, 0, 1
        LDW     \w, S, 2, 3
        LDW     \w, LA, 4, 5
        LDW     \w, LB, 6, 7
        rot     4, 6, 0, 2, 16, 18
        .if     \w == 8
        rot     5, 7, 1, 3, 17, 19
        .endif
        STW     \w, SA, 16, 17
        STW     \w, SB, 18, 19
        .endm

        .macro  interleaved_step w
        LDW     \w, C, 0, 1
        LDW     \w, S, 2, 3
        .if     \w == 1
        ldp     s4, s5, [LA], #8
        .else
        ld2     {v4.4s, v5.4s}, [LA], #32       /* a0..a3, b0..b3 */
        .endif
        .if     \w == 8
        ld2     {v6.4s, v7.4s}, [LA], #32       /* a4..a7, b4..b7 */
        .endif
        rot     4, 5, 0, 2, 16, 17
        .if     \w == 8
        rot     6, 7, 1, 3, 18, 19
        .endif
        .if     \w == 1
        stp     s16, s17, [SA], #8
        .else
        st2     {v16.4s, v17.4s}, [SA], #32
        .endif
        .if     \w == 8
        st2     {v18.4s, v19.4s}, [SA], #32
        .endif
        .endm

/* One kernel: every head's pairs through \step; returns at once if there are none. */
        .macro  ROPE name, step
        .globl  \name
        .type   \name, %function
        .p2align 4
\name:
        cbz     HEADS, 9f
        lsr     HALF, HALF, #1
        cbz     HALF, 9f
        add     SIN, COS, HALF, lsl #2
        lsl     HDB, HDB, #2
1:      mov     C, COS                          /* next head */
        mov     S, SIN
        mov     LA, X
        mov     SA, X
        add     LB, X, HALF, lsl #2
        mov     SB, LB
        mov     LEFT, HALF
        STEPS   LEFT, \step, 8
        add     X, X, HDB
        subs    HEADS, HEADS, #1
        b.ne    1b
9:      ret
        .size   \name, . - \name
        .endm

        .text
        ROPE    lila_rope_neox_neon, neox_step
        ROPE    lila_rope_interleaved_neon, interleaved_step

        .section .note.GNU-stack, "", %progbits
