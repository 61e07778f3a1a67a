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
 *   isum      vpmaddubsw gives 16 pair sums per sub-block (|.| <= 3840); a tree of
 *             vpmaddwd-by-ones and vpackssdw halves them level by level, still exact in
 *             16 bits (<= 30720 before the last level), into T = isum_0..7 (8 lanes):
 *               A_j = madd(P_j)                    8 dwords per sub-block
 *               B   = madd(pack(A_2c, A_2c+1))     [j j j' j' | j j j' j']
 *               C   = madd(pack(B_01, B_23))       [0 1 2 3 | 0 1 2 3] (lane halves)
 *               T   = C_0123 and C_4567 with their 128-bit halves added
 *             (vphaddd would say it in fewer instructions but costs 3 uops on Zen 3)
 *   scales    the 12 packed bytes unshuffled in one xmm (vpshufd from memory, a variable
 *             shift, masks) into sc_0..7, m_0..7; zero-extended, converted, times d, dmin
 *   sum       acc += T * (d sc * dx)  -  (dmin m) * s, with dx and s from the scratch
 *
 * Scratch per superblock and column (K_PREP_SB): dx_0..7, then s_0..7 (floats).
 *
 * Registers in the body (the tile's GPRs are in matmul_k_avx2.inc):
 *   ymm15 M4 (0x0f bytes), ymm14 ONES (i16 ones), ymm13 IDX1 (dword 1: dmin's lane)
 *   ymm9-12 accumulators of columns 0-3, ymm6 DSC = d sc_j, ymm5 DMN = dmin m_j,
 *   ymm0-4, 7, 8 temporaries
 */

#define SB_BYTES  144
#define M4        %ymm15
#define ONES      %ymm14
#define IDX1      %ymm13
#define DSC       %ymm6
#define DMN       %ymm5

#include "matmul_k_avx2.inc"

        .section .rodata.cst32, "aM", @progbits, 32
        .balign 32
.Lq4k_m4:       .fill 32, 1, 0x0f
.Lq4k_ones:     .fill 16, 2, 1
.Lq4k_idx1:     .fill 8, 4, 1
        .section .rodata.cst16, "aM", @progbits, 16
        .balign 16
.Lq4k_shift:    .long 0, 0, 0, 4                                      /* m_4..7 are high nibbles */
.Lq4k_low:      .long 0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f
.Lq4k_top:      .long 0, 0x30303030, 0, 0x30303030                    /* bits 4-5 of sc, m 4..7 */

.macro K_CONSTS
        vmovdqa .Lq4k_m4(%rip), M4
        vmovdqa .Lq4k_ones(%rip), ONES
        vmovdqa .Lq4k_idx1(%rip), IDX1
.endm

/* dx_0..7 and s_0..7 of the 8 blocks at %r8 to %r9 and %r9 + 32 */
.macro K_PREP_SB
        vmovsd  0(%r8), %xmm0                   /* d0 s0 */
        vmovhps 40(%r8), %xmm0, %xmm0           /* d0 s0 d1 s1 */
        vmovsd  80(%r8), %xmm1
        vmovhps 120(%r8), %xmm1, %xmm1          /* d2 s2 d3 s3 */
        vmovsd  160(%r8), %xmm2
        vmovhps 200(%r8), %xmm2, %xmm2
        vmovsd  240(%r8), %xmm3
        vmovhps 280(%r8), %xmm3, %xmm3
        vinsertf128 $1, %xmm2, %ymm0, %ymm0     /* d0 s0 d1 s1 | d4 s4 d5 s5 */
        vinsertf128 $1, %xmm3, %ymm1, %ymm1     /* d2 s2 d3 s3 | d6 s6 d7 s7 */
        vshufps $0x88, %ymm1, %ymm0, %ymm2
        vshufps $0xdd, %ymm1, %ymm0, %ymm3
        vmovaps %ymm2, 0(%r9)
        vmovaps %ymm3, 32(%r9)
.endm

/* DSC = d sc_j, DMN = dmin m_j (floats, j = 0..7). Clobbers ymm7, ymm8.
 * The 12 bytes are dwords u0 u1 u2 at P + 4:
 *   sc_0..3 = u0 & 3f            m_0..3 = u1 & 3f
 *   sc_4..7 = u2 & 0f | (u0 >> 2) & 30   m_4..7 = (u2 >> 4) & 0f | (u1 >> 2) & 30 */
.macro Q4K_SCALES
        vpshufd $0xed, (P), %xmm7               /* u0 u2 u1 u2 */
        vpsrlvd .Lq4k_shift(%rip), %xmm7, %xmm7
        vpand   .Lq4k_low(%rip), %xmm7, %xmm7
        vpshufd $0xa5, (P), %xmm8               /* u0 u0 u1 u1 */
        vpsrld  $2, %xmm8, %xmm8
        vpand   .Lq4k_top(%rip), %xmm8, %xmm8
        vpor    %xmm8, %xmm7, %xmm7             /* bytes sc_0..7, m_0..7 */
        vpmovzxbd %xmm7, DSC
        vpshufd $0xee, %xmm7, %xmm7
        vpmovzxbd %xmm7, DMN
        vcvtdq2ps DSC, DSC
        vcvtdq2ps DMN, DMN
        vcvtph2ps (P), %xmm7                    /* d dmin . . */
        vbroadcastss %xmm7, %ymm8
        vpermps %ymm7, IDX1, %ymm7
        vmulps  %ymm8, DSC, DSC
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
        XMEM    vpmaddubsw, \k, 8+80*\c, %ymm0, %ymm0
        XMEM    vpmaddubsw, \k, 48+80*\c, %ymm1, %ymm1
        vpmaddwd ONES, %ymm0, %ymm0
        vpmaddwd ONES, %ymm1, %ymm1
        vpackssdw %ymm1, %ymm0, \out
        vpmaddwd ONES, \out, \out
.endm

/* column k's superblock into ymm\acc */
.macro Q4K_COLUMN k, acc, direct
        Q4K_PAIR 0, \k, \direct, %ymm2
        Q4K_PAIR 1, \k, \direct, %ymm3
        vpackssdw %ymm3, %ymm2, %ymm2
        vpmaddwd ONES, %ymm2, %ymm2             /* isum 0-3 | the same, other 16 */
        Q4K_PAIR 2, \k, \direct, %ymm3
        Q4K_PAIR 3, \k, \direct, %ymm4
        vpackssdw %ymm4, %ymm3, %ymm3
        vpmaddwd ONES, %ymm3, %ymm3             /* isum 4-7 likewise */
        vperm2i128 $0x21, %ymm3, %ymm2, %ymm4
        vpblendd $0xf0, %ymm3, %ymm2, %ymm2
        vpaddd  %ymm4, %ymm2, %ymm2             /* T: isum 0..7 */
        vcvtdq2ps %ymm2, %ymm2
        vmulps  (\k * COLSCR)(SCR), DSC, %ymm4  /* d sc dx */
        vfmadd231ps %ymm4, %ymm2, %ymm\acc
        vfnmadd231ps (\k * COLSCR + 32)(SCR), DMN, %ymm\acc
.endm

.macro K_SB nc
        .if \nc == 1
        Q4K_SCALES
        Q4K_COLUMN 0, 9, 1
        .else
        .irp c, 0, 1, 2, 3                      /* codes once, for every column */
        Q4K_CODES \c, 1
        vmovdqa %ymm0, QB + 64 * \c(%rsp)
        vmovdqa %ymm1, QB + 64 * \c + 32(%rsp)
        .endr
        Q4K_SCALES
        Q4K_COLUMN 0, 9, 0
        Q4K_COLUMN 1, 10, 0
        .if \nc > 2
        Q4K_COLUMN 2, 11, 0
        .endif
        .if \nc > 3
        Q4K_COLUMN 3, 12, 0
        .endif
        .endif
.endm

        K_FUNCTIONS q4_k

        .section .note.GNU-stack,"",@progbits
