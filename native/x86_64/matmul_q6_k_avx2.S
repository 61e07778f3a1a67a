/* Q6_K weight x q8 activation products, AVX2 (+FMA, F16C).
 *
 *   void lila_gemv_q6_k_avx2(const void *w, size_t row_bytes, size_t rows,
 *                            const lila_q8 *x, size_t nb, size_t cols,
 *                            float *out, size_t out_stride);        (cols == 1)
 *   void lila_gemm_q6_k_avx2(... same ...);                           (cols >= 1)
 *   out[c * out_stride + r] = sum_k W[r, k] * X[c, k]
 *
 * Q6_K superblock (210 bytes, 256 weights): ql[128], qh[64], int8 scales[16], f16 d.
 * Group g = 4h + t (32 weights, h = 0, 1, t = 0..3) meets activation block g; element i:
 *   q = nibble (t >= 2) of ql[64h + 32 (t & 1) + i] | ((qh[32h + i] >> 2t) & 3) << 4
 * and weight = d sc (q - 32), sc = scales[2g] for i < 16, scales[2g + 1] for i >= 16:
 * the two 16-byte halves of a 32-byte register, which is what makes the scales cheap.
 *   superblock . x = sum_g d dx_g (T_g - 32 O_g),
 *   T_g = sum_i sc q x8,   O_g = sc_2g X_ga + sc_2g+1 X_gb   (X: sums of 16 codes)
 *
 * Per superblock (K_SB):
 *   codes     ql & 0x0f or (ql >> 4) & 0x0f, or'ed with qh's 2 bits shifted to bits 4-5
 *             and masked (0x30): unsigned 0..63, one register per group
 *   T         vpmaddubsw: 16 pair sums per group, |.| <= 16128; vpmaddwd by ones: sums
 *             of 4 (<= 32256, still 16 bits); vpackssdw two groups, vpmaddwd by their
 *             scales (lanes: low = first 16 codes, high = last 16):
 *               B_c = [g g g' g' | g g g' g'] (g = 2c, g' = 2c + 1), scaled, 32 bits
 *             vshufps pairs B_2h, B_2h+1 into [4h .. 4h+3 | 4h .. 4h+3], added; the two
 *             halves' 128-bit lanes added give T_0..7
 *   O         one vpmaddwd of the 16 scales (vpmovsxbw) by the 16 half sums X
 *   sum       acc += (T - 32 O) * (d dx)
 *
 * The scales for the pair vpmaddwd: the 16 scales as words with the even ones in the
 * low lane and the odd ones in the high (vpmovsxbw, vpshufb, vpermq), then one vpshufb
 * per pair picks [sc_4c x4, sc_4c+2 x4 | sc_4c+1 x4, sc_4c+3 x4].
 *
 * The gemm (2-4 columns) unpacks a superblock's codes once into the frame (QB), its pair
 * scales, SC16 and d into SQ, then runs the columns two at a time, each code load serving
 * both trees (Q6K_COLUMNS2); a third column alone (Q6K_COLUMN).
 *
 * Scratch per superblock and column (K_PREP_SB): dx_0..7 (floats), then the half sums
 * X_0a X_0b .. X_7a X_7b (int16), from the same tree with the weight codes set to 1.
 *
 * Registers in the body (the tile's GPRs are in matmul_k_avx2.inc):
 *   ymm15 M4 (0x0f bytes), ymm14 M30 (0x30 bytes), ymm13 ONES (i16 ones)
 *   ymm9-12 accumulators of columns 0-3, ymm8 SC16 (the 16 scales, i16),
 *   ymm7 DBC (d, 8 lanes); gemv: ymm10 V2 (scales, even | odd), ymm11 O;
 *   ymm0-6 (and ymm12 in the gemv, ymm7-8 in the gemm's columns) temporaries
 */

#define SB_BYTES  LILA_Q6_K_BLOCK_BYTES
#define M4        %ymm15
#define M30       %ymm14
#define ONES      %ymm13
#define SC16      %ymm8
#define DBC       %ymm7
#define V2        %ymm10
#define OFS       %ymm11

#include "matmul_k_avx2.inc"
#include "matmul_k_prep.inc"

        .section .rodata.cst32, "aM", @progbits, 32
        .balign 32
