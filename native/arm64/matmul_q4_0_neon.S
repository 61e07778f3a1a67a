/* Q4_0 weights x q8 activations, NEON; with DOTPROD defined (matmul_q4_0_neondot.S) the
 * integer dot products are sdot.
 *
 *   void lila_gemv_q4_0_neon(const void *w, size_t row_bytes, size_t rows,
 *                            const lila_q8 *x, size_t nb, size_t cols,
 *                            float *out, size_t out_stride);
 *   void lila_gemm_q4_0_neon(same);   (and lila_{gemv,gemm}_q4_0_neondot)
 *   out[c * out_stride + r] = sum_k W[r, k] * X[c, k]
 *
 * Block (18 bytes): f16 d, u8 qs[16]; element j is the low nibble of qs[j], element
 * j + 16 its high nibble; value d * (q - 8).
 *
 * q stays unsigned (0..15, still a valid signed int8 for smull and sdot), and the offset
 * leaves the integer product:
 *   sum_i d (q_i - 8) dx x_i = d dx isum - 8 d s,     isum = sum_i q_i x_i,
 * s = dx * sum x_i being the activation block's precomputed sum. Unpacking a row's block
 * is then one ushr and one and, where q - 8 would take two more subs (8 per block of the
 * 4-row tile); the -8 d s term costs one fmul per block (off = -8 d for the 4 rows) and
 * one fmla per column. Products are at most 15 * 127.
 *
 * Loops, tiles, registers and the hooks below: matmul_neon.inc.
 */
#include "matmul_neon.inc"

        .set    HAS_OFF, 1
        .set    WIDE_PRODUCTS, 0

.macro TYPE_CONSTS
        movi    v31.16b, #0x0f          /* nibble mask */
        fmov    v30.4s, #-8.0
.endm

#if LILA_Q4_0_BLOCK_BYTES != 2 + 16
#error "ROW_LOAD steps p over a Q4_0 block as f16 d, 16 bytes of nibbles"
#endif
.macro ROW_LOAD r, p, lo, hi
        GATHER16 \r, \p                 /* d */
        ldr     q\lo, [\p], #16
        NIBBLES \lo, \hi
.endm

.macro BLOCK_SCALES
        SCALES_F16
        fmul    v25.4s, v24.4s, v30.4s  /* off = -8 d */
.endm

        MATMUL_FUNCTIONS q4_0, ISA

        .section .note.GNU-stack,"",%progbits
