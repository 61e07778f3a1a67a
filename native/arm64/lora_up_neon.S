/* lila_lora_up_neon: the memory fabric's B product over a tile of output rows, NEON
 * (the neon-dotprod family takes it too).
 *
 * void lila_lora_up_neon(const void *bt, size_t row_bytes, size_t rank, size_t nb,
 *                        const float *coef, size_t coef_stride, size_t cols,
 *                        float *out, size_t out_stride);
 *      out[c * out_stride + 32k + i] = sum_{j < rank} coef[c * coef_stride + j]
 *                                      * d(j, k) * qs(j, k)[i]
 * for k < nb, i < 32, c < cols: row j of Bt is nb Q8_0 blocks (f16 d, 32 int8) at
 * bt + j * row_bytes. Strides count floats, row_bytes bytes. rank 0 stores zeros.
 *
 * The x86 kernels' loop (lora_up_avx2.S): blocks in groups of three (then one group of
 * two or one, as nb % 3 says); for each group, each token c keeps the group's 96 (64,
 * 32) outputs in 24 (16, 8) vector accumulators while j runs over the rank. Per row j:
 * the group's f16 scales gathered into one vector, widened (fcvtl) and multiplied by
 * coef[c][j]; per block, its 32 codes widened in two halves (sxtl to 16, then 32 bits,
 * scvtf) and fmla'd by the block's scale lane into eight independent accumulators.
 * Each output is one fp32 chain over j of (coef * d) * q, the same as the x86 kernels'.
 * Reads: the rank rows' first nb blocks only; writes: nb * 32 floats per token.
 *
 * Vector registers: v8-v31 the accumulators (block b of the group: v8+8b..v15+8b; d8-d15
 * saved), v0 coef[c][j], v7 coef[c][j] * d(j, k) in lane k, v1-v6 codes.
 */
#include "lila_abi.inc"

#if LILA_Q8_0_BLOCK_BYTES != 2 + 32
#error "the block loads take a Q8_0 block as f16 d, then 32 int8"
#endif
        .set    BB, LILA_Q8_0_BLOCK_BYTES

#define BT      x0      /* the group's first block in row 0 */
#define RB      x1      /* row_bytes */
#define RANK    x2
#define NB      x3      /* blocks left */
#define COEF    x4
#define CS      x5      /* coef_stride, then in bytes */
#define COLS    x6
#define OUT     x7      /* the group's first output of token 0 */
#define OS      x8      /* out_stride in bytes */
#define CP      x9      /* token c's coefficients */
#define OP      x10     /* token c's outputs of the group */
#define C       x11     /* tokens left */
#define ROW     x12     /* row j's blocks of the group */
#define J       x13     /* rows left */
#define CJ      x14     /* coef[c][j] */

