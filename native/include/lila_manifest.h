/* What every architecture's manifest (native/<arch>/kernels.c) shares: declaring its
 * kernels, and filling a family's table from them.
 *
 * Kernels are named lila_<op>[_<type>]_<isa>. The symbols are declared weak so that a
 * kernel not written yet leaves a NULL entry (the kernel tests require every entry of a
 * family to be filled, and the native backend refuses a table with holes).
 */
#ifndef LILA_MANIFEST_H
#define LILA_MANIFEST_H
#include "lila_kernels.h"

/* Fills the architecture's tables, once (native/common/kernel_table.c looks them up by
 * name): points *filled at them and returns how many there are. */
size_t lila_fill_kernel_tables(const lila_kernels **filled);

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

#define FILL_EMBED(t, isa)                                                           \
    t->embed[LILA_F32] = lila_embed_f32_##isa;                                       \
    t->embed[LILA_F16] = lila_embed_f16_##isa;                                       \
    t->embed[LILA_Q4_0] = lila_embed_q4_0_##isa;                                     \
    t->embed[LILA_Q4_1] = lila_embed_q4_1_##isa;                                     \
    t->embed[LILA_Q5_0] = lila_embed_q5_0_##isa;                                     \
    t->embed[LILA_Q8_0] = lila_embed_q8_0_##isa;                                     \
    t->embed[LILA_Q4_K] = lila_embed_q4_k_##isa;                                     \
    t->embed[LILA_Q6_K] = lila_embed_q6_k_##isa;

#endif
