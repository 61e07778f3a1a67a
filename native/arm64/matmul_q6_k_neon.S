/* Q6_K weight x q8 activation products, ARM64 NEON (ARMv8.0: Cortex-A72, Raspberry Pi 4),
 * and, built from this file with DOTPROD defined (matmul_q6_k_neondot.S), with sdot.
 *
 *   void lila_gemv_q6_k_neon(const void *w, size_t row_bytes, size_t rows,
 *                            const lila_q8 *x, size_t nb, size_t cols,
 *                            float *out, size_t out_stride);        (cols == 1)
 *   void lila_gemm_q6_k_neon(... same ...);                           (cols >= 1)
 *   out[c * out_stride + r] = sum_k W[r, k] * X[c, k]
 *
 * Q6_K superblock (210 bytes, 256 weights): ql[128], qh[64], int8 scales[16], f16 d.
 * Group g = 4h + t (32 weights, h = 0, 1, t = 0..3) meets activation block g; element i:
 *   q = nibble (t >= 2) of ql[64h + 32 (t & 1) + i] | ((qh[32h + i] >> 2t) & 3) << 4
 * and weight = d sc (q - 32), sc = scales[2g] for i < 16, scales[2g + 1] for i >= 16. With
 * Xa_g, Xb_g the sums of the first and last 16 activation codes of block g:
 *   superblock . x = d sum_g dx_g T_g,
 *   T_g = scales[2g] (Ha_g - 32 Xa_g) + scales[2g + 1] (Hb_g - 32 Xb_g)
 * where Ha_g, Hb_g are the integer dot products of the unsigned codes q (0..63) with the
 * two halves: the -32 costs a few multiplies per superblock instead of a subtraction per
 * code.
 *
 * A unit (h, s) is 16 bytes each of ql[64h + 16s], ql[64h + 32 + 16s] and qh[32h + 16s]:
 * half s of the 4 groups 4h..4h+3, so one unit's dot products all take the same kind of
 * scale (even or odd), and its result [H_4h .. H_4h+3] (lane = group) meets the scales
 * as one vector. Per unit (K_SB):
 *   codes   8 instructions for 4 registers, the 2 high bits put in by bit inserts:
 *             t = 2: (qh & 30) sri ql by 4       t = 0: ql sli (qh & 3) by 4
 *             t = 3: (qh >> 2) sri ql' by 4      t = 1: ql' sli ((qh >> 2) & 3) by 4
 *           (sri keeps the destination's high 4 bits, sli its low 4)
 *   H       KDOT of each group's register with its 16 activation codes (neon: i16 lanes
 *           of 2 products, |.| <= 2 * 63 * 128); KRED of t = 0, 1 and of t = 2, 3 (neon:
 *           |.| <= 32256 in i16, then KWIDEN), addp: [H_4h .. H_4h+3]
 * and per half h, after its two units:
 *   T       mul by the even scales, mla by the odd ones (i32), then the offsets with
 *           sqdmlsl: T -= 2 sc (16 X), the scratch holding 16 X (-32768..32512: i16;
 *           the doubling cannot saturate, sc being > -32768)
 *   sum     scvtf, times dx (fmul), acc += . d (fmla by element)
 * The scales: the 16 bytes split into even and odd (uzp1, uzp2) and widened (sxtl) once
 * per superblock to i16 [sc_0 sc_2 .. sc_14] and [sc_1 .. sc_15]; the half's 4 of each
 * to i32 (sxtl, sxtl2) at the half's end.
 *
 * The gemv runs 2 rows a pass (K_NR): each unit's activation registers are loaded once
 * for both; more rows would not leave the registers for their scales. The gemm unpacks
 * each unit's codes once and dots them with its 2-4 columns, and widens the scales once.
 *
 * Scratch per superblock and column (K_PREP_SB): dx_0..7 (floats), then 16 Xa_0..7 and
 * 16 Xb_0..7 (i16).
 *
 * Registers in the body (the tile's are in matmul_k_neon.inc):
 *   v0-v3 the unit's activations (groups 4h..4h+3), v4-v8 its codes (t = 0, 1, 3, 2 in
 *   v4 v5 v6 v7) and a temporary, v14-v17 the group accumulators; v9 v10 the even and odd
 *   scales (i16) of row 0, v11 v12 of row 1 (the gemm: the half's i32 scales), v13 d of
 *   row 0, v22 of row 1; v18-v21 the first unit's H of the half, per row or column;
 *   v23 v24 v25 the column's 16 Xa, 16 Xb and dx of the half; v26 M3 (0x03 bytes), v27
 *   M30 (0x30 bytes); v28-v31 the fp32 accumulators.
 */

