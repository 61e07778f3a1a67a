/* lila_embed_<type>_avx2: one embedding row, dequantized and scaled.
 *
 * void lila_embed_<type>_avx2(const void *row, size_t n, float scale, float *out);
 *     type: f32, f16 (any n), q4_0, q4_1, q5_0, q8_0 (n % 32 == 0), q4_k, q6_k (n % 256 == 0)
 *
 * out[i] = v[i] * scale, where v[i] is computed operation for operation as
 * lila/formats/quants.py does it in fp32 (and hence ggml): block scales are fp16 made
 * exact fp32 by vcvtph2ps, codes are small integers made exact fp32 by vcvtdq2ps, and
 * each product or sum the reference rounds separately is a separate vmulps / vaddps /
 * vsubps here (no FMA), so the row is bit-exact against dequantize(...) * scale.
 *
 * Codes are widened 8 bytes at a time with vpmovzxbd / vpmovsxbd straight from the
 * block, and the nibbles split in the int32 domain (x & 15, x >> 4): the low nibble of
 * a byte and its high nibble land in different 8-float runs of the output, so there is
 * no cross-lane shuffling. Reads stay inside the n elements' blocks.
 *
 * The k-quants keep their 16 per-sub-block fp32 scales (and mins) in the red zone below
 * rsp: these are leaf functions.
 *
 * Registers: ymm15 scale; ymm11-14 integer constants; ymm0-10 work.
 */
#include "lila_abi.inc"           /* LILA_<TYPE>_BLOCK_BYTES: block sizes, from the build */

#define ROW     %rdi    /* next block of the row */
#define N       %rsi    /* elements, then blocks left */
#define OUT     %rdx    /* next output float */
#define TMP     %rax

#define SCALE   %ymm15
#define LOW4    %ymm14  /* dwords 0x0f */
#define C30     %ymm13  /* dwords 0x30: the two high bits of a q6_k code */
#define CSUB    %ymm12  /* dwords: the code offset (8 q4_0, 16 q5_0, 32 q6_k) */
#define CONE    %ymm11  /* dwords 1 */

        .section .rodata
        .balign 32
.Lmasks:        /* the 8 dwords at .Lmasks + 4 * (8 - r) have their first r set */
        .long   -1, -1, -1, -1, -1, -1, -1, -1
        .long   0, 0, 0, 0, 0, 0, 0, 0
.Lbitpos:       /* shift counts: bit e of q5_0's qh is the fifth bit of element e */
        .long   0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
        .long   16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31
.Lc0f:  .long   0x0f
.Lc30:  .long   0x30
.Lc1:   .long   1
.Lc8:   .long   8
.Lc16:  .long   16
.Lc32:  .long   32

/* ymm\reg = the fp16 at \mem as fp32, in every lane */
        .macro f16_bcast mem, reg
        movzwl          \mem, %eax
        vmovd           %eax, %xmm\reg
        vcvtph2ps       %xmm\reg, %xmm\reg
        vbroadcastss    %xmm\reg, %ymm\reg
        .endm

/* 8 int32 codes in ymm\q -> (float(q) * ymm\d) * scale stored at \dst */
        .macro mul_store q, d, dst
        vcvtdq2ps       %ymm\q, %ymm\q
        vmulps          %ymm\d, %ymm\q, %ymm\q
        vmulps          SCALE, %ymm\q, %ymm\q
        vmovups         %ymm\q, \dst
        .endm

/* 8 int32 codes in ymm\q -> (float(q) * ymm\d  -/+  ymm\m) * scale stored at \dst:
 * two roundings, as the reference has them; \op is vaddps (q4_1) or vsubps (q4_k) */
        .macro mul_off_store q, d, m, op, dst
        vcvtdq2ps       %ymm\q, %ymm\q
        vmulps          %ymm\d, %ymm\q, %ymm\q
        \op             %ymm\m, %ymm\q, %ymm\q
        vmulps          SCALE, %ymm\q, %ymm\q
        vmovups         %ymm\q, \dst
        .endm

        .text

