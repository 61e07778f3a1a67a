/* Q8_0 weights x q8 activations, NEON; with DOTPROD defined (matmul_q8_0_neondot.S) the
 * integer dot products are sdot.
 *
 *   void lila_gemv_q8_0_neon(const void *w, size_t row_bytes, size_t rows,
 *                            const lila_q8 *x, size_t nb, size_t cols,
 *                            float *out, size_t out_stride);
 *   void lila_gemm_q8_0_neon(same);   (and lila_{gemv,gemm}_q8_0_neondot)
 *   out[c * out_stride + r] = sum_k W[r, k] * X[c, k]
 *
 * Block (34 bytes): f16 d, i8 qs[32]; value d * q.
 *
 * Both sides are already signed int8: no unpacking and no offset. A product reaches
 * 128 * 127 = 16256 (w = -128 does occur; the activations' quants stay within +-127, as
 * lila_q8's d = max|x| / 127 makes them), so an int16 lane holds only two (32512):
 * WIDE_PRODUCTS (smull + smlal2 per half, saddlp + sadalp). sdot has no such limit.
 *
 * Loops, tiles, registers and the hooks below: matmul_neon.inc.
 */
#include "matmul_neon.inc"

        .set    HAS_OFF, 0
        .set    WIDE_PRODUCTS, 1

.macro TYPE_CONSTS
.endm

#if LILA_Q8_0_BLOCK_BYTES != 2 + 32
#error "ROW_LOAD steps p over a Q8_0 block as f16 d, 32 int8"
#endif
.macro ROW_LOAD r, p, lo, hi
        GATHER16 \r, \p                 /* d */
        ldp     q\lo, q\hi, [\p], #32
.endm

.macro BLOCK_SCALES
        SCALES_F16
.endm

        MATMUL_FUNCTIONS q8_0, ISA

        .section .note.GNU-stack,"",%progbits
