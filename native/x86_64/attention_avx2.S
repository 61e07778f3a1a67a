/* Attention's two products over the fp16 KV cache, for one head and one query.
 *
 * void lila_attn_scores_avx2(const float *q, const uint16_t *keys, size_t stride,
 *                            size_t n_keys, size_t hd, float scale, float *scores);
 *      scores[t] = scale * dot(q, keys + t * stride)                t < n_keys
 * void lila_attn_values_avx2(const float *p, const uint16_t *values, size_t stride,
 *                            size_t n_values, size_t hd, float *out);
 *      out = sum_t p[t] * (values + t * stride)                     hd floats
 * stride counts fp16 elements; rows are converted with F16C vcvtph2ps, 8 at a time.
 *
 * scores: eight keys a step, each with its own accumulator over hd, so q is loaded
 * once per eight keys and the eight FMA chains overlap. The step's row pointers are
 * R0..R7; a last step with m < 8 keys points R(m)..R7 at R(m-1) (the same row again,
 * never past it) and stores only m scores. The accumulators fold to one ymm of eight
 * dot products (three rounds of vhaddps, then adding the 128-bit halves).
 *
 * values: rows in blocks of 32; within a block, hd in column passes of up to 64, i.e.
 * 8 ymm accumulators that stay in registers while the block's rows stream through
 * (one broadcast of p[t] per row); a last pass of 8..56 columns uses as many
 * accumulators as it needs. Each pass's sums are stored to out (first block) or
 * added to it. Blocking keeps a block's rows (32 * hd * 2 bytes <= 16 KiB at hd 256)
 * in L1 for the passes after the first, and makes out a sum of short fp32 sums,
 * not one chain of n_values roundings (about 10x less error at 4k rows).
 *
 * hd % 8 = r left over, with hd >= 8: the last eight elements of each row are loaded
 * from hd - 8 (overlapping what is done, never past the row's end): scores zero the
 * q lanes already counted, values load and store only the r new lanes of out. hd < 8
 * has no full eight, and takes a plain scalar loop.
 * A non-finite fp16 element in the overlapped lanes can turn that key's +-inf score
 * into NaN (0 * inf); either is unusable.
 *
 * Vector registers: scores: ymm0-7 the eight keys' sums, ymm8 q, ymm9 a key,
 * ymm14 the mask of q's last r lanes, ymm15 scale. values: ymm0-7 the pass's sums,
 * ymm8 a converted row piece, ymm14 the mask of out's last r lanes, ymm15 p[t].
 */

#define Q       %rdi    /* scores: the query */
#define R0      %rsi    /* scores: row 0 of the current step */
#define SB      %rdx    /* stride, then in bytes */
#define N       %rcx    /* keys, resp. value rows, left */
#define HD      %r8
#define OUT     %r9
#define R1      %rax
#define R2      %r10
#define R3      %r11
#define R4      %rbx
#define R5      %rbp
#define R6      %r12
#define R7      %r13
#define FULLB   %r8     /* scores: bytes of hd's full eights (fp16), after hd is read */
#define I       %r14    /* scores: byte offset into the fp16 rows */
#define M       %r15    /* scores: keys in this step */
#define PB      %rdi    /* values: p of the current row block */
#define VB      %rsi    /* values: row 0 of the current row block */
#define ROW     %rax    /* values: the current row */
#define T       %r10    /* values: row index in the block */
#define BN      %rbx    /* values: rows in this block */
#define COL     %rbp    /* values: the pass's first column in VB */
#define OC      %r12    /* values: the pass's first output */
#define HL      %r13    /* values: columns left */
#define FIRST   %r14    /* values: 1 in the first row block: store, not add */
#define BLOCKB  %r15    /* values: bytes of a row block */
#define LOG2_BLOCK_ROWS 5
#define BLOCK_ROWS (1 << LOG2_BLOCK_ROWS)
#define SCALE   %ymm15

        .section .rodata
        .balign 32
        /* first k lanes: .Lmask + 64 - 4k; last k lanes: .Lmask + 4k */
.Lmask: .rept 8; .long 0; .endr; .rept 8; .long -1; .endr; .rept 8; .long 0; .endr

/* Row k of a scores step: the next one while k < m, else row k - 1 again. */
        .macro  NEXT_ROW prev, cur, k
        leaq    (\prev,SB), \cur
        cmpq    $\k, M
        cmovbeq \prev, \cur
        .endm

/* acc += the eight fp16 at row + I, times the q lanes in ymm8 */
        .macro  SCORE_KEY row, acc
        vcvtph2ps (\row,I), %ymm9
        vfmadd231ps %ymm9, %ymm8, \acc
        .endm

        .macro  SCORES_EIGHT
        SCORE_KEY R0, %ymm0
        SCORE_KEY R1, %ymm1
        SCORE_KEY R2, %ymm2
        SCORE_KEY R3, %ymm3
        SCORE_KEY R4, %ymm4
        SCORE_KEY R5, %ymm5
        SCORE_KEY R6, %ymm6
        SCORE_KEY R7, %ymm7
        .endm

        .text
        .globl  lila_attn_scores_avx2
        .type   lila_attn_scores_avx2, @function