/* ---- f32: out = x * scale ------------------------------------------------------- */
        .globl  lila_embed_f32_avx2
        .type   lila_embed_f32_avx2, @function
        .balign 32
lila_embed_f32_avx2:
        vbroadcastss    %xmm0, SCALE
        cmpq            $32, N
        jb              .Lf32_8
.Lf32_32:
        vmulps          0(ROW), SCALE, %ymm0
        vmulps          32(ROW), SCALE, %ymm1
        vmulps          64(ROW), SCALE, %ymm2
        vmulps          96(ROW), SCALE, %ymm3
        vmovups         %ymm0, 0(OUT)
        vmovups         %ymm1, 32(OUT)
        vmovups         %ymm2, 64(OUT)
        vmovups         %ymm3, 96(OUT)
        addq            $128, ROW
        addq            $128, OUT
        subq            $32, N
        cmpq            $32, N
        jae             .Lf32_32
.Lf32_8:
        cmpq            $8, N
        jb              .Lf32_tail
        vmulps          0(ROW), SCALE, %ymm0
        vmovups         %ymm0, 0(OUT)
        addq            $32, ROW
        addq            $32, OUT
        subq            $8, N
        jmp             .Lf32_8
.Lf32_tail:
        testq           N, N
        jz              .Lf32_done
        leaq            .Lmasks+32(%rip), TMP
        shlq            $2, N
        subq            N, TMP
        vmovdqu         (TMP), %ymm1
        vmaskmovps      (ROW), %ymm1, %ymm0     /* masked lanes are neither read nor faulted */
        vmulps          SCALE, %ymm0, %ymm0
        vmaskmovps      %ymm0, %ymm1, (OUT)
.Lf32_done:
        vzeroupper
        ret
        .size   lila_embed_f32_avx2, .-lila_embed_f32_avx2

/* ---- f16: out = float(h) * scale; the last n % 8 one at a time (no 16-bit masked
 * load exists, and a dword-masked one would read past an odd end) ------------------- */
        .globl  lila_embed_f16_avx2
        .type   lila_embed_f16_avx2, @function
        .balign 32
lila_embed_f16_avx2:
        vbroadcastss    %xmm0, SCALE
        cmpq            $32, N
        jb              .Lf16_8
.Lf16_32:
        vcvtph2ps       0(ROW), %ymm0
        vcvtph2ps       16(ROW), %ymm1
        vcvtph2ps       32(ROW), %ymm2
        vcvtph2ps       48(ROW), %ymm3
        vmulps          SCALE, %ymm0, %ymm0
        vmulps          SCALE, %ymm1, %ymm1
        vmulps          SCALE, %ymm2, %ymm2
        vmulps          SCALE, %ymm3, %ymm3
        vmovups         %ymm0, 0(OUT)
        vmovups         %ymm1, 32(OUT)
        vmovups         %ymm2, 64(OUT)
        vmovups         %ymm3, 96(OUT)
        addq            $64, ROW
        addq            $128, OUT
        subq            $32, N
        cmpq            $32, N
        jae             .Lf16_32
.Lf16_8:
        cmpq            $8, N
        jb              .Lf16_1
        vcvtph2ps       0(ROW), %ymm0
        vmulps          SCALE, %ymm0, %ymm0
        vmovups         %ymm0, 0(OUT)
        addq            $16, ROW
        addq            $32, OUT
        subq            $8, N
        jmp             .Lf16_8
.Lf16_1:
        testq           N, N
        jz              .Lf16_done
        movzwl          0(ROW), %eax
        vmovd           %eax, %xmm0
        vcvtph2ps       %xmm0, %xmm0
        vmulss          %xmm15, %xmm0, %xmm0
        vmovss          %xmm0, 0(OUT)
        addq            $2, ROW
        addq            $4, OUT
        decq            N
        jmp             .Lf16_1
.Lf16_done:
        vzeroupper
        ret
        .size   lila_embed_f16_avx2, .-lila_embed_f16_avx2

