/* lila_add_avx512: element-wise sum of two rows (AVX512F).
 *
 * void lila_add_avx512(const float *a, const float *b, size_t n, float *out);
 *
 * out[i] = a[i] + b[i]; out may be a or b (each element is read before its slot is
 * written). 64 floats a step, then 16, then the last n % 16 under a k-mask: masked-off
 * lanes of an AVX-512 load or store are neither accessed nor faulted on, so any n is safe.
 */
#define A       %rdi    /* first addend */
#define B       %rsi    /* second addend */
#define N       %rdx    /* elements left */
#define OUT     %rcx    /* sum */
#define TMP     %rax
#define TAIL    %k1

        .section .rodata
        .balign 2
.Ltails:        /* (1 << r) - 1, r < 16: no shift through cl, which holds OUT */
        .word   0x0000, 0x0001, 0x0003, 0x0007, 0x000f, 0x001f, 0x003f, 0x007f
        .word   0x00ff, 0x01ff, 0x03ff, 0x07ff, 0x0fff, 0x1fff, 0x3fff, 0x7fff

        .text
        .globl  lila_add_avx512
        .type   lila_add_avx512, @function
        .balign 32
lila_add_avx512:
        cmpq            $64, N
        jb              .L16
        .balign 16
.L64:
        vmovups         0(A), %zmm0
        vmovups         64(A), %zmm1
        vmovups         128(A), %zmm2
        vmovups         192(A), %zmm3
        vaddps          0(B), %zmm0, %zmm0
        vaddps          64(B), %zmm1, %zmm1
        vaddps          128(B), %zmm2, %zmm2
        vaddps          192(B), %zmm3, %zmm3
        vmovups         %zmm0, 0(OUT)
        vmovups         %zmm1, 64(OUT)
        vmovups         %zmm2, 128(OUT)
        vmovups         %zmm3, 192(OUT)
        addq            $256, A
        addq            $256, B
        addq            $256, OUT
        subq            $64, N
        cmpq            $64, N
        jae             .L64
.L16:
        cmpq            $16, N
        jb              .Ltail
        vmovups         0(A), %zmm0
        vaddps          0(B), %zmm0, %zmm0
        vmovups         %zmm0, 0(OUT)
        addq            $64, A
        addq            $64, B
        addq            $64, OUT
        subq            $16, N
        jmp             .L16
.Ltail:
        testq           N, N
        jz              .Ldone
        leaq            .Ltails(%rip), TMP
        movzwl          (TMP, N, 2), %eax
        kmovw           %eax, TAIL
        vmovups         0(A), %zmm0{TAIL}{z}
        vaddps          0(B), %zmm0, %zmm0{TAIL}{z}
        vmovups         %zmm0, 0(OUT){TAIL}
.Ldone:
        vzeroupper
        ret
        .size   lila_add_avx512, .-lila_add_avx512

        .section .note.GNU-stack,"",@progbits
