/* Q4_0 weights x q8 activations, AVX-512 (F, BW, VL) + FMA + F16C; with VNNI defined
 * (matmul_q4_0_avx512vnni.S) the integer dot products are vpdpbusd.
 *
 *   void lila_gemv_q4_0_avx512(const void *w, size_t row_bytes, size_t rows,
 *                              const lila_q8 *x, size_t nb, size_t cols,
 *                              float *out, size_t out_stride);
 *   void lila_gemm_q4_0_avx512(same);   (and lila_{gemv,gemm}_q4_0_avx512vnni)
 *   out[c * out_stride + r] = sum_k W[r, k] * X[c, k]
 *
 * Block (18 bytes): f16 d, u8 qs[16]; element j is the low nibble of qs[j], j + 16 the
 * high nibble; value d * (q - 8). As the AVX2 kernel, with q unsigned (0..15):
 *   sum_i d (q_i - 8) dx x_i = d * (dx * isum - 8 * s),
 * 4 rows to a zmm (one per 128-bit lane, matmul_avx512.inc): each row's 4 int32 lanes
 * give dx * t - 2 s (fmsub), times the row's d. vpmaddubsw pairs reach 3810, the low and
 * high halves' sum 7620: int16 holds.
 */
        .set    RPV, 4
#include "matmul_avx512.inc"

        .set    BLOCK_BYTES, LILA_Q4_0_BLOCK_BYTES
#define Q_D   0
#define Q_QS  2

CONST4 .Lnib_mask, 0x0f0f0f0f
CONST4 .Ls_scale, 0x40000000            /* 2.0f */

.macro TYPE_CONSTS
.endm

.macro XLOAD base, idx, sc
        XOP     vbroadcasti32x4, LILA_Q8_QS, \base, \idx, \sc, XLO
        XOP     vbroadcasti32x4, (LILA_Q8_QS + 16), \base, \idx, \sc, XHI
        XOP     vbroadcastss, LILA_Q8_D, \base, \idx, \sc, DX
        XOP     vbroadcastss, LILA_Q8_S, \base, \idx, \sc, SXK
        vmulps  .Ls_scale(%rip){1to16}, SXK, SXK
.endm

.macro PREP_R lo, hi, d, dy, m, my, r0, r1, r2, r3
        UNIT_LOAD vbroadcasti32x4, Q_QS, \lo, \r0, \r1, \r2, \r3
        vpsrlw  $4, \lo, \hi
        vpandd  .Lnib_mask(%rip){1to16}, \lo, \lo
        vpandd  .Lnib_mask(%rip){1to16}, \hi, \hi
        UNIT_F16 Q_D, \d, \dy, \r0, \r1, \r2, \r3
.endm

.macro COL_R lo, hi, d, m, acc
        DOT_LOHI \lo, \hi, T, H
        vcvtdq2ps T, T
        vfmsub213ps SXK, DX, T          /* dx t - 2 s: a row's 4 lanes, dx isum - 8 s */
        vfmadd231ps \d, T, \acc
.endm

MATMUL512 SYM(gemv, q4_0, FAMILY), SYM(gemm, q4_0, FAMILY), CORE(q4_0, FAMILY)

        .section .note.GNU-stack,"",@progbits
