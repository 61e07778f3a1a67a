/* Q4_0 weights x q8 activations, AVX2 + FMA + F16C.
 *
 *   void lila_gemv_q4_0_avx2(const void *w, size_t row_bytes, size_t rows,
 *                            const lila_q8 *x, size_t nb, size_t cols,
 *                            float *out, size_t out_stride);
 *   void lila_gemm_q4_0_avx2(same);
 *   out[c * out_stride + r] = sum_k W[r, k] * X[c, k]
 *
 * Block (18 bytes): f16 d, u8 qs[16]; element j is the low nibble of qs[j], element
 * j + 16 its high nibble; value d * (q - 8).
 *
 * With q kept unsigned (0..15) the offset leaves the integer dot product:
 *   sum_i d (q_i - 8) dx x_i = d * (dx * isum - 8 * s),   isum = sum_i q_i x_i,
 * s = dx * sum x_i being the activation block's precomputed sum. isum comes from
 * vpmaddubsw (q unsigned, x signed: a pair is at most 2 * 15 * 127 = 3810, the low and
 * high halves' sum 7620, so int16 holds) and vpmaddwd by 1. Rows go in pairs, one per
 * 128-bit half (matmul_avx2.inc), unpacked by one vpsrlw and two masks. The -8 d s term:
 * the GEMV adds d s of 8 rows at once into CORR (scaled by -8 at the end), the GEMM
 * subtracts 2 s from each of a row's 4 lanes (the panel holds 2 s).
 *
 * Loops, register roles and stores: matmul_avx2.inc.
 */
#include "matmul_avx2.inc"

        .set    BLOCK_BYTES, LILA_Q4_0_BLOCK_BYTES  /* read by the loops of matmul_avx2.inc */
#define Q_D   0                 /* f16 scale */
#define Q_QS  2                 /* 16 bytes of nibbles */

CONST32_4 .Lnib_mask, 0x0f0f0f0f
CONST32_4 .Lones16, 0x00010001

        .set    HAS_CORR, 1             /* the offset: d (dx isum - 8 s) */
CONST32_4 .Lcorr_scale, 0xc1000000      /* -8.0f */

#define VMASK  %ymm14
#define VONES  %ymm15

/* [A | B] packed nibbles -> low nibbles (elements 0-15) and high (16-31) of both rows */
.macro UNPACK_PAIR a_base, a_idx, a_sc, b_base, b_idx, b_sc, lo, lox, hi, mask
        vmovdqu Q_QS(\a_base,\a_idx,\a_sc), \lox
        vinserti128 $1, Q_QS(\b_base,\b_idx,\b_sc), \lo, \lo
        vpsrlw  $4, \lo, \hi
        vpand   \mask, \lo, \lo
        vpand   \mask, \hi, \hi
.endm

/* --- GEMV hooks ---------------------------------------------------------------------- */
.macro GEMV_CONSTS
        vmovdqa .Lnib_mask(%rip), VMASK
        vmovdqa .Lones16(%rip), VONES
.endm

.macro GEMV_SCALES n
        SCALES_F16 \n, Q_D, FS, FSx
        vfmadd231ps SX, FS, CORR        /* d s, for the -8 d s term */
.endm

.macro GEMV_PAIR a_base, a_idx, a_sc, b_base, b_idx, b_sc, t, h
        UNPACK_PAIR \a_base, \a_idx, \a_sc, \b_base, \b_idx, \b_sc, %ymm\t, %xmm\t, %ymm\h, VMASK
        vpmaddubsw XLO, %ymm\t, %ymm\t  /* q unsigned, x signed: |pair| <= 3810 */
        vpmaddubsw XHI, %ymm\h, %ymm\h
        vpaddw  %ymm\h, %ymm\t, %ymm\t  /* <= 7620: still int16 */
        vpmaddwd VONES, %ymm\t, %ymm\t
.endm

/* --- GEMM hooks (panel: matmul_avx2.inc) --------------------------------------------- */
CONST32_4 .Lpanel_scale, 0x40000000     /* 2.0f: the panel holds 2 s */

.macro GEMM_PREP a_base, a_idx, a_sc, b_base, b_idx, b_sc
        UNPACK_PAIR \a_base, \a_idx, \a_sc, \b_base, \b_idx, \b_sc, GTLO, %xmm8, GTHI, .Lnib_mask(%rip)
        vpbroadcastw Q_D(\a_base,\a_idx,\a_sc), %xmm10
        vpbroadcastw Q_D(\b_base,\b_idx,\b_sc), %xmm12
        vpblendd $0xc, %xmm12, %xmm10, %xmm10   /* dA x4, dB x4 */
        vcvtph2ps %xmm10, GDP
.endm

/* GT = t: a row's 4 lanes sum to dx isum - 4 * (2 s) */
.macro GEMM_FLOAT acc
        vfmsub213ps GSX, GDX, GT
        vfmadd231ps GDP, GT, \acc
.endm

MATMUL_FUNCTIONS q4_0

        .section .note.GNU-stack,"",@progbits