/* ---- q4_0: 18-byte blocks {f16 d; u8 qs[16]}; element j < 16 is the low nibble of
 * qs[j], element 16 + j the high one; v = d * (q - 8) --------------------------------- */
        .macro q4_0_half g
        vpmovzxbd       2+8*\g(ROW), %ymm2
        vpsrld          $4, %ymm2, %ymm3
        vpand           LOW4, %ymm2, %ymm2
        vpsubd          CSUB, %ymm2, %ymm2
        vpsubd          CSUB, %ymm3, %ymm3
        mul_store       2, 1, 32*\g(OUT)
        mul_store       3, 1, 64+32*\g(OUT)
        .endm

        .globl  lila_embed_q4_0_avx2
        .type   lila_embed_q4_0_avx2, @function
        .balign 32
lila_embed_q4_0_avx2:
        shrq            $5, N
        jz              .Lq4_0_done
        vbroadcastss    %xmm0, SCALE
        vpbroadcastd    .Lc0f(%rip), LOW4
        vpbroadcastd    .Lc8(%rip), CSUB
.Lq4_0_block:
        f16_bcast       0(ROW), 1
        q4_0_half       0
        q4_0_half       1
        addq            $LILA_Q4_0_BLOCK_BYTES, ROW
        addq            $128, OUT
        decq            N
        jnz             .Lq4_0_block
.Lq4_0_done:
        vzeroupper
        ret
        .size   lila_embed_q4_0_avx2, .-lila_embed_q4_0_avx2

/* ---- q4_1: 20-byte blocks {f16 d; f16 m; u8 qs[16]}, nibbles as q4_0;
 * v = (d * q) + m ------------------------------------------------------------------- */
        .macro q4_1_half g
        vpmovzxbd       4+8*\g(ROW), %ymm2
        vpsrld          $4, %ymm2, %ymm3
        vpand           LOW4, %ymm2, %ymm2
        mul_off_store   2, 0, 1, vaddps, 32*\g(OUT)
        mul_off_store   3, 0, 1, vaddps, 64+32*\g(OUT)
        .endm

        .globl  lila_embed_q4_1_avx2
        .type   lila_embed_q4_1_avx2, @function
        .balign 32
lila_embed_q4_1_avx2:
        shrq            $5, N
        jz              .Lq4_1_done
        vbroadcastss    %xmm0, SCALE
        vpbroadcastd    .Lc0f(%rip), LOW4
.Lq4_1_block:
        f16_bcast       0(ROW), 0
        f16_bcast       2(ROW), 1
        q4_1_half       0
        q4_1_half       1
        addq            $LILA_Q4_1_BLOCK_BYTES, ROW
        addq            $128, OUT
        decq            N
        jnz             .Lq4_1_block
.Lq4_1_done:
        vzeroupper
        ret
        .size   lila_embed_q4_1_avx2, .-lila_embed_q4_1_avx2

/* ---- q5_0: 22-byte blocks {f16 d; u32 qh; u8 qs[16]}; nibbles as q4_0, bit e of qh
 * (little endian) is the fifth bit of element e; v = d * (q - 16) ------------------- */
        .macro q5_0_half g
        vpmovzxbd       6+8*\g(ROW), %ymm2
        vpsrld          $4, %ymm2, %ymm3
        vpand           LOW4, %ymm2, %ymm2
        vpsrlvd         .Lbitpos+32*\g(%rip), %ymm0, %ymm4      /* elements 8g.. */
        vpsrlvd         .Lbitpos+64+32*\g(%rip), %ymm0, %ymm5   /* elements 16+8g.. */
        vpand           CONE, %ymm4, %ymm4
        vpand           CONE, %ymm5, %ymm5
        vpslld          $4, %ymm4, %ymm4
        vpslld          $4, %ymm5, %ymm5
        vpor            %ymm4, %ymm2, %ymm2
        vpor            %ymm5, %ymm3, %ymm3
        vpsubd          CSUB, %ymm2, %ymm2
        vpsubd          CSUB, %ymm3, %ymm3
        mul_store       2, 1, 32*\g(OUT)
        mul_store       3, 1, 64+32*\g(OUT)
        .endm

        .globl  lila_embed_q5_0_avx2
        .type   lila_embed_q5_0_avx2, @function
        .balign 32