#define SB_BYTES  LILA_Q6_K_BLOCK_BYTES
#define K_NR      2
#define XQ_OFF    (SBX / 2) /* XQk: the superblock's activations + SBX / 2, the middle, so
                             * that every code of its 8 blocks is within ldur's 256-byte reach */
#define M3        v26
#define M30       v27

#include "matmul_k_neon.inc"

.macro K_CONSTS
        movi    M3.16b, #0x03
        movi    M30.16b, #0x30
.endm

/* dx_0..7 to x10, 16 Xa_0..7 to x10 + 32, 16 Xb_0..7 to x10 + 48 */
.macro K_PREP_SB
        K_PREP_HALVES
        shl     v0.8h, v0.8h, #4
        shl     v1.8h, v1.8h, #4
        stp     q16, q20, [x10]
        stp     q0, q1, [x10, #32]
.endm

/* the scales of the superblock at \p: v\se = even ones, v\so = odd ones (i16), v\d = d */
.macro Q6K_ROWSCALES p, se, so, d
        ldr     q\se, [\p, #192]
        uzp2    v\so\().16b, v\se\().16b, v\se\().16b
        uzp1    v\se\().16b, v\se\().16b, v\se\().16b
        sxtl    v\se\().8h, v\se\().8b
        sxtl    v\so\().8h, v\so\().8b
        ldr     h\d, [\p, #208]
        fcvtl   v\d\().4s, v\d\().4h
.endm

/* half h's 4 scales of each kind to i32: v\e = even ones, v\o = odd ones */
.macro Q6K_HALFSCALES h, se, so, e, o
        .if \h == 0
        sxtl    v\e\().4s, v\se\().4h
        sxtl    v\o\().4s, v\so\().4h
        .else
        sxtl2   v\e\().4s, v\se\().8h
        sxtl2   v\o\().4s, v\so\().8h
        .endif
.endm

/* unit (h, s)'s activations of column \xq: group 4h + t to v(t) */
.macro Q6K_ACT xq, h, s
        .irp t, 0, 1, 2, 3
        ldur    q\t, [\xq, #(LILA_Q8_QS + LILA_Q8_BYTES * (4 * \h + \t) + 16 * \s - XQ_OFF)]
        .endr
.endm

/* unit (h, s)'s codes of the row at \p: t = 0, 1, 2, 3 to v4, v5, v7, v6 */
.macro Q6K_CODES h, s, p
        ldr     q4, [\p, #(64 * \h + 16 * \s)]          /* ql: t = 0, 2 */
        ldr     q5, [\p, #(64 * \h + 32 + 16 * \s)]     /* ql: t = 1, 3 */
        ldr     q6, [\p, #(128 + 32 * \h + 16 * \s)]    /* qh: bits 2t, 2t + 1 */
        and     v7.16b, v6.16b, M30.16b
        sri     v7.16b, v4.16b, #4
        and     v8.16b, v6.16b, M3.16b
        sli     v4.16b, v8.16b, #4
        ushr    v6.16b, v6.16b, #2
        and     v8.16b, v6.16b, M3.16b
        sri     v6.16b, v5.16b, #4
        sli     v5.16b, v8.16b, #4
.endm

/* v\dst = [H_4h .. H_4h+3] from the codes in v4-v7 and the activations in v0-v3 */
.macro Q6K_DOTS dst
        KDOT    14, 4, 0, 1
        KDOT    15, 5, 1, 1
        KDOT    16, 7, 2, 1
        KDOT    17, 6, 3, 1
        KRED    14, 14, 15
        KRED    16, 16, 17
        KWIDEN  14
        KWIDEN  16
        addp    v\dst\().4s, v14.4s, v16.4s
.endm

/* the end of half h for one row and column: T from Ha (v\ha), Hb (v14), the row's scales
 * (i16 v\se v\so, the half's i32 v\e v\o) and the column's 16 X (v23 v24), times dx (v25)
 * and d (v\d) into v\acc */
.macro Q6K_HALF h, ha, se, so, e, o, d, acc
        mul     v15.4s, v\ha\().4s, v\e\().4s
        mla     v15.4s, v14.4s, v\o\().4s
        .if \h == 0
        sqdmlsl v15.4s, v\se\().4h, v23.4h
        sqdmlsl v15.4s, v\so\().4h, v24.4h
        .else
        sqdmlsl2 v15.4s, v\se\().8h, v23.8h
        sqdmlsl2 v15.4s, v\so\().8h, v24.8h
        .endif
        scvtf   v15.4s, v15.4s
        fmul    v15.4s, v15.4s, v25.4s
        fmla    v\acc\().4s, v15.4s, v\d\().s[0]
.endm

/* a row of the gemv pass: unit (h, s) against the activations in v0-v3; s = 1 ends the
 * half (its Ha in v\ha) */
.macro Q6K_ROW h, s, p, ha, se, so, d, acc
        Q6K_CODES \h, \s, \p
        .if \s == 0
        Q6K_DOTS \ha
        .else
        Q6K_DOTS 14
        Q6K_HALFSCALES \h, \se, \so, 4, 5
        Q6K_HALF \h, \ha, \se, \so, 4, 5, \d, \acc
        .endif
.endm

/* column k of the gemm: unit (h, s) against the codes in v4-v7 */
.macro Q6K_COL h, s, k, xq, ha, acc
        Q6K_ACT \xq, \h, \s
        .if \s == 0
        Q6K_DOTS \ha
        .else
        Q6K_DOTS 14
        ldr     q25, [SCR, #(\k * SCR_SB + 16 * \h)]
        ldp     q23, q24, [SCR, #(\k * SCR_SB + 32)]
        Q6K_HALF \h, \ha, 9, 10, 11, 12, 13, \acc
        .endif
.endm

.macro K_SB nr, nc
        Q6K_ROWSCALES P0, 9, 10, 13
        .if \nr > 1
        Q6K_ROWSCALES P1, 11, 12, 22
        .endif
        .if \nc == 1
        ldp     q23, q24, [SCR, #32]
        .endif
        .irp h, 0, 1
        .irp s, 0, 1
        .if \nc == 1                            /* the pass's rows: activations once */
        .if \s == 0
        ldr     q25, [SCR, #(16 * \h)]
        .endif
        Q6K_ACT XQ0, \h, \s
        Q6K_ROW \h, \s, P0, 18, 9, 10, 13, 28
        .if \nr > 1
        Q6K_ROW \h, \s, P1, 19, 11, 12, 22, 29
        .endif
        .else                                   /* the columns: codes once */
        Q6K_CODES \h, \s, P0
        .if \s == 1
        Q6K_HALFSCALES \h, 9, 10, 11, 12
        .endif
        Q6K_COL \h, \s, 0, XQ0, 18, 28
        Q6K_COL \h, \s, 1, XQ1, 19, 29
        .if \nc > 2
        Q6K_COL \h, \s, 2, XQ2, 20, 30
        .endif
        .if \nc > 3
        Q6K_COL \h, \s, 3, XQ3, 21, 31
        .endif
        .endif
        .endr
        .endr
        add     XQ0, XQ0, #SBX
        .if \nc > 1
        add     XQ1, XQ1, #SBX
        .endif
        .if \nc > 2
        add     XQ2, XQ2, #SBX
        .endif
        .if \nc > 3
        add     XQ3, XQ3, #SBX
        .endif
.endm

#ifdef DOTPROD
        K_FUNCTIONS q6_k, neondot
#else
        K_FUNCTIONS q6_k, neon
#endif

        .section .note.GNU-stack,"",%progbits
