/* The ABI every instruction-set folder implements, and the cffi cdef of the library.
 *
 * Kernels are plain functions over one row (or one tile of rows) each; the executor
 * (native/common/executor.c) splits work across threads and calls them through a
 * lila_kernels table. Each ISA folder fills one table per kernel family
 * (native/<arch>/kernels.c lists which file implements which op).
 *
 * This header is the one place the ABI's facts are stated. lila/native/build.py reads
 * it to give Python its declarations (cffi) and the assembly its layout (lila_abi.inc):
 *   - LILA_WEIGHT_TYPES below: the weight types the kernels read;
 *   - lila_q8: the 8-bit activation blocks the integer dot products take.
 * Only declarations cffi can parse go between the two "cdef" markers: no macros.
 */
#ifndef LILA_KERNELS_H
#define LILA_KERNELS_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

/* The weight types the kernels read, one row each:
 *   ROW(NAME, name, GGML type id, values per block, bytes per block, kernels, ...)
 * kernels MATMUL: the families have lila_gemv_<name>_<isa>, lila_gemm_<name>_<isa> and
 * lila_embed_<name>_<isa> for it (lila_manifest.h fills their tables by these names), and
 * the numba backend _gemv_<name> and _decode_<name>; EMBED: the embedding lookup only.
 * Weights of any other type are converted to Q8_0 at load. The trailing arguments pass
 * the caller's own through to ROW. The build reads these rows with a pattern: keep each
 * on one line, in this form. */
#define LILA_WEIGHT_TYPES(ROW, ...)                        \
    ROW(F32,  f32,   0,   1,   4, EMBED,  __VA_ARGS__)    \
    ROW(F16,  f16,   1,   1,   2, EMBED,  __VA_ARGS__)    \
    ROW(Q4_0, q4_0,  2,  32,  18, MATMUL, __VA_ARGS__)    \
    ROW(Q4_1, q4_1,  3,  32,  20, MATMUL, __VA_ARGS__)    \
    ROW(Q5_0, q5_0,  6,  32,  22, MATMUL, __VA_ARGS__)    \
    ROW(Q8_0, q8_0,  8,  32,  34, MATMUL, __VA_ARGS__)    \
    ROW(Q4_K, q4_k, 12, 256, 144, MATMUL, __VA_ARGS__)    \
    ROW(Q6_K, q6_k, 14, 256, 210, MATMUL, __VA_ARGS__)

/* LILA_Q4_0 = 2, ...: the GGML type ids, as in the GGUF file (cffi gets the same enum
 * from the build, which writes it from the rows above). */
#define LILA_TYPE_ID(NAME, name, id, values, bytes, kernels, ...) LILA_##NAME = id,
enum lila_weight_type { LILA_WEIGHT_TYPES(LILA_TYPE_ID, 0) };

/* cdef begin */

/* Type-indexed tables have an entry for every type id below this: GGML's (0..41 today),
 * with room for types of Lila's own. */
enum { LILA_NTYPES = 64 };

/* One block of 32 activations quantized to 8 bits, as the integer dot products want
 * them (the assembly reads its offsets and size as LILA_Q8_D, LILA_Q8_S, LILA_Q8_QS and
 * LILA_Q8_BYTES from lila_abi.inc, which the build writes from this declaration): x[i] ~= d * qs[i], d = max|x| / 127, qs rounded to nearest (ties to even), and
 * s = d * sum(qs), which turns the offset of unsigned weight codes into one multiply. */
typedef struct {
    float d;
    float s;
    int8_t qs[32];
} lila_q8;

/* Weight x activation product over a tile.
 *   out[c * out_stride + r] = sum_k W[r, k] * X[c, k]   for r < rows, c < cols
 * W: rows of nb * 32 weights in the type's GGML blocks, row r at w + r * row_bytes.
 * X: cols rows of nb q8 blocks each, row c at x + c * nb.
 * The GEMV is called with cols == 1; the GEMM with any cols >= 1. */
typedef void lila_matmul_fn(const void *w, size_t row_bytes, size_t rows,
                            const lila_q8 *x, size_t nb, size_t cols,
                            float *out, size_t out_stride);

/* out[i] = scale * (dequantized row)[i], i < n: one embedding row, in the type's blocks. */
typedef void lila_embed_fn(const void *row, size_t n, float scale, float *out);

/* x: n floats (n a multiple of 32) -> n / 32 blocks. */
typedef void lila_quantize_fn(const float *x, size_t n, lila_q8 *out);

