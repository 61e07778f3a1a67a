/* Q6_K weight x q8 activation products, AVX-512 (F, BW, VL) and, built with VNNI
 * defined (matmul_q6_k_avx512vnni.S), AVX-512 VNNI.
 *
 *   void lila_gemv_q6_k_avx512(const void *w, size_t row_bytes, size_t rows,
 *                              const lila_q8 *x, size_t nb, size_t cols,
 *                              float *out, size_t out_stride);      (cols == 1)
 *   void lila_gemm_q6_k_avx512(... same ...);                         (cols >= 1)
 *   lila_gemv_q6_k_avx512vnni, lila_gemm_q6_k_avx512vnni: the same, with vpdpbusd
 *   out[c * out_stride + r] = sum_k W[r, k] * X[c, k]
 *
 * The algorithm of matmul_q6_k_avx2.S (read its header first), for two weight rows at a
 * time: zmm = [row r's ymm | row r + 1's ymm] (matmul_k_avx512.inc). Per superblock pair:
 *   codes     ql, qh of both rows (vmovdqu + vinserti64x4), unpacked as in AVX2: group g
 *             of both rows in zmm 21 + g
 *   T         A_g = vpmaddwd(vpmaddubsw(codes, x), ones) or, VNNI, vpdpbusd; then as in
 *             AVX2 B_c = madd(pack(A_2c, A_2c+1), pair scales) and vshufps merges into
 *             C_h = [r: 4h..4h+3 (first 16) | r: (last 16) | r+1: .. | r+1: ..]; two
 *             vshufi64x2 + vpaddd add the 16-code halves into
 *               T = [r: 0-3 | r+1: 0-3 | r: 4-7 | r+1: 4-7]
 *   O         vpmaddwd of the scales (vpmovsxbw, per row as in AVX2) by the half sums,
 *             then vshufi64x2 into T's layout
 *   sum       acc += (T - 32 O) * (d dx), d and dx in T's layout
 *
 * Scratch per superblock and column (K_PREP_SB): [dx_0..3 dx_0..3 dx_4..7 dx_4..7]
 * (floats), then the 16 half sums X_0a X_0b .. X_7b (int16) twice (128 bytes).
 *
 * Registers in the body (the tile's GPRs are in matmul_k_avx512.inc):
 *   zmm15 M4 (0x0f bytes), zmm14 M30 (0x30 bytes), zmm13 ONES (i16 ones)
 *   zmm16-19 accumulators of columns 0-3, zmm21-28 the codes of groups 0-7,
 *   zmm9-12 the pair scales of pairs 0-3, zmm29 SC16 (the 16 scales, i16, per row),
 *   zmm30 DBC (d), zmm0-8 temporaries
 */

#ifdef VNNI
#define ISA       avx512vnni
#else
#define ISA       avx512
#endif
#define SB_BYTES  LILA_Q6_K_BLOCK_BYTES
#define M4        %zmm15
#define M30       %zmm14
#define ONES      %zmm13
#define SC16      %zmm29
#define DBC       %zmm30

#include "matmul_k_avx512.inc"
#include "matmul_k_prep.inc"

        .section .rodata.cst64, "aM", @progbits, 64
        .balign 64
.Lq6k_m4:       .fill 64, 1, 0x0f
.Lq6k_m30:      .fill 64, 1, 0x30
.Lq6k_ones:     .fill 32, 2, 1
.Lq6k_ones8:    .fill 64, 1, 1
/* words 0 2 4 6 1 3 5 7 of each lane */
.Lq6k_evod:     .rept 4
                .byte 0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15
                .endr
/* words 0 4 1 5 2 6 3 7 of each lane: [a0..a3 b0..b3] -> [a0 b0 a1 b1 ..] */
.Lq6k_ilv:      .rept 4
                .byte 0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15
                .endr
/* pair c's scales from V2: words 2c x4, 2c + 1 x4 of each lane */
.Lq6k_pair0:    .rept 4
                .byte 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3
                .endr
.Lq6k_pair1:    .rept 4
                .byte 4, 5, 4, 5, 4, 5, 4, 5, 6, 7, 6, 7, 6, 7, 6, 7
                .endr
