/* What every architecture's manifest (native/<arch>/kernels.c) shares: declaring its
 * kernels, and filling a family's table from them.
 *
 * Kernels are named lila_<op>[_<type>]_<isa>, the types those of LILA_WEIGHT_TYPES. An
 * entry no layer fills stays NULL (the kernel tests require every entry of a family to
 * be filled, and the executor refuses a program that would call an empty one).
 */
#ifndef LILA_MANIFEST_H
#define LILA_MANIFEST_H
#include "lila_kernels.h"

/* Fills the architecture's tables, once (native/common/kernel_table.c looks them up by
 * name): points *filled at them and returns how many there are. */
size_t lila_fill_kernel_tables(const lila_kernels **filled);

/* A family's table is filled in layers, one per ISA it builds on (avx512-vnni: avx2,
 * then avx512, then avx512vnni): each layer sets the entries that ISA has a kernel for,
 * found by name, lila_<op>[_<type>]_<isa>. Every ISA's kernels are declared weak, so a
 * kernel not written leaves what the layer below put there. */
#define DECLARE_KERNELS(isa) LILA_WEIGHT_TYPES(DECLARE_TYPE, isa) DECLARE_ROW_OPS(isa)
#define FILL_LAYER(t, isa) LILA_WEIGHT_TYPES(FILL_TYPE, t, isa) FILL_ROW_OPS(t, isa)

/* a if it was built, else b */
#define PICK(a, b) ((a) ? (a) : (b))

/* One row of LILA_WEIGHT_TYPES: a MATMUL type's gemv, gemm and embed kernels, an EMBED
 * type's embed kernel. */
#define DECLARE_TYPE(NAME, name, id, values, bytes, kernels, isa) DECLARE_##kernels(name, isa)
#define DECLARE_MATMUL(name, isa)                                                    \
    extern lila_matmul_fn lila_gemv_##name##_##isa __attribute__((weak));            \
    extern lila_matmul_fn lila_gemm_##name##_##isa __attribute__((weak));            \
    DECLARE_EMBED(name, isa)
#define DECLARE_EMBED(name, isa)                                                     \
    extern lila_embed_fn lila_embed_##name##_##isa __attribute__((weak));

#define FILL_TYPE(NAME, name, id, values, bytes, kernels, t, isa)                   \
    FILL_##kernels(t, NAME, name, isa)
#define FILL_MATMUL(t, NAME, name, isa)                                              \
    t->gemv[LILA_##NAME] = PICK(lila_gemv_##name##_##isa, t->gemv[LILA_##NAME]);     \
    t->gemm[LILA_##NAME] = PICK(lila_gemm_##name##_##isa, t->gemm[LILA_##NAME]);     \
    FILL_EMBED(t, NAME, name, isa)
#define FILL_EMBED(t, NAME, name, isa)                                               \
    t->embed[LILA_##NAME] = PICK(lila_embed_##name##_##isa, t->embed[LILA_##NAME]);

/* The untyped ops: one entry each. */
#define DECLARE_ROW_OPS(isa)                                                \
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
    extern lila_attn_values_fn lila_attn_values_##isa __attribute__((weak));\
    extern lila_lora_up_fn lila_lora_up_##isa __attribute__((weak));

#define FILL_ROW_OPS(t, isa)                                                         \
    t->quantize_q8 = PICK(lila_quantize_q8_##isa, t->quantize_q8);                   \
    t->rmsnorm = PICK(lila_rmsnorm_##isa, t->rmsnorm);                               \
    t->rmsnorm_q8 = PICK(lila_rmsnorm_q8_##isa, t->rmsnorm_q8);                      \
    t->rope_neox = PICK(lila_rope_neox_##isa, t->rope_neox);                         \
    t->rope_interleaved = PICK(lila_rope_interleaved_##isa, t->rope_interleaved);    \
    t->silu_mul = PICK(lila_silu_mul_##isa, t->silu_mul);                            \
    t->gelu_mul = PICK(lila_gelu_mul_##isa, t->gelu_mul);                            \
    t->add = PICK(lila_add_##isa, t->add);                                           \
    t->to_f16 = PICK(lila_to_f16_##isa, t->to_f16);                                  \
    t->attn_scores = PICK(lila_attn_scores_##isa, t->attn_scores);                   \
    t->softmax = PICK(lila_softmax_##isa, t->softmax);                               \
    t->attn_values = PICK(lila_attn_values_##isa, t->attn_values);                   \
    t->lora_up = PICK(lila_lora_up_##isa, t->lora_up);

#endif
