/* Q8_0 weights x q8 activations, AVX2 + FMA + F16C.
 *
 *   void lila_gemv_q8_0_avx2(const void *w, size_t row_bytes, size_t rows,
 *                            const lila_q8 *x, size_t nb, size_t cols,
 *                            float *out, size_t out_stride);
 *   void lila_gemm_q8_0_avx2(same);
 *   out[c * out_stride + r] = sum_k W[r, k] * X[c, k]
 *
 * Block (34 bytes): f16 d, i8 qs[32]; value d * q.
 *
 * Both sides are signed, and vpmaddubsw wants one unsigned: |w| against x carrying w's
 * sign (vpsignb), so |w| = 128 (w = -128) is still right and a pair stays within
 * 2 * 128 * 127 = 32512. A block fills a ymm, so there is no pair layout: each row keeps
 * an 8-lane accumulator, one per row (GEMV: 8 rows at a time, then 4, 2, 1), or per row
 * and column (GEMM: 2 rows x 4 columns, the rows' |w| and scales serving the 4 columns,
 * a column's quants loaded once for both rows, the rows' signs read again from L1).
 * Loops, registers, software prefetch (the 8-row passes) and stores otherwise as
 * matmul_avx2.inc.
 */
        .set    OWN_GEMV_PASS, 1
        .set    OWN_GEMM_TILE, 1
#include "matmul_avx2.inc"

        .set    BLOCK_BYTES, LILA_Q8_0_BLOCK_BYTES  /* read by the loops of matmul_avx2.inc */
        .set    HAS_CORR, 0
#define Q_D   0                 /* f16 scale */
#define Q_QS  2                 /* 32 signed bytes */

CONST32_4 .Lones16, 0x00010001

/* ymm0-7 -> ymm0: lane i = sum of ymm i's lanes. Clobbers ymm1-7. */
.macro HSUM8
        vhaddps %ymm1, %ymm0, %ymm0     /* a0 01 23, a1 01 23 | a0 45 67, a1 45 67 */
        vhaddps %ymm3, %ymm2, %ymm2
        vhaddps %ymm5, %ymm4, %ymm4
        vhaddps %ymm7, %ymm6, %ymm6
        vhaddps %ymm2, %ymm0, %ymm0     /* a0 a1 a2 a3 (lanes 0-3) | a0 a1 a2 a3 (4-7) */
        vhaddps %ymm6, %ymm4, %ymm4
        vperm2f128 $0x20, %ymm4, %ymm0, %ymm1
        vperm2f128 $0x31, %ymm4, %ymm0, %ymm0
        vaddps  %ymm1, %ymm0, %ymm0
.endm

/* ymm0-3 -> xmm0: lane i = sum of ymm i's lanes. Clobbers ymm1-3. */
.macro HSUM4
        vhaddps %ymm1, %ymm0, %ymm0
        vhaddps %ymm3, %ymm2, %ymm2
        vhaddps %ymm2, %ymm0, %ymm0
        vextractf128 $1, %ymm0, %xmm1
        vaddps  %xmm1, %xmm0, %xmm0
.endm

/* ymm0-1 -> xmm0 lanes 0, 1 */
.macro HSUM2
        vhaddps %ymm1, %ymm0, %ymm0     /* a 01 23, b 01 23 | a 45 67, b 45 67 */
        vextractf128 $1, %ymm0, %xmm1
        vaddps  %xmm1, %xmm0, %xmm0
        vhaddps %xmm0, %xmm0, %xmm0
.endm

/* ymm0 -> xmm0 lane 0 */
.macro HSUM1
        vextractf128 $1, %ymm0, %xmm1
        vaddps  %xmm1, %xmm0, %xmm0
        vhaddps %xmm0, %xmm0, %xmm0
        vhaddps %xmm0, %xmm0, %xmm0
.endm