.Lq6k_pair2:    .rept 4
                .byte 8, 9, 8, 9, 8, 9, 8, 9, 10, 11, 10, 11, 10, 11, 10, 11
                .endr
.Lq6k_pair3:    .rept 4
                .byte 12, 13, 12, 13, 12, 13, 12, 13, 14, 15, 14, 15, 14, 15, 14, 15
                .endr

.macro K_CONSTS
        vmovdqa64 .Lq6k_m4(%rip), M4
        vmovdqa64 .Lq6k_m30(%rip), M30
        vmovdqa64 .Lq6k_ones(%rip), ONES
.endm

/* [dx_0..3 dx_0..3 dx_4..7 dx_4..7] of the 8 blocks at %r8 to %r9, their 16 half sums
 * (int16) twice to %r9 + 64. The half sums come from the ymm tree of the AVX2 code. */
.macro K_PREP_SB
        .irp g, 0, 1, 2, 3
        movl    (LILA_Q8_D + LILA_Q8_BYTES * \g)(%r8), %ecx
        movl    %ecx, 4 * \g(%r9)
        movl    %ecx, 16 + 4 * \g(%r9)
        movl    (LILA_Q8_D + LILA_Q8_BYTES * (\g + 4))(%r8), %ecx
        movl    %ecx, 32 + 4 * \g(%r9)
        movl    %ecx, 48 + 4 * \g(%r9)
        .endr
        Q6K_HALF_SUMS
        vmovdqa %ymm0, 64(%r9)
        vmovdqa %ymm0, 96(%r9)
.endm

/* SC16, DBC and the pair scales (zmm9-12) for the superblocks at P and P1.
 * Clobbers zmm0, zmm6-8. */
.macro Q6K_SCALES
        vmovdqu 192(P), %xmm0
        vinserti128 $1, 192(P1), %ymm0, %ymm0
        vpmovsxbw %ymm0, SC16                   /* r: sc_0..7 | sc_8..15 | r+1: .. */
        vpshufb .Lq6k_evod(%rip), SC16, %zmm0
        vpermq  $0xd8, %zmm0, %zmm0             /* per row: even scales | odd scales */
        vpshufb .Lq6k_pair0(%rip), %zmm0, %zmm9
        vpshufb .Lq6k_pair1(%rip), %zmm0, %zmm10
        vpshufb .Lq6k_pair2(%rip), %zmm0, %zmm11
        vpshufb .Lq6k_pair3(%rip), %zmm0, %zmm12
        vpbroadcastw 208(P), %xmm8              /* d of row r, 8 times (f16) */
        vpbroadcastw 208(P1), %xmm6
        vpunpcklqdq %xmm6, %xmm8, %xmm8         /* r x4, r+1 x4 */
        vinserti128 $1, %xmm8, %ymm8, %ymm8
        vcvtph2ps %ymm8, DBC                    /* lanes r, r+1, r, r+1 */
.endm

/* half h's codes: groups 4h .. 4h+3 of both rows to zmm\g0 .. zmm\g0 + 3 (as AVX2).
 * Clobbers zmm4-6. */
.macro Q6K_CODES h, g0, g1, g2, g3
        vmovdqu 64 * \h(P), %ymm4               /* ql, groups 4h, 4h + 2 */
        vinserti64x4 $1, 64 * \h(P1), %zmm4, %zmm4
        vmovdqu 64 * \h + 32(P), %ymm5          /* ql, groups 4h + 1, 4h + 3 */
        vinserti64x4 $1, 64 * \h + 32(P1), %zmm5, %zmm5
        vmovdqu 128 + 32 * \h(P), %ymm6         /* qh */
        vinserti64x4 $1, 128 + 32 * \h(P1), %zmm6, %zmm6
        vpandd  %zmm4, M4, %zmm\g0
        vpsllw  $4, %zmm6, %zmm7                /* word shifts: the bits that cross a */
        vpandd  %zmm7, M30, %zmm7               /* byte boundary are masked off */
        vpord   %zmm7, %zmm\g0, %zmm\g0
        vpandd  %zmm5, M4, %zmm\g1
        vpsllw  $2, %zmm6, %zmm7
        vpandd  %zmm7, M30, %zmm7
        vpord   %zmm7, %zmm\g1, %zmm\g1
        vpsrlw  $4, %zmm4, %zmm\g2
        vpandd  %zmm\g2, M4, %zmm\g2
        vpandd  %zmm6, M30, %zmm7
        vpord   %zmm7, %zmm\g2, %zmm\g2
        vpsrlw  $4, %zmm5, %zmm\g3
        vpandd  %zmm\g3, M4, %zmm\g3
        vpsrlw  $2, %zmm6, %zmm6
        vpandd  %zmm6, M30, %zmm6
        vpord   %zmm6, %zmm\g3, %zmm\g3
