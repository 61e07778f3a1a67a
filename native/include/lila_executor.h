/* The plan executor: runs a model's compiled op list for a batch of tokens in one call.
 *
 * lila/executor/native.py compiles the Python Plan into an array of lila_op, with every
 * buffer and weight pointer resolved at load (the weights point into the GGUF map).
 * lila_forward then runs the whole forward pass: a decode step is one call from Python.
 * A pool of threads, started once, splits each op's rows and waits at a barrier only
 * between ops that depend on each other.
 *
 * The KV cache is not part of the program: each call names the sequence's own (lila_kv),
 * so one program serves any number of sequences, one call at a time.
 *
 * The memory fabric's LoRA adapters ride on the matmul ops (lila_lora): each op's threads
 * first share the small A products of every adapter reading its input, then add the B
 * products to the output rows they own, so adapters cost no barrier of their own.
 *
 * A model file truncated while mapped makes reading its weights raise SIGBUS. Every
 * thread of the pool runs each op under a handler that turns the fault into an error of
 * the call (LILA_FAULT), so the process survives and the caller can say what happened.
 */
#ifndef LILA_EXECUTOR_H
#define LILA_EXECUTOR_H
#include "lila_kernels.h"
/* cdef begin */

enum lila_op_kind {
    LILA_OP_EMBED,        /* out[t] = embed[wtype](table row token[t]) * scale          */
    LILA_OP_RMSNORM,      /* out[t] = rmsnorm(in[t]) per `heads` slices, fp32           */
    LILA_OP_RMSNORM_Q8,   /* q8[t] = quantize(rmsnorm(in[t])): the norm feeds matmuls   */
    LILA_OP_QUANTIZE,     /* q8[t] = quantize(in[t])                                    */
    LILA_OP_MATMUL,       /* parts[i].out[t] = W_i q8[t] (+ bias), see flags            */
    LILA_OP_ROPE,         /* in[t] rotated in place by table rope_table at t's position */
    LILA_OP_ATTENTION,    /* K, V of the batch into the cache, then causal attention    */
    LILA_OP_GLU,          /* out[t] = act(in[t]) * in2[t]                               */
    LILA_OP_ADD,          /* out[t] = in[t] + in2[t]                                    */
    LILA_OP_LORA          /* parts[i].out[t] += adapters (lila_lora), after their matmul */
};

enum {
    LILA_LAST_ROW_ONLY = 1,   /* matmul: only the batch's last row, unless all logits  */
    LILA_ACCUMULATE = 2,      /* matmul: out += W x instead of out = W x (residuals)   */
    LILA_GLU_SILU = 4,        /* matmul of parts gate, up: parts[0].out = silu(g) * u  */
    LILA_GLU_GELU = 8,        /* the same with tanh-approximated gelu                  */
    LILA_NEOX = 16            /* rope: pairs (j, j + rot_dim / 2)                      */
};

/* The memory fabric has this many namespaces, each holding at most one adapter. */
enum { LILA_NAMESPACES = 5 };

/* A gate below 2^LILA_GATE_FLOOR_LOG2 is shut: 0 (1/1024: an adapter's contribution so
 * scaled is within the noise of 8-bit activations, yet would still move their roundings). */
enum { LILA_GATE_FLOOR_LOG2 = -10 };

/* One product of an op's adapter stage: rows of Q8_0 weights times the op's quantized
 * input (the A rows of every adapter on the op, stacked, or the layer's gate vectors). */
typedef struct {
    const void *rows;         /* n rows of the op's nb Q8_0 blocks each */
    size_t n;
    float *out;               /* row r of token t at out[t * out_stride + r] */
    size_t out_stride;
    const float *gate_bias;   /* gate rows: out = sigmoid(product + gate_bias[r]); NULL: A */
} lila_lora_down;

/* Up to this many adapter ranks on one part, B is multiplied transposed (see lila_lora). */
enum { LILA_LORA_TRANSPOSED_RANK = 16 };

/* The adapters on one op (lila_op.lora), as y_i += B_i coef_i for each part i:
 *   u = the A products (down[]), max_batch rows of u_width columns;
 *   each token's coefficient row, coef_blocks * 32 floats, zero but for
 *   coef[col_slot[j]] = u[j] * col_scale[j] * (col_gate[j] < 0 ? 1 : gates[col_gate[j]]),
 *   a gate being sigmoid(w . x̂ + b), or 0 below 2^LILA_GATE_FLOOR_LOG2;
 *   part i's up_rank[i] coefficients start at value up_block[i] * 32 of the row, and B_i,
 *   every adapter on part i side by side along the rank, takes one of two forms:
 *   - up_rank[i] > LILA_LORA_TRANSPOSED_RANK: Q8_0 rows, one per output row, of the rank
 *     zero-padded to whole blocks, multiplied by the Q8_0 kernels with the coefficients
 *     quantized as activations (lila_q8);
 *   - otherwise transposed: up_rank[i] rows of parts[i].rows values (zero-padded to whole
 *     blocks) in Q8_0, stored block-major (block 0 of every row, then block 1 of every
 *     row, ...), which lila_lora_up scales by the fp32 coefficients and sums.
 * Each thread computes the coefficients for itself (coef, coef_q8). The op's threads use
 * u and the coefficients only while it runs: every op may point at the same. */
