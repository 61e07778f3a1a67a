/* What the CPU reports (cpuid) and what the OS saves on a context switch (xgetbv).
 *
 * void lila_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t out[4]);  eax ebx ecx edx
 * uint64_t lila_xgetbv(uint32_t index);   only valid where cpuid.1:ecx.OSXSAVE is set
 */
        .text
        .globl  lila_cpuid
        .type   lila_cpuid, @function
lila_cpuid:
        pushq   %rbx                    /* callee-saved, and cpuid writes it */
        movq    %rdx, %r8               /* out */
        movl    %edi, %eax
        movl    %esi, %ecx
        cpuid
        movl    %eax, 0(%r8)
        movl    %ebx, 4(%r8)
        movl    %ecx, 8(%r8)
        movl    %edx, 12(%r8)
        popq    %rbx
        ret
        .size   lila_cpuid, .-lila_cpuid

        .globl  lila_xgetbv
        .type   lila_xgetbv, @function
lila_xgetbv:
        movl    %edi, %ecx
        xgetbv                          /* edx:eax = XCR[ecx] */
        shlq    $32, %rdx
        movl    %eax, %eax
        orq     %rdx, %rax
        ret
        .size   lila_xgetbv, .-lila_xgetbv

        .section .note.GNU-stack,"",@progbits