/* --- GEMV: ymm0-7 row accumulators ---------------------------------------------------- */
#define VX     %ymm8            /* activation quants */
#define VW     %ymm9            /* a row's quants */
#define VA     %ymm10           /* |w| */
#define VT     %ymm11
#define VD     %ymm12           /* the row's scale */
#define VDh    %xmm12
#define VDX    %ymm13           /* activation scale */
#define VONES  %ymm15

.macro GEMV_CONSTS
        vmovdqa .Lones16(%rip), VONES
.endm

.macro ROW8 base, idx, sc, acc
        vmovdqu Q_QS(\base,\idx,\sc), VW
        vpabsb  VW, VA
        vpsignb VW, VX, VT              /* x with w's sign */
        vpmaddubsw VT, VA, VT
        vpmaddwd VONES, VT, VT
        vcvtdq2ps VT, VT
        vpbroadcastw Q_D(\base,\idx,\sc), VDh
        vcvtph2ps VDh, VD
        vmulps  VDX, VD, VD
        vfmadd231ps VD, VT, \acc
.endm

/* the blocks of a pass of n rows; pf: with the prefetches (n = 8, matmul_avx2.inc) */
.macro GEMV_LOOP n, pf
        .p2align 4
1:
        vmovdqu LILA_Q8_QS(XP), VX
        vbroadcastss LILA_Q8_D(XP), VDX
        ROW8    ROW0, %ymm0
.if \n >= 2
        ROW8    ROW1, %ymm1
.endif
.if \n >= 4
        ROW8    ROW2, %ymm2
        ROW8    ROW3, %ymm3
.endif
.if \n == 8
        ROW8    ROW4, %ymm4
        ROW8    ROW5, %ymm5
        ROW8    ROW6, %ymm6
        ROW8    ROW7, %ymm7
.if \pf
        PF_STEP (8 * BLOCK_BYTES)
.endif
.endif
        addq    $BLOCK_BYTES, P
        addq    $BLOCK_BYTES, P2
        addq    $LILA_Q8_BYTES, XP
        decq    CNT
        jnz     1b
.endm

.macro GEMV_PASS n
        movq    W, P
        subq    RB, P
        leaq    (P,RB,4), P2
        movq    X_SAVED, XP
        movq    NB, CNT
        vxorps  %ymm0, %ymm0, %ymm0
.if \n >= 2
        vxorps  %ymm1, %ymm1, %ymm1
.endif
.if \n >= 4
        vxorps  %ymm2, %ymm2, %ymm2
        vxorps  %ymm3, %ymm3, %ymm3
.endif
.if \n == 8
        vxorps  %ymm4, %ymm4, %ymm4
        vxorps  %ymm5, %ymm5, %ymm5
        vxorps  %ymm6, %ymm6, %ymm6
        vxorps  %ymm7, %ymm7, %ymm7
        cmpq    $PF_MAX_ROW, RB
        jae     3f
        PF_START
        GEMV_LOOP 8, 1
        jmp     4f
3:
        GEMV_LOOP 8, 0                  /* long rows: no prefetches */
4:
.else
        GEMV_LOOP \n, 0
.endif
.if \n == 8
        HSUM8
        vmovups %ymm0, (OUT)
.elseif \n == 4
        HSUM4
        vmovups %xmm0, (OUT)
.elseif \n == 2
        HSUM2
        vmovlps %xmm0, (OUT)
.else
        HSUM1
        vmovss  %xmm0, (OUT)
.endif
        addq    $(4 * \n), OUT
        leaq    (W,RB,\n), W
.endm

/* --- GEMM: ymm0-7 tile accumulators (r0 c0, r1 c0, r0 c1, r1 c1, ...) ------------------- */
#define MA0    %ymm8            /* row 0's |w| */
#define MA1    %ymm9
#define MD0    %ymm10           /* row 0's scale */
#define MD0h   %xmm10
#define MD1    %ymm11
#define MD1h   %xmm11
#define MX     %ymm12           /* a column's quants */
#define MDX    %ymm13           /* its scale */
#define MT     %ymm14
#define MONES  %ymm15

.macro GEMM_CONSTS
        vmovdqa .Lones16(%rip), MONES
