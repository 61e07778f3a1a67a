/* The x86-64 manifest: which kernel implements each op, per kernel family.
 *
 * Kernels are named lila_<op>[_<type>]_<isa> and live in <op>[_<type>]_<isa>.S.
 * avx512 and avx512-vnni use their own kernel where one exists and the avx2 one
 * otherwise (every AVX-512 CPU runs AVX2 code); the VNNI family differs only in its
 * integer dot products (vpdpbusd). The symbols are weak so that a kernel not written
 * yet leaves a NULL entry (tests/test_kernels.py requires every entry to be filled).
 */
#include <string.h>
#include "lila_kernels.h"

#define TYPED_OPS(op, isa)                                                  \
    extern lila_matmul_fn lila_##op##_q4_0_##isa __attribute__((weak));     \
    extern lila_matmul_fn lila_##op##_q4_1_##isa __attribute__((weak));     \
    extern lila_matmul_fn lila_##op##_q5_0_##isa __attribute__((weak));     \
    extern lila_matmul_fn lila_##op##_q8_0_##isa __attribute__((weak));     \
    extern lila_matmul_fn lila_##op##_q4_k_##isa __attribute__((weak));     \
    extern lila_matmul_fn lila_##op##_q6_k_##isa __attribute__((weak));

#define EMBED_OPS(isa)                                                      \
    extern lila_embed_fn lila_embed_f32_##isa __attribute__((weak));        \
    extern lila_embed_fn lila_embed_f16_##isa __attribute__((weak));        \
    extern lila_embed_fn lila_embed_q4_0_##isa __attribute__((weak));       \
    extern lila_embed_fn lila_embed_q4_1_##isa __attribute__((weak));       \
    extern lila_embed_fn lila_embed_q5_0_##isa __attribute__((weak));       \
    extern lila_embed_fn lila_embed_q8_0_##isa __attribute__((weak));       \
    extern lila_embed_fn lila_embed_q4_k_##isa __attribute__((weak));       \
    extern lila_embed_fn lila_embed_q6_k_##isa __attribute__((weak));

#define ROW_OPS(isa)                                                        \
    extern lila_quantize_fn lila_quantize_q8_##isa __attribute__((weak));   \
    extern lila_rmsnorm_fn lila_rmsnorm_##isa __attribute__((weak));        \
    extern lila_rmsnorm_q8_fn lila_rmsnorm_q8_##isa __attribute__((weak));  \
    extern lila_rope_fn lila_rope_neox_##isa __attribute__((weak));         \
    extern lila_rope_fn lila_rope_interleaved_##isa __attribute__((weak));  \
    extern lila_glu_fn lila_silu_mul_##isa __attribute__((weak));           \
    extern lila_glu_fn lila_gelu_mul_##isa __attribute__((weak));           \
    extern lila_add_fn lila_add_##isa __attribute__((weak));                \
    extern lila_to_f16_fn lila_to_f16_##isa __attribute__((weak));          \
    extern lila_attn_scores_fn lila_attn_scores_##isa __attribute__((weak));\
    extern lila_softmax_fn lila_softmax_##isa __attribute__((weak));        \
    extern lila_attn_values_fn lila_attn_values_##isa __attribute__((weak));

TYPED_OPS(gemv, avx2)
TYPED_OPS(gemm, avx2)
TYPED_OPS(gemv, avx512)
TYPED_OPS(gemm, avx512)
TYPED_OPS(gemv, avx512vnni)
TYPED_OPS(gemm, avx512vnni)
EMBED_OPS(avx2)
ROW_OPS(avx2)
ROW_OPS(avx512)

/* a if it was built, else b */
#define PICK(a, b) ((a) ? (a) : (b))

