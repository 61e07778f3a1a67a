/* Q4_K weight x q8 activation products, AVX2 (+FMA, F16C).
 *
 *   void lila_gemv_q4_k_avx2(const void *w, size_t row_bytes, size_t rows,
 *                            const lila_q8 *x, size_t nb, size_t cols,
 *                            float *out, size_t out_stride);        (cols == 1)
 *   void lila_gemm_q4_k_avx2(... same ...);                           (cols >= 1)
 *   out[c * out_stride + r] = sum_k W[r, k] * X[c, k]
 *
 * Q4_K superblock (144 bytes, 256 weights): f16 d, f16 dmin, 12 bytes of 6-bit scales
 * sc_j and mins m_j (j = 0..7), then qs[128]: sub-block j = 2c + h is nibble h (low,
 * high) of qs[32c .. 32c + 31]. Weight = d sc_j q - dmin m_j, q in 0..15. Sub-block j
 * meets activation block j (scale dx_j, s_j = dx_j * sum of its codes), so
 *   superblock . x = sum_j d sc_j dx_j isum_j - dmin m_j s_j,   isum_j = sum q * x8.
 *
 * Per superblock (the loop body, K_SB):
 *   codes     qs & 0x0f and (qs >> 4) & 0x0f: 32 unsigned codes per register, one
 *             register per sub-block, ready for vpmaddubsw against the activation codes
 *   T         vpmaddubsw gives 16 pair sums per sub-block (|.| <= 3840, lanes: first 16
 *             codes | last 16); vpmaddwd by ones and vpackssdw halve them level by
 *             level, exact in 16 bits, the two 16-code halves added before the last:
 *               A_j = madd(P_j)                     8 dwords per sub-block
 *               B_c = madd(pack(A_2c, A_2c+1))      [j j j' j' | j j j' j']
 *               W   = pack(B_0, B_1)                [0 0 1 1 2 2 3 3 | same] (words)
 *               W'  = W_0123, W_4567 with their 128-bit halves added   (|.| <= 30720)
 *               T   = madd(W', sc_j as word pairs)  = sc_j isum_j, 8 lanes
 *             (vphaddd would say it in fewer instructions, but costs 3 uops on Zen 3)
 *   scales    the 16 header bytes in both 128-bit lanes (vbroadcasti128); the 12 packed
 *             bytes unshuffled as dwords (vpshufd, a variable shift, masks) into bytes
 *             sc_0..7, m_0..7; in-lane vpshufb spreads them into T's word pairs and the
 *             m_j's dwords; d and dmin from one vpbroadcastd + vcvtph2ps, split by
 *             vmovsldup / vmovshdup (no lane-crossing shuffle)
 *   sum       acc += T * (d dx) - (dmin m) * s, dx and s from the scratch; the gemv
 *             keeps the mins in a second accumulator (two short FMA chains, not one)
 *
 * The gemm (2-4 columns) unpacks a superblock's codes once into the frame (QB) and its
 * scales into registers and SQ, then runs the columns two at a time, each code load
 * serving both trees (Q4K_COLUMNS2); a third column alone (Q4K_COLUMN).
 *
 * Scratch per superblock and column (K_PREP_SB): dx_0..7, then s_0..7 (floats).
 *
 * Registers in the body (the tile's GPRs are in matmul_k_avx2.inc):
 *   ymm15 M4 (0x0f bytes), ymm14 ONES (i16 ones), ymm13 SC (the gemv's scale words)
 *   ymm9-12 accumulators of columns 0-3 (ymm10: the gemv's mins), ymm6 DD = d,
 *   ymm5 DMN = dmin m_j, ymm0-4, 7, 8 temporaries (and ymm13 in the gemm)
 */

#define SB_BYTES  LILA_Q4_K_BLOCK_BYTES
#define M4        %ymm15
#define ONES      %ymm14
#define DD        %ymm6
#define DMN       %ymm5
#define SC        %ymm13

#include "matmul_k_avx2.inc"
#include "matmul_k_prep.inc"

        .section .rodata.cst32, "aM", @progbits, 32
        .balign 32
.Lq4k_m4:       .fill 32, 1, 0x0f
.Lq4k_ones:     .fill 16, 2, 1
.Lq4k_shift:    .rept 2                                 /* m_4..7 are high nibbles */
                .long 0, 0, 0, 4
                .endr
.Lq4k_low:      .rept 2
                .long 0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f
                .endr
.Lq4k_top:      .rept 2                                 /* bits 4-5 of sc, m 4..7 */
                .long 0, 0x30303030, 0, 0x30303030
                .endr
/* from bytes sc_0..7 m_0..7: words sc_0 sc_0 sc_1 sc_1 .. sc_3 sc_3 | sc_4 sc_4 .. sc_7 sc_7 */
.Lq4k_sc:       .byte 0, -1, 0, -1, 1, -1, 1, -1, 2, -1, 2, -1, 3, -1, 3, -1
                .byte 4, -1, 4, -1, 5, -1, 5, -1, 6, -1, 6, -1, 7, -1, 7, -1
