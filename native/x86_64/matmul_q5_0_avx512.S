/* Q5_0 weights x q8 activations, AVX-512 (F, BW, VL) + FMA + F16C; with VNNI defined
 * (matmul_q5_0_avx512vnni.S) the integer dot products are vpdpbusd.
 *
 *   void lila_gemv_q5_0_avx512(const void *w, size_t row_bytes, size_t rows,
 *                              const lila_q8 *x, size_t nb, size_t cols,
 *                              float *out, size_t out_stride);
 *   void lila_gemm_q5_0_avx512(same);   (and lila_{gemv,gemm}_q5_0_avx512vnni)
 *   out[c * out_stride + r] = sum_k W[r, k] * X[c, k]
 *
 * Block (22 bytes): f16 d, u8 qh[4], u8 qs[16]; element j's fifth bit is bit j of the
 * little-endian u32 qh; value d * (q - 16):
 *   sum_i d (q_i - 16) dx x_i = d * (dx * isum - 16 * s).
 * 4 rows to a zmm (matmul_avx512.inc). The fifth bits: each row's qh broadcast to its
 * 128-bit lane, vpshufb copies qh byte j / 8 to byte j, vptestmb against 1 << (j % 8)
 * makes a mask, and a masked vpaddb adds 16. Pairs reach 2 * 31 * 127 = 7874, the two
 * halves' sum 15748: int16 holds.
 */
        .set    RPV, 4
#include "matmul_avx512.inc"

        .set    BLOCK_BYTES, LILA_Q5_0_BLOCK_BYTES
#define Q_D   0
#define Q_QH  2
#define Q_QS  6

CONST4 .Lnib_mask, 0x0f0f0f0f
CONST4 .Ls_scale, 0x40800000            /* 4.0f */
CONST4 .Lsixteen, 0x10101010
        .pushsection .rodata.cst16, "aM", @progbits, 16
        .balign 16
.Lqh_lo:  .long 0x00000000, 0x00000000, 0x01010101, 0x01010101   /* byte j: qh byte j/8 */
.Lqh_hi:  .long 0x02020202, 0x02020202, 0x03030303, 0x03030303   /* ... 2 + j/8 */
.Lbitsel: .long 0x08040201, 0x80402010, 0x08040201, 0x80402010   /* 1 << (j % 8) */
        .popsection

#define QHLO   %zmm28
#define QHHI   %zmm29
#define BITSEL %zmm30
#define SIXTEEN %zmm31

.macro TYPE_CONSTS
        vbroadcasti32x4 .Lqh_lo(%rip), QHLO
        vbroadcasti32x4 .Lqh_hi(%rip), QHHI
        vbroadcasti32x4 .Lbitsel(%rip), BITSEL
        vpbroadcastd .Lsixteen(%rip), SIXTEEN
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
        UNIT_LOAD vpbroadcastd, Q_QH, Q, \r0, \r1, \r2, \r3     /* qh in every dword */
        vpsrlw  $4, \lo, \hi
        vpandd  .Lnib_mask(%rip){1to16}, \lo, \lo
        vpandd  .Lnib_mask(%rip){1to16}, \hi, \hi
        vpshufb QHLO, Q, R
        vptestmb BITSEL, R, %k4         /* elements 0-15 with the fifth bit */
        vpshufb QHHI, Q, R
        vptestmb BITSEL, R, %k5         /* elements 16-31 */
        vpaddb  SIXTEEN, \lo, \lo{%k4}
        vpaddb  SIXTEEN, \hi, \hi{%k5}
        UNIT_F16 Q_D, \d, \dy, \r0, \r1, \r2, \r3
.endm

.macro COL_R lo, hi, d, m, acc
        DOT_LOHI \lo, \hi, T, H
        vcvtdq2ps T, T
        vfmsub213ps SXK, DX, T          /* dx t - 4 s: a row's 4 lanes, dx isum - 16 s */
        vfmadd231ps \d, T, \acc
.endm

MATMUL512 SYM(gemv, q5_0, FAMILY), SYM(gemm, q5_0, FAMILY), CORE(q5_0, FAMILY)

        .section .note.GNU-stack,"",@progbits
