/* Q5_0 weights x q8 activations, NEON; with DOTPROD defined (matmul_q5_0_neondot.S) the
 * integer dot products are sdot.
 *
 *   void lila_gemv_q5_0_neon(const void *w, size_t row_bytes, size_t rows,
 *                            const lila_q8 *x, size_t nb, size_t cols,
 *                            float *out, size_t out_stride);
 *   void lila_gemm_q5_0_neon(same);   (and lila_{gemv,gemm}_q5_0_neondot)
 *   out[c * out_stride + r] = sum_k W[r, k] * X[c, k]
 *
 * Block (22 bytes): f16 d, u8 qh[4], u8 qs[16]; element j's low 4 bits are the low
 * nibble of qs[j] (j < 16) or the high nibble of qs[j - 16], its fifth bit is bit j of
 * the little-endian u32 qh; value d * (q - 16).
 *
 * Here the weights are made signed, q - 16 in -16..15, at no cost over unsigned ones: in
 * two's complement q - 16 is the nibble with 0xf0 above it where the fifth bit is clear,
 * and the nibble alone where it is set. So a per-byte mask "fifth bit clear" (0xff or 0)
 * gives each half in one instruction: sli (shift left and insert: the mask's 0xf0 over
 * the low nibble, which it keeps) for elements 0-15, sri (shift right and insert: the
 * high nibble under the mask's 0xf0) for 16-31; and there is no offset term (HAS_OFF
 * 0). The mask: tbl copies byte j / 8 of ~qh to byte j (elements 0-15; bytes 2 and 3
 * for 16-31), cmtst with 1 << (j % 8) turns bit j into 0xff. Per row and block: mvn, 2
 * tbl, 2 cmtst, sli, sri. Products are at most 16 * 127.
 *
 * Loops, tiles, registers and the hooks below: matmul_neon.inc.
 */
#include "matmul_neon.inc"

        .set    HAS_OFF, 0
        .set    WIDE_PRODUCTS, 0

        .pushsection .rodata, "a", %progbits    /* not mergeable: one 48-byte run */
        .balign 16
.Lq5_bits:                              /* byte j: 1 << (j % 8) */
        .byte   1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128
.Lq5_lo:                                /* byte j: qh byte j / 8, elements 0-15 */
        .byte   0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1
.Lq5_hi:                                /* elements 16-31 */
        .byte   2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3
        .popsection

.macro TYPE_CONSTS
        adrp    CNT, .Lq5_bits
        add     CNT, CNT, :lo12:.Lq5_bits
        ldp     q31, q30, [CNT]         /* bits, lo */
        ldr     q25, [CNT, #32]         /* hi */
.endm

#if LILA_Q5_0_BLOCK_BYTES != 2 + 4 + 16
#error "ROW_LOAD steps p over a Q5_0 block as f16 d, u32 qh, 16 bytes of nibbles"
#endif
.macro ROW_LOAD r, p, lo, hi
        GATHER16 \r, \p                 /* d */
        ldr     s7, [\p], #4            /* qh */
        ldr     q\lo, [\p], #16
        mvn     v7.8b, v7.8b            /* bit j: element j's fifth bit is clear */
        tbl     v\hi\().16b, {v7.16b}, v25.16b
        tbl     v7.16b, {v7.16b}, v30.16b
        cmtst   v\hi\().16b, v\hi\().16b, v31.16b   /* 0xff: q - 16 < 0 */
        cmtst   v7.16b, v7.16b, v31.16b
        sri     v\hi\().16b, v\lo\().16b, #4 /* before sli changes the high nibbles */
        sli     v\lo\().16b, v7.16b, #4
.endm

.macro BLOCK_SCALES
        SCALES_F16
.endm

        MATMUL_FUNCTIONS q5_0, ISA

        .section .note.GNU-stack,"",%progbits