lila_attn_scores_avx2:
        addq    SB, SB
        cmpq    $8, HD
        jae     .Lscores_vector

        /* hd < 8: one key at a time, scalar */
1:      vxorps  %xmm1, %xmm1, %xmm1
        xorl    %eax, %eax
2:      movzwl  (R0,%rax,2), %r10d
        vmovd   %r10d, %xmm2
        vcvtph2ps %xmm2, %xmm2
        vfmadd231ss (Q,%rax,4), %xmm2, %xmm1
        incq    %rax
        cmpq    HD, %rax
        jb      2b
        vmulss  %xmm0, %xmm1, %xmm1
        vmovss  %xmm1, (OUT)
        addq    $4, OUT
        addq    SB, R0
        decq    N
        jnz     1b
        vzeroupper
        ret

.Lscores_vector:
        pushq   %rbx
        pushq   %rbp
        pushq   %r12
        pushq   %r13
        pushq   %r14
        pushq   %r15
        vbroadcastss %xmm0, SCALE
        movq    HD, %rax
        andq    $7, %rax                /* r */
        leaq    .Lmask(%rip), %r10
        vmovups (%r10,%rax,4), %ymm14   /* the last r lanes: q lanes not yet counted */
        leaq    -16(HD,HD), %r10
        movq    %r10, -8(%rsp)          /* red zone (no calls): offset of the last eight */
        movq    %rax, -16(%rsp)         /* and r */
        andq    $-8, HD
        addq    HD, HD                  /* FULLB */

.Lscores_step:
        movl    $8, %r15d               /* M = 8 */
        cmpq    M, N
        cmovbq  N, M                    /* m = min(8, keys left) */
        /* Rk = R(k-1) + stride while k < m, else R(k-1): short steps repeat the last row */
        NEXT_ROW R0, R1, 1
        NEXT_ROW R1, R2, 2
        NEXT_ROW R2, R3, 3
        NEXT_ROW R3, R4, 4
        NEXT_ROW R4, R5, 5
        NEXT_ROW R5, R6, 6
        NEXT_ROW R6, R7, 7
        .irp    k, 0, 1, 2, 3, 4, 5, 6, 7
        vxorps  %ymm\k, %ymm\k, %ymm\k
        .endr
        xorl    %r14d, %r14d            /* I = 0 */
1:      vmovups (Q,I,2), %ymm8          /* q is fp32: twice the fp16 offset */
        SCORES_EIGHT
        addq    $16, I
        cmpq    FULLB, I
        jb      1b
        cmpq    $0, -16(%rsp)
        je      2f
        movq    -8(%rsp), I
        vandps  (Q,I,2), %ymm14, %ymm8
        SCORES_EIGHT
        /* fold eight sums of 8 lanes into 8 lanes: after two rounds of pairwise adds,
         * lane k of each 128-bit half of ymm0 (keys 0-3) / ymm4 (keys 4-7) holds that
         * half's part of key k's dot product */
2:      vhaddps %ymm1, %ymm0, %ymm0
        vhaddps %ymm3, %ymm2, %ymm2
        vhaddps %ymm5, %ymm4, %ymm4
        vhaddps %ymm7, %ymm6, %ymm6
        vhaddps %ymm2, %ymm0, %ymm0
        vhaddps %ymm6, %ymm4, %ymm4
        vperm2f128 $0x20, %ymm4, %ymm0, %ymm1
        vperm2f128 $0x31, %ymm4, %ymm0, %ymm2
        vaddps  %ymm2, %ymm1, %ymm0
        vmulps  SCALE, %ymm0, %ymm0
        cmpq    $8, N
        jbe     3f
        vmovups %ymm0, (OUT)
        addq    $32, OUT
        leaq    (R7,SB), R0
        subq    $8, N
        jmp     .Lscores_step
3:      leaq    .Lmask+64(%rip), %rax
        negq    M
        vmovups (%rax,M,4), %ymm1       /* first m lanes */
        vmaskmovps %ymm0, %ymm1, (OUT)
        popq    %r15
        popq    %r14
        popq    %r13
        popq    %r12
        popq    %rbp
        popq    %rbx
        vzeroupper
        ret
        .size   lila_attn_scores_avx2, .-lila_attn_scores_avx2

/* One column pass over a row block: nacc ymm accumulators (8 nacc columns from COL)
 * summed over the block's BN rows from zero, then stored to OC (the first row block)
 * or added to what OC holds; COL and OC then move past the columns. masked: one
 * accumulator, through the lane mask in ymm14, nothing moved. */
        .macro  VALUES_PASS nacc, masked=0
        .irp    k, 0, 1, 2, 3, 4, 5, 6, 7
        .if     \k < \nacc
        vxorps  %ymm\k, %ymm\k, %ymm\k
        .endif
        .endr
        movq    COL, ROW
        xorl    %r10d, %r10d
