/* Q4_1 weights x q8 activations, NEON; with DOTPROD defined (matmul_q4_1_neondot.S) the
 * integer dot products are sdot.
 *
 *   void lila_gemv_q4_1_neon(const void *w, size_t row_bytes, size_t rows,
 *                            const lila_q8 *x, size_t nb, size_t cols,
 *                            float *out, size_t out_stride);
 *   void lila_gemm_q4_1_neon(same);   (and lila_{gemv,gemm}_q4_1_neondot)
 *   out[c * out_stride + r] = sum_k W[r, k] * X[c, k]
 *
 * Block (20 bytes): f16 d, f16 m, u8 qs[16]; element j is the low nibble of qs[j],
 * element j + 16 its high nibble; value d * q + m.
 *
 * Per block, with the activation's scale dx and sum s = dx * sum x_i:
 *   sum_i (d q_i + m) dx x_i = d dx isum + m s,     isum = sum_i q_i x_i,
 * q unsigned (0..15) as Q4_0's, the offset being m (HAS_OFF). A row's d and m are one
 * 32-bit load; rows 0-1 and 2-3 are gathered into two GPRs, moved into one vector
 * [d0 m0 d1 m1 d2 m2 d3 m3] and split by uzp1 / uzp2 before fcvtl.
 *
 * Loops, tiles, registers and the hooks below: matmul_neon.inc.
 */
#include "matmul_neon.inc"

        .set    HAS_OFF, 1
        .set    WIDE_PRODUCTS, 0

.macro TYPE_CONSTS
        movi    v31.16b, #0x0f          /* nibble mask */
.endm

/* row r's (d, m) at p into bits 32 (r % 2) of GD (rows 0-1) or GM (rows 2-3) */
.macro GATHER32 r, p
.if \r == 0
        ldr     GDw, [\p], #4
.elseif \r == 2
        ldr     GMw, [\p], #4
.else
        ldr     GTw, [\p], #4
.if \r == 1
        orr     GD, GD, GT, lsl #32
.else
        orr     GM, GM, GT, lsl #32
.endif
.endif
.endm

#if LILA_Q4_1_BLOCK_BYTES != 4 + 16
#error "ROW_LOAD steps p over a Q4_1 block as f16 d and m, 16 bytes of nibbles"
#endif
.macro ROW_LOAD r, p, lo, hi
        GATHER32 \r, \p                 /* d, m */
        ldr     q\lo, [\p], #16
        NIBBLES \lo, \hi
.endm

.macro BLOCK_SCALES
        fmov    d24, GD
        fmov    v24.d[1], GM
        uzp2    v25.8h, v24.8h, v24.8h  /* m of rows 0-3 */
        uzp1    v24.8h, v24.8h, v24.8h  /* d */
        fcvtl   v24.4s, v24.4h
        fcvtl   v25.4s, v25.4h          /* off = m */
.endm

        MATMUL_FUNCTIONS q4_1, ISA

        .section .note.GNU-stack,"",%progbits
