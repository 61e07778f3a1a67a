/* Q4_K weight x q8 activation products, ARM64 NEON (ARMv8.0: Cortex-A72, Raspberry Pi 4),
 * and, built from this file with DOTPROD defined (matmul_q4_k_neondot.S), with sdot.
 *
 *   void lila_gemv_q4_k_neon(const void *w, size_t row_bytes, size_t rows,
 *                            const lila_q8 *x, size_t nb, size_t cols,
 *                            float *out, size_t out_stride);        (cols == 1)
 *   void lila_gemm_q4_k_neon(... same ...);                           (cols >= 1)
 *   out[c * out_stride + r] = sum_k W[r, k] * X[c, k]
 *
 * Q4_K superblock (144 bytes, 256 weights): f16 d, f16 dmin, 12 bytes of 6-bit scales
 * sc_j and mins m_j (j = 0..7), then qs[128]: sub-block j = 2c + h is nibble h (low,
 * high) of qs[32c .. 32c + 31]. Weight = d sc_j q - dmin m_j, q in 0..15. Sub-block j
 * meets activation block j (scale dx_j, codes x8, xsum_j = sum of its codes), so
 *   superblock . x = sum_j dx_j (d sc_j isum_j - dmin m_j xsum_j),   isum_j = sum q x8.
 *
 * Per superblock (K_SB), a pair c at a time (sub-blocks 2c, 2c + 1: 32 bytes of qs against
 * activation blocks 2c, 2c + 1, two ld1 of 32 bytes):
 *   codes   and 0x0f and ushr #4 of the two 16-byte registers: 4 registers of 16 codes
 *   isum    KDOT into one accumulator per sub-block over its two registers (neon: i16
 *           lanes of 4 products, |.| <= 4 * 15 * 128 = 7680); KRED of the pair's two is
 *           P_c (lanes: 2c 2c 2c+1 2c+1, or 4 + 4 with i16), KRED P_0 P_1 and P_2 P_3
 *           give [isum_0..3] and [isum_4..7] (neon: |.| <= 30720 in i16, then KWIDEN)
 *   scales  the 12 packed bytes are unpacked in general registers, as llama.cpp does: the
 *           loop is bound by the two NEON pipes and leaves the integer pipes idle. Bytes
 *           u0 u1 u2 (dwords at 4, 8, 12), byte-wise:
 *             sc_0..3 = u0 & 3f                      m_0..3 = u1 & 3f
 *             sc_4..7 = u2 & 0f | (u0 >> 2) & 30     m_4..7 = (u2 >> 4) & 0f | (u1 >> 2) & 30
 *           the u0 u1 columns done together in 64 bits; [sc_0..3 m_0..3 | sc_4..7 m_4..7]
 *           moved into one vector and widened (uxtl) to the i16 and i32 forms below
 *   sum     A = sc_j isum_j (mul, i32: |.| <= 63 * 61440 < 2^24, exact in fp32), B = m_j
 *           xsum_j (smull2 of the i16 mins by the column's i16 sums), both to fp32, and
 *           acc += (A d - B dmin) dx: 2 x (fmul, fmls, fmla) per superblock and column
 *
 * The gemv runs 4 rows a pass (K_NR): the activation registers of each pair are loaded
 * once for 4 rows, and 4 independent trees keep both pipes busy. The gemm unpacks each
 * pair's codes once and dots them with its 2-4 columns; the scales once per superblock.
 *
 * Scratch per superblock and column (K_PREP_SB): dx_0..7 (floats), then the code sums
 * (i16) twice: [xsum_4..7 xsum_0..3] and [xsum_0..7], so that smull2, which reads high
 * halves, finds xsum_0..3 and xsum_4..7 where the widened scales hold m_0..3 and m_4..7.
 *
 * Registers in the body (the tile's are in matmul_k_neon.inc):
 *   v0-v3 the pair's activations, v4-v7 and v12-v15 its codes (two sets: alternate rows),
 *   v8 M4 (0x0f bytes), v16-v23 per row or column i: v(16 + 2i) = P_0, then isum_0..3,
 *   v(17 + 2i) = P_2, then isum_4..7; v24-v27 the sub-block accumulators (two sets),
 *   v28-v31 the fp32 accumulators. Scale stage: v0-v3 the column's dx and sums, v5 d dmin,
 *   v6 v7 v12 v13 the widened scales, v4 v9-v11 v14 temporaries; x9-x12.
 */

