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
#define COEFJ   %xmm12
#define SCALE   %zmm13
#define CODES   %zmm14

/* What a group does with each of its blocks b, whose accumulators are %zmm<acc0, acc1>
 * (register numbers): zero them; add coef[c][j] * d * the 32 codes of block b of row j;
 * store them to token c's outputs. */
        .macro  block b, acc0, acc1
        movzwl          \b*BB(ROW), %eax
        vmovd           %eax, %xmm13
        vcvtph2ps       %xmm13, %xmm13
        vmulss          %xmm12, %xmm13, %xmm13
        vbroadcastss    %xmm13, SCALE
        vpmovsxbd       \b*BB+2(ROW), CODES
        vcvtdq2ps       CODES, CODES
        vfmadd231ps     CODES, SCALE, %zmm\acc0
        vpmovsxbd       \b*BB+18(ROW), CODES
        vcvtdq2ps       CODES, CODES
        vfmadd231ps     CODES, SCALE, %zmm\acc1
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
        vmovss          (CP,J,4), COEFJ
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
        .globl  lila_lora_up_avx512
        .type   lila_lora_up_avx512, @function
        .balign 32
lila_lora_up_avx512:
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
        .size   lila_lora_up_avx512, .-lila_lora_up_avx512

        .section .note.GNU-stack,"",@progbits
