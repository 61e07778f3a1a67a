/* lila_rmsnorm_avx512, lila_rmsnorm_q8_avx512: RMS normalisation of one row (AVX512F).
 *
 * void lila_rmsnorm_avx512(const float *x, const float *w, size_t n, float eps, float *out);
 * void lila_rmsnorm_q8_avx512(const float *x, const float *w, size_t n, float eps,
 *                             lila_q8 *out);                            n % 32 == 0
 *
 * Pass 1: sum of x^2 in four zmm accumulators (64 partial sums), then
 * scale = 1 / sqrt(sum / n + eps). Pass 2: y = (x * scale) * w, stored (rmsnorm; out may
 * be x, every element is read before its own slot is written) or quantized a block of
 * 32 at a time with the macro of lila_quantize_q8_avx512, so the fp32 row is never
 * written. Both functions share pass 1 and the formula of y, so rmsnorm_q8 gives the
 * bits of rmsnorm followed by quantize_q8 of this family.
 * rmsnorm takes any n: the last n % 16 elements use a k-mask, and masked-off lanes of
 * an AVX-512 load or store are neither accessed nor faulted on.
 *
 * Registers: zmm0-3 data, zmm4-6 scratch (xmm6 eps in pass 1), zmm7-10 accumulators,
 * zmm10 scale (pass 2), zmm12-15 constants of the q8 macro; k1 scratch, k2 tail mask.
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

#define ACC0    %zmm7
#define ACC1    %zmm8
#define ACC2    %zmm9
#define ACC3    %zmm10
#define SCALE   %zmm10  /* pass 2: the accumulators are dead by then */
#define EPS     %xmm6   /* eps, pass 1 */
#define TAIL    %k2     /* the first n % 16 lanes */
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
        .balign 2
.Ltails:        /* (1 << r) - 1, r < 16 */
        .word   0x0000, 0x0001, 0x0003, 0x0007, 0x000f, 0x001f, 0x003f, 0x007f
        .word   0x00ff, 0x01ff, 0x03ff, 0x07ff, 0x0fff, 0x1fff, 0x3fff, 0x7fff

/* TAIL = (1 << LEFT) - 1 for LEFT < 16, from a table: a shift would need cl, and rcx
 * is OUT (bzhi would need BMI2 on top of AVX512F) */
        .macro tail_mask
        leaq            .Ltails(%rip), TMP
        movzwl          (TMP, LEFT, 2), %eax
        kmovw           %eax, TAIL
        .endm

/* sumsq_scale: xmm0 (eps) -> SCALE = 1 / sqrt(sum(x^2) / n + eps) in every lane.
 * Reads x[0..n) exactly; leaves PX, LEFT clobbered. */
        .macro sumsq_scale
        vmovaps         %xmm0, EPS              /* xmm0 is about to hold data */
        vpxord          ACC0, ACC0, ACC0
        vpxord          ACC1, ACC1, ACC1
        vpxord          ACC2, ACC2, ACC2
        vpxord          ACC3, ACC3, ACC3
        movq            X, PX
        movq            N, LEFT
        cmpq            $64, LEFT
        jb              .Lsq16\@
.Lsq64\@:
        vmovups         0(PX), %zmm0
        vmovups         64(PX), %zmm1
        vmovups         128(PX), %zmm2
        vmovups         192(PX), %zmm3
        vfmadd231ps     %zmm0, %zmm0, ACC0
        vfmadd231ps     %zmm1, %zmm1, ACC1
        vfmadd231ps     %zmm2, %zmm2, ACC2
        vfmadd231ps     %zmm3, %zmm3, ACC3
        addq            $256, PX
        subq            $64, LEFT
        cmpq            $64, LEFT
        jae             .Lsq64\@
.Lsq16\@:
        cmpq            $16, LEFT
        jb              .Lsqtail\@
        vmovups         0(PX), %zmm0
        vfmadd231ps     %zmm0, %zmm0, ACC0
        addq            $64, PX
        subq            $16, LEFT
        jmp             .Lsq16\@
.Lsqtail\@:
        testq           LEFT, LEFT
        jz              .Lsqsum\@
        tail_mask
        vmovups         0(PX), %zmm0{TAIL}{z}
        vfmadd231ps     %zmm0, %zmm0, ACC1
