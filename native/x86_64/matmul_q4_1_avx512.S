/* Q4_1 weights x q8 activations, AVX-512 (F, BW, VL) + FMA + F16C; with VNNI defined
 * (matmul_q4_1_avx512vnni.S) the integer dot products are vpdpbusd.
 *
 *   void lila_gemv_q4_1_avx512(const void *w, size_t row_bytes, size_t rows,
 *                              const lila_q8 *x, size_t nb, size_t cols,
 *                              float *out, size_t out_stride);
 *   void lila_gemm_q4_1_avx512(same);   (and lila_{gemv,gemm}_q4_1_avx512vnni)
 *   out[c * out_stride + r] = sum_k W[r, k] * X[c, k]
 *
 * Block (20 bytes): f16 d, f16 m, u8 qs[16]; value d * q + m:
 *   sum_i (d q_i + m) dx x_i = d dx isum + m s.
 * 4 rows to a zmm (matmul_avx512.inc). (d, m) of the 4 rows: one masked vpbroadcastd each
 * (k4-k6 pick dwords 2-3, 4-5, 6-7 of the ymm), one vcvtph2ps, then vmovsldup (d) and
 * vmovshdup (m); each of a row's 4 lanes adds m s / 4.
 */
        .set    RPV, 4
#include "matmul_avx512.inc"

        .set    BLOCK_BYTES, LILA_Q4_1_BLOCK_BYTES
#define Q_D   0
#define Q_QS  4

CONST4 .Lnib_mask, 0x0f0f0f0f
CONST4 .Ls_scale, 0x3e800000            /* 0.25f */

.macro TYPE_CONSTS
        movl    $0x0c, %eax
        kmovw   %eax, %k4
        movl    $0x30, %eax
        kmovw   %eax, %k5
        movl    $0xc0, %eax
        kmovw   %eax, %k6
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
        ROWOP   vpbroadcastd, Q_D, \r0, Sy             /* (d, m) of row 0 */
        ROWOP   vpbroadcastd, Q_D, \r1, Sy{%k4}
        ROWOP   vpbroadcastd, Q_D, \r2, Sy{%k5}
        ROWOP   vpbroadcastd, Q_D, \r3, Sy{%k6}
        vcvtph2ps Sy, S                                 /* d m d m per 128-bit lane */
        vmovsldup S, \d
        vmovshdup S, \m
.endm

.macro COL_R lo, hi, d, m, acc
        DOT_LOHI \lo, \hi, T, H
        vcvtdq2ps T, T
        vmulps  DX, T, T
        vfmadd231ps \d, T, \acc         /* d dx t */
        vfmadd231ps \m, SXK, \acc       /* m s / 4 */
.endm

MATMUL512 SYM(gemv, q4_1, FAMILY), SYM(gemm, q4_1, FAMILY), CORE(q4_1, FAMILY)

        .section .note.GNU-stack,"",@progbits
