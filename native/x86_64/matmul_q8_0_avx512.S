/* Q8_0 weights x q8 activations, AVX-512 (F, BW, VL) + FMA + F16C; with VNNI defined
 * (matmul_q8_0_avx512vnni.S) the integer dot products are vpdpbusd.
 *
 *   void lila_gemv_q8_0_avx512(const void *w, size_t row_bytes, size_t rows,
 *                              const lila_q8 *x, size_t nb, size_t cols,
 *                              float *out, size_t out_stride);
 *   void lila_gemm_q8_0_avx512(same);   (and lila_{gemv,gemm}_q8_0_avx512vnni)
 *   out[c * out_stride + r] = sum_k W[r, k] * X[c, k]
 *
 * Block (34 bytes): f16 d, i8 qs[32]; value d * q. 2 rows to a zmm, one per 256-bit half
 * (matmul_avx512.inc, RPV 2), against the activation's 32 quants in both halves.
 * Without VNNI (no vpsignb in AVX-512): |w| against x negated where w < 0 (vpmovb2m,
 * then a masked blend of -x); |w| = 128 still right, a pair at most 2 * 128 * 127.
 * With VNNI, whose vpdpbusd adds 4 products straight into int32 (nothing saturates), the
 * offset trick: w + 128 (w xor 0x80) unsigned, and
 *   sum_i d w_i dx x_i = d * (dx * sum_i (w_i + 128) x_i - 128 s),
 * each of a row's 8 lanes subtracting 16 s.
 */
        .set    RPV, 2
#include "matmul_avx512.inc"

        .set    BLOCK_BYTES, LILA_Q8_0_BLOCK_BYTES
#define Q_D   0
#define Q_QS  2

CONST4 .Lflip, 0x80808080
CONST4 .Ls_scale, 0x41800000            /* 16.0f */
#define XNEG   XHI                      /* -x, without VNNI */

.macro TYPE_CONSTS
.endm

.macro XLOAD base, idx, sc
        XOP     vbroadcasti64x4, LILA_Q8_QS, \base, \idx, \sc, X2
        XOP     vbroadcastss, LILA_Q8_D, \base, \idx, \sc, DX
#ifdef VNNI
        XOP     vbroadcastss, LILA_Q8_S, \base, \idx, \sc, SXK
        vmulps  .Ls_scale(%rip){1to16}, SXK, SXK
#else
        vpsubb  X2, ZERO, XNEG
#endif
.endm

.macro PREP_R lo, hi, d, dy, m, my, r0, r1, r2, r3
        ROWOP   vbroadcasti64x4, Q_QS, \r0, \lo
        ROWOP   vbroadcasti64x4, Q_QS, \r1, \lo{%k2}  /* qword mask: the upper half */
#ifdef VNNI
        vpxord  .Lflip(%rip){1to16}, \lo, \lo   /* w + 128, unsigned */
#else
        vpabsb  \lo, \hi                        /* |w| */
#endif
        UNIT_F16 Q_D, \d, \dy, \r0, \r1
.endm

.macro COL_R lo, hi, d, m, acc
#ifdef VNNI
        vpxord  T, T, T
        vpdpbusd X2, \lo, T
        vcvtdq2ps T, T
        vfmsub213ps SXK, DX, T          /* dx t - 16 s: a row's 8 lanes, dx isum - 128 s */
#else
        vpmovb2m \lo, %k4               /* w < 0 */
        vpblendmb XNEG, X2, T{%k4}      /* x with w's sign */
        vpmaddubsw T, \hi, T
        vpmaddwd ONES, T, T
        vcvtdq2ps T, T
        vmulps  DX, T, T
#endif
        vfmadd231ps \d, T, \acc
.endm

MATMUL512 SYM(gemv, q8_0, FAMILY), SYM(gemm, q8_0, FAMILY), CORE(q8_0, FAMILY)

        .section .note.GNU-stack,"",@progbits
