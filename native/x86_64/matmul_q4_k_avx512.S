/* Q4_K weight x q8 activation products, AVX-512 (F, BW, VL) and, built with VNNI
 * defined (matmul_q4_k_avx512vnni.S), AVX-512 VNNI.
 *
 *   void lila_gemv_q4_k_avx512(const void *w, size_t row_bytes, size_t rows,
 *                              const lila_q8 *x, size_t nb, size_t cols,
 *                              float *out, size_t out_stride);      (cols == 1)
 *   void lila_gemm_q4_k_avx512(... same ...);                         (cols >= 1)
 *   lila_gemv_q4_k_avx512vnni, lila_gemm_q4_k_avx512vnni: the same, with vpdpbusd
 *   out[c * out_stride + r] = sum_k W[r, k] * X[c, k]
 *
 * The algorithm of matmul_q4_k_avx2.S (read its header first), for two weight rows at a
 * time: zmm = [row r's ymm | row r + 1's ymm] (matmul_k_avx512.inc). Per superblock pair:
 *   codes     qs of both rows in one zmm (vmovdqu + vinserti64x4), & 0x0f and
 *             (>> 4) & 0x0f: 8 registers, sub-block j of both rows in zmm 21 + j
 *   isum      per column, sub-block j against activation block j (in both halves):
 *               A_j = vpmaddwd(vpmaddubsw(codes, x), ones)   or, VNNI, vpdpbusd
 *             then as in AVX2: B = madd(pack(A_2c, A_2c+1)), W = pack(B, B'), and the
 *             16-byte halves added by two vshufi64x2 + vpaddw into
 *               [r: 0-3 | r+1: 0-3 | r: 4-7 | r+1: 4-7]   (i16 pairs, |.| <= 30720)
 *             one vpmaddwd by the scales in that layout gives T = sc_j isum_j
 *   scales    the 16 header bytes of row r in lanes 0, 2 and of row r + 1 in lanes 1, 3
 *             (a broadcast load and a masked one), unpacked per lane as in AVX2; in-lane
 *             vpshufb picks lane 0-1's sub-blocks 0-3 and lane 2-3's 4-7
 *   sum       acc += T * (d dx) - (dmin m) * s, dx and s from the scratch in that layout
 *
 * Scratch per superblock and column (K_PREP_SB): [dx_0..3 dx_0..3 dx_4..7 dx_4..7], then
 * the same for s (floats, 128 bytes).
 *
 * Registers in the body (the tile's GPRs are in matmul_k_avx512.inc):
 *   zmm15 M4 (0x0f bytes), zmm14 ONES (i16 ones), k1 = lanes 1 and 3 (dwords 4-7, 12-15)
 *   zmm16-19 accumulators of columns 0-3, zmm20 the gemv's second (the mins)
 *   zmm21-28 the codes of sub-blocks 0-7, zmm29 SC (the scales as i16 pairs),
 *   zmm30 DD (d), zmm31 DMN (dmin m_j), zmm0-8 temporaries
 */

#ifdef VNNI
#define ISA       avx512vnni
#else
#define ISA       avx512
#endif
#define SB_BYTES  LILA_Q4_K_BLOCK_BYTES
#define M4        %zmm15
#define ONES      %zmm14
#define SC        %zmm29
#define DD        %zmm30
#define DMN       %zmm31

#include "matmul_k_avx512.inc"
#include "matmul_k_prep.inc"

        .section .rodata.cst64, "aM", @progbits, 64
        .balign 64
.Lq4k_m4:       .fill 64, 1, 0x0f
.Lq4k_ones:     .fill 32, 2, 1
.Lq4k_shift:    .rept 4                                 /* m_4..7 are high nibbles */
                .long 0, 0, 0, 4
                .endr
.Lq4k_low:      .rept 4
                .long 0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f
                .endr
.Lq4k_top:      .rept 4                                 /* bits 4-5 of sc, m 4..7 */
                .long 0, 0x30303030, 0, 0x30303030
                .endr
/* from bytes sc_0..7 m_0..7: words sc_0 sc_0 .. sc_3 sc_3 (lanes 0, 1), sc_4 sc_4 .. sc_7
 * sc_7 (lanes 2, 3) */
.Lq4k_sc:       .rept 2
                .byte 0, -1, 0, -1, 1, -1, 1, -1, 2, -1, 2, -1, 3, -1, 3, -1
                .endr
                .rept 2
                .byte 4, -1, 4, -1, 5, -1, 5, -1, 6, -1, 6, -1, 7, -1, 7, -1
                .endr
/* dwords m_0..3 (lanes 0, 1), m_4..7 (lanes 2, 3) */
.Lq4k_mn:       .rept 2
                .byte 8, -1, -1, -1, 9, -1, -1, -1, 10, -1, -1, -1, 11, -1, -1, -1
                .endr
                .rept 2
                .byte 12, -1, -1, -1, 13, -1, -1, -1, 14, -1, -1, -1, 15, -1, -1, -1
                .endr

.macro K_CONSTS
        vmovdqa64 .Lq4k_m4(%rip), M4
        vmovdqa64 .Lq4k_ones(%rip), ONES
        movl    $0xf0f0, %ecx
        kmovw   %ecx, %k1
.endm

/* [dx_0..3 dx_0..3 dx_4..7 dx_4..7], [s likewise] of the 8 blocks at %r8 to %r9 */
.macro K_PREP_SB
        Q4K_GATHER_DS
        vshuff32x4 $0x50, %zmm2, %zmm2, %zmm2   /* 128-bit lanes 0 0 1 1 */
        vshuff32x4 $0x50, %zmm3, %zmm3, %zmm3
        vmovaps %zmm2, 0(%r9)
        vmovaps %zmm3, 64(%r9)