.Lvalues_row\@:
        vbroadcastss (PB,T,4), %ymm15
        .irp    k, 0, 1, 2, 3, 4, 5, 6, 7
        .if     \k < \nacc
        vcvtph2ps 16*\k(ROW), %ymm8
        vfmadd231ps %ymm8, %ymm15, %ymm\k
        .endif
        .endr
        addq    SB, ROW
        incq    T
        cmpq    BN, T
        jb      .Lvalues_row\@
        testq   FIRST, FIRST
        jnz     .Lvalues_store\@
        .if     \masked
        vmaskmovps (OC), %ymm14, %ymm8
        vaddps  %ymm8, %ymm0, %ymm0
        .else
        .irp    k, 0, 1, 2, 3, 4, 5, 6, 7
        .if     \k < \nacc
        vaddps  32*\k(OC), %ymm\k, %ymm\k
        .endif
        .endr
        .endif
.Lvalues_store\@:
        .if     \masked
        vmaskmovps %ymm0, %ymm14, (OC)
        .else
        .irp    k, 0, 1, 2, 3, 4, 5, 6, 7
        .if     \k < \nacc
        vmovups %ymm\k, 32*\k(OC)
        .endif
        .endr
        addq    $16*\nacc, COL
        addq    $32*\nacc, OC
        .endif
        .endm

        .globl  lila_attn_values_avx2
        .type   lila_attn_values_avx2, @function
lila_attn_values_avx2:
        addq    SB, SB
        cmpq    $8, HD
        jae     .Lvalues_vector

        /* hd < 8: one column at a time, scalar */
1:      vxorps  %xmm1, %xmm1, %xmm1
        movq    VB, ROW
        xorl    %r10d, %r10d
2:      movzwl  (ROW), %r11d
        vmovd   %r11d, %xmm2
        vcvtph2ps %xmm2, %xmm2
        vfmadd231ss (PB,T,4), %xmm2, %xmm1
        addq    SB, ROW
        incq    T
        cmpq    N, T
        jb      2b
        vmovss  %xmm1, (OUT)
        addq    $4, OUT
        addq    $2, VB
        decq    HD
        jnz     1b
        vzeroupper
        ret

.Lvalues_vector:
        pushq   %rbx
        pushq   %rbp
        pushq   %r12
        pushq   %r13
        pushq   %r14
        pushq   %r15
        movq    HD, %r11
        andq    $7, %r11
        leaq    .Lmask(%rip), %rax
        vmovups (%rax,%r11,4), %ymm14   /* the last hd % 8 lanes */
        movq    SB, BLOCKB
        shlq    $LOG2_BLOCK_ROWS, BLOCKB
        movl    $1, %r14d               /* FIRST = 1 */

.Lvalues_block:
        movl    $BLOCK_ROWS, %ebx
        cmpq    BN, N
        cmovbq  N, BN                   /* rows in this block */
        movq    VB, COL
        movq    OUT, OC
        movq    HD, HL
        cmpq    $64, HL
        jb      2f
1:      VALUES_PASS 8
        subq    $64, HL
        cmpq    $64, HL
        jae     1b
2:      movq    HL, %r11
        shrq    $3, %r11                /* eights left: 0..7, one pass of that width */
        jz      .Lvalues_tail
        cmpq    $1, %r11
        jne     3f
        VALUES_PASS 1
        jmp     .Lvalues_tail
3:      cmpq    $2, %r11
        jne     3f
        VALUES_PASS 2
        jmp     .Lvalues_tail
3:      cmpq    $3, %r11
        jne     3f
        VALUES_PASS 3
        jmp     .Lvalues_tail
3:      cmpq    $4, %r11
        jne     3f
        VALUES_PASS 4
        jmp     .Lvalues_tail
3:      cmpq    $5, %r11
        jne     3f
        VALUES_PASS 5
        jmp     .Lvalues_tail
3:      cmpq    $6, %r11
        jne     3f
        VALUES_PASS 6
        jmp     .Lvalues_tail
3:      VALUES_PASS 7

.Lvalues_tail:
        andq    $7, HL                  /* r */
        jz      4f
        /* the row's last eight, from r - 8 columns back; only the r new lanes count */
        leaq    -16(COL,HL,2), COL
        leaq    -32(OC,HL,4), OC
        VALUES_PASS 1, 1
4:      xorl    %r14d, %r14d            /* FIRST = 0 */
        subq    BN, N
        jz      9f
        addq    BLOCKB, VB
        addq    $4*BLOCK_ROWS, PB
        jmp     .Lvalues_block

9:      popq    %r15
        popq    %r14
        popq    %r13
        popq    %r12
        popq    %rbp
        popq    %rbx
        vzeroupper
        ret
        .size   lila_attn_values_avx2, .-lila_attn_values_avx2

        .section .note.GNU-stack,"",@progbits
