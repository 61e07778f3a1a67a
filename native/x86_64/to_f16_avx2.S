/* lila_to_f16_avx2: fp32 -> fp16, round to nearest even (F16C).
 *
 * void lila_to_f16_avx2(const float *x, size_t n, uint16_t *out);
 *
 * vcvtps2ph with immediate 0 rounds to nearest even whatever MXCSR says, overflows to
 * inf and keeps subnormals, as numpy's astype(float16) does. 32 floats a step, then 8,
 * then one at a time: there is no 16-bit masked store, and the scalar tail keeps every
 * access inside the arrays for any n.
 */
#define X       %rdi    /* input row */
#define N       %rsi    /* elements left */
#define OUT     %rdx    /* fp16 output */

#define RNE     $0      /* vcvtps2ph imm8: bit 2 clear = use this rounding, 00 = nearest */

        .text
        .globl  lila_to_f16_avx2
        .type   lila_to_f16_avx2, @function
        .balign 32
lila_to_f16_avx2:
        cmpq            $32, N
        jb              .L8
        .balign 16
.L32:
        vmovups         0(X), %ymm0
        vmovups         32(X), %ymm1
        vmovups         64(X), %ymm2
        vmovups         96(X), %ymm3
        vcvtps2ph       RNE, %ymm0, 0(OUT)
        vcvtps2ph       RNE, %ymm1, 16(OUT)
        vcvtps2ph       RNE, %ymm2, 32(OUT)
        vcvtps2ph       RNE, %ymm3, 48(OUT)
        addq            $128, X
        addq            $64, OUT
        subq            $32, N
        cmpq            $32, N
        jae             .L32
.L8:
        cmpq            $8, N
        jb              .L1
        vmovups         0(X), %ymm0
        vcvtps2ph       RNE, %ymm0, 0(OUT)
        addq            $32, X
        addq            $16, OUT
        subq            $8, N
        jmp             .L8
.L1:
        testq           N, N
        jz              .Ldone
        vmovss          0(X), %xmm0
        vcvtps2ph       RNE, %xmm0, %xmm0
        vpextrw         $0, %xmm0, 0(OUT)
        addq            $4, X
        addq            $2, OUT
        decq            N
        jmp             .L1
.Ldone:
        vzeroupper
        ret
        .size   lila_to_f16_avx2, .-lila_to_f16_avx2

        .section .note.GNU-stack,"",@progbits
