/* lila_embed_<type>_neon: one embedding row, dequantized and scaled.
 *
 * void lila_embed_<type>_neon(const void *row, size_t n, float scale, float *out);
 *     type: f32, f16 (any n), q4_0, q4_1, q5_0, q8_0 (n % 32 == 0), q4_k, q6_k (n % 256 == 0)
 *
 * out[i] = v[i] * scale, where v[i] is computed operation for operation as
 * lila/formats/quants.py does it in fp32 (and hence ggml): block scales are fp16 made
 * exact fp32 by fcvt, codes are small integers made exact fp32 by scvtf, and each
 * product or sum the reference rounds separately is a separate fmul / fadd / fsub here
 * (no fused multiply-add), so the row is bit-exact against dequantize(...) * scale.
 *
 * Codes are split and offset as bytes, 16 at a time (nibbles with and / ushr, q5_0's
 * fifth bits spread from qh with tbl and cmtst, q6_k's two high bits shifted into
 * place), then widened by sxtl / sxtl2 twice: four vectors of 4 floats, in order. Reads
 * stay inside the n elements' blocks; f32 and f16 take 16 elements a step, then 4,
 * then one at a time (steps_neon.inc).
 *
 * Registers: v31 scale (s31); v16-v23 the floats of 32 elements; v0-v7 codes and
 * block data; v24-v30 per-type constants and block scales, named at each type (q6_k
 * also v8 = 32, d8 saved).
 */
#define ROW     x0      /* next block of the row */
#define N       x1      /* elements, then blocks left */
#define OUT     x2      /* next output float */

#include "lila_abi.inc"           /* LILA_<TYPE>_BLOCK_BYTES: block sizes, from the build */
#include "steps_neon.inc"

        .section .rodata
        .balign 16
.Lqh_lo:        .byte   0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1  /* q5_0: qh byte */
.Lqh_hi:        .byte   2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3  /* of element e */
.Lqh_bit:       .byte   1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128

        .text

/* v\r (int32 codes) -> ((float(q) * \dsc) \op \m) * scale; \dsc a lane (v1.s[0]) */
        .macro  deq_vec r, dsc, op, m
        scvtf   v\r\().4s, v\r\().4s
        fmul    v\r\().4s, v\r\().4s, \dsc
        .ifnb   \op
        \op     v\r\().4s, v\r\().4s, \m\().4s
        .endif
        fmul    v\r\().4s, v\r\().4s, v31.s[0]
        .endm

/* 16 int8 codes in v\src -> 16 floats dequantized (deq_vec) in v\a..v\d (consecutive),
 * stored at OUT, which moves on; v\src clobbered when it is v\a */
        .macro  deq16 src, a, b, c, d, dsc, op, m
        sxtl2   v\c\().8h, v\src\().16b
        sxtl    v\a\().8h, v\src\().8b
        sxtl2   v\b\().4s, v\a\().8h
        sxtl    v\a\().4s, v\a\().4h
        sxtl2   v\d\().4s, v\c\().8h
        sxtl    v\c\().4s, v\c\().4h
        .irp    r, \a, \b, \c, \d
        deq_vec \r, \dsc, \op, \m
        .endr
        st1     {v\a\().4s-v\d\().4s}, [OUT], #64
        .endm

/* 16 bytes in v\src -> low nibbles in v\lo, high nibbles in v\hi (v30 = 0x0f bytes) */
        .macro  nibbles src, lo, hi
        and     v\lo\().16b, v\src\().16b, v30.16b
        ushr    v\hi\().16b, v\src\().16b, #4
        .endm

/* \r = float(\r) * \lane (integer lanes, \cvt = scvtf or ucvtf): a block's scales */
        .macro  cvt_mul cvt, r, lane
        \cvt    \r\().4s, \r\().4s
        fmul    \r\().4s, \r\().4s, \lane
        .endm

