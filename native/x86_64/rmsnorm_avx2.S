/* lila_rmsnorm_avx2, lila_rmsnorm_q8_avx2: RMS normalisation of one row.
 *
 * void lila_rmsnorm_avx2(const float *x, const float *w, size_t n, float eps, float *out);
 * void lila_rmsnorm_q8_avx2(const float *x, const float *w, size_t n, float eps,
 *                           lila_q8 *out);                              n % 32 == 0
 *
 * Pass 1: sum of x^2 in four ymm accumulators (32 partial sums, which also keeps the
 * fp32 rounding error near that of a pairwise sum), scale = 1 / sqrt(sum / n + eps).
 * Pass 2: y = (x * scale) * w, stored (rmsnorm; out may be x, every element is read
 * before its own slot is written) or quantized a block of 32 at a time to lila_q8 with
 * the same macro as lila_quantize_q8_avx2, so the fp32 row is never written.
 * rmsnorm takes any n: the last n % 8 elements go through vmaskmovps, which neither
 * reads nor writes (nor faults on) the masked-off lanes.
 *
 * Registers: ymm0-3 data, ymm4-6 scratch (xmm6 eps in pass 1), ymm7-10 accumulators,
 * ymm10 scale (pass 2), ymm11-15 constants of the q8 macro; ymm9 the tail mask.
 */
#define X       %rdi    /* input row */
#define W       %rsi    /* norm weights */
#define N       %rdx    /* elements */
#define OUT     %rcx    /* output row (rmsnorm) or lila_q8 blocks (rmsnorm_q8) */
#define PX      %r8     /* x cursor */
#define PW      %r9     /* w cursor */
#define PO      %r10    /* out cursor */
#define LEFT    %r11    /* elements (or blocks) left */
#define TMP     %rax

#define ACC0    %ymm7
#define ACC1    %ymm8
#define ACC2    %ymm9
#define ACC3    %ymm10
#define SCALE   %ymm10  /* pass 2: the accumulators are dead by then */
#define MASK    %ymm9   /* tail mask, pass 2 of rmsnorm */
#define EPS     %xmm6   /* eps, pass 1 */
#define ABSMASK %ymm11
#define C127    %ymm12
#define ONE     %ymm13
#define ZERO    %ymm14
#define PERM    %ymm15

#include "quantize_q8_avx2.inc"

        .section .rodata
        .balign 32
/* 8 x -1 then 8 x 0: the 8 dwords at .Lmasks + 4 * (8 - r) have their first r set */
.Lmasks:
        .long   -1, -1, -1, -1, -1, -1, -1, -1
        .long   0, 0, 0, 0, 0, 0, 0, 0
.Lperm: .long   0, 4, 1, 5, 2, 6, 3, 7
.Labs:  .long   0x7fffffff
.L127:  .float  127.0
.Lone:  .float  1.0

/* sumsq_scale: xmm0 (eps) -> SCALE = 1 / sqrt(sum(x^2) / n + eps) in every lane.
 * Reads x[0..n) through vmaskmovps for the last n % 8; leaves PX, LEFT clobbered. */
        .macro sumsq_scale
        vmovaps         %xmm0, EPS              /* xmm0 is about to hold data */
        vxorps          ACC0, ACC0, ACC0
        vxorps          ACC1, ACC1, ACC1
        vxorps          ACC2, ACC2, ACC2
        vxorps          ACC3, ACC3, ACC3
        movq            X, PX
        movq            N, LEFT
        cmpq            $32, LEFT
        jb              .Lsq8\@
.Lsq32\@:
        vmovups         0(PX), %ymm0
        vmovups         32(PX), %ymm1
        vmovups         64(PX), %ymm2
        vmovups         96(PX), %ymm3
        vfmadd231ps     %ymm0, %ymm0, ACC0
        vfmadd231ps     %ymm1, %ymm1, ACC1
        vfmadd231ps     %ymm2, %ymm2, ACC2
        vfmadd231ps     %ymm3, %ymm3, ACC3
        addq            $128, PX
        subq            $32, LEFT
        cmpq            $32, LEFT
        jae             .Lsq32\@
.Lsq8\@:
        cmpq            $8, LEFT
        jb              .Lsqtail\@
        vmovups         0(PX), %ymm0
        vfmadd231ps     %ymm0, %ymm0, ACC0
        addq            $32, PX
        subq            $8, LEFT
        jmp             .Lsq8\@
.Lsqtail\@:
        testq           LEFT, LEFT
        jz              .Lsqsum\@
        leaq            .Lmasks+32(%rip), TMP
        shlq            $2, LEFT
        subq            LEFT, TMP
        vmovdqu         (TMP), %ymm4
        vmaskmovps      (PX), %ymm4, %ymm0
        vfmadd231ps     %ymm0, %ymm0, ACC1