lila_embed_q5_0_avx2:
        shrq            $5, N
        jz              .Lq5_0_done
        vbroadcastss    %xmm0, SCALE
        vpbroadcastd    .Lc0f(%rip), LOW4
        vpbroadcastd    .Lc16(%rip), CSUB
        vpbroadcastd    .Lc1(%rip), CONE
.Lq5_0_block:
        f16_bcast       0(ROW), 1
        vpbroadcastd    2(ROW), %ymm0                           /* qh */
        q5_0_half       0
        q5_0_half       1
        addq            $LILA_Q5_0_BLOCK_BYTES, ROW
        addq            $128, OUT
        decq            N
        jnz             .Lq5_0_block
.Lq5_0_done:
        vzeroupper
        ret
        .size   lila_embed_q5_0_avx2, .-lila_embed_q5_0_avx2

/* ---- q8_0: 34-byte blocks {f16 d; i8 qs[32]}; v = q * d -------------------------- */
        .globl  lila_embed_q8_0_avx2
        .type   lila_embed_q8_0_avx2, @function
        .balign 32
lila_embed_q8_0_avx2:
        shrq            $5, N
        jz              .Lq8_0_done
        vbroadcastss    %xmm0, SCALE
.Lq8_0_block:
        f16_bcast       0(ROW), 1
        vpmovsxbd       2(ROW), %ymm2
        vpmovsxbd       10(ROW), %ymm3
        vpmovsxbd       18(ROW), %ymm4
        vpmovsxbd       26(ROW), %ymm5
        mul_store       2, 1, 0(OUT)
        mul_store       3, 1, 32(OUT)
        mul_store       4, 1, 64(OUT)
        mul_store       5, 1, 96(OUT)
        addq            $LILA_Q8_0_BLOCK_BYTES, ROW
        addq            $128, OUT
        decq            N
        jnz             .Lq8_0_block
.Lq8_0_done:
        vzeroupper
        ret
        .size   lila_embed_q8_0_avx2, .-lila_embed_q8_0_avx2

/* ---- q4_k: 144-byte super-blocks of 256 {f16 d; f16 dmin; u8 scales[12]; u8 qs[128]}.
 * Sub-block 2c + k (c < 4) is nibble k of qs[32c .. 32c + 32); its 6-bit scale sc and
 * min mn unpack from the 12 bytes as ggml's get_scale_min_k4 (packed as 32-bit lanes:
 *   sc[0..3] = a & 63,  sc[4..7] = (c & 15) | ((a >> 2) & 0x30),
 *   mn[0..3] = b & 63,  mn[4..7] = (c >> 4) | ((b >> 2) & 0x30)
 * with a, b, c the three 4-byte groups); v = (d * sc) * q - (dmin * mn). -------------- */
#define QS      %rcx    /* q4_k: qs of the current 32-byte group */
#define SCP     %r8     /* q4_k: this group's two (scale, min) pairs in the red zone */
#define GRP     %r9d    /* q4_k: groups left in the super-block (c's register, then free) */

        .macro q4_k_eighth g
        vpmovzxbd       8*\g(QS), %ymm4
        vpsrld          $4, %ymm4, %ymm5
        vpand           LOW4, %ymm4, %ymm4
        mul_off_store   4, 0, 1, vsubps, 32*\g(OUT)
        mul_off_store   5, 2, 3, vsubps, 128+32*\g(OUT)
        .endm

        .globl  lila_embed_q4_k_avx2
        .type   lila_embed_q4_k_avx2, @function
        .balign 32
lila_embed_q4_k_avx2:
        shrq            $8, N
        jz              .Lq4_k_done
        vbroadcastss    %xmm0, SCALE
        vpbroadcastd    .Lc0f(%rip), LOW4