.endm

/* SC, DD, DMN for the superblocks at P and P1. Clobbers zmm6-8. */
.macro Q4K_SCALES
        vbroadcasti32x4 (P), %zmm7              /* row r's header bytes in every lane, */
        vbroadcasti32x4 (P1), %zmm7{%k1}        /* row r + 1's in lanes 1 and 3 */
        vpshufd $0xed, %zmm7, DMN               /* u0 u2 u1 u2 */
        vpsrlvd .Lq4k_shift(%rip), DMN, DMN
        vpandd  .Lq4k_low(%rip), DMN, DMN
        vpshufd $0xa5, %zmm7, %zmm7             /* u0 u0 u1 u1 */
        vpsrld  $2, %zmm7, %zmm7
        vpandd  .Lq4k_top(%rip), %zmm7, %zmm7
        vpord   %zmm7, DMN, %zmm7               /* bytes sc_0..7, m_0..7, per lane */
        vpshufb .Lq4k_sc(%rip), %zmm7, SC
        vpshufb .Lq4k_mn(%rip), %zmm7, DMN
        vcvtdq2ps DMN, DMN
        vpbroadcastd (P), %xmm8                 /* d dmin (f16) of row r, 4 times */
        vpbroadcastd (P1), %xmm6
        vpunpcklqdq %xmm6, %xmm8, %xmm8         /* row r twice, row r + 1 twice */
        vinserti128 $1, %xmm8, %ymm8, %ymm8
        vcvtph2ps %ymm8, %zmm8                  /* lanes r, r+1, r, r+1: d dmin d dmin */
        vmovsldup %zmm8, DD
        vmovshdup %zmm8, %zmm8
        vmulps  %zmm8, DMN, DMN
.endm

/* the codes of sub-blocks 2c, 2c + 1 of both rows to zmm\lo, zmm\hi */
.macro Q4K_CODES c, lo, hi
        vmovdqu 16 + 32 * \c(P), %ymm0
        vinserti64x4 $1, 16 + 32 * \c(P1), %zmm0, %zmm0
        vpandd  %zmm0, M4, %zmm\lo
        vpsrlw  $4, %zmm0, %zmm0
        vpandd  %zmm0, M4, %zmm\hi
.endm

/* A_j for the codes zmm\q against column k's block at \disp, to \a. Clobbers \t. */
.macro Q4K_DOT k, disp, q, a, t
        XBCAST  \k, \disp, \t
#ifdef VNNI
        vpxord  \a, \a, \a
        vpdpbusd \t, %zmm\q, \a
#else
        vpmaddubsw \t, %zmm\q, \a
        vpmaddwd ONES, \a, \a
#endif
.endm

/* \out = B of pair c against column k: dwords [j j j' j'] per lane */
.macro Q4K_PAIR c, k, lo, hi, out
        Q4K_DOT \k, (LILA_Q8_QS + 2 * LILA_Q8_BYTES * \c), \lo, \out, %zmm0
        Q4K_DOT \k, (LILA_Q8_QS + LILA_Q8_BYTES * (2 * \c + 1)), \hi, %zmm1, %zmm2
        vpackssdw %zmm1, \out, \out
        vpmaddwd ONES, \out, \out
.endm

/* column k's superblock pair into zmm\acc (and the mins into zmm\macc) */
.macro Q4K_COLUMN k, acc, macc
        Q4K_PAIR 0, \k, 21, 22, %zmm3
        Q4K_PAIR 1, \k, 23, 24, %zmm4
        vpackssdw %zmm4, %zmm3, %zmm3           /* sub-blocks 0-3 (x2), per 16 codes */
        Q4K_PAIR 2, \k, 25, 26, %zmm4
        Q4K_PAIR 3, \k, 27, 28, %zmm5
        vpackssdw %zmm5, %zmm4, %zmm4           /* 4-7 likewise */
        vshufi64x2 $0x88, %zmm4, %zmm3, %zmm5   /* r: 0-3 | r+1: 0-3 | r: 4-7 | r+1: 4-7, */
        vshufi64x2 $0xdd, %zmm4, %zmm3, %zmm3   /* first and last 16 codes */
        vpaddw  %zmm5, %zmm3, %zmm3             /* |.| <= 30720 */
        vpmaddwd SC, %zmm3, %zmm3               /* T: sc_j isum_j */
        vcvtdq2ps %zmm3, %zmm3
        vmulps  ((\k) * COLSCR)(SCR), DD, %zmm4 /* d dx */
        vfmadd231ps %zmm4, %zmm3, %zmm\acc
        vfnmadd231ps ((\k) * COLSCR + 64)(SCR), DMN, %zmm\macc
.endm

/* the gemv's second accumulator (the mins) into the first */
.macro K_ROWEND nc
        .if \nc == 1
        vaddps  %zmm20, %zmm16, %zmm16
        .endif
.endm

.macro K_SB nc
        Q4K_CODES 0, 21, 22
        Q4K_CODES 1, 23, 24
        Q4K_CODES 2, 25, 26
        Q4K_CODES 3, 27, 28
        Q4K_SCALES
        .if \nc == 1
        Q4K_COLUMN 0, 16, 20
        .else
        Q4K_COLUMN 0, 16, 16
        Q4K_COLUMN 1, 17, 17
        .endif
        .if \nc > 2
        Q4K_COLUMN 2, 18, 18
        .endif
        .if \nc > 3
        Q4K_COLUMN 3, 19, 19
        .endif
.endm

        K_FUNCTIONS q4_k, ISA

        .section .note.GNU-stack,"",@progbits
