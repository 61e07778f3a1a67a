/* lila_lora_up_avx512: the memory fabric's B product over a tile of output rows
 * (AVX-512F; the avx512-vnni family takes it too).
 *
 * void lila_lora_up_avx512(const void *bt, size_t row_bytes, size_t rank, size_t nb,
 *                          const float *coef, size_t coef_stride, size_t cols,
 *                          float *out, size_t out_stride);
 *      out[c * out_stride + 32k + i] = sum_{j < rank} coef[c * coef_stride + j]
 *                                      * d(j, k) * qs(j, k)[i]
 * for k < nb, i < 32, c < cols: row j of Bt is nb Q8_0 blocks (f16 d, 32 int8) at
 * bt + j * row_bytes. Strides count floats, row_bytes bytes. rank 0 stores zeros.
 *
 * lora_up_avx2.S's loop on zmm: blocks in groups of three (then one group of two or
 * one, as nb % 3 says); for each group, each token c keeps the group's 96 (64, 32)
 * outputs in 6 (4, 2) zmm accumulators while j runs over the rank: per row j and block
 * k, one broadcast of coef[c][j] * d(j, k), two vpmovsxbd + vcvtdq2ps of sixteen codes,
 * two FMAs. Each output is one fp32 chain over j of (coef * d) * q, the same sums in the
 * same order as the avx2 kernel. Reads: the rank rows' first nb blocks only; writes:
 * nb * 32 floats per token.
 *
 * Vector registers: zmm0-5 the accumulators (block b of the group: zmm2b, zmm2b+1),
 * xmm12 coef[c][j], zmm13 coef[c][j] * d(j, k), zmm14 sixteen converted codes.
 */
#define LORA_UP lila_lora_up_avx512
#define SCALE   %zmm13
#define CODES   %zmm14
#include "lora_up.inc"

/* What a group does with each of its blocks b, whose accumulators are %zmm<acc0, acc1>
 * (register numbers): zero them; add coef[c][j] * d * the 32 codes of block b of row j;
 * store them to token c's outputs. */
        .macro  block b, acc0, acc1
        block_scale     \b
        codes           \b*BB+2, %zmm\acc0
        codes           \b*BB+18, %zmm\acc1
        .endm

        .macro  zero b, a0, a1
        vpxord          %zmm\a0, %zmm\a0, %zmm\a0
        vpxord          %zmm\a1, %zmm\a1, %zmm\a1
        .endm

        .macro  store b, a0, a1
        vmovups         %zmm\a0, \b*128(OP)
        vmovups         %zmm\a1, \b*128+64(OP)
        .endm

/* op for each block of a group of nblk: op b, the numbers of its accumulators */
        .macro  each nblk, op
        \op             0, 0, 1
        .if \nblk >= 2
        \op             1, 2, 3
        .endif
        .if \nblk >= 3
        \op             2, 4, 5
        .endif
        .endm

        lora_up_function
