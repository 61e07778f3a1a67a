/* lila_quantize_q8_avx2: fp32 row -> lila_q8 blocks.
 *
 * void lila_quantize_q8_avx2(const float *x, size_t n, lila_q8 *out);   n % 32 == 0
 *
 * Per block of 32: d = max|x| / 127, q = round_half_even(x * (1 / d)) (q = 0 when d == 0),
 * s = d * sum(q); bit-exact against tests/kernel_reference.quantize_q8 (the macro in
 * quantize_q8_avx2.inc says how). Reads exactly n floats and writes n / 32 blocks.
 *
 * Registers: ymm0-3 the block, ymm4-6 scratch, ymm11-15 constants.
 */
#define X       %rdi    /* input row, advanced a block at a time */
#define NB      %rsi    /* blocks left */
#define OUT     %rdx    /* next lila_q8 */

#define ABSMASK %ymm11
#define C127    %ymm12
#define ONE     %ymm13
#define ZERO    %ymm14
#define PERM    %ymm15

#include "quantize_q8_avx2.inc"

        .section .rodata
        .balign 32
.Lperm: .long   0, 4, 1, 5, 2, 6, 3, 7
.Labs:  .long   0x7fffffff
.L127:  .float  127.0
.Lone:  .float  1.0

        .text
        .globl  lila_quantize_q8_avx2
        .type   lila_quantize_q8_avx2, @function
        .balign 32
lila_quantize_q8_avx2:
        shrq            $5, NB
        jz              .Ldone
        vbroadcastss    .Labs(%rip), ABSMASK
        vbroadcastss    .L127(%rip), C127
        vbroadcastss    .Lone(%rip), ONE
        vxorps          ZERO, ZERO, ZERO
        vmovdqa         .Lperm(%rip), PERM
        .balign 16
.Lblock:
        vmovups         0(X), %ymm0
        vmovups         32(X), %ymm1
        vmovups         64(X), %ymm2
        vmovups         96(X), %ymm3
        q8_block_avx2   0, 1, 2, 3, 4, 5, 6, OUT, ABSMASK, C127, ONE, ZERO, PERM
        addq            $128, X
        addq            $LILA_Q8_BYTES, OUT
        decq            NB
        jnz             .Lblock
.Ldone:
        vzeroupper
        ret
        .size   lila_quantize_q8_avx2, .-lila_quantize_q8_avx2

        .section .note.GNU-stack,"",@progbits