.endm

.macro GEMM_ROW sc, a, d, dh
        vpabsb  Q_QS(GP,GRB,\sc), \a
        vpbroadcastw Q_D(GP,GRB,\sc), \dh
        vcvtph2ps \dh, \d
.endm

/* row at (GP,GRB,sc), the column in MX / MDX */
.macro GEMM_DOT sc, a, d, acc
        vpsignb Q_QS(GP,GRB,\sc), MX, MT        /* x with w's sign */
        vpmaddubsw MT, \a, MT
        vpmaddwd MONES, MT, MT
        vcvtdq2ps MT, MT
        vmulps  MDX, MT, MT
        vfmadd231ps \d, MT, \acc
.endm

.macro GEMM_XCOL idx, sc
        vmovdqu LILA_Q8_QS(GX,\idx,\sc), MX
        vbroadcastss LILA_Q8_D(GX,\idx,\sc), MDX
.endm

.macro GEMM_TILE single
        movq    GW, GP
        subq    GRB, GP
        movq    GXC, GX
        subq    GNB, GX
        movq    GNBK, GCNT
        vxorps  %ymm0, %ymm0, %ymm0
        vxorps  %ymm1, %ymm1, %ymm1
        vxorps  %ymm2, %ymm2, %ymm2
        vxorps  %ymm3, %ymm3, %ymm3
.if \single == 0
        vxorps  %ymm4, %ymm4, %ymm4
        vxorps  %ymm5, %ymm5, %ymm5
        vxorps  %ymm6, %ymm6, %ymm6
        vxorps  %ymm7, %ymm7, %ymm7
.endif
        .p2align 4
1:
        GEMM_ROW 1, MA0, MD0, MD0h
.if \single
        GEMM_XCOL COL0
        GEMM_DOT 1, MA0, MD0, %ymm0
        GEMM_XCOL COL1
        GEMM_DOT 1, MA0, MD0, %ymm1
        GEMM_XCOL COL2
        GEMM_DOT 1, MA0, MD0, %ymm2
        GEMM_XCOL COL3
        GEMM_DOT 1, MA0, MD0, %ymm3
.else
        GEMM_ROW 2, MA1, MD1, MD1h
        GEMM_XCOL COL0
        GEMM_DOT 1, MA0, MD0, %ymm0
        GEMM_DOT 2, MA1, MD1, %ymm1
        GEMM_XCOL COL1
        GEMM_DOT 1, MA0, MD0, %ymm2
        GEMM_DOT 2, MA1, MD1, %ymm3
        GEMM_XCOL COL2
        GEMM_DOT 1, MA0, MD0, %ymm4
        GEMM_DOT 2, MA1, MD1, %ymm5
        GEMM_XCOL COL3
        GEMM_DOT 1, MA0, MD0, %ymm6
        GEMM_DOT 2, MA1, MD1, %ymm7
.endif
        addq    $BLOCK_BYTES, GP
        addq    $LILA_Q8_BYTES, GX
        decq    GCNT
        jnz     1b

        movq    GOUT, %r10
.if \single
        HSUM4                           /* c0 c1 c2 c3 */
        vmovss  %xmm0, (%r10)
        addq    GOS, %r10
        vextractps $1, %xmm0, (%r10)
        addq    GOS, %r10
        vextractps $2, %xmm0, (%r10)
        addq    GOS, %r10
        vextractps $3, %xmm0, (%r10)
.else
        HSUM8                           /* r0 c0, r1 c0, r0 c1, r1 c1, ... */
        vmovlps %xmm0, (%r10)
        addq    GOS, %r10
        vmovhps %xmm0, (%r10)
        addq    GOS, %r10
        vextractf128 $1, %ymm0, %xmm0
        vmovlps %xmm0, (%r10)
        addq    GOS, %r10
        vmovhps %xmm0, (%r10)
.endif
.endm

MATMUL_FUNCTIONS q8_0

        .section .note.GNU-stack,"",@progbits
