/* lila_add_avx2: element-wise sum of two rows.
 *
 * void lila_add_avx2(const float *a, const float *b, size_t n, float *out);
 *
 * out[i] = a[i] + b[i]; out may be a or b (each element is read before its slot is
 * written). 32 floats a step, then 8, then the last n % 8 through vmaskmovps, which
 * neither reads nor writes the masked-off lanes, so any n is safe.
 */
#define A       %rdi    /* first addend */
#define B       %rsi    /* second addend */
#define N       %rdx    /* elements left */
#define OUT     %rcx    /* sum */
#define TMP     %rax
#define MASK    %ymm4

        .section .rodata
        .balign 32
/* 8 x -1 then 8 x 0: the 8 dwords at .Lmasks + 4 * (8 - r) have their first r set */
.Lmasks:
        .long   -1, -1, -1, -1, -1, -1, -1, -1
        .long   0, 0, 0, 0, 0, 0, 0, 0

        .text
        .globl  lila_add_avx2
        .type   lila_add_avx2, @function
        .balign 32
lila_add_avx2:
        cmpq            $32, N
        jb              .L8
        .balign 16
.L32:
        vmovups         0(A), %ymm0
        vmovups         32(A), %ymm1
        vmovups         64(A), %ymm2
        vmovups         96(A), %ymm3
        vaddps          0(B), %ymm0, %ymm0
        vaddps          32(B), %ymm1, %ymm1
        vaddps          64(B), %ymm2, %ymm2
        vaddps          96(B), %ymm3, %ymm3
        vmovups         %ymm0, 0(OUT)
        vmovups         %ymm1, 32(OUT)
        vmovups         %ymm2, 64(OUT)
        vmovups         %ymm3, 96(OUT)
        addq            $128, A
        addq            $128, B
        addq            $128, OUT
        subq            $32, N
        cmpq            $32, N
        jae             .L32
.L8:
        cmpq            $8, N
        jb              .Ltail
        vmovups         0(A), %ymm0
        vaddps          0(B), %ymm0, %ymm0
        vmovups         %ymm0, 0(OUT)
        addq            $32, A
        addq            $32, B
        addq            $32, OUT
        subq            $8, N
        jmp             .L8
.Ltail:
        testq           N, N
        jz              .Ldone
        leaq            .Lmasks+32(%rip), TMP
        shlq            $2, N
        subq            N, TMP
        vmovdqu         (TMP), MASK
        vmaskmovps      (A), MASK, %ymm0
        vmaskmovps      (B), MASK, %ymm1
        vaddps          %ymm1, %ymm0, %ymm0
        vmaskmovps      %ymm0, MASK, (OUT)
.Ldone:
        vzeroupper
        ret
        .size   lila_add_avx2, .-lila_add_avx2

        .section .note.GNU-stack,"",@progbits
