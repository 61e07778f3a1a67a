/* Gated activations: out[i] = act(gate[i]) * up[i], i < n, any n; out may be gate or up.
 *
 * void lila_silu_mul_avx2(const float *gate, const float *up, size_t n, float *out);
 * void lila_gelu_mul_avx2(const float *gate, const float *up, size_t n, float *out);
 *
 * Both activations are g * sigmoid(z): silu has z = g; the tanh-approximated gelu
 * 0.5 g (1 + tanh(y)), y = sqrt(2/pi) (g + 0.044715 g^3), is g * sigmoid(2y), since
 * 0.5 (1 + tanh(y)) = 1 / (1 + exp(-2y)). That form has no 1 + tanh cancellation for
 * negative g.
 *
 * sigmoid(z) with e = exp(-|z|), which never overflows:
 *      z >= 0: 1 / (1 + e)        z < 0: e / (1 + e)
 * one division with the numerator picked by z's sign bit. Huge |z| (even z = +-inf
 * from g^3) gives e = 0 and so exactly 1 or 0: silu(-1e4) = -0, silu(1e4) = 1e4.
 *
 * Eight lanes per step; the last n % 8 go through the same body with masked loads and
 * stores, so nothing outside the n floats is read or written. Every load of a step
 * comes before its store, which is why out may alias an input.
 *
 * Registers: ymm0 g (then the result), ymm1 up, ymm2 z, ymm3 e, ymm4 1 + e, ymm5 the
 * numerator then sigmoid(z), ymm7 exp's scratch, ymm6 the tail mask.
 */
#include "exp_avx2.inc"

#define GATE    %rdi    /* advances 32 bytes a step */
#define UP      %rsi
#define N       %rdx    /* floats left */
#define OUT     %rcx

        .section .rodata
        .balign 32
.Lmask: .rept 8; .long -1; .endr; .rept 8; .long 0; .endr  /* first k lanes: .Lmask + 32 - 4k */
.Lsign: .rept 8; .long 0x80000000; .endr
.Lgelu_k1: .rept 8; .float 1.5957691216057308; .endr       /* 2 sqrt(2/pi) */
.Lgelu_k3: .rept 8; .float 0.0713548162726009; .endr       /* 2 sqrt(2/pi) * 0.044715 */
        EXP_PS_CONSTANTS

        .text

/* One kernel: eight lanes a step, then one masked step for the n % 8 left. */
        .macro  GLU name, gelu
        .globl  \name
        .type   \name, @function
\name:
        cmpq    $8, N
        jb      2f
1:      vmovups (GATE), %ymm0
        vmovups (UP), %ymm1
        GLU_BODY \gelu
        vmovups %ymm0, (OUT)
        addq    $32, GATE
        addq    $32, UP
        addq    $32, OUT
        subq    $8, N
        cmpq    $8, N
        jae     1b
2:      testq   N, N
        jz      3f
        leaq    .Lmask+32(%rip), %rax
        negq    N
        vmovups (%rax,N,4), %ymm6
        vmaskmovps (GATE), %ymm6, %ymm0
        vmaskmovps (UP), %ymm6, %ymm1
        GLU_BODY \gelu
        vmaskmovps %ymm0, %ymm6, (OUT)
3:      vzeroupper
        ret
        .size   \name, .-\name
        .endm

/* ymm0 = act(g) * up, from g in ymm0 and up in ymm1. */
        .macro  GLU_BODY gelu
        .if \gelu
        vmulps  %ymm0, %ymm0, %ymm2
        vmulps  .Lgelu_k3(%rip), %ymm2, %ymm2
        vaddps  .Lgelu_k1(%rip), %ymm2, %ymm2
        vmulps  %ymm0, %ymm2, %ymm2             /* z = g (k1 + k3 g^2) = 2y */
        .else
        vmovaps %ymm0, %ymm2                    /* z = g */
        .endif
        vorps   .Lsign(%rip), %ymm2, %ymm3      /* -|z|: exp's argument is never > 0 */
        EXP_PS  %ymm3, %ymm4, %ymm5, %ymm7      /* e = exp(-|z|) in [0, 1] */
        vaddps  .Lexp_one(%rip), %ymm3, %ymm4   /* 1 + e, in [1, 2] */
        vmovaps .Lexp_one(%rip), %ymm5
        vblendvps %ymm2, %ymm3, %ymm5, %ymm5    /* z < 0 (sign bit, -0 too): e, else 1 */
        vdivps  %ymm4, %ymm5, %ymm5             /* sigmoid(z) */
        vmulps  %ymm5, %ymm0, %ymm0
        vmulps  %ymm1, %ymm0, %ymm0
        .endm

        GLU     lila_silu_mul_avx2, 0
        GLU     lila_gelu_mul_avx2, 1

        .section .note.GNU-stack,"",@progbits