/* s\reg = the fp16 at \off(ROW) as fp32 */
        .macro  f16_scalar off, reg=1
        ldr     h\reg, [ROW, #\off]
        fcvt    s\reg, h\reg
        .endm

        .macro  EMBED_ENTRY name
        .globl  \name
        .type   \name, %function
        .p2align 4
\name:
        fmov    s31, s0
        .endm

/* ---- f32: out = x * scale; f16: out = float(h) * scale (a width-1 step converts lane
 * 0 of what ldr h left) ------------------------------------------------------------ */
        .macro  f16_step w
        .if     \w == 16
        ld1     {v0.8h, v1.8h}, [ROW], #32
        fcvtl2  v17.4s, v0.8h
        fcvtl   v18.4s, v1.4h
        fcvtl2  v19.4s, v1.8h
        .elseif \w == 4
        ldr     d0, [ROW], #8
        .else
        ldr     h0, [ROW], #2
        .endif
        fcvtl   v16.4s, v0.4h
        EACH    \w, scale_one, 16, 17, 18, 19, v31.s[0], v31.s[0], v31.s[0], v31.s[0]
        STW     \w, OUT, 16, 17, 18, 19
        .endm

        EMBED_ENTRY lila_embed_f32_neon
        STEPS   N, SCALE_STEP, 16, ROW, OUT, v31.s[0]
        ret
        .size   lila_embed_f32_neon, . - lila_embed_f32_neon

        EMBED_ENTRY lila_embed_f16_neon
        STEPS   N, f16_step
        ret
        .size   lila_embed_f16_neon, . - lila_embed_f16_neon

/* The quantized types: n / 2^log2_block blocks of `bytes` each through \block (which
 * writes the block's floats, OUT moving on), after \setup, before \teardown. */
        .macro  EMBED_BLOCKS name, log2_block, bytes, setup, block, teardown
        EMBED_ENTRY \name
        lsr     N, N, #\log2_block
        cbz     N, .Lblocks_done\@
        \setup
.Lblocks\@:
        \block
        add     ROW, ROW, #\bytes
        subs    N, N, #1
        b.ne    .Lblocks\@
        \teardown
.Lblocks_done\@:
        ret
        .size   \name, . - \name
        .endm

/* 32 codes, int8, in v\lo (elements 0..15) and v\hi (16..31) -> 32 floats stored */
        .macro  deq32 lo, hi, dsc, op, m
        deq16   \lo, 16, 17, 18, 19, \dsc, \op, \m
        deq16   \hi, 20, 21, 22, 23, \dsc, \op, \m
        .endm

        .macro  nibble_setup
        movi    v30.16b, #0x0f
        .endm

/* ---- q4_0: 18-byte blocks {f16 d; u8 qs[16]}; element j < 16 is the low nibble of
 * qs[j], element 16 + j the high one; v = d * (q - 8) -------------------------------- */
        .macro  q4_0_setup
        nibble_setup
        movi    v29.16b, #8
        .endm
        .macro  q4_0_block
        f16_scalar 0
        ldur    q0, [ROW, #2]
        nibbles 0, 2, 3
        sub     v2.16b, v2.16b, v29.16b
        sub     v3.16b, v3.16b, v29.16b
        deq32   2, 3, v1.s[0]
        .endm
        EMBED_BLOCKS lila_embed_q4_0_neon, 5, LILA_Q4_0_BLOCK_BYTES, q4_0_setup, q4_0_block

/* ---- q4_1: 20-byte blocks {f16 d; f16 m; u8 qs[16]}, nibbles as q4_0;
 * v = (d * q) + m ---------------------------------------------------------------------- */
        .macro  q4_1_block
        f16_scalar 0
        f16_scalar 2, 4
        dup     v4.4s, v4.s[0]                  /* m */
        ldur    q0, [ROW, #4]
        nibbles 0, 2, 3
        deq32   2, 3, v1.s[0], fadd, v4
        .endm
        EMBED_BLOCKS lila_embed_q4_1_neon, 5, LILA_Q4_1_BLOCK_BYTES, nibble_setup, q4_1_block

/* ---- q5_0: 22-byte blocks {f16 d; u32 qh; u8 qs[16]}; nibbles as q4_0, bit e of qh
 * (little endian) is the fifth bit of element e; v = d * (q - 16) -------------------- */
        .macro  q5_0_setup
        nibble_setup
        movi    v25.16b, #0x10                  /* the fifth bit, and the offset */
        adrp    x9, .Lqh_lo
        add     x9, x9, :lo12:.Lqh_lo
        ld1     {v26.16b-v28.16b}, [x9]         /* qh byte of e (lo, hi), bit of e */
        .endm
        .macro  q5_0_block
        f16_scalar 0
        ldur    s4, [ROW, #2]                   /* qh */
        ldur    q0, [ROW, #6]
        nibbles 0, 2, 3
        tbl     v5.16b, {v4.16b}, v26.16b       /* qh's byte for elements 0..15 */
        tbl     v6.16b, {v4.16b}, v27.16b       /* and 16..31 */
        cmtst   v5.16b, v5.16b, v28.16b
        cmtst   v6.16b, v6.16b, v28.16b
        and     v5.16b, v5.16b, v25.16b
        and     v6.16b, v6.16b, v25.16b
        orr     v2.16b, v2.16b, v5.16b
        orr     v3.16b, v3.16b, v6.16b
        sub     v2.16b, v2.16b, v25.16b
        sub     v3.16b, v3.16b, v25.16b
        deq32   2, 3, v1.s[0]
        .endm
        EMBED_BLOCKS lila_embed_q5_0_neon, 5, LILA_Q5_0_BLOCK_BYTES, q5_0_setup, q5_0_block

/* ---- q8_0: 34-byte blocks {f16 d; i8 qs[32]}; v = q * d --------------------------- */
        .macro  q8_0_block
        f16_scalar 0
        ldur    q2, [ROW, #2]
        ldur    q3, [ROW, #18]
        deq32   2, 3, v1.s[0]
        .endm
        EMBED_BLOCKS lila_embed_q8_0_neon, 5, LILA_Q8_0_BLOCK_BYTES, , q8_0_block

/* ---- q4_k: 144-byte super-blocks of 256 {f16 d; f16 dmin; u8 scales[12]; u8 qs[128]}.
 * Sub-block 2c + k (c < 4) is nibble k of qs[32c .. 32c + 32); its 6-bit scale sc and
 * min mn unpack from the 12 bytes as ggml's get_scale_min_k4 (packed as 32-bit lanes:
 *   sc[0..3] = a & 63,  sc[4..7] = (c & 15) | ((a >> 2) & 0x30),
 *   mn[0..3] = b & 63,  mn[4..7] = (c >> 4) | ((b >> 2) & 0x30)
 * with a, b, c the three 4-byte groups); v = (d * sc) * q - (dmin * mn). -------------- */
#define DSC0    v25     /* d * sc[0..3] */
#define DSC1    v26     /* d * sc[4..7] */
#define DMN0    v27     /* dmin * mn[0..3] */
#define DMN1    v28     /* dmin * mn[4..7] */

/* group c: 32 bytes at \off(ROW); sub-blocks 2c, 2c + 1 take lanes \l, \l + 1 of
 * \dsc and \dmn */
        .macro  q4_k_group off, dsc, dmn, l
        ldp     q0, q1, [ROW, #\off]
        nibbles 0, 2, 4
        nibbles 1, 3, 5
        dup     v29.4s, \dmn\().s[\l]
        deq32   2, 3, \dsc\().s[\l], fsub, v29
        dup     v29.4s, \dmn\().s[\l + 1]
        deq32   4, 5, \dsc\().s[\l + 1], fsub, v29
        .endm

        .macro  q4_k_block
        ldp     w9, w10, [ROW, #4]              /* a, b */
        ldr     w11, [ROW, #12]                 /* c */
        and     w12, w9, #0x3f3f3f3f            /* sc[0..3] */
        lsr     w9, w9, #2
        and     w9, w9, #0x30303030
        and     w13, w11, #0x0f0f0f0f
        orr     w13, w13, w9                    /* sc[4..7] */
        and     w14, w10, #0x3f3f3f3f           /* mn[0..3] */
        lsr     w10, w10, #2
        and     w10, w10, #0x30303030
        lsr     w11, w11, #4                    /* 32-bit shift: drop the next byte's bits */
        and     w11, w11, #0x0f0f0f0f
        orr     w15, w11, w10                   /* mn[4..7] */
        fmov    s4, w12
        mov     v4.s[1], w13
        mov     v4.s[2], w14
        mov     v4.s[3], w15
        uxtl    v5.8h, v4.8b                    /* sc as u16 */
        uxtl2   v6.8h, v4.16b                   /* mn */
        uxtl    DSC0.4s, v5.4h
        uxtl2   DSC1.4s, v5.8h
        uxtl    DMN0.4s, v6.4h
        uxtl2   DMN1.4s, v6.8h
        f16_scalar 0
        f16_scalar 2, 2
        cvt_mul ucvtf, DSC0, v1.s[0]
        cvt_mul ucvtf, DSC1, v1.s[0]
        cvt_mul ucvtf, DMN0, v2.s[0]
        cvt_mul ucvtf, DMN1, v2.s[0]
        q4_k_group 16, DSC0, DMN0, 0
        q4_k_group 48, DSC0, DMN0, 2
        q4_k_group 80, DSC1, DMN1, 0
        q4_k_group 112, DSC1, DMN1, 2
        .endm
        EMBED_BLOCKS lila_embed_q4_k_neon, 8, LILA_Q4_K_BLOCK_BYTES, nibble_setup, q4_k_block
#undef DSC0
#undef DSC1
#undef DMN0
#undef DMN1

/* ---- q6_k: 210-byte super-blocks of 256 {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}.
 * In half h (128 elements), element 32s + l (s < 4, l < 32) is
 *   q = (nibble s / 2 of ql[64h + 32 (s & 1) + l]) | (bits 2s, 2s+1 of qh[32h + l]) << 4,
 * v = (d * scales[(128h + 32s + l) / 16]) * (q - 32). A half loads its 64 bytes of ql
 * (v0-v1 the first 32, v2-v3 the next) and 32 of qh (v4-v5), then makes the codes of
 * s = 0..3 in turn, each 32 floats stored in order. ------------------------------------ */

/* the 16 codes of run s in v\dst from ql bytes v\ql and qh bytes v\qh (v28 scratch;
 * v29 = 0x30, v30 = 0x0f, v8 = 32 bytes) */
        .macro  q6_codes dst, ql, qh, s
        .if     \s < 2
        and     v\dst\().16b, v\ql\().16b, v30.16b
        shl     v28.16b, v\qh\().16b, #4 - 2 * \s       /* bits 2s, 2s+1 -> 4, 5 */
        .else
        ushr    v\dst\().16b, v\ql\().16b, #4
        .if     \s == 2
        mov     v28.16b, v\qh\().16b
        .else
        ushr    v28.16b, v\qh\().16b, #2
        .endif
        .endif
        and     v28.16b, v28.16b, v29.16b
        orr     v\dst\().16b, v\dst\().16b, v28.16b
        sub     v\dst\().16b, v\dst\().16b, v8.16b
        .endm

/* run s of a half: ql in v\q0, v\q1 (l < 16, l >= 16); scales of the two 16s in lanes
 * \l, \l + 1 of \sc */
        .macro  q6_k_run s, q0, q1, sc, l
        q6_codes 6, \q0, 4, \s
        q6_codes 7, \q1, 5, \s
        deq16   6, 16, 17, 18, 19, \sc\().s[\l]
        deq16   7, 20, 21, 22, 23, \sc\().s[\l + 1]
        .endm

/* half h: scales 8h .. 8h + 8 in \sca (first four), \scb */
        .macro  q6_k_half h, sca, scb
        ldp     q0, q1, [ROW, #64 * \h]
        ldp     q2, q3, [ROW, #64 * \h + 32]
        ldp     q4, q5, [ROW, #128 + 32 * \h]
        q6_k_run 0, 0, 1, \sca, 0
        q6_k_run 1, 2, 3, \sca, 2
        q6_k_run 2, 0, 1, \scb, 0
        q6_k_run 3, 2, 3, \scb, 2
        .endm

        .macro  q6_k_setup
        str     d8, [sp, #-16]!
        nibble_setup
        movi    v29.16b, #0x30
        movi    v8.16b, #32
        .endm
        .macro  q6_k_block
        f16_scalar 208
        ldr     q0, [ROW, #192]                 /* scales, int8 */
        sxtl2   v26.8h, v0.16b
        sxtl    v24.8h, v0.8b
        sxtl2   v25.4s, v24.8h
        sxtl    v24.4s, v24.4h
        sxtl2   v27.4s, v26.8h
        sxtl    v26.4s, v26.4h
        cvt_mul scvtf, v24, v1.s[0]             /* d * scales[j] */
        cvt_mul scvtf, v25, v1.s[0]
        cvt_mul scvtf, v26, v1.s[0]
        cvt_mul scvtf, v27, v1.s[0]
        q6_k_half 0, v24, v25
        q6_k_half 1, v26, v27
        .endm
        .macro  q6_k_teardown
        ldr     d8, [sp], #16
        .endm
        EMBED_BLOCKS lila_embed_q6_k_neon, 8, LILA_Q6_K_BLOCK_BYTES, q6_k_setup, q6_k_block, q6_k_teardown

        .section .note.GNU-stack, "", %progbits
