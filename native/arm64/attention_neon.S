/* Attention's two products over the fp16 KV cache, NEON, for one head and one query.
 *
 * void lila_attn_scores_neon(const float *q, const uint16_t *keys, size_t stride,
 *                            size_t n_keys, size_t hd, float scale, float *scores);
 *      scores[t] = scale * dot(q, keys + t * stride)                t < n_keys
 * void lila_attn_values_neon(const float *p, const uint16_t *values, size_t stride,
 *                            size_t n_values, size_t hd, float *out);
 *      out = sum_t p[t] * (values + t * stride)                     hd floats
 * stride counts fp16 elements; rows are widened with fcvtl / fcvtl2 (base ARMv8, exact).
 * n_keys, n_values >= 1 (0 returns with nothing written).
 *
 * scores: four keys a step, each with two accumulators (the low and high halves of an
 * eight-element piece), so q is loaded once per four keys and eight FMA chains overlap.
 * The step's row pointers are R0..R3; a last step with m < 4 keys points R(m)..R3 at
 * R(m-1) (the same row again, never past it) and stores only m scores. The eight
 * accumulators fold to one vector of four dot products with three faddp.
 *
 * values: rows in blocks of 32; within a block, hd in column passes of 64 (16 vector
 * accumulators that stay in registers while the block's rows stream through, p[t]
 * taken by element), then one pass each of 32, 16, 8, 4 as hd's bits say. Each pass's
 * sums are stored to out (first block) or added to it. Blocking keeps a block's rows
 * (32 * hd * 2 bytes <= 16 KiB at hd 256) in L1 for the passes after the first, and
 * makes out a sum of short fp32 sums, not one chain of n_values roundings.
 *
 * hd % 4 = r left over, with hd >= 4: the last four elements of each row are taken
 * from hd - 4 (overlapping what is done, never past the row's end): scores zero the q
 * lanes already counted, values keep the lanes of out already written (bsl) and update
 * only the r new ones. hd < 4 has no full four and takes a plain scalar loop.
 * A non-finite fp16 element in the overlapped lanes can turn that key's +-inf score
 * into NaN (0 * inf); either is unusable.
 *
 * Vector registers: scores: v16-v23 the four keys' sums, v0-v1 q, v2-v7 keys, v30 the
 * mask of q's last r lanes, v31 scale. values: v16-v31 the pass's sums, v0-v7 row
 * pieces, v8 p[t], v9 the mask of out's last r lanes (d8, d9 saved).
 */

        .section .rodata
        .balign 16
.Lmask: .long   0, 0, 0, 0, -1, -1, -1, -1      /* the last r lanes: .Lmask + 4r */

/* ------------------------------------------------------------------- scores */
#define Q       x0      /* the query */
#define R0      x1      /* row 0 of the current step */
#define SB      x2      /* stride, then in bytes */
#define N       x3      /* keys left */
#define HD      x4
#define OUT     x5
#define R1      x6
#define R2      x7
#define R3      x8
#define I       x9      /* byte offset into the fp16 rows */
#define QP      x10     /* q cursor */
#define M       x11     /* keys in this step */
#define FULLB   x12     /* bytes (fp16) of hd's full eights */
#define TAILB   x13     /* bytes (fp16) to the last four elements: 2 (hd - 4) */
#define TMP     x14

/* Row k of a scores step: the next one while k < m, else row k - 1 again. */
        .macro  next_row prev, cur, k
        add     \cur, \prev, SB
        cmp     M, #\k
        csel    \cur, \cur, \prev, hi
        .endm

/* acc += the fp16 in \raw (8 halves, or 4 with half=1) times q in v0 (v1) */
        .macro  score_key raw, wide, lo, hi, half=0
        .if     \half
        fcvtl   \raw\().4s, \raw\().4h
        fmla    \lo\().4s, \raw\().4s, v0.4s
        .else
        fcvtl2  \wide\().4s, \raw\().8h
        fcvtl   \raw\().4s, \raw\().4h
        fmla    \lo\().4s, \raw\().4s, v0.4s
        fmla    \hi\().4s, \wide\().4s, v1.4s
        .endif
        .endm

