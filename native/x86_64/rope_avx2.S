/* Rotary position embedding, in place, over `heads` heads of head_dim floats.
 *
 * void lila_rope_neox_avx2(float *x, size_t heads, size_t head_dim, size_t rot_dim,
 *                          const float *cos_sin);
 * void lila_rope_interleaved_avx2(float *x, size_t heads, size_t head_dim,
 *                                 size_t rot_dim, const float *cos_sin);
 *
 * cos_sin: half = rot_dim / 2 cosines, then half sines. Pair j (j < half) of a head is
 * rotated by angle j:  a' = a cos - b sin,  b' = b cos + a sin.
 *   neox:        a = x[j], b = x[j + half]    eight pairs a step, x1 and x2 rows apart
 *   interleaved: a = x[2j], b = x[2j + 1]    four pairs (one ymm of x) a step; cos and
 *                sin are spread to [c0 c0 c1 c1 ...], and a' / b' come from one
 *                vfmaddsub: x * cos -/+ swap_pairs(x) * sin (even lanes subtract).
 * The pairs left over (half % 8, resp. half % 4) take one masked step, so nothing past
 * rot_dim is read or written; dims rot_dim..head_dim are left alone.
 *
 * Registers: ymm0 cos, ymm1 sin, ymm2-5 x and products, ymm6 the tail mask (x lanes),
 * ymm7 the tail mask (cos/sin lanes, interleaved), ymm8 the vpermps spread index.
 */

#define X       %rdi    /* head 0; advances one head at a time */
#define HEADS   %rsi
#define HDB     %rdx    /* head_dim, then in bytes */
#define HALFB   %rcx    /* rot_dim, then half, then half in bytes: x1 -> x2, cos -> sin */
#define COS     %r8
#define SIN     %r9     /* COS + HALFB */
#define J       %rax    /* byte offset in cos (neox: and in x) */
#define FULLB   %r10    /* bytes of cos covered by full steps */
#define XP      %r11    /* neox: the head's x2; interleaved: cursor into x */

        .section .rodata
        .balign 32
.Lmask: .rept 8; .long -1; .endr; .rept 8; .long 0; .endr  /* first k lanes: .Lmask + 32 - 4k */
.Lspread: .long 0, 0, 1, 1, 2, 2, 3, 3

        .text
/* Common entry: bytes of a head, half in bytes, the sines; returns if nothing to do. */
        .macro  ROPE_ENTRY
        testq   HEADS, HEADS
        jz      9f
        shrq    $1, HALFB               /* half */
        jz      9f
        shlq    $2, HDB
        leaq    (COS,HALFB,4), SIN
        .endm

        .globl  lila_rope_neox_avx2
        .type   lila_rope_neox_avx2, @function
lila_rope_neox_avx2:
        ROPE_ENTRY
        movq    HALFB, J
        andq    $7, J
        leaq    .Lmask+32(%rip), FULLB
        negq    J
        vmovups (FULLB,J,4), %ymm6      /* first half % 8 lanes */
        movq    HALFB, FULLB
        andq    $-8, FULLB
        shlq    $2, FULLB
        shlq    $2, HALFB
1:      xorl    %eax, %eax              /* J = 0: next head */
        leaq    (X,HALFB), XP           /* x2 of this head */
        cmpq    FULLB, J
        jae     3f
2:      vmovups (COS,J), %ymm0
        vmovups (SIN,J), %ymm1
        vmovups (X,J), %ymm2            /* a */
        vmovups (XP,J), %ymm3           /* b */
        vmulps  %ymm1, %ymm3, %ymm4     /* b sin */
        vmulps  %ymm1, %ymm2, %ymm5     /* a sin */
        vfmsub213ps %ymm4, %ymm0, %ymm2 /* a cos - b sin */
        vfmadd213ps %ymm5, %ymm0, %ymm3 /* b cos + a sin */
        vmovups %ymm2, (X,J)
        vmovups %ymm3, (XP,J)
        addq    $32, J
        cmpq    FULLB, J
        jb      2b
3:      cmpq    HALFB, J
        jae     4f
        vmaskmovps (COS,J), %ymm6, %ymm0
        vmaskmovps (SIN,J), %ymm6, %ymm1
        vmaskmovps (X,J), %ymm6, %ymm2
        vmaskmovps (XP,J), %ymm6, %ymm3
        vmulps  %ymm1, %ymm3, %ymm4
        vmulps  %ymm1, %ymm2, %ymm5
        vfmsub213ps %ymm4, %ymm0, %ymm2
        vfmadd213ps %ymm5, %ymm0, %ymm3
        vmaskmovps %ymm2, %ymm6, (X,J)
        vmaskmovps %ymm3, %ymm6, (XP,J)
4:      addq    HDB, X
        decq    HEADS
        jnz     1b
9:      vzeroupper
        ret
        .size   lila_rope_neox_avx2, .-lila_rope_neox_avx2

        .globl  lila_rope_interleaved_avx2
        .type   lila_rope_interleaved_avx2, @function
lila_rope_interleaved_avx2:
        ROPE_ENTRY
        movq    HALFB, J
        andq    $3, J
        leaq    .Lmask+32(%rip), FULLB
        negq    J
        vmovups (FULLB,J,8), %ymm6      /* first 2 (half % 4) lanes: x */
        vmovups (FULLB,J,4), %xmm7      /* first half % 4 lanes: cos, sin */
        vmovdqu .Lspread(%rip), %ymm8
        movq    HALFB, FULLB
        andq    $-4, FULLB
        shlq    $2, FULLB
        shlq    $2, HALFB
1:      xorl    %eax, %eax
        movq    X, XP
        cmpq    FULLB, J
        jae     3f
2:      vmovups (COS,J), %xmm0
        vmovups (SIN,J), %xmm1
        vmovups (XP), %ymm2             /* a0 b0 a1 b1 a2 b2 a3 b3 */
        vpermps %ymm0, %ymm8, %ymm0     /* c0 c0 c1 c1 ... */
        vpermps %ymm1, %ymm8, %ymm1
        vpermilps $0xb1, %ymm2, %ymm3   /* b0 a0 b1 a1 ... */
        vmulps  %ymm1, %ymm3, %ymm3
        vfmaddsub213ps %ymm3, %ymm0, %ymm2      /* a c - b s, b c + a s */
        vmovups %ymm2, (XP)
        addq    $32, XP
        addq    $16, J
        cmpq    FULLB, J
        jb      2b
3:      cmpq    HALFB, J
        jae     4f
        vmaskmovps (COS,J), %xmm7, %xmm0
        vmaskmovps (SIN,J), %xmm7, %xmm1
        vmaskmovps (XP), %ymm6, %ymm2
        vpermps %ymm0, %ymm8, %ymm0
        vpermps %ymm1, %ymm8, %ymm1
        vpermilps $0xb1, %ymm2, %ymm3
        vmulps  %ymm1, %ymm3, %ymm3
        vfmaddsub213ps %ymm3, %ymm0, %ymm2
        vmaskmovps %ymm2, %ymm6, (XP)
4:      addq    HDB, X
        decq    HEADS
        jnz     1b
9:      vzeroupper
        ret
        .size   lila_rope_interleaved_avx2, .-lila_rope_interleaved_avx2

        .section .note.GNU-stack,"",@progbits
