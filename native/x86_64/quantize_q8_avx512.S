/* lila_quantize_q8_avx512: fp32 row -> lila_q8 blocks (AVX512F).
 *
 * void lila_quantize_q8_avx512(const float *x, size_t n, lila_q8 *out);   n % 32 == 0
 *
 * Per block of 32: d = max|x| / 127, q = round_half_even(x * (1 / d)) (q = 0 when d == 0),
 * s = d * sum(q); the same bits as lila_quantize_q8_avx2 and
 * tests/kernel_reference.quantize_q8 (quantize_q8_avx512.inc says how). Reads exactly
 * n floats and writes n / 32 blocks.
 *
 * Registers: zmm0-1 the block, zmm2-4 scratch, zmm12-15 constants, k1 scratch.
 */
#define X       %rdi    /* input row, advanced a block at a time */
#define NB      %rsi    /* blocks left */
#define OUT     %rdx    /* next lila_q8 */

#define ABSMASK %zmm12
#define C127    %zmm13
#define ONE     %zmm14
#define ZERO    %zmm15

#include "quantize_q8_avx512.inc"

        .section .rodata
        .balign 4
.Labs:  .long   0x7fffffff
.L127:  .float  127.0
.Lone:  .float  1.0

        .text
        .globl  lila_quantize_q8_avx512
        .type   lila_quantize_q8_avx512, @function
        .balign 32
lila_quantize_q8_avx512:
        shrq            $5, NB
        jz              .Ldone
        vbroadcastss    .Labs(%rip), ABSMASK
        vbroadcastss    .L127(%rip), C127
        vbroadcastss    .Lone(%rip), ONE
        vpxord          ZERO, ZERO, ZERO
        .balign 16
.Lblock:
        vmovups         0(X), %zmm0
        vmovups         64(X), %zmm1
        q8_block_avx512 0, 1, 2, 3, 4, OUT, ABSMASK, C127, ONE, ZERO
        subq            $-128, X                /* imm8, where $128 would need imm32 */
        addq            $LILA_Q8_BYTES, OUT
        decq            NB
        jnz             .Lblock
.Ldone:
        vzeroupper
        ret
        .size   lila_quantize_q8_avx512, .-lila_quantize_q8_avx512

        .section .note.GNU-stack,"",@progbits