/* va0..va3 += v7.s[lane] * (the 16 codes at ROW + off); a0..a3 register numbers */
        .macro  half off, lane, a0, a1, a2, a3
        ldur    q1, [ROW, #\off]
        sxtl    v2.8h, v1.8b
        sxtl2   v3.8h, v1.16b
        sxtl    v4.4s, v2.4h
        sxtl2   v5.4s, v2.8h
        sxtl    v6.4s, v3.4h
        sxtl2   v1.4s, v3.8h
        scvtf   v4.4s, v4.4s
        scvtf   v5.4s, v5.4s
        scvtf   v6.4s, v6.4s
        scvtf   v1.4s, v1.4s
        fmla    v\a0\().4s, v4.4s, v7.s[\lane]
        fmla    v\a1\().4s, v5.4s, v7.s[\lane]
        fmla    v\a2\().4s, v6.4s, v7.s[\lane]
        fmla    v\a3\().4s, v1.4s, v7.s[\lane]
        .endm

/* What a group does with each of its blocks b, whose accumulators are v<a0..a7> (register
 * numbers): zero them; gather its d; add v7.s[b] * its 32 codes; store them. */
        .macro  zero b, a0, a1, a2, a3, a4, a5, a6, a7
        movi    v\a0\().2d, #0
        movi    v\a1\().2d, #0
        movi    v\a2\().2d, #0
        movi    v\a3\().2d, #0
        movi    v\a4\().2d, #0
        movi    v\a5\().2d, #0
        movi    v\a6\().2d, #0
        movi    v\a7\().2d, #0
        .endm

        /* lane b of v1 = d of block b (f16) */
        .macro  gather b, accumulators:vararg
        .if \b == 0
        ldr     h1, [ROW]
        .else
        ldr     h2, [ROW, #\b*BB]
        ins     v1.h[\b], v2.h[0]
        .endif
        .endm

        /* its accumulators += v7.s[b] * its 32 codes */
        .macro  block b, a0, a1, a2, a3, a4, a5, a6, a7
        half    \b*BB+2, \b, \a0, \a1, \a2, \a3
        half    \b*BB+18, \b, \a4, \a5, \a6, \a7
        .endm

        .macro  store b, a0, a1, a2, a3, a4, a5, a6, a7
        stp     q\a0, q\a1, [OP, #\b*128]
        stp     q\a2, q\a3, [OP, #\b*128+32]
        stp     q\a4, q\a5, [OP, #\b*128+64]
        stp     q\a6, q\a7, [OP, #\b*128+96]
        .endm

/* op for each block of a group of nblk */
        .macro  each nblk, op
        \op    0, 8, 9, 10, 11, 12, 13, 14, 15
        .if \nblk >= 2
        \op    1, 16, 17, 18, 19, 20, 21, 22, 23
        .endif
        .if \nblk >= 3
        \op    2, 24, 25, 26, 27, 28, 29, 30, 31
        .endif
        .endm

/* One group of nblk (1..3) blocks over every token, then on to the next group. */
        .macro  group nblk
        mov     CP, COEF
        mov     OP, OUT
        mov     C, COLS
.Ltoken\nblk:
        cbz     C, .Lgroup_done\nblk
        each    \nblk, zero
        mov     ROW, BT
        mov     CJ, CP
        mov     J, RANK
        cbz     J, .Lstore\nblk
        .p2align 4
.Lrow\nblk:
        ldr     s0, [CJ], #4
        each    \nblk, gather
        fcvtl   v7.4s, v1.4h
        fmul    v7.4s, v7.4s, v0.s[0]
        each    \nblk, block
        add     ROW, ROW, RB
        subs    J, J, #1
        b.ne    .Lrow\nblk
.Lstore\nblk:
        each    \nblk, store
        add     CP, CP, CS
        add     OP, OP, OS
        sub     C, C, #1
        b       .Ltoken\nblk
.Lgroup_done\nblk:
        add     BT, BT, #\nblk*BB
        add     OUT, OUT, #\nblk*128
        sub     NB, NB, #\nblk
        b       .Lgroup
        .endm

        .text
        .p2align 4
        .globl  lila_lora_up_neon
        .type   lila_lora_up_neon, %function
lila_lora_up_neon:
        ldr     OS, [sp]                /* the ninth argument, out_stride */
        lsl     OS, OS, #2
        lsl     CS, CS, #2
        stp     d8, d9, [sp, #-64]!
        stp     d10, d11, [sp, #16]
        stp     d12, d13, [sp, #32]
        stp     d14, d15, [sp, #48]
.Lgroup:
        cmp     NB, #3
        b.hs    .Lgroup3
        cmp     NB, #2
        b.eq    .Lgroup2
        cbnz    NB, .Lgroup1
        ldp     d10, d11, [sp, #16]
        ldp     d12, d13, [sp, #32]
        ldp     d14, d15, [sp, #48]
        ldp     d8, d9, [sp], #64
        ret

.Lgroup3:
        group   3
.Lgroup2:
        group   2
.Lgroup1:
        group   1
        .size   lila_lora_up_neon, . - lila_lora_up_neon

        .section .note.GNU-stack, "", %progbits