.Lq4_k_block:
        movl            4(ROW), %eax            /* a */
        movl            8(ROW), %r8d            /* b */
        movl            12(ROW), %r9d           /* c */
        movl            %eax, %r10d
        andl            $0x3f3f3f3f, %r10d      /* sc[0..3] */
        shrl            $2, %eax
        andl            $0x30303030, %eax
        movl            %r9d, %r11d
        andl            $0x0f0f0f0f, %r11d
        orl             %eax, %r11d             /* sc[4..7] */
        vmovd           %r10d, %xmm6
        vpinsrd         $1, %r11d, %xmm6, %xmm6
        movl            %r8d, %r10d
        andl            $0x3f3f3f3f, %r10d      /* mn[0..3] */
        shrl            $2, %r8d
        andl            $0x30303030, %r8d
        shrl            $4, %r9d
        andl            $0x0f0f0f0f, %r9d       /* 32-bit shift: drop the next byte's bits */
        orl             %r8d, %r9d              /* mn[4..7] */
        vmovd           %r10d, %xmm7
        vpinsrd         $1, %r9d, %xmm7, %xmm7
        vpmovzxbd       %xmm6, %ymm6
        vpmovzxbd       %xmm7, %ymm7
        vcvtdq2ps       %ymm6, %ymm6
        vcvtdq2ps       %ymm7, %ymm7
        f16_bcast       0(ROW), 8
        f16_bcast       2(ROW), 9
        vmulps          %ymm8, %ymm6, %ymm6     /* d * sc[j] */
        vmulps          %ymm9, %ymm7, %ymm7     /* dmin * mn[j] */
        /* interleave to (scale, min) pairs so each group reads 16 contiguous bytes */
        vunpcklps       %ymm7, %ymm6, %ymm8     /* s0 m0 s1 m1 | s4 m4 s5 m5 */
        vunpckhps       %ymm7, %ymm6, %ymm9     /* s2 m2 s3 m3 | s6 m6 s7 m7 */
        vperm2f128      $0x20, %ymm9, %ymm8, %ymm6      /* s0 m0 s1 m1 s2 m2 s3 m3 */
        vperm2f128      $0x31, %ymm9, %ymm8, %ymm7      /* s4 m4 s5 m5 s6 m6 s7 m7 */
        vmovups         %ymm6, -64(%rsp)
        vmovups         %ymm7, -32(%rsp)
        leaq            -64(%rsp), SCP
        leaq            16(ROW), QS
        movl            $4, GRP
.Lq4_k_group:
        vbroadcastss    0(SCP), %ymm0           /* sub-block 2c: scale, min */
        vbroadcastss    4(SCP), %ymm1
        vbroadcastss    8(SCP), %ymm2           /* sub-block 2c + 1 */
        vbroadcastss    12(SCP), %ymm3
        q4_k_eighth     0
        q4_k_eighth     1
        q4_k_eighth     2
        q4_k_eighth     3
        addq            $32, QS
        addq            $16, SCP
        addq            $256, OUT
        decl            GRP
        jnz             .Lq4_k_group
        addq            $LILA_Q4_K_BLOCK_BYTES, ROW
        decq            N
        jnz             .Lq4_k_block
.Lq4_k_done:
        vzeroupper
        ret
        .size   lila_embed_q4_k_avx2, .-lila_embed_q4_k_avx2
#undef QS
#undef SCP
#undef GRP

/* ---- q6_k: 210-byte super-blocks of 256 {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}.
 * In half h (128 elements), element 32s + l (s < 4, l < 32) is
 *   q = (nibble s / 2 of ql[64h + 32 (s & 1) + l]) | (bits 2s, 2s+1 of qh[32h + l]) << 4,
 * v = (d * scales[(128h + 32s + l) / 16]) * (q - 32). ------------------------------- */
#define QL      %rcx    /* q6_k: ql of this half */
#define QH      %r8     /* q6_k: qh of this half */
#define SCP     %r9     /* q6_k: this half's 8 fp32 scales in the red zone */
#define HALF    %r10d   /* q6_k: halves left */