/* out = x / sqrt(mean(x^2) + eps) * w, n floats. out may be x. */
typedef void lila_rmsnorm_fn(const float *x, const float *w, size_t n, float eps, float *out);

/* The same normalisation, quantized straight to blocks (n a multiple of 32): the fp32
 * row is never written. */
typedef void lila_rmsnorm_q8_fn(const float *x, const float *w, size_t n, float eps,
                                lila_q8 *out);

/* Rotates the first rot_dim dims of each of `heads` heads of x (head_dim floats apart) in
 * place. cos_sin: rot_dim / 2 cosines, then rot_dim / 2 sines, for x's position.
 * neox layout: pairs (j, j + rot_dim / 2); interleaved layout: pairs (2j, 2j + 1). */
typedef void lila_rope_fn(float *x, size_t heads, size_t head_dim, size_t rot_dim,
                          const float *cos_sin);

/* out[i] = act(gate[i]) * up[i], act = silu or tanh-approximated gelu. out may alias. */
typedef void lila_glu_fn(const float *gate, const float *up, size_t n, float *out);

/* out[i] = a[i] + b[i]. out may alias a or b. */
typedef void lila_add_fn(const float *a, const float *b, size_t n, float *out);

/* fp32 -> fp16 (round to nearest even), for storing K and V in the cache. */
typedef void lila_to_f16_fn(const float *x, size_t n, uint16_t *out);

/* scores[t] = scale * dot(q, keys + t * stride), t < n_keys; q and each key have hd
 * values; keys are fp16, stride counted in fp16 elements. */
typedef void lila_attn_scores_fn(const float *q, const uint16_t *keys, size_t stride,
                                 size_t n_keys, size_t hd, float scale, float *scores);

/* x[i] = exp(x[i] - max x) / sum, in place, n >= 1. */
typedef void lila_softmax_fn(float *x, size_t n);

/* out = sum_t p[t] * (values + t * stride), hd values each, fp16 values. */
typedef void lila_attn_values_fn(const float *p, const uint16_t *values, size_t stride,
                                 size_t n_values, size_t hd, float *out);

/* The memory fabric's B product over a tile of output rows: every adapter on one
 * projection, B transposed and stacked along the rank (rank rows of Q8_0 blocks running
 * along the output), times each token's coefficients (A x, scaled and gated):
 *   out[c * out_stride + r] = sum_{j < rank} coef[c * coef_stride + j] * Bt[j][r]
 * for r < nb * 32 and c < cols, where Bt[j][32k + i] = fp16 d of block k * qs[i] of row j,
 * row j's blocks starting at bt + j * row_bytes. Whole blocks only: out receives nb * 32
 * values per token, and the executor keeps those it needs. */
typedef void lila_lora_up_fn(const void *bt, size_t row_bytes, size_t rank, size_t nb,
                             const float *coef, size_t coef_stride, size_t cols,
                             float *out, size_t out_stride);

/* One kernel family's kernels. Type-indexed entries are NULL for types it has no kernel
 * for (the loader converts such weights at load). */
typedef struct {
    const char *name;
    lila_matmul_fn *gemv[LILA_NTYPES];
    lila_matmul_fn *gemm[LILA_NTYPES];
    lila_embed_fn *embed[LILA_NTYPES];
    lila_quantize_fn *quantize_q8;
    lila_rmsnorm_fn *rmsnorm;
    lila_rmsnorm_q8_fn *rmsnorm_q8;
    lila_rope_fn *rope_neox;
    lila_rope_fn *rope_interleaved;
    lila_glu_fn *silu_mul;
    lila_glu_fn *gelu_mul;
    lila_add_fn *add;
    lila_to_f16_fn *to_f16;
    lila_attn_scores_fn *attn_scores;
    lila_softmax_fn *softmax;
    lila_attn_values_fn *attn_values;
    lila_lora_up_fn *lora_up;
} lila_kernels;

/* The table of a family ("avx2", "avx512-vnni", "neon-dotprod", ...), or NULL if the
 * library has none by that name. The caller checks the CPU can run it. */
const lila_kernels *lila_kernel_table(const char *family);

/* The symbol name of a kernel (for `lila bench` and `lila detect`), or NULL. */
const char *lila_kernel_name(const void *kernel);

/* cdef end */
#ifdef __cplusplus
}
#endif
#endif