.Lsqsum\@:
        vaddps          ACC1, ACC0, ACC0
        vaddps          ACC3, ACC2, ACC2
        vaddps          ACC2, ACC0, ACC0
        vextractf64x4   $1, ACC0, %ymm1
        vaddps          %ymm1, %ymm7, %ymm1             /* ymm7 = low half of ACC0 */
        vextractf128    $1, %ymm1, %xmm2
        vaddps          %xmm2, %xmm1, %xmm1
        vmovhlps        %xmm1, %xmm1, %xmm2
        vaddps          %xmm2, %xmm1, %xmm1
        vmovshdup       %xmm1, %xmm2
        vaddss          %xmm2, %xmm1, %xmm1             /* sum(x^2) */
        vcvtsi2ssq      N, %xmm2, %xmm2
        vdivss          %xmm2, %xmm1, %xmm1             /* mean */
        vaddss          EPS, %xmm1, %xmm1               /* + eps */
        vsqrtss         %xmm1, %xmm1, %xmm1             /* rms */
        vmovss          .Lone(%rip), %xmm2
        vdivss          %xmm1, %xmm2, %xmm1             /* 1 / rms */
        vbroadcastss    %xmm1, SCALE
        .endm

        .text
        .globl  lila_rmsnorm_avx512
        .type   lila_rmsnorm_avx512, @function
        .balign 32
lila_rmsnorm_avx512:
        testq           N, N
        jz              .Lnorm_done
        sumsq_scale
        movq            X, PX
        movq            W, PW
        movq            OUT, PO
        movq            N, LEFT
        cmpq            $64, LEFT
        jb              .Lnorm16
        .balign 16
.Lnorm64:
        vmulps          0(PX), SCALE, %zmm0
        vmulps          64(PX), SCALE, %zmm1
        vmulps          128(PX), SCALE, %zmm2
        vmulps          192(PX), SCALE, %zmm3
        vmulps          0(PW), %zmm0, %zmm0
        vmulps          64(PW), %zmm1, %zmm1
        vmulps          128(PW), %zmm2, %zmm2
        vmulps          192(PW), %zmm3, %zmm3
        vmovups         %zmm0, 0(PO)
        vmovups         %zmm1, 64(PO)
        vmovups         %zmm2, 128(PO)
        vmovups         %zmm3, 192(PO)
        addq            $256, PX
        addq            $256, PW
        addq            $256, PO
        subq            $64, LEFT
        cmpq            $64, LEFT
        jae             .Lnorm64
.Lnorm16:
        cmpq            $16, LEFT
        jb              .Lnormtail
        vmulps          0(PX), SCALE, %zmm0
        vmulps          0(PW), %zmm0, %zmm0
        vmovups         %zmm0, 0(PO)
        addq            $64, PX
        addq            $64, PW
        addq            $64, PO
        subq            $16, LEFT
        jmp             .Lnorm16
.Lnormtail:
        testq           LEFT, LEFT
        jz              .Lnorm_done
        tail_mask
        vmulps          0(PX), SCALE, %zmm0{TAIL}{z}
        vmulps          0(PW), %zmm0, %zmm0{TAIL}{z}
        vmovups         %zmm0, 0(PO){TAIL}
.Lnorm_done:
        vzeroupper
        ret
        .size   lila_rmsnorm_avx512, .-lila_rmsnorm_avx512

        .globl  lila_rmsnorm_q8_avx512
        .type   lila_rmsnorm_q8_avx512, @function
        .balign 32
lila_rmsnorm_q8_avx512:
        cmpq            $32, N
        jb              .Lq8_done
        sumsq_scale
        vbroadcastss    .Labs(%rip), ABSMASK
        vbroadcastss    .L127(%rip), C127
        vbroadcastss    .Lone(%rip), ONE
        vpxord          ZERO, ZERO, ZERO
        movq            X, PX
        movq            W, PW
        movq            OUT, PO
        movq            N, LEFT
        shrq            $5, LEFT
        .balign 16
.Lq8_block:
        vmulps          0(PX), SCALE, %zmm0
        vmulps          64(PX), SCALE, %zmm1
        vmulps          0(PW), %zmm0, %zmm0
        vmulps          64(PW), %zmm1, %zmm1
        q8_block_avx512 0, 1, 2, 3, 4, PO, ABSMASK, C127, ONE, ZERO
        subq            $-128, PX               /* imm8, where $128 would need imm32 */
        subq            $-128, PW
        addq            $LILA_Q8_BYTES, PO
        decq            LEFT
        jnz             .Lq8_block
.Lq8_done:
        vzeroupper
        ret
        .size   lila_rmsnorm_q8_avx512, .-lila_rmsnorm_q8_avx512

        .section .note.GNU-stack,"",@progbits