#define SB_BYTES  LILA_Q4_K_BLOCK_BYTES
#define K_NR      4
#define XQ_OFF    LILA_Q8_QS  /* XQk: the codes of the superblock's first block */
#define M4        v8

#include "matmul_k_neon.inc"

.macro K_CONSTS
        movi    M4.16b, #0x0f
.endm

/* dx_0..7 to x10, [xsum_4..7 xsum_0..3] to x10 + 32, [xsum_0..7] to x10 + 48 */
.macro K_PREP_SB
        K_PREP_HALVES
        add     v1.8h, v0.8h, v1.8h
        ext     v0.16b, v1.16b, v1.16b, #8
        stp     q16, q20, [x10]
        stp     q0, q1, [x10, #32]
.endm

/* pair c's codes of the row at \p: sub-block 2c to v\l0 v\l1, 2c + 1 to v\h0 v\h1 */
.macro Q4K_CODES c, p, l0, l1, h0, h1
        ldp     q\h0, q\h1, [\p, #(16 + 32 * \c)]
        and     v\l0\().16b, v\h0\().16b, M4.16b
        and     v\l1\().16b, v\h1\().16b, M4.16b
        ushr    v\h0\().16b, v\h0\().16b, #4
        ushr    v\h1\().16b, v\h1\().16b, #4
.endm

/* pair c's codes against the activations in v0-v3, into the state v\s0 v\s1 (see above),
 * through the accumulators v\al v\ah */
.macro Q4K_DOTS c, l0, l1, h0, h1, al, ah, s0, s1
        KDOT    \al, \l0, 0, 1
        KDOT    \ah, \h0, 2, 1
        KDOT    \al, \l1, 1, 0
        KDOT    \ah, \h1, 3, 0
        .if \c == 0
        KRED    \s0, \al, \ah                   /* P_0 */
        .elseif \c == 1
        KRED    \al, \al, \ah
        KRED    \s0, \s0, \al
        KWIDEN  \s0                             /* isum_0..3 */
        .elseif \c == 2
        KRED    \s1, \al, \ah                   /* P_2 */
        .else
        KRED    \al, \al, \ah
        KRED    \s1, \s1, \al
        KWIDEN  \s1                             /* isum_4..7 */
        .endif
.endm

/* a row of the gemv pass: its codes, against the activations in v0-v3 */
.macro Q4K_ROW c, p, l0, l1, h0, h1, al, ah, s0, s1
        Q4K_CODES \c, \p, \l0, \l1, \h0, \h1
        Q4K_DOTS \c, \l0, \l1, \h0, \h1, \al, \ah, \s0, \s1
.endm

/* a column of the gemm: its activations, against the codes in v4-v7 */
.macro Q4K_COL c, xq, al, ah, s0, s1
        ld1     {v0.16b, v1.16b}, [\xq], XBLOCK
        ld1     {v2.16b, v3.16b}, [\xq], XBLOCK
        Q4K_DOTS \c, 4, 5, 6, 7, \al, \ah, \s0, \s1
.endm

/* the scales of the superblock at \p: v5 = d dmin (floats), v6 = sc_0..3 m_0..3 and
 * v7 = sc_4..7 m_4..7 (i16), v12 = sc_0..3 and v13 = sc_4..7 (i32). Clobbers v4, x9-x12. */
.macro Q4K_SCALES p
        ldur    x9, [\p, #4]                    /* u0 u1 */
        ldr     w10, [\p, #12]                  /* u2 */
        and     x11, x9, #0x3f3f3f3f3f3f3f3f    /* sc_0..3 m_0..3 */
        lsr     x9, x9, #2
        and     x9, x9, #0x3030303030303030     /* the top 2 bits of u0 u1, at bits 4-5 */
        lsr     w12, w10, #4
        and     w10, w10, #0x0f0f0f0f
        and     w12, w12, #0x0f0f0f0f
        orr     x10, x10, x12, lsl #32
        orr     x10, x10, x9                    /* sc_4..7 m_4..7 */
        fmov    d4, x11
        fmov    v4.d[1], x10
        ldr     s5, [\p]
        fcvtl   v5.4s, v5.4h                    /* d dmin */
        uxtl    v6.8h, v4.8b
        uxtl2   v7.8h, v4.16b
        uxtl    v12.4s, v6.4h
        uxtl    v13.4s, v7.4h
.endm

/* acc v\acc += the superblock, from isum v\s0 v\s1, the scales of Q4K_SCALES, dx in v0 v1
 * and the code sums in v2 v3 */
.macro Q4K_SUM s0, s1, acc
        smull2  v9.4s, v6.8h, v2.8h             /* B = m_j xsum_j */
        smull2  v10.4s, v7.8h, v3.8h
        mul     v11.4s, v\s0\().4s, v12.4s      /* A = sc_j isum_j */
        mul     v14.4s, v\s1\().4s, v13.4s
        scvtf   v9.4s, v9.4s
        scvtf   v10.4s, v10.4s
        scvtf   v11.4s, v11.4s
        scvtf   v14.4s, v14.4s
        fmul    v11.4s, v11.4s, v5.s[0]
        fmul    v14.4s, v14.4s, v5.s[0]
        fmls    v11.4s, v9.4s, v5.s[1]
        fmls    v14.4s, v10.4s, v5.s[1]
        fmla    v\acc\().4s, v11.4s, v0.4s
        fmla    v\acc\().4s, v14.4s, v1.4s
.endm

/* column k of the gemm: its scratch, then its sum */
.macro Q4K_COLSUM k, s0, s1, acc
        ldp     q0, q1, [SCR, #(\k * SCR_SB)]
        ldp     q2, q3, [SCR, #(\k * SCR_SB + 32)]
        Q4K_SUM \s0, \s1, \acc
.endm

.macro K_SB nr, nc
        .irp c, 0, 1, 2, 3
        .if \nc == 1                            /* the pass's rows: activations once */
        ld1     {v0.16b, v1.16b}, [XQ0], XBLOCK
        ld1     {v2.16b, v3.16b}, [XQ0], XBLOCK
        Q4K_ROW \c, P0, 4, 5, 6, 7, 24, 25, 16, 17
        .if \nr > 1
        Q4K_ROW \c, P1, 12, 13, 14, 15, 26, 27, 18, 19
        .endif
        .if \nr > 2
        Q4K_ROW \c, P2, 4, 5, 6, 7, 24, 25, 20, 21
        .endif
        .if \nr > 3
        Q4K_ROW \c, P3, 12, 13, 14, 15, 26, 27, 22, 23
        .endif
        .else                                   /* the columns: codes once */
        Q4K_CODES \c, P0, 4, 5, 6, 7
        Q4K_COL \c, XQ0, 24, 25, 16, 17
        Q4K_COL \c, XQ1, 26, 27, 18, 19
        .if \nc > 2
        Q4K_COL \c, XQ2, 24, 25, 20, 21
        .endif
        .if \nc > 3
        Q4K_COL \c, XQ3, 26, 27, 22, 23
        .endif
        .endif
        .endr

        .if \nc == 1
        ldp     q0, q1, [SCR]
        ldp     q2, q3, [SCR, #32]
        Q4K_SCALES P0
        Q4K_SUM 16, 17, 28
        .if \nr > 1
        Q4K_SCALES P1
        Q4K_SUM 18, 19, 29
        .endif
        .if \nr > 2
        Q4K_SCALES P2
        Q4K_SUM 20, 21, 30
        .endif
        .if \nr > 3
        Q4K_SCALES P3
        Q4K_SUM 22, 23, 31
        .endif
        .else
        Q4K_SCALES P0
        Q4K_COLSUM 0, 16, 17, 28
        Q4K_COLSUM 1, 18, 19, 29
        .if \nc > 2
        Q4K_COLSUM 2, 20, 21, 30
        .endif
        .if \nc > 3
        Q4K_COLSUM 3, 22, 23, 31
        .endif
        .endif
.endm

#ifdef DOTPROD
        K_FUNCTIONS q4_k, neondot
#else
        K_FUNCTIONS q4_k, neon
#endif

        .section .note.GNU-stack,"",%progbits