/* dwords m_0..3 | m_4..7 */
.Lq4k_mn:       .byte 8, -1, -1, -1, 9, -1, -1, -1, 10, -1, -1, -1, 11, -1, -1, -1
                .byte 12, -1, -1, -1, 13, -1, -1, -1, 14, -1, -1, -1, 15, -1, -1, -1

.macro K_CONSTS
        vmovdqa .Lq4k_m4(%rip), M4
        vmovdqa .Lq4k_ones(%rip), ONES
.endm

/* dx_0..7 and s_0..7 of the 8 blocks at %r8 to %r9 and %r9 + 32 */
.macro K_PREP_SB
        Q4K_GATHER_DS
        vmovaps %ymm2, 0(%r9)
        vmovaps %ymm3, 32(%r9)
.endm

/* \sc = sc_j as word pairs (sub-blocks 0-3 | 4-7), DD = d, DMN = dmin m_j (floats).
 * The 12 bytes are dwords u0 u1 u2 at P + 4:
 *   sc_0..3 = u0 & 3f            m_0..3 = u1 & 3f
 *   sc_4..7 = u2 & 0f | (u0 >> 2) & 30   m_4..7 = (u2 >> 4) & 0f | (u1 >> 2) & 30
 * computed in both 128-bit lanes, so that in-lane vpshufb can spread them. Clobbers ymm7. */
.macro Q4K_SCALES sc
        vbroadcasti128 (P), %ymm7
        vpshufd $0xed, %ymm7, DMN               /* u0 u2 u1 u2 */
        vpsrlvd .Lq4k_shift(%rip), DMN, DMN
        vpand   .Lq4k_low(%rip), DMN, DMN
        vpshufd $0xa5, %ymm7, %ymm7             /* u0 u0 u1 u1 */
        vpsrld  $2, %ymm7, %ymm7
        vpand   .Lq4k_top(%rip), %ymm7, %ymm7
        vpor    %ymm7, DMN, %ymm7               /* bytes sc_0..7, m_0..7 */
        vpshufb .Lq4k_sc(%rip), %ymm7, \sc
        vpshufb .Lq4k_mn(%rip), %ymm7, DMN
        vcvtdq2ps DMN, DMN
        vpbroadcastd (P), %ymm7                 /* d dmin (f16), 8 times */
        vcvtph2ps %xmm7, %ymm7
        vmovsldup %ymm7, DD
        vmovshdup %ymm7, %ymm7
        vmulps  %ymm7, DMN, DMN
.endm

/* the codes of sub-blocks 2c, 2c + 1 to ymm0, ymm1: from the weights, or from QB */
.macro Q4K_CODES c, direct
        .if \direct
        vmovdqu 16 + 32 * \c(P), %ymm1
        vpand   %ymm1, M4, %ymm0
        vpsrlw  $4, %ymm1, %ymm1
        vpand   %ymm1, M4, %ymm1
        .else
        vmovdqa QB + 64 * \c(%rsp), %ymm0
        vmovdqa QB + 64 * \c + 32(%rsp), %ymm1
        .endif
.endm

/* \out = B for sub-blocks 2c, 2c + 1 against column k: dwords [j j j' j' | j j j' j'] */
.macro Q4K_PAIR c, k, direct, out
        Q4K_CODES \c, \direct
        XMEM    vpmaddubsw, \k, (LILA_Q8_QS + 2 * LILA_Q8_BYTES * \c), %ymm0, %ymm0
        XMEM    vpmaddubsw, \k, (LILA_Q8_QS + LILA_Q8_BYTES * (2 * \c + 1)), %ymm1, %ymm1
        vpmaddwd ONES, %ymm0, %ymm0
        vpmaddwd ONES, %ymm1, %ymm1
        vpackssdw %ymm1, %ymm0, \out
        vpmaddwd ONES, \out, \out
.endm

/* column k's superblock into ymm\acc */
.macro Q4K_COLUMN k, acc, direct, sc
        Q4K_PAIR 0, \k, \direct, %ymm2
        Q4K_PAIR 1, \k, \direct, %ymm3
        vpackssdw %ymm3, %ymm2, %ymm2           /* sub-blocks 0-3 (x2) | the same, other 16 */
        Q4K_PAIR 2, \k, \direct, %ymm3
        Q4K_PAIR 3, \k, \direct, %ymm4
        vpackssdw %ymm4, %ymm3, %ymm3           /* 4-7 likewise */
        vperm2i128 $0x21, %ymm3, %ymm2, %ymm4
        vpblendd $0xf0, %ymm3, %ymm2, %ymm2
        vpaddw  %ymm4, %ymm2, %ymm2             /* 0-3 | 4-7, halves added: |.| <= 30720 */
        vpmaddwd \sc, %ymm2, %ymm2              /* T: sc_j isum_j */
        vcvtdq2ps %ymm2, %ymm2
        vmulps  ((\k) * COLSCR)(SCR), DD, %ymm4   /* d dx */
        vfmadd231ps %ymm4, %ymm2, %ymm\acc
        .if \direct                             /* the gemv: its own chain for the mins */
        vfnmadd231ps ((\k) * COLSCR + 32)(SCR), DMN, %ymm10
        .else
        vfnmadd231ps ((\k) * COLSCR + 32)(SCR), DMN, %ymm\acc
        .endif