#define FILL_TYPED(t, op, isa, fallback)                                             \
    t->op[LILA_Q4_0] = PICK(lila_##op##_q4_0_##isa, lila_##op##_q4_0_##fallback);    \
    t->op[LILA_Q4_1] = PICK(lila_##op##_q4_1_##isa, lila_##op##_q4_1_##fallback);    \
    t->op[LILA_Q5_0] = PICK(lila_##op##_q5_0_##isa, lila_##op##_q5_0_##fallback);    \
    t->op[LILA_Q8_0] = PICK(lila_##op##_q8_0_##isa, lila_##op##_q8_0_##fallback);    \
    t->op[LILA_Q4_K] = PICK(lila_##op##_q4_k_##isa, lila_##op##_q4_k_##fallback);    \
    t->op[LILA_Q6_K] = PICK(lila_##op##_q6_k_##isa, lila_##op##_q6_k_##fallback);

#define FILL_ROW(t, isa, fallback)                                                   \
    t->quantize_q8 = PICK(lila_quantize_q8_##isa, lila_quantize_q8_##fallback);      \
    t->rmsnorm = PICK(lila_rmsnorm_##isa, lila_rmsnorm_##fallback);                  \
    t->rmsnorm_q8 = PICK(lila_rmsnorm_q8_##isa, lila_rmsnorm_q8_##fallback);         \
    t->rope_neox = PICK(lila_rope_neox_##isa, lila_rope_neox_##fallback);            \
    t->rope_interleaved = PICK(lila_rope_interleaved_##isa,                          \
                               lila_rope_interleaved_##fallback);                    \
    t->silu_mul = PICK(lila_silu_mul_##isa, lila_silu_mul_##fallback);               \
    t->gelu_mul = PICK(lila_gelu_mul_##isa, lila_gelu_mul_##fallback);               \
    t->add = PICK(lila_add_##isa, lila_add_##fallback);                              \
    t->to_f16 = PICK(lila_to_f16_##isa, lila_to_f16_##fallback);                     \
    t->attn_scores = PICK(lila_attn_scores_##isa, lila_attn_scores_##fallback);      \
    t->softmax = PICK(lila_softmax_##isa, lila_softmax_##fallback);                  \
    t->attn_values = PICK(lila_attn_values_##isa, lila_attn_values_##fallback);

static void fill_embed(lila_kernels *t)
{
    t->embed[LILA_F32] = lila_embed_f32_avx2;
    t->embed[LILA_F16] = lila_embed_f16_avx2;
    t->embed[LILA_Q4_0] = lila_embed_q4_0_avx2;
    t->embed[LILA_Q4_1] = lila_embed_q4_1_avx2;
    t->embed[LILA_Q5_0] = lila_embed_q5_0_avx2;
    t->embed[LILA_Q8_0] = lila_embed_q8_0_avx2;
    t->embed[LILA_Q4_K] = lila_embed_q4_k_avx2;
    t->embed[LILA_Q6_K] = lila_embed_q6_k_avx2;
}

static lila_kernels avx2, avx512, avx512vnni;

static void fill_tables(void)
{
    avx2.name = "avx2";
    FILL_TYPED((&avx2), gemv, avx2, avx2)
    FILL_TYPED((&avx2), gemm, avx2, avx2)
    FILL_ROW((&avx2), avx2, avx2)
    fill_embed(&avx2);

    avx512.name = "avx512";
    FILL_TYPED((&avx512), gemv, avx512, avx2)
    FILL_TYPED((&avx512), gemm, avx512, avx2)
    FILL_ROW((&avx512), avx512, avx2)
    fill_embed(&avx512);

    avx512vnni = avx512;
    avx512vnni.name = "avx512-vnni";
    FILL_TYPED((&avx512vnni), gemv, avx512vnni, avx512)
    FILL_TYPED((&avx512vnni), gemm, avx512vnni, avx512)
}

const lila_kernels *lila_kernel_table(const char *family)
{
    static int filled;
    if (!filled) {   /* called from Python before any thread starts */
        fill_tables();
        filled = 1;
    }
    if (strcmp(family, avx2.name) == 0) return &avx2;
    if (strcmp(family, avx512.name) == 0) return &avx512;
    if (strcmp(family, avx512vnni.name) == 0) return &avx512vnni;
    return NULL;
}