.Lsqsum\@:
        vaddps          ACC1, ACC0, ACC0
        vaddps          ACC3, ACC2, ACC2
        vaddps          ACC2, ACC0, ACC0
        vextractf128    $1, ACC0, %xmm1
        vaddps          %xmm1, %xmm7, %xmm1             /* xmm7 = low half of ACC0 */
        vmovhlps        %xmm1, %xmm1, %xmm2
        vaddps          %xmm2, %xmm1, %xmm1
        vmovshdup       %xmm1, %xmm2
        vaddss          %xmm2, %xmm1, %xmm1             /* sum(x^2) */
        vcvtsi2ssq      N, %xmm2, %xmm2
        vdivss          %xmm2, %xmm1, %xmm1             /* mean */
        vaddss          EPS, %xmm1, %xmm1               /* + eps */
        vsqrtss         %xmm1, %xmm1, %xmm1             /* rms */
        vbroadcastss    .Lone(%rip), %ymm2
        vdivss          %xmm1, %xmm2, %xmm1             /* 1 / rms */
        vbroadcastss    %xmm1, SCALE
        .endm

        .text
        .globl  lila_rmsnorm_avx2
        .type   lila_rmsnorm_avx2, @function
        .balign 32
lila_rmsnorm_avx2:
        testq           N, N
        jz              .Lnorm_done
        sumsq_scale
        movq            X, PX
        movq            W, PW
        movq            OUT, PO
        movq            N, LEFT
        cmpq            $32, LEFT
        jb              .Lnorm8
        .balign 16
.Lnorm32:
        vmulps          0(PX), SCALE, %ymm0
        vmulps          32(PX), SCALE, %ymm1
        vmulps          64(PX), SCALE, %ymm2
        vmulps          96(PX), SCALE, %ymm3
        vmulps          0(PW), %ymm0, %ymm0
        vmulps          32(PW), %ymm1, %ymm1
        vmulps          64(PW), %ymm2, %ymm2
        vmulps          96(PW), %ymm3, %ymm3
        vmovups         %ymm0, 0(PO)
        vmovups         %ymm1, 32(PO)
        vmovups         %ymm2, 64(PO)
        vmovups         %ymm3, 96(PO)
        addq            $128, PX
        addq            $128, PW
        addq            $128, PO
        subq            $32, LEFT
        cmpq            $32, LEFT
        jae             .Lnorm32
.Lnorm8:
        cmpq            $8, LEFT
        jb              .Lnormtail
        vmulps          0(PX), SCALE, %ymm0
        vmulps          0(PW), %ymm0, %ymm0
        vmovups         %ymm0, 0(PO)
        addq            $32, PX
        addq            $32, PW
        addq            $32, PO
        subq            $8, LEFT
        jmp             .Lnorm8
.Lnormtail:
        testq           LEFT, LEFT
        jz              .Lnorm_done
        leaq            .Lmasks+32(%rip), TMP
        shlq            $2, LEFT
        subq            LEFT, TMP
        vmovdqu         (TMP), MASK
        vmaskmovps      (PX), MASK, %ymm0
        vmaskmovps      (PW), MASK, %ymm1
        vmulps          SCALE, %ymm0, %ymm0
        vmulps          %ymm1, %ymm0, %ymm0
        vmaskmovps      %ymm0, MASK, (PO)
.Lnorm_done:
        vzeroupper
        ret
        .size   lila_rmsnorm_avx2, .-lila_rmsnorm_avx2

        .globl  lila_rmsnorm_q8_avx2
        .type   lila_rmsnorm_q8_avx2, @function
        .balign 32
lila_rmsnorm_q8_avx2:
        cmpq            $32, N
        jb              .Lq8_done
        sumsq_scale
        vbroadcastss    .Labs(%rip), ABSMASK
        vbroadcastss    .L127(%rip), C127
        vbroadcastss    .Lone(%rip), ONE
        vxorps          ZERO, ZERO, ZERO
        vmovdqa         .Lperm(%rip), PERM
        movq            X, PX
        movq            W, PW
        movq            OUT, PO
        movq            N, LEFT
        shrq            $5, LEFT
        .balign 16
.Lq8_block:
        vmulps          0(PX), SCALE, %ymm0
        vmulps          32(PX), SCALE, %ymm1
        vmulps          64(PX), SCALE, %ymm2
        vmulps          96(PX), SCALE, %ymm3
        vmulps          0(PW), %ymm0, %ymm0
        vmulps          32(PW), %ymm1, %ymm1
        vmulps          64(PW), %ymm2, %ymm2
        vmulps          96(PW), %ymm3, %ymm3
        q8_block_avx2   0, 1, 2, 3, 4, 5, 6, PO, ABSMASK, C127, ONE, ZERO, PERM
        addq            $128, PX
        addq            $128, PW
        addq            $LILA_Q8_BYTES, PO
        decq            LEFT
        jnz             .Lq8_block
.Lq8_done:
        vzeroupper
        ret
        .size   lila_rmsnorm_q8_avx2, .-lila_rmsnorm_q8_avx2

        .section .note.GNU-stack,"",@progbits