typedef struct {
    const lila_lora_down *down;
    size_t n_down;
    float *u;
    size_t u_width;
    const float *col_scale;   /* u_width */
    const int32_t *col_gate;  /* u_width; a namespace, or -1 */
    const int32_t *col_slot;  /* u_width; each < coef_blocks * 32 */
    const float *gates;       /* the layer's gates, max_batch x LILA_NAMESPACES, or NULL */
    const void *up[3];        /* NULL: no adapter on that part */
    size_t up_block[3];
    size_t up_rank[3];
    size_t coef_blocks;       /* sum over parts of ceil(up_rank[i] / 32) */
    float *coef;              /* n_threads x max_batch x coef_blocks * 32 floats */
    lila_q8 *coef_q8;         /* n_threads x max_batch x coef_blocks blocks */
} lila_lora;

/* One weight matrix of a matmul op; QKV and gate+up are one op of several parts, so
 * the threads split their rows together and meet at one barrier. */
typedef struct {
    const void *w;            /* rows x row_bytes, GGML blocks of type wtype */
    size_t row_bytes;
    size_t rows;
    int32_t wtype;
    const float *bias;        /* rows floats, or NULL */
    float *out;               /* row t of the batch at out + t * out_stride */
    size_t out_stride;
} lila_matmul_part;

typedef struct {
    int32_t kind;
    int32_t flags;
    float *in;                /* fp32 rows of `width` floats, `in_stride` apart */
    float *in2;
    float *out;
    size_t width;
    size_t in_stride, in2_stride, out_stride;
    lila_q8 *q8;              /* quantized rows, q8_stride blocks apart */
    size_t q8_stride;
    /* embed, rmsnorm */
    const void *table;        /* embedding table, or the norm weight (fp32) */
    size_t table_rows, table_row_bytes;
    int32_t wtype;
    int32_t heads;            /* rmsnorm slices per row; attention and rope heads */
    float eps;
    float scale;              /* embed scale; attention score scale */
    /* matmul */
    lila_matmul_part parts[3];
    int32_t n_parts;
    size_t nb;                /* q8 blocks per input row */
    /* rope */
    int32_t rope_table;
    int32_t head_dim, rot_dim;
    /* attention: in holds the queries, out receives heads * head_dim floats per token */
    float *k_in;              /* the batch's K and V rows (kv_heads * head_dim floats) */
    float *v_in;
    size_t kv_in_stride;
    int32_t kv_layer;         /* which of the lila_kv's caches holds this layer's K and V */
    int32_t kv_heads;
    int64_t window;           /* attend to the last `window` positions; 0: all */
    /* matmul, lora: the fabric's adapters on the parts, or NULL. The caller may change it
     * between forward passes. */
    const lila_lora *lora;
} lila_op;

/* How RoPE angles are made: position * scale * base^(-2j / rot_dim) / freq_factors[j]. */
typedef struct {
    int32_t rot_dim;
    double base, scale;
    const float *freq_factors;    /* rot_dim / 2 floats, or NULL */
} lila_rope_spec;

typedef struct {
    const lila_op *ops;
    size_t n_ops;
    const lila_rope_spec *ropes;
    size_t n_ropes;
    size_t max_batch, n_ctx;
    size_t n_kv_layers;       /* caches a lila_kv holds: one past the highest kv_layer */
    const lila_kernels *kernels;
} lila_program;

/* One sequence's KV cache: for each of the program's n_kv_layers, the K and V of
 * positions 0..n_ctx-1, each row kv_heads x head_dim fp16. */
typedef struct {
    uint16_t *const *k;       /* k[kv_layer] */
    uint16_t *const *v;
    size_t n_layers;
    size_t n_ctx;
} lila_kv;

/* lila_forward's results besides 0 */
enum {
    LILA_BAD_CALL = -1,       /* a batch, position, token or cache the program cannot take */
    LILA_FAULT = -2           /* a thread faulted reading memory (SIGBUS: a truncated file) */
};

typedef struct lila_ctx lila_ctx;

/* The most kernels one op calls: a matmul of 3 parts (a GEMV and a GEMM each), its GLU
 * and add, and its adapters' Q8_0 GEMV and GEMM, quantize_q8, lora_up and add. */
enum { LILA_MAX_OP_KERNELS = 13 };

/* The kernel table entries op calls, each as its byte offset in lila_kernels, into
 * slots[0..max): the executor's own choice, for the loader to name and check. Returns how
 * many, or -1 for an op the executor cannot run (an unknown kind, a weight type without
 * kernels, rows whose size does not match their type's blocks, more than max). */
int lila_op_kernels(const lila_op *op, size_t *slots, size_t max);

/* Starts n_threads - 1 workers (the caller is the n-th). The program's arrays must
 * outlive the context. NULL if an op cannot run (see lila_op_kernels) or calls a kernel
 * the table lacks, or if memory or threads cannot be had. */
lila_ctx *lila_create(const lila_program *program, int n_threads);

/* Runs the program for tokens[0..n) at positions pos0.. of the sequence whose cache is kv
 * (which holds positions < pos0). Returns 0; LILA_BAD_CALL for a batch, token or cache
 * the program cannot take (checked before any pointer is formed); LILA_FAULT if reading
 * memory faulted, the outputs and the cache's rows from pos0 on then being undefined. */
int lila_forward(lila_ctx *ctx, const lila_kv *kv, const int32_t *tokens, size_t n,
                 size_t pos0, int all_logits);

void lila_destroy(lila_ctx *ctx);

/* cdef end */
#endif
