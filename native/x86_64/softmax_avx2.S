/* Softmax of one row, in place: x[i] = exp(x[i] - max x) / sum_j exp(x[j] - max x).
 *
 * void lila_softmax_avx2(float *x, size_t n);      n >= 1
 *
 * Three passes over x, eight floats a step, the last n % 8 as one masked step:
 *   1. m = max x (the tail's absent lanes count as -inf);
 *   2. x[i] = e = exp(x[i] - m) (exp_avx2.inc), s += e (absent lanes zeroed first);
 *      s is summed in double: a long row (32k keys) summed in fp32 lanes drifts by
 *      ~1e-6, which would scale every probability by that;
 *   3. x[i] *= 1 / s (rounded once to fp32).
 * Subtracting m keeps every exp argument <= 0, so nothing overflows and the largest
 * term is exactly 1 (s >= 1). Masked scores (-inf) give exp(-inf) = 0, exactly. A row
 * that is all -inf (no key visible) has m = -inf and comes out NaN, as in numpy.
 *
 * Registers: ymm0 m, then 1 / s; ymm7-8 s (4 doubles each); ymm1 the current eight;
 * ymm2-4 exp's scratch; ymm5 the tail mask; ymm6 -inf.
 */
#include "exp_avx2.inc"

#define X       %rdi    /* the row */
#define N       %rsi
#define P       %rax    /* cursor into x */
#define K       %rcx    /* full steps left */
#define TAIL    %rdx    /* n % 8 */

        .section .rodata
        .balign 32
.Lmask: .rept 8; .long -1; .endr; .rept 8; .long 0; .endr  /* first k lanes: .Lmask + 32 - 4k */
.Lneginf: .rept 8; .long 0xff800000; .endr
.Lone_d: .double 1.0
        EXP_PS_CONSTANTS

        .text
/* s += the eight floats of \e, in double (ymm7: lanes 0-3, ymm8: 4-7); ymm2-3 scratch */
        .macro  SUM_PD e
        vcvtps2pd %xmm\e, %ymm2
        vextractf128 $1, %ymm\e, %xmm3
        vcvtps2pd %xmm3, %ymm3
        vaddpd  %ymm2, %ymm7, %ymm7
        vaddpd  %ymm3, %ymm8, %ymm8
        .endm

        .globl  lila_softmax_avx2
        .type   lila_softmax_avx2, @function
lila_softmax_avx2:
        movq    N, TAIL
        andq    $7, TAIL
        leaq    .Lmask+32(%rip), P
        negq    TAIL
        vmovups (P,TAIL,4), %ymm5               /* first n % 8 lanes (none when 0) */
        negq    TAIL
        vmovaps .Lneginf(%rip), %ymm6

        /* 1. max */
        vmovaps %ymm6, %ymm0
        movq    X, P
        movq    N, K
        shrq    $3, K
        jz      2f
1:      vmaxps  (P), %ymm0, %ymm0               /* NaN in x wins: it is the second source */
        addq    $32, P
        decq    K
        jnz     1b
2:      testq   TAIL, TAIL
        jz      3f
        vmaskmovps (P), %ymm5, %ymm1
        vblendvps %ymm5, %ymm1, %ymm6, %ymm1    /* absent lanes: -inf, not 0 */
        vmaxps  %ymm1, %ymm0, %ymm0
3:      vperm2f128 $1, %ymm0, %ymm0, %ymm1      /* fold to one max in every lane */
        vmaxps  %ymm1, %ymm0, %ymm0
        vpermilps $0x4e, %ymm0, %ymm1
        vmaxps  %ymm1, %ymm0, %ymm0
        vpermilps $0xb1, %ymm0, %ymm1
        vmaxps  %ymm1, %ymm0, %ymm0

        /* 2. exp and sum */
        vxorpd  %ymm7, %ymm7, %ymm7
        vxorpd  %ymm8, %ymm8, %ymm8
        movq    X, P
        movq    N, K
        shrq    $3, K
        jz      5f
4:      vmovups (P), %ymm1
        vsubps  %ymm0, %ymm1, %ymm1
        EXP_PS  %ymm1, %ymm2, %ymm3, %ymm4
        vmovups %ymm1, (P)
        SUM_PD  1
        addq    $32, P
        decq    K
        jnz     4b
5:      testq   TAIL, TAIL
        jz      6f
        vmaskmovps (P), %ymm5, %ymm1
        vsubps  %ymm0, %ymm1, %ymm1
        EXP_PS  %ymm1, %ymm2, %ymm3, %ymm4
        vandps  %ymm5, %ymm1, %ymm1             /* absent lanes held exp(-m) */
        vmaskmovps %ymm1, %ymm5, (P)
        SUM_PD  1
6:      vaddpd  %ymm8, %ymm7, %ymm7
        vextractf128 $1, %ymm7, %xmm1
        vaddpd  %xmm1, %xmm7, %xmm7
        vunpckhpd %xmm7, %xmm7, %xmm1
        vaddsd  %xmm1, %xmm7, %xmm7             /* s */
        vmovsd  .Lone_d(%rip), %xmm0
        vdivsd  %xmm7, %xmm0, %xmm0
        vcvtsd2ss %xmm0, %xmm0, %xmm0
        vbroadcastss %xmm0, %ymm0               /* 1 / s in every lane */

        /* 3. normalise */
        movq    X, P
        movq    N, K
        shrq    $3, K
        jz      8f
7:      vmulps  (P), %ymm0, %ymm1
        vmovups %ymm1, (P)
        addq    $32, P
        decq    K
        jnz     7b
8:      testq   TAIL, TAIL
        jz      9f
        vmaskmovps (P), %ymm5, %ymm1
        vmulps  %ymm1, %ymm0, %ymm1
        vmaskmovps %ymm1, %ymm5, (P)
9:      vzeroupper
        ret
        .size   lila_softmax_avx2, .-lila_softmax_avx2

        .section .note.GNU-stack,"",@progbits