/* one column of 8 l's (l0 .. l0 + 8) of the four s rows: j0 = l0 / 16 picks the scale */
        .macro q6_k_col l0
        vpmovzxbd       \l0(QL), %ymm0          /* ql[l]: s = 0 (low), 2 (high) */
        vpmovzxbd       32+\l0(QL), %ymm1       /* ql[32 + l]: s = 1, 3 */
        vpmovzxbd       \l0(QH), %ymm2
        vpslld          $4, %ymm2, %ymm4        /* bits 0,1 -> 4,5 */
        vpslld          $2, %ymm2, %ymm5        /* bits 2,3 -> 4,5 */
        vpsrld          $2, %ymm2, %ymm3        /* bits 6,7 -> 4,5 */
        vpand           C30, %ymm4, %ymm4
        vpand           C30, %ymm5, %ymm5
        vpand           C30, %ymm2, %ymm2       /* bits 4,5 stay */
        vpand           C30, %ymm3, %ymm3
        vpand           LOW4, %ymm0, %ymm6
        vpand           LOW4, %ymm1, %ymm7
        vpsrld          $4, %ymm0, %ymm0
        vpsrld          $4, %ymm1, %ymm1
        vpor            %ymm4, %ymm6, %ymm6     /* s = 0 */
        vpor            %ymm5, %ymm7, %ymm7     /* s = 1 */
        vpor            %ymm2, %ymm0, %ymm0     /* s = 2 */
        vpor            %ymm3, %ymm1, %ymm1     /* s = 3 */
        vpsubd          CSUB, %ymm6, %ymm6
        vpsubd          CSUB, %ymm7, %ymm7
        vpsubd          CSUB, %ymm0, %ymm0
        vpsubd          CSUB, %ymm1, %ymm1
        vbroadcastss    4*(0+\l0/16)(SCP), %ymm8
        vbroadcastss    4*(2+\l0/16)(SCP), %ymm9
        vbroadcastss    4*(4+\l0/16)(SCP), %ymm10
        vbroadcastss    4*(6+\l0/16)(SCP), %ymm2
        mul_store       6, 8, 4*\l0(OUT)
        mul_store       7, 9, 4*(32+\l0)(OUT)
        mul_store       0, 10, 4*(64+\l0)(OUT)
        mul_store       1, 2, 4*(96+\l0)(OUT)
        .endm

        .globl  lila_embed_q6_k_avx2
        .type   lila_embed_q6_k_avx2, @function
        .balign 32
lila_embed_q6_k_avx2:
        shrq            $8, N
        jz              .Lq6_k_done
        vbroadcastss    %xmm0, SCALE
        vpbroadcastd    .Lc0f(%rip), LOW4
        vpbroadcastd    .Lc30(%rip), C30
        vpbroadcastd    .Lc32(%rip), CSUB
.Lq6_k_block:
        f16_bcast       208(ROW), 0
        vpmovsxbd       192(ROW), %ymm1
        vpmovsxbd       200(ROW), %ymm2
        vcvtdq2ps       %ymm1, %ymm1
        vcvtdq2ps       %ymm2, %ymm2
        vmulps          %ymm0, %ymm1, %ymm1     /* d * scales[j] */
        vmulps          %ymm0, %ymm2, %ymm2
        vmovups         %ymm1, -64(%rsp)
        vmovups         %ymm2, -32(%rsp)
        leaq            -64(%rsp), SCP
        movq            ROW, QL
        leaq            128(ROW), QH
        movl            $2, HALF
.Lq6_k_half:
        q6_k_col        0
        q6_k_col        8
        q6_k_col        16
        q6_k_col        24
        addq            $64, QL
        addq            $32, QH
        addq            $32, SCP
        addq            $512, OUT
        decl            HALF
        jnz             .Lq6_k_half
        addq            $LILA_Q6_K_BLOCK_BYTES, ROW
        decq            N
        jnz             .Lq6_k_block
.Lq6_k_done:
        vzeroupper
        ret
        .size   lila_embed_q6_k_avx2, .-lila_embed_q6_k_avx2

        .section .note.GNU-stack,"",@progbits
