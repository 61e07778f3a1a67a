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
 * ymm12 coef[c][j], ymm13 coef[c][j] * d(j, k), ymm14 eight converted codes.
 */
#include "lila_abi.inc"

#if LILA_Q8_0_BLOCK_BYTES != 2 + 32
#error "the block loads take a Q8_0 block as f16 d, then 32 int8"
#endif
        .set    BB, LILA_Q8_0_BLOCK_BYTES

#define BT      %rdi    /* the group's first block in row 0 */
#define RB      %rsi    /* row_bytes */
#define RANK    %rdx
#define NB      %rcx    /* blocks left */
#define COEF    %r8     /* coef */
#define CS      %r9     /* coef_stride, then in bytes */
#define COLS    %r10
#define OUT     %r11    /* the group's first output of token 0 */
#define OS      %rbx    /* out_stride in bytes */
#define CP      %rbp    /* token c's coefficients */
#define OP      %r12    /* token c's outputs of the group */
#define C       %r13    /* tokens left */
#define ROW     %r14    /* row j's blocks of the group */
#define J       %r15
#define COEFJ   %ymm12
#define SCALE   %ymm13
#define CODES   %ymm14

/* What a group does with each of its blocks b, whose accumulators are %ymm<acc0..acc3>
 * (register numbers): zero them; add coef[c][j] * d * the 32 codes of block b of row j;
 * store them to token c's outputs. */
        .macro  block b, acc0, acc1, acc2, acc3
        movzwl          \b*BB(ROW), %eax
        vmovd           %eax, %xmm13
        vcvtph2ps       %xmm13, %xmm13
        vmulss          %xmm12, %xmm13, %xmm13
        vbroadcastss    %xmm13, SCALE
        vpmovsxbd       \b*BB+2(ROW), CODES
        vcvtdq2ps       CODES, CODES
        vfmadd231ps     CODES, SCALE, %ymm\acc0
        vpmovsxbd       \b*BB+10(ROW), CODES
        vcvtdq2ps       CODES, CODES
        vfmadd231ps     CODES, SCALE, %ymm\acc1
        vpmovsxbd       \b*BB+18(ROW), CODES
        vcvtdq2ps       CODES, CODES
        vfmadd231ps     CODES, SCALE, %ymm\acc2
        vpmovsxbd       \b*BB+26(ROW), CODES
        vcvtdq2ps       CODES, CODES
        vfmadd231ps     CODES, SCALE, %ymm\acc3
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

/* One group of nblk (1..3) blocks over every token, then on to the next group. */
        .macro  GROUP nblk
        movq            COEF, CP
        movq            OUT, OP
        movq            COLS, C
.Ltoken\nblk:
        testq           C, C
        jz              .Lgroup_done\nblk
        each            \nblk, zero
        movq            BT, ROW
        xorl            %r15d, %r15d            /* J = 0 */
        cmpq            RANK, J
        jae             .Lstore\nblk
        .balign 16
.Lrow\nblk:
        vbroadcastss    (CP,J,4), COEFJ
        each            \nblk, block
        addq            RB, ROW
        incq            J
        cmpq            RANK, J
        jb              .Lrow\nblk
.Lstore\nblk:
        each            \nblk, store
        addq            CS, CP
        addq            OS, OP
        decq            C
        jmp             .Ltoken\nblk
.Lgroup_done\nblk:
        addq            $\nblk*BB, BT
        addq            $\nblk*128, OUT
        subq            $\nblk, NB
        jmp             .Lgroup
        .endm

        .text
        .globl  lila_lora_up_avx2
        .type   lila_lora_up_avx2, @function
        .balign 32
lila_lora_up_avx2:
        pushq           %rbx
        pushq           %rbp
        pushq           %r12
        pushq           %r13
        pushq           %r14
        pushq           %r15
        /* stack arguments above the six saved registers and the return address */
        movq            56(%rsp), COLS
        movq            64(%rsp), OUT
        movq            72(%rsp), OS
        shlq            $2, OS
        shlq            $2, CS
.Lgroup:
        cmpq            $3, NB
        jae             .Lgroup3
        cmpq            $2, NB
        je              .Lgroup2
        cmpq            $1, NB
        je              .Lgroup1
        vzeroupper
        popq            %r15
        popq            %r14
        popq            %r13
        popq            %r12
        popq            %rbp
        popq            %rbx
        ret

.Lgroup3:
        GROUP   3
.Lgroup2:
        GROUP   2
.Lgroup1:
        GROUP   1
        .size   lila_lora_up_avx2, .-lila_lora_up_avx2

        .section .note.GNU-stack,"",@progbits
