/* lila_lora_up_avx2: the memory fabric's B product over a tile of output rows
 * (AVX2, FMA, F16C).
 *
 * void lila_lora_up_avx2(const void *bt, size_t row_bytes, size_t rank, size_t nb,
 *                        const float *coef, size_t coef_stride, size_t cols,
 *                        float *out, size_t out_stride);
 *      out[c * out_stride + 32k + i] = sum_{j < rank} coef[c * coef_stride + j]
 *                                      * d(j, k) * qs(j, k)[i]
 * for k < nb, i < 32, c < cols: row j of Bt is nb Q8_0 blocks (f16 d, 32 int8) at
 * bt + j * row_bytes. Strides count floats, row_bytes bytes. rank 0 stores zeros.
 *
 * The blocks go in groups of three (then one group of two or one, as nb % 3 says); for
 * each group, each token c keeps the group's 96 (64, 32) outputs in 12 (8, 4) ymm
 * accumulators while j runs over the rank: per row j and block k, one broadcast of
 * coef[c][j] * d(j, k), four vpmovsxbd + vcvtdq2ps of eight codes, four FMAs into
 * independent accumulators. Each output is one fp32 chain over j of (coef * d) * q.
 * Reads: the rank rows' first nb blocks only; writes: nb * 32 floats per token.
 *
 * Vector registers: ymm0-11 the accumulators (block b of the group: ymm4b..ymm4b+3),
 * xmm12 coef[c][j], ymm13 coef[c][j] * d(j, k), ymm14 eight converted codes.
 */
#define LORA_UP lila_lora_up_avx2
#define SCALE   %ymm13
#define CODES   %ymm14
#include "lora_up.inc"

/* What a group does with each of its blocks b, whose accumulators are %ymm<acc0..acc3>
 * (register numbers): zero them; add coef[c][j] * d * the 32 codes of block b of row j;
 * store them to token c's outputs. */
        .macro  block b, acc0, acc1, acc2, acc3
        block_scale     \b
        codes           \b*BB+2, %ymm\acc0
        codes           \b*BB+10, %ymm\acc1
        codes           \b*BB+18, %ymm\acc2
        codes           \b*BB+26, %ymm\acc3
        .endm

        .macro  zero b, a0, a1, a2, a3
        vxorps          %ymm\a0, %ymm\a0, %ymm\a0
        vxorps          %ymm\a1, %ymm\a1, %ymm\a1
        vxorps          %ymm\a2, %ymm\a2, %ymm\a2
        vxorps          %ymm\a3, %ymm\a3, %ymm\a3
        .endm

        .macro  store b, a0, a1, a2, a3
        vmovups         %ymm\a0, \b*128(OP)
        vmovups         %ymm\a1, \b*128+32(OP)
        vmovups         %ymm\a2, \b*128+64(OP)
        vmovups         %ymm\a3, \b*128+96(OP)
        .endm

/* op for each block of a group of nblk: op b, the numbers of its accumulators */
        .macro  each nblk, op
        \op             0, 0, 1, 2, 3
        .if \nblk >= 2
        \op             1, 4, 5, 6, 7
        .endif
        .if \nblk >= 3
        \op             2, 8, 9, 10, 11
        .endif
        .endm

        lora_up_function
