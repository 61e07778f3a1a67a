/* Q4_1 weights x q8 activations, AVX2 + FMA + F16C.
 *
 *   void lila_gemv_q4_1_avx2(const void *w, size_t row_bytes, size_t rows,
 *                            const lila_q8 *x, size_t nb, size_t cols,
 *                            float *out, size_t out_stride);
 *   void lila_gemm_q4_1_avx2(same);
 *   out[c * out_stride + r] = sum_k W[r, k] * X[c, k]
 *
 * Block (20 bytes): f16 d, f16 m, u8 qs[16]; element j is the low nibble of qs[j],
 * element j + 16 its high nibble; value d * q + m.
 *
 * Per block, with the activation's scale dx and sum s = dx * sum x_i:
 *   sum_i (d q_i + m) dx x_i = d dx isum + m s,     isum = sum_i q_i x_i,
 * q unsigned (0..15) against x signed in vpmaddubsw. The integer part and the loops are
 * Q4_0's (matmul_avx2.inc, the pair layout); only the offset term differs: m s. The GEMV
 * gathers the 8 rows' m like their d (second pair of GPRs) and adds m s for all 8 rows
 * with one fma into CORR; the GEMM tile converts (d, m) of both rows of its pair at once
 * and adds (m / 4) s to each of a row's 4 lanes.
 */
#include "matmul_avx2.inc"

        .set    BLOCK_BYTES, LILA_Q4_1_BLOCK_BYTES  /* read by the loops of matmul_avx2.inc */
#define Q_D   0                 /* f16 scale */
#define Q_M   2                 /* f16 min */
#define Q_QS  4                 /* 16 bytes of nibbles */

CONST32_4 .Lnib_mask, 0x0f0f0f0f
CONST32_4 .Lones16, 0x00010001

        .set    HAS_CORR, 1             /* the offset: + m s */
CONST32_4 .Lcorr_scale, 0x3f800000      /* 1.0f */

/* [A | B] packed nibbles -> low nibbles (elements 0-15) and high (16-31) of both rows */
.macro UNPACK_PAIR a_base, a_idx, a_sc, b_base, b_idx, b_sc, lo, lox, hi, mask
        vmovdqu Q_QS(\a_base,\a_idx,\a_sc), \lox
        vinserti128 $1, Q_QS(\b_base,\b_idx,\b_sc), \lo, \lo
        vpsrlw  $4, \lo, \hi
        vpand   \mask, \lo, \lo
        vpand   \mask, \hi, \hi
.endm

/* --- GEMV hooks ---------------------------------------------------------------------- */
#define VMASK  %ymm14
#define VONES  %ymm15

.macro GEMV_CONSTS
        vmovdqa .Lnib_mask(%rip), VMASK
        vmovdqa .Lones16(%rip), VONES
.endm

/* ymm4 is free here: the pairs have not started */
.macro GEMV_SCALES n
        SCALES_F16 \n, Q_M, %ymm4, %xmm4, %r14, %r15, %r14w, %r15w
        vfmadd231ps SX, %ymm4, CORR     /* m s */
        SCALES_F16 \n, Q_D, FS, FSx
.endm

.macro GEMV_PAIR a_base, a_idx, a_sc, b_base, b_idx, b_sc, t, h
        UNPACK_PAIR \a_base, \a_idx, \a_sc, \b_base, \b_idx, \b_sc, %ymm\t, %xmm\t, %ymm\h, VMASK
        vpmaddubsw XLO, %ymm\t, %ymm\t  /* q unsigned, x signed: |pair| <= 3810 */
        vpmaddubsw XHI, %ymm\h, %ymm\h
        vpaddw  %ymm\h, %ymm\t, %ymm\t  /* <= 7620: still int16 */
        vpmaddwd VONES, %ymm\t, %ymm\t
.endm

/* --- GEMM hooks (panel: matmul_avx2.inc) --------------------------------------------- */
CONST32_4 .Lpanel_scale, 0x3e800000     /* 0.25f: the panel holds s / 4 */

.macro GEMM_PREP a_base, a_idx, a_sc, b_base, b_idx, b_sc
        UNPACK_PAIR \a_base, \a_idx, \a_sc, \b_base, \b_idx, \b_sc, GTLO, %xmm8, GTHI, .Lnib_mask(%rip)
        vpbroadcastd Q_D(\a_base,\a_idx,\a_sc), %xmm10 /* (dA, mA) x4 */
        vpbroadcastd Q_D(\b_base,\b_idx,\b_sc), %xmm12
        vpblendd $0xc, %xmm12, %xmm10, %xmm10           /* (dA, mA) x2, (dB, mB) x2 */
        vcvtph2ps %xmm10, GH
        vmovsldup GH, GDP                               /* dA x4 | dB x4 */
        vmovshdup GH, GMP                               /* mA x4 | mB x4 */
.endm

/* GT = t: d dx t on each lane, plus m s / 4 (4 lanes a row) */
.macro GEMM_FLOAT acc
        vmulps  GDX, GT, GT
        vfmadd231ps GDP, GT, \acc
        vfmadd231ps GMP, GSX, \acc
.endm

MATMUL_FUNCTIONS q4_1

        .section .note.GNU-stack,"",@progbits
