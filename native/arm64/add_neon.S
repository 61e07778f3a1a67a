/* Residual add, NEON.
 *
 *   void lila_add_neon(const float *a, const float *b, size_t n, float *out);
 *   out[i] = a[i] + b[i]; out may alias a or b.
 *
 * 16 floats a pass, then 4, then one at a time: no access past n.
 */
        .text
        .p2align 4
        .globl  lila_add_neon
        .type   lila_add_neon, %function
lila_add_neon:
        /* x0 a, x1 b, x2 n, x3 out */
1:      cmp     x2, #16
        b.lo    2f
        ld1     {v0.4s-v3.4s}, [x0], #64
        ld1     {v4.4s-v7.4s}, [x1], #64
        fadd    v0.4s, v0.4s, v4.4s
        fadd    v1.4s, v1.4s, v5.4s
        fadd    v2.4s, v2.4s, v6.4s
        fadd    v3.4s, v3.4s, v7.4s
        st1     {v0.4s-v3.4s}, [x3], #64
        sub     x2, x2, #16
        b       1b
2:      cmp     x2, #4
        b.lo    3f
        ld1     {v0.4s}, [x0], #16
        ld1     {v4.4s}, [x1], #16
        fadd    v0.4s, v0.4s, v4.4s
        st1     {v0.4s}, [x3], #16
        sub     x2, x2, #4
        b       2b
3:      cbz     x2, 4f
        ldr     s0, [x0], #4
        ldr     s4, [x1], #4
        fadd    s0, s0, s4
        str     s0, [x3], #4
        sub     x2, x2, #1
        b       3b
4:      ret
        .size   lila_add_neon, . - lila_add_neon

        .section .note.GNU-stack, "", %progbits