.endm

/* A_g for the codes zmm\q against column k's block at \disp, to \a. Clobbers \t. */
.macro Q6K_DOT k, disp, q, a, t
        XBCAST  \k, \disp, \t
#ifdef VNNI
        vpxord  \a, \a, \a
        vpdpbusd \t, %zmm\q, \a
#else
        vpmaddubsw \t, %zmm\q, \a
        vpmaddwd ONES, \a, \a
#endif
.endm

/* \out = B_c (scaled) against column k; the pair's scales in zmm\s */
.macro Q6K_PAIR c, k, qa, qb, s, out
        Q6K_DOT \k, (LILA_Q8_QS + 2 * LILA_Q8_BYTES * \c), \qa, \out, %zmm0
        Q6K_DOT \k, (LILA_Q8_QS + LILA_Q8_BYTES * (2 * \c + 1)), \qb, %zmm1, %zmm2
        vpackssdw %zmm1, \out, \out
        vpmaddwd %zmm\s, \out, \out
.endm

/* \out = [T_4h .. T_4h+3 per 16 codes] from B_2h (\ba) and B_2h+1 (\bb) */
.macro Q6K_MERGE ba, bb, out, t
        vshufps $0x88, \bb, \ba, \t
        vshufps $0xdd, \bb, \ba, \out
        vpaddd  \t, \out, \out
.endm

/* column k's superblock pair into zmm\acc */
.macro Q6K_COLUMN k, acc
        Q6K_PAIR 0, \k, 21, 22, 9, %zmm3
        Q6K_PAIR 1, \k, 23, 24, 10, %zmm4
        Q6K_MERGE %zmm3, %zmm4, %zmm5, %zmm6    /* groups 0-3 */
        Q6K_PAIR 2, \k, 25, 26, 11, %zmm3
        Q6K_PAIR 3, \k, 27, 28, 12, %zmm4
        Q6K_MERGE %zmm3, %zmm4, %zmm7, %zmm6    /* groups 4-7 */
        vshufi64x2 $0x88, %zmm7, %zmm5, %zmm3   /* r: 0-3 | r+1: 0-3 | r: 4-7 | r+1: 4-7, */
        vshufi64x2 $0xdd, %zmm7, %zmm5, %zmm5   /* first and last 16 codes */
        vpaddd  %zmm5, %zmm3, %zmm3             /* T */
        vpmaddwd ((\k) * COLSCR + 64)(SCR), SC16, %zmm4    /* O: r: 0-3 4-7 | r+1: .. */
        vshufi64x2 $0xd8, %zmm4, %zmm4, %zmm4   /* T's layout */
        vpslld  $5, %zmm4, %zmm4
        vpsubd  %zmm4, %zmm3, %zmm3
        vcvtdq2ps %zmm3, %zmm3
        vmulps  ((\k) * COLSCR)(SCR), DBC, %zmm4           /* d dx */
        vfmadd231ps %zmm4, %zmm3, %zmm\acc
.endm

.macro K_ROWEND nc
.endm

.macro K_SB nc
        Q6K_CODES 0, 21, 22, 23, 24
        Q6K_CODES 1, 25, 26, 27, 28
        Q6K_SCALES
        Q6K_COLUMN 0, 16
        .if \nc > 1
        Q6K_COLUMN 1, 17
        .endif
        .if \nc > 2
        Q6K_COLUMN 2, 18
        .endif
        .if \nc > 3
        Q6K_COLUMN 3, 19
        .endif
.endm

        K_FUNCTIONS q6_k, ISA

        .section .note.GNU-stack,"",@progbits