.Lq6k_m4:       .fill 32, 1, 0x0f
.Lq6k_m30:      .fill 32, 1, 0x30
.Lq6k_ones:     .fill 16, 2, 1
.Lq6k_ones8:    .fill 32, 1, 1
/* words 0 2 4 6 1 3 5 7 of each lane */
.Lq6k_evod:     .byte 0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15
                .byte 0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15
/* words 0 4 1 5 2 6 3 7 of each lane: [a0..a3 b0..b3] -> [a0 b0 a1 b1 ..] */
.Lq6k_ilv:      .byte 0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15
                .byte 0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15
/* pair c's scales from V2: words 2c x4, 2c + 1 x4 of each lane */
.Lq6k_pair0:    .rept 2
                .byte 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3
                .endr
.Lq6k_pair1:    .rept 2
                .byte 4, 5, 4, 5, 4, 5, 4, 5, 6, 7, 6, 7, 6, 7, 6, 7
                .endr
.Lq6k_pair2:    .rept 2
                .byte 8, 9, 8, 9, 8, 9, 8, 9, 10, 11, 10, 11, 10, 11, 10, 11
                .endr
.Lq6k_pair3:    .rept 2
                .byte 12, 13, 12, 13, 12, 13, 12, 13, 14, 15, 14, 15, 14, 15, 14, 15
                .endr

.macro K_CONSTS
        vmovdqa .Lq6k_m4(%rip), M4
        vmovdqa .Lq6k_m30(%rip), M30
        vmovdqa .Lq6k_ones(%rip), ONES
.endm

/* dx_0..7 of the 8 blocks at %r8 to %r9, their 16 half sums (int16) to %r9 + 32 */
.macro K_PREP_SB
        .irp g, 0, 1, 2, 3, 4, 5, 6, 7
        movl    (LILA_Q8_D + LILA_Q8_BYTES * \g)(%r8), %ecx
        movl    %ecx, 4 * \g(%r9)
        .endr
        Q6K_HALF_SUMS
        vmovdqa %ymm0, 32(%r9)
.endm

/* SC16 = the 16 scales (i16), DBC = d, \v2 = [even scales | odd scales] (words) */
.macro Q6K_SCALES v2
        vpmovsxbw 192(P), SC16
        vpshufb .Lq6k_evod(%rip), SC16, \v2
        vpermq  $0xd8, \v2, \v2
        vpbroadcastw 208(P), %xmm0
        vcvtph2ps %xmm0, DBC
.endm

/* half h's codes: groups 4h .. 4h+3 to ymm0, ymm1, ymm2, ymm3. Clobbers ymm4-6. */
.macro Q6K_CODES h
        vmovdqu 64 * \h(P), %ymm4               /* ql, groups 4h, 4h + 2 */
        vmovdqu 64 * \h + 32(P), %ymm5          /* ql, groups 4h + 1, 4h + 3 */
        vmovdqu 128 + 32 * \h(P), %ymm6         /* qh, bits 2t, 2t + 1 for group 4h + t */
        vpand   %ymm4, M4, %ymm0
        vpsllw  $4, %ymm6, %ymm3                /* word shifts: the bits that cross a */
        vpand   %ymm3, M30, %ymm3               /* byte boundary are masked off */
        vpor    %ymm3, %ymm0, %ymm0
        vpand   %ymm5, M4, %ymm1
        vpsllw  $2, %ymm6, %ymm3
        vpand   %ymm3, M30, %ymm3
        vpor    %ymm3, %ymm1, %ymm1
        vpsrlw  $4, %ymm4, %ymm2
        vpand   %ymm2, M4, %ymm2
        vpand   %ymm6, M30, %ymm3
        vpor    %ymm3, %ymm2, %ymm2
        vpsrlw  $4, %ymm5, %ymm3
        vpand   %ymm3, M4, %ymm3
        vpsrlw  $2, %ymm6, %ymm6
        vpand   %ymm6, M30, %ymm6
        vpor    %ymm6, %ymm3, %ymm3
.endm

/* \qa = B_c from the codes of groups 2c (\qa), 2c + 1 (\qb) against column k;
 * the pair's scales from V2 (direct) or from SQ. Clobbers \t. */