.endm

/* B of pair c for columns k, k + 1 from the codes in QB (loaded once, to ymm0 ymm1, for
 * both): column k's to \ba, column k + 1's to \bb (\bb first serves column k's tree) */
.macro Q4K_PAIR2 c, k, ba, bb
        vmovdqa QB + 64 * \c(%rsp), %ymm0
        vmovdqa QB + 64 * \c + 32(%rsp), %ymm1
        XMEM    vpmaddubsw, \k, (LILA_Q8_QS + 2 * LILA_Q8_BYTES * \c), %ymm0, \ba
        XMEM    vpmaddubsw, \k, (LILA_Q8_QS + LILA_Q8_BYTES * (2 * \c + 1)), %ymm1, \bb
        vpmaddwd ONES, \ba, \ba
        vpmaddwd ONES, \bb, \bb
        vpackssdw \bb, \ba, \ba
        vpmaddwd ONES, \ba, \ba
        XMEM    vpmaddubsw, \k+1, (LILA_Q8_QS + 2 * LILA_Q8_BYTES * \c), %ymm0, \bb
        XMEM    vpmaddubsw, \k+1, (LILA_Q8_QS + LILA_Q8_BYTES * (2 * \c + 1)), %ymm1, %ymm1
        vpmaddwd ONES, \bb, \bb
        vpmaddwd ONES, %ymm1, %ymm1
        vpackssdw %ymm1, \bb, \bb
        vpmaddwd ONES, \bb, \bb
.endm

/* the end of a column's superblock: \w0 = sub-blocks 0-3 (x2 | other 16), \w1 = 4-7 */
.macro Q4K_TAIL k, acc, w0, w1, t
        vperm2i128 $0x21, \w1, \w0, \t
        vpblendd $0xf0, \w1, \w0, \w0
        vpaddw  \t, \w0, \w0
        vpmaddwd SQ(%rsp), \w0, \w0
        vcvtdq2ps \w0, \w0
        vmulps  ((\k) * COLSCR)(SCR), DD, \t
        vfmadd231ps \t, \w0, %ymm\acc
        vfnmadd231ps ((\k) * COLSCR + 32)(SCR), DMN, %ymm\acc
.endm

/* columns k, k + 1 into ymm\a0, ymm\a1: two independent trees, each code load shared */
.macro Q4K_COLUMNS2 k, a0, a1
        Q4K_PAIR2 0, \k, %ymm2, %ymm4
        Q4K_PAIR2 1, \k, %ymm3, %ymm8
        vpackssdw %ymm3, %ymm2, %ymm2
        vpackssdw %ymm8, %ymm4, %ymm4
        Q4K_PAIR2 2, \k, %ymm3, %ymm8
        Q4K_PAIR2 3, \k, %ymm7, %ymm13
        vpackssdw %ymm7, %ymm3, %ymm3
        vpackssdw %ymm13, %ymm8, %ymm8
        Q4K_TAIL \k, \a0, %ymm2, %ymm3, %ymm7
        Q4K_TAIL \k+1, \a1, %ymm4, %ymm8, %ymm13
.endm

/* the gemv's second accumulator (the mins) into the first */
.macro K_ROWEND nc
        .if \nc == 1
        vaddps  %ymm10, %ymm9, %ymm9
        .endif
.endm

.macro K_SB nc
        .if \nc == 1
        Q4K_SCALES SC
        Q4K_COLUMN 0, 9, 1, SC
        .else
        .irp c, 0, 1, 2, 3                      /* codes once, for every column */
        Q4K_CODES \c, 1
        vmovdqa %ymm0, QB + 64 * \c(%rsp)
        vmovdqa %ymm1, QB + 64 * \c + 32(%rsp)
        .endr
        Q4K_SCALES %ymm0
        vmovdqa %ymm0, SQ(%rsp)
        Q4K_COLUMNS2 0, 9, 10
        .if \nc == 3
        Q4K_COLUMN 2, 11, 0, SQ(%rsp)
        .endif
        .if \nc == 4
        Q4K_COLUMNS2 2, 11, 12
        .endif
        .endif
.endm

        K_FUNCTIONS q4_k

        .section .note.GNU-stack,"",@progbits
