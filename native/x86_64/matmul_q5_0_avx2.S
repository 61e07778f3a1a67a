/* Q5_0 weights x q8 activations, AVX2 + FMA + F16C.
 *
 *   void lila_gemv_q5_0_avx2(const void *w, size_t row_bytes, size_t rows,
 *                            const lila_q8 *x, size_t nb, size_t cols,
 *                            float *out, size_t out_stride);
 *   void lila_gemm_q5_0_avx2(same);
 *   out[c * out_stride + r] = sum_k W[r, k] * X[c, k]
 *
 * Block (22 bytes): f16 d, u8 qh[4], u8 qs[16]; element j's low 4 bits are the low
 * nibble of qs[j] (j < 16) or the high nibble of qs[j - 16], its fifth bit is bit j of
 * the little-endian u32 qh; value d * (q - 16).
 *
 * As Q4_0 (matmul_avx2.inc, the pair layout) with q unsigned 0..31:
 *   sum_i d (q_i - 16) dx x_i = d * (dx * isum - 16 * s),
 * vpmaddubsw pairs reach 2 * 31 * 127 = 7874 and the two halves' sum 15748: int16 still.
 * The fifth bits: qh of rows A and B broadcast to the two halves; vpshufb copies byte
 * j / 8 of qh to byte j (bytes 0, 1 for elements 0-15, bytes 2, 3 for 16-31), vpand and
 * vpcmpeqb with 1 << (j % 8) turn bit j into 0xff, and 0x10 of that is or'ed into the
 * nibble.
 */
#include "matmul_avx2.inc"

        .set    BLOCK_BYTES, LILA_Q5_0_BLOCK_BYTES  /* read by the loops of matmul_avx2.inc */
#define Q_D   0                 /* f16 scale */
#define Q_QH  2                 /* u32 of fifth bits */
#define Q_QS  6                 /* 16 bytes of nibbles */

CONST32_4 .Lnib_mask, 0x0f0f0f0f
CONST32_4 .Lones16, 0x00010001
CONST32_4 .Lsixteen, 0x10101010
CONST32 .Lbitsel, 0x08040201, 0x80402010, 0x08040201, 0x80402010, 0x08040201, 0x80402010, 0x08040201, 0x80402010
CONST32 .Lqh_lo, 0x00000000, 0x00000000, 0x01010101, 0x01010101, 0x00000000, 0x00000000, 0x01010101, 0x01010101
CONST32 .Lqh_hi, 0x02020202, 0x02020202, 0x03030303, 0x03030303, 0x02020202, 0x02020202, 0x03030303, 0x03030303

        .set    HAS_CORR, 1             /* the offset: d (dx isum - 16 s) */
CONST32_4 .Lcorr_scale, 0xc1800000      /* -16.0f */

/* Rows A and B's block -> lo (elements 0-15, both rows) and hi (16-31), 5-bit values.
 * q, r: scratch. Constants from memory: their loads are folded, so free. */
.macro UNPACK5_PAIR a_base, a_idx, a_sc, b_base, b_idx, b_sc, lo, lox, hi, q, r
        vmovdqu Q_QS(\a_base,\a_idx,\a_sc), \lox
        vinserti128 $1, Q_QS(\b_base,\b_idx,\b_sc), \lo, \lo
        vpbroadcastd Q_QH(\a_base,\a_idx,\a_sc), \q
        vpbroadcastd Q_QH(\b_base,\b_idx,\b_sc), \r
        vpblendd $0xf0, \r, \q, \q      /* qh of A | qh of B */
        vpsrlw  $4, \lo, \hi
        vpand   .Lnib_mask(%rip), \lo, \lo
        vpand   .Lnib_mask(%rip), \hi, \hi
        vpshufb .Lqh_lo(%rip), \q, \r   /* byte j: qh byte j / 8 */
        vpshufb .Lqh_hi(%rip), \q, \q   /* byte j: qh byte 2 + j / 8 */
        vpand   .Lbitsel(%rip), \r, \r
        vpand   .Lbitsel(%rip), \q, \q
        vpcmpeqb .Lbitsel(%rip), \r, \r /* 0xff where the bit is set */
        vpcmpeqb .Lbitsel(%rip), \q, \q
        vpand   .Lsixteen(%rip), \r, \r
        vpand   .Lsixteen(%rip), \q, \q
        vpor    \r, \lo, \lo
        vpor    \q, \hi, \hi
.endm

/* --- GEMV hooks: ymm14-15 are scratch (no constants kept) ----------------------------- */
.macro GEMV_CONSTS
.endm

.macro GEMV_SCALES n
        SCALES_F16 \n, Q_D, FS, FSx
        vfmadd231ps SX, FS, CORR        /* d s, for the -16 d s term */
.endm

.macro GEMV_PAIR a_base, a_idx, a_sc, b_base, b_idx, b_sc, t, h
        UNPACK5_PAIR \a_base, \a_idx, \a_sc, \b_base, \b_idx, \b_sc, %ymm\t, %xmm\t, %ymm\h, %ymm14, %ymm15
        vpmaddubsw XLO, %ymm\t, %ymm\t
        vpmaddubsw XHI, %ymm\h, %ymm\h
        vpaddw  %ymm\h, %ymm\t, %ymm\t
        vpmaddwd .Lones16(%rip), %ymm\t, %ymm\t
.endm

/* --- GEMM hooks (panel: matmul_avx2.inc) --------------------------------------------- */
CONST32_4 .Lpanel_scale, 0x40800000     /* 4.0f: the panel holds 4 s */

.macro GEMM_PREP a_base, a_idx, a_sc, b_base, b_idx, b_sc
        UNPACK5_PAIR \a_base, \a_idx, \a_sc, \b_base, \b_idx, \b_sc, GTLO, %xmm8, GTHI, GT, GH
        vpbroadcastw Q_D(\a_base,\a_idx,\a_sc), %xmm10
        vpbroadcastw Q_D(\b_base,\b_idx,\b_sc), %xmm12
        vpblendd $0xc, %xmm12, %xmm10, %xmm10   /* dA x4, dB x4 */
        vcvtph2ps %xmm10, GDP
.endm

/* GT = t: a row's 4 lanes sum to dx isum - 4 * (4 s) */
.macro GEMM_FLOAT acc
        vfmsub213ps GSX, GDX, GT
        vfmadd231ps GDP, GT, \acc
.endm

MATMUL_FUNCTIONS q5_0

        .section .note.GNU-stack,"",@progbits