.macro Q6K_PAIR c, k, direct, qa, qb, t
        XMEM    vpmaddubsw, \k, (LILA_Q8_QS + 2 * LILA_Q8_BYTES * \c), \qa, \qa
        XMEM    vpmaddubsw, \k, (LILA_Q8_QS + LILA_Q8_BYTES * (2 * \c + 1)), \qb, \qb
        vpmaddwd ONES, \qa, \qa
        vpmaddwd ONES, \qb, \qb
        vpackssdw \qb, \qa, \qa
        .if \direct
        vpshufb .Lq6k_pair\c(%rip), V2, \t
        vpmaddwd \t, \qa, \qa
        .else
        vpmaddwd SQ + 32 * \c(%rsp), \qa, \qa
        .endif
.endm

/* \out = [T_4h .. T_4h+3 | the same, other 16] from B_2h (\ba) and B_2h+1 (\bb) */
.macro Q6K_MERGE ba, bb, out, t
        vshufps $0x88, \bb, \ba, \t
        vshufps $0xdd, \bb, \ba, \out
        vpaddd  \t, \out, \out
.endm

/* T halves ymm\a (groups 0-3), ymm\b (4-7) -> ymm\a = T_0..7. Clobbers ymm\t. */
.macro Q6K_FOLD a, b, t
        vperm2i128 $0x21, %ymm\b, %ymm\a, %ymm\t
        vpblendd $0xf0, %ymm\b, %ymm\a, %ymm\a
        vpaddd  %ymm\t, %ymm\a, %ymm\a
.endm

/* B_c for columns k (to \ba) and k + 1 (to \bb) from the codes in QB, loaded once to
 * ymm0 ymm1 for both (\bb first serves column k) */
.macro Q6K_PAIR2 c, k, ba, bb
        vmovdqa QB + 64 * \c(%rsp), %ymm0
        vmovdqa QB + 64 * \c + 32(%rsp), %ymm1
        XMEM    vpmaddubsw, \k, (LILA_Q8_QS + 2 * LILA_Q8_BYTES * \c), %ymm0, \ba
        XMEM    vpmaddubsw, \k, (LILA_Q8_QS + LILA_Q8_BYTES * (2 * \c + 1)), %ymm1, \bb
        vpmaddwd ONES, \ba, \ba
        vpmaddwd ONES, \bb, \bb
        vpackssdw \bb, \ba, \ba
        vpmaddwd SQ + 32 * \c(%rsp), \ba, \ba
        XMEM    vpmaddubsw, \k+1, (LILA_Q8_QS + 2 * LILA_Q8_BYTES * \c), %ymm0, \bb
        XMEM    vpmaddubsw, \k+1, (LILA_Q8_QS + LILA_Q8_BYTES * (2 * \c + 1)), %ymm1, %ymm1
        vpmaddwd ONES, \bb, \bb
        vpmaddwd ONES, %ymm1, %ymm1
        vpackssdw %ymm1, \bb, \bb
        vpmaddwd SQ + 32 * \c(%rsp), \bb, \bb
.endm

/* T (ymm\t) - 32 O_k, times d dx_k, into ymm\acc, with SC16 and DBC from SQ. Clobbers
 * ymm\tmp. */
.macro Q6K_FINISH2 k, acc, t, tmp
        vmovdqa SQ + 128(%rsp), %ymm\tmp
        vpmaddwd ((\k) * COLSCR + 32)(SCR), %ymm\tmp, %ymm\tmp  /* O */
        vpslld  $5, %ymm\tmp, %ymm\tmp
        vpsubd  %ymm\tmp, %ymm\t, %ymm\t
        vcvtdq2ps %ymm\t, %ymm\t
        vmovaps SQ + 160(%rsp), %ymm\tmp
        vmulps  ((\k) * COLSCR)(SCR), %ymm\tmp, %ymm\tmp          /* d dx */
        vfmadd231ps %ymm\tmp, %ymm\t, %ymm\acc
.endm

/* columns k, k + 1 into ymm\a0, ymm\a1: two trees, each code load shared */
.macro Q6K_COLUMNS2 k, a0, a1
        Q6K_PAIR2 0, \k, %ymm2, %ymm3
        Q6K_PAIR2 1, \k, %ymm4, %ymm5
        Q6K_MERGE %ymm2, %ymm4, %ymm6, %ymm7     /* column k: groups 0-3 */
        Q6K_MERGE %ymm3, %ymm5, %ymm2, %ymm7     /* column k + 1 */
        Q6K_PAIR2 2, \k, %ymm3, %ymm4
        Q6K_PAIR2 3, \k, %ymm5, %ymm7
        Q6K_MERGE %ymm3, %ymm5, %ymm8, %ymm1     /* column k: groups 4-7 */
        Q6K_MERGE %ymm4, %ymm7, %ymm3, %ymm1     /* column k + 1 */
        Q6K_FOLD 6, 8, 1
        Q6K_FOLD 2, 3, 1
        Q6K_FINISH2 \k, \a0, 6, 1
        Q6K_FINISH2 \k+1, \a1, 2, 1