/* Four elements of each key at byte offset \off of the rows, q's four in v0 */
        .macro  scores_four off
        ldr     d2, [R0, \off]
        ldr     d3, [R1, \off]
        ldr     d4, [R2, \off]
        ldr     d5, [R3, \off]
        score_key v2, v6, v16, v17, 1
        score_key v3, v6, v18, v19, 1
        score_key v4, v6, v20, v21, 1
        score_key v5, v6, v22, v23, 1
        .endm

        .text
        .globl  lila_attn_scores_neon
        .type   lila_attn_scores_neon, %function
        .p2align 4
lila_attn_scores_neon:
        cbz     N, 9f
        lsl     SB, SB, #1
        fmov    s31, s0
        cmp     HD, #4
        b.hs    .Lscores_vector

        /* hd < 4: one key at a time, scalar */
1:      movi    d1, #0
        mov     I, #0
2:      ldr     h2, [R0, I, lsl #1]
        ldr     s3, [Q, I, lsl #2]
        fcvt    s2, h2
        fmadd   s1, s2, s3, s1
        add     I, I, #1
        cmp     I, HD
        b.lo    2b
        fmul    s1, s1, s31
        str     s1, [OUT], #4
        add     R0, R0, SB
        subs    N, N, #1
        b.ne    1b
9:      ret

.Lscores_vector:
        and     TMP, HD, #3                     /* r */
        adrp    QP, .Lmask
        add     QP, QP, :lo12:.Lmask
        add     QP, QP, TMP, lsl #2
        ldr     q30, [QP]                       /* the last r lanes: q lanes not yet counted */
        and     FULLB, HD, #~7
        lsl     FULLB, FULLB, #1
        sub     TAILB, HD, #4
        lsl     TAILB, TAILB, #1

.Lscores_step:
        mov     M, #4
        cmp     N, M
        csel    M, N, M, lo                     /* m = min(4, keys left) */
        next_row R0, R1, 1
        next_row R1, R2, 2
        next_row R2, R3, 3
        .irp    acc, v16, v17, v18, v19, v20, v21, v22, v23
        movi    \acc\().4s, #0
        .endr
        mov     I, #0
        mov     QP, Q
        cmp     I, FULLB
        b.hs    2f
1:      ld1     {v0.4s, v1.4s}, [QP], #32
        ldr     q2, [R0, I]
        ldr     q3, [R1, I]
        ldr     q4, [R2, I]
        ldr     q5, [R3, I]
        add     I, I, #16
        score_key v2, v6, v16, v17
        score_key v3, v7, v18, v19
        score_key v4, v6, v20, v21
        score_key v5, v7, v22, v23
        cmp     I, FULLB
        b.lo    1b
2:      tbz     HD, #2, 3f                      /* a four after the eights */
        ldr     q0, [QP]
        scores_four I
3:      tst     HD, #3
        b.eq    4f
        add     TMP, Q, TAILB, lsl #1
        ldr     q0, [TMP]
        and     v0.16b, v0.16b, v30.16b
        scores_four TAILB
4:      fadd    v16.4s, v16.4s, v17.4s
        fadd    v18.4s, v18.4s, v19.4s
        fadd    v20.4s, v20.4s, v21.4s
        fadd    v22.4s, v22.4s, v23.4s
        faddp   v16.4s, v16.4s, v18.4s          /* key 0, key 0, key 1, key 1 */
        faddp   v20.4s, v20.4s, v22.4s          /* key 2, key 2, key 3, key 3 */
        faddp   v16.4s, v16.4s, v20.4s          /* the four dot products */
        fmul    v16.4s, v16.4s, v31.s[0]
        cmp     N, #4
        b.ls    5f
        str     q16, [OUT], #16
        add     R0, R3, SB
        sub     N, N, #4
        b       .Lscores_step
5:      b.ne    6f
        str     q16, [OUT]
        ret
6:      tbz     M, #1, 7f                       /* m = 1..3: two, then one */
        str     d16, [OUT], #8
        ext     v16.16b, v16.16b, v16.16b, #8
7:      tbz     M, #0, 8f
        str     s16, [OUT]
8:      ret
        .size   lila_attn_scores_neon, . - lila_attn_scores_neon

#undef Q
#undef R0
#undef N
#undef HD
#undef OUT
#undef R1
#undef R2
#undef R3
#undef I
#undef QP
#undef M
#undef FULLB
#undef TAILB

/* ------------------------------------------------------------------- values */
#define PB      x0      /* p of the current row block */
#define VB      x1      /* row 0 of the current row block */
#define N       x3      /* rows left */
#define HD      x4
#define OUT     x5
#define ROW     x6      /* the current row, at the pass's first column */
#define T       x7      /* row index in the block */
#define BN      x8      /* rows in this block */
#define COL     x9      /* byte offset (fp16) of the pass's first column */
#define OC      x10     /* the pass's first output */
#define HL      x11     /* columns left */
#define FIRST   x12     /* 1 in the first row block: store, not add */
#define BLOCKB  x13     /* bytes of a row block */
#define LOG2_BLOCK_ROWS 5
#define BLOCK_ROWS (1 << LOG2_BLOCK_ROWS)

/* eight columns of a row (16 bytes at \off of ROW, via q\raw and v\wide) into sums
 * v\lo, v\hi, times p[t] */
        .macro  value_eight off, raw, wide, lo, hi
        ldr     q\raw, [ROW, #\off]
        fcvtl2  v\wide\().4s, v\raw\().8h
        fcvtl   v\raw\().4s, v\raw\().4h
        fmla    v\lo\().4s, v\raw\().4s, v8.s[0]
        fmla    v\hi\().4s, v\wide\().4s, v8.s[0]
        .endm

/* sums v\a..v\d of four columns each: stored to OC (first block) or added to it */
        .macro  values_out4 a, b, c, d
        cbnz    FIRST, .Lstore\@
        ld1     {v0.4s-v3.4s}, [OC]
        fadd    v\a\().4s, v\a\().4s, v0.4s
        fadd    v\b\().4s, v\b\().4s, v1.4s
        fadd    v\c\().4s, v\c\().4s, v2.4s
        fadd    v\d\().4s, v\d\().4s, v3.4s
.Lstore\@:
        st1     {v\a\().4s-v\d\().4s}, [OC], #64
        .endm

/* v\k = 0 if it is one of the pass's nacc sums (v16 on) */
        .macro  zero_sum k, nacc
        .if     \k < 16 + \nacc
        movi    v\k\().4s, #0
        .endif
        .endm

/* One column pass over a row block: nacc sums of four columns (4 nacc columns from
 * COL, nacc = 1, 2, 4, 8, 16) over the block's BN rows from zero, then stored or added
 * to OC; COL and OC then move past the columns. masked (nacc = 1): out's lanes outside
 * the mask in v9 are kept, nothing moved. */
        .macro  VALUES_PASS nacc, masked=0
        .irp    acc, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31
        zero_sum \acc, \nacc
        .endr
        add     ROW, VB, COL
        mov     T, #0
.Lrow\@:
        ldr     s8, [PB, T, lsl #2]
        .if     \nacc == 1
        ldr     d0, [ROW]
        fcvtl   v0.4s, v0.4h
        fmla    v16.4s, v0.4s, v8.s[0]
        .else
        value_eight 0, 0, 4, 16, 17
        .endif
        .if     \nacc >= 4
        value_eight 16, 1, 5, 18, 19
        .endif
        .if     \nacc >= 8
        value_eight 32, 2, 6, 20, 21
        value_eight 48, 3, 7, 22, 23
        .endif
        .if     \nacc >= 16
        value_eight 64, 0, 4, 24, 25
        value_eight 80, 1, 5, 26, 27
        value_eight 96, 2, 6, 28, 29
        value_eight 112, 3, 7, 30, 31
        .endif
        add     ROW, ROW, SB
        add     T, T, #1
        cmp     T, BN
        b.lo    .Lrow\@
        .if     \masked
        ldr     q0, [OC]
        mov     v1.16b, v16.16b
        cbnz    FIRST, .Lstore\@
        fadd    v1.4s, v0.4s, v16.4s
.Lstore\@:
        mov     v2.16b, v9.16b
        bsl     v2.16b, v1.16b, v0.16b          /* new lanes: the sums; others: kept */
        str     q2, [OC]
        .elseif \nacc == 1
        cbnz    FIRST, .Lstore\@
        ldr     q0, [OC]
        fadd    v16.4s, v16.4s, v0.4s
.Lstore\@:
        str     q16, [OC], #16
        .elseif \nacc == 2
        cbnz    FIRST, .Lstore\@
        ld1     {v0.4s, v1.4s}, [OC]
        fadd    v16.4s, v16.4s, v0.4s
        fadd    v17.4s, v17.4s, v1.4s
.Lstore\@:
        st1     {v16.4s, v17.4s}, [OC], #32
        .else
        values_out4 16, 17, 18, 19
        .if     \nacc >= 8
        values_out4 20, 21, 22, 23
        .endif
        .if     \nacc >= 16
        values_out4 24, 25, 26, 27
        values_out4 28, 29, 30, 31
        .endif
        .endif
        .if     !\masked
        add     COL, COL, #8 * \nacc
        .endif
        .endm

        .globl  lila_attn_values_neon
        .type   lila_attn_values_neon, %function
        .p2align 4
lila_attn_values_neon:
        cbz     N, 9f
        lsl     SB, SB, #1
        cmp     HD, #4
        b.hs    .Lvalues_vector

        /* hd < 4: one column at a time, scalar */
1:      movi    d1, #0
        mov     ROW, VB
        mov     T, #0
2:      ldr     h2, [ROW]
        ldr     s3, [PB, T, lsl #2]
        fcvt    s2, h2
        fmadd   s1, s2, s3, s1
        add     ROW, ROW, SB
        add     T, T, #1
        cmp     T, N
        b.lo    2b
        str     s1, [OUT], #4
        add     VB, VB, #2
        subs    HD, HD, #1
        b.ne    1b
9:      ret

.Lvalues_vector:
        stp     d8, d9, [sp, #-16]!
        and     x14, HD, #3
        adrp    x15, .Lmask
        add     x15, x15, :lo12:.Lmask
        add     x15, x15, x14, lsl #2
        ldr     q9, [x15]                       /* the last hd % 4 lanes */
        lsl     BLOCKB, SB, #LOG2_BLOCK_ROWS
        mov     FIRST, #1

.Lvalues_block:
        mov     BN, #BLOCK_ROWS
        cmp     N, BN
        csel    BN, N, BN, lo                   /* rows in this block */
        mov     COL, #0
        mov     OC, OUT
        mov     HL, HD
        cmp     HL, #64
        b.lo    2f
1:      VALUES_PASS 16
        sub     HL, HL, #64
        cmp     HL, #64
        b.hs    1b
2:      tbz     HL, #5, 3f                      /* then one pass per bit of what is left */
        VALUES_PASS 8
3:      tbz     HL, #4, 4f
        VALUES_PASS 4
4:      tbz     HL, #3, 5f
        VALUES_PASS 2
5:      tbz     HL, #2, 6f
        VALUES_PASS 1
6:      tst     HL, #3
        b.eq    7f
        /* the row's last four, from 4 - r columns back; only the r new lanes change */
        sub     COL, HD, #4
        add     OC, OUT, COL, lsl #2
        lsl     COL, COL, #1
        VALUES_PASS 1, 1
7:      mov     FIRST, #0
        subs    N, N, BN
        b.eq    8f
        add     VB, VB, BLOCKB
        add     PB, PB, #4 * BLOCK_ROWS
        b       .Lvalues_block
8:      ldp     d8, d9, [sp], #16
        ret
        .size   lila_attn_values_neon, . - lila_attn_values_neon

        .section .note.GNU-stack, "", %progbits