.endm

/* B_c for column k alone, to \ba */
.macro Q6K_PAIR1 c, k, ba
        vmovdqa QB + 64 * \c(%rsp), %ymm0
        vmovdqa QB + 64 * \c + 32(%rsp), %ymm1
        XMEM    vpmaddubsw, \k, (LILA_Q8_QS + 2 * LILA_Q8_BYTES * \c), %ymm0, \ba
        XMEM    vpmaddubsw, \k, (LILA_Q8_QS + LILA_Q8_BYTES * (2 * \c + 1)), %ymm1, %ymm1
        vpmaddwd ONES, \ba, \ba
        vpmaddwd ONES, %ymm1, %ymm1
        vpackssdw %ymm1, \ba, \ba
        vpmaddwd SQ + 32 * \c(%rsp), \ba, \ba
.endm

/* column k alone (the third of three) */
.macro Q6K_COLUMN k, acc
        Q6K_PAIR1 0, \k, %ymm2
        Q6K_PAIR1 1, \k, %ymm4
        Q6K_MERGE %ymm2, %ymm4, %ymm6, %ymm7
        Q6K_PAIR1 2, \k, %ymm3
        Q6K_PAIR1 3, \k, %ymm5
        Q6K_MERGE %ymm3, %ymm5, %ymm8, %ymm1
        Q6K_FOLD 6, 8, 1
        Q6K_FINISH2 \k, \acc, 6, 1
.endm

.macro K_ROWEND nc
.endm

.macro K_SB nc
        .if \nc == 1
        Q6K_SCALES V2
        vpmaddwd 32(SCR), SC16, OFS             /* O early: SC16 is free afterwards */
        Q6K_CODES 0
        Q6K_PAIR 0, 0, 1, %ymm0, %ymm1, %ymm4
        Q6K_PAIR 1, 0, 1, %ymm2, %ymm3, %ymm4
        Q6K_MERGE %ymm0, %ymm2, %ymm12, %ymm4
        Q6K_CODES 1
        Q6K_PAIR 2, 0, 1, %ymm0, %ymm1, %ymm4
        Q6K_PAIR 3, 0, 1, %ymm2, %ymm3, %ymm4
        Q6K_MERGE %ymm0, %ymm2, %ymm1, %ymm4
        Q6K_FOLD 12, 1, 4
        vpslld  $5, OFS, OFS
        vpsubd  OFS, %ymm12, %ymm12
        vcvtdq2ps %ymm12, %ymm12
        vmulps  (SCR), DBC, %ymm4               /* d dx */
        vfmadd231ps %ymm4, %ymm12, %ymm9
        .else
        Q6K_SCALES %ymm6
        .irp c, 0, 1, 2, 3                      /* pair scales once, for every column */
        vpshufb .Lq6k_pair\c(%rip), %ymm6, %ymm0
        vmovdqa %ymm0, SQ + 32 * \c(%rsp)
        .endr
        vmovdqa SC16, SQ + 128(%rsp)            /* the column pairs want every register */
        vmovaps DBC, SQ + 160(%rsp)
        .irp h, 0, 1                            /* codes once, for every column */
        Q6K_CODES \h
        vmovdqa %ymm0, QB + 128 * \h(%rsp)
        vmovdqa %ymm1, QB + 128 * \h + 32(%rsp)
        vmovdqa %ymm2, QB + 128 * \h + 64(%rsp)
        vmovdqa %ymm3, QB + 128 * \h + 96(%rsp)
        .endr
        Q6K_COLUMNS2 0, 9, 10
        .if \nc == 3
        Q6K_COLUMN 2, 11
        .endif
        .if \nc == 4
        Q6K_COLUMNS2 2, 11, 12
        .endif
        .endif
.endm

        K_FUNCTIONS q6_k

        .section .note.GNU-stack,"",@progbits
