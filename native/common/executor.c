/* Runs a compiled plan (lila_executor.h) on a persistent pool of threads.
 *
 * Every thread, the caller included, walks the same op list; each op is split by rows
 * (or by token x head for attention) so that thread `tid` of `nt` does its share, and
 * the threads meet at a barrier after each op. Workers spin briefly between forward
 * passes (a decode step follows the previous one within microseconds) and then sleep
 * on a condition variable, so an idle model costs no CPU.
 *
 * A matmul op with adapters (lila_lora) adds one step before its matmul: the threads take
 * the adapters' A products in chunks of rows from the op's counter until none are left,
 * counting each chunk done. Before a thread first adds B products to its rows it waits
 * until every chunk is done. Taken, not shared out: a thread that reaches the op late
 * (the barrier woke it last, or another process had its core) finds the A products taken
 * by the others and starts on its matmul rows, where waiting for its share would stall
 * the rest.
 *
 * Each op runs under a SIGBUS guard (guarded_step): a fault jumps back to it, the thread
 * marks the pass failed, and every thread skips the ops left but still meets the others
 * at each barrier, so the pass ends normally and reports LILA_FAULT.
 */
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stddef.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif
#include "lila_executor.h"

#define Q8_VALUES (sizeof ((lila_q8 *)0)->qs)   /* activations per lila_q8 block */

enum {
    MAX_PARTS = 3,          /* lila_op.parts */
    ROW_TILE = 64,          /* rows a thread multiplies into scratch for a full batch */
    SPIN_BEFORE_YIELD = 1 << 12,
    SPIN_BEFORE_SLEEP = 1 << 16,
    A_CHUNK = 32,           /* adapters' A rows a thread takes at a time, at most */
    CACHE_LINE = 64
};

typedef struct {
    float *tile_a, *tile_b;   /* max_batch x ROW_TILE each (see tile_rows) */
    float *tile_c;            /* max_batch x (ROW_TILE + Q8_VALUES): adapters' B products */
    float *scores;            /* n_ctx */
    const lila_op *coef_op;   /* the op whose adapter coefficients this thread holds */
} scratch;

typedef struct {
    atomic_int taken, done;   /* chunks of A rows */
} lora_progress;

struct lila_ctx {
    lila_program prog;
    int n_threads;
    int started;              /* workers running (lila_destroy joins these) */
    pthread_t *workers;
    scratch *scratch;
    float *rope_tables;       /* n_ropes x max_batch x rot_dim (cosines, then sines) */
    size_t rope_stride;       /* floats per rope table */
    /* the current forward pass */
    const lila_kv *kv;
    const int32_t *tokens;
    size_t n, pos0;
    int all_logits;
    atomic_int faulted;       /* a thread of this pass faulted: the rest is skipped */
    lora_progress *lora;      /* per op: its adapters' A products taken and done */
    /* pool state; each counter on its own cache line, they are hammered */
    _Alignas(CACHE_LINE) atomic_int generation;
    _Alignas(CACHE_LINE) atomic_int barrier_count;
    _Alignas(CACHE_LINE) atomic_int barrier_passed;
    _Alignas(CACHE_LINE) atomic_int sleepers;
    atomic_int stop;
    pthread_mutex_t lock;
    pthread_cond_t wake;
};

static void barrier(lila_ctx *ctx)
{
    if (ctx->n_threads == 1) return;
    int passed = atomic_load(&ctx->barrier_passed);
    if (atomic_fetch_add(&ctx->barrier_count, 1) == ctx->n_threads - 1) {
        atomic_store(&ctx->barrier_count, 0);
        atomic_fetch_add(&ctx->barrier_passed, 1);
    } else {
        /* Spin while the others are a few microseconds away; yield once it takes longer,
           for a thread that shares its core with another process is then descheduled
           and spinning would only keep it off the core. */
        for (unsigned spins = 0; atomic_load(&ctx->barrier_passed) == passed; spins++) {
            if (spins < SPIN_BEFORE_YIELD)
                cpu_relax();
            else
                sched_yield();
        }
    }
}

/* Thread tid's share [*lo, *hi) of `total` items, in multiples of `align`. */
static void share(size_t total, int tid, int nt, size_t align, size_t *lo, size_t *hi)
{
    size_t units = (total + align - 1) / align;
    size_t a = units * (size_t)tid / (size_t)nt, b = units * (size_t)(tid + 1) / (size_t)nt;
    *lo = a * align < total ? a * align : total;
    *hi = b * align < total ? b * align : total;
}

/* Rows a thread multiplies into its scratch at a time for a batch of `cols` tokens: as
 * many as the scratch holds, so that a decode step makes one kernel call per part where
 * a full batch makes one per ROW_TILE rows. */
static size_t tile_rows(const lila_ctx *ctx, size_t cols)
{
    return ROW_TILE * ctx->prog.max_batch / cols / 16 * 16;
}

static const lila_kernels *K(const lila_ctx *ctx) { return ctx->prog.kernels; }

/* -- which kernels an op calls --------------------------------------------------------
 * A kernel is named by its place in the table (its byte offset in lila_kernels), which
 * is what lila_op_kernels reports. Where an op picks among kernels, the run_ functions
 * and lila_op_kernels pick with the same function below. */

typedef void any_fn(void);

#define SLOT(field) offsetof(lila_kernels, field)
#define TYPED_SLOT(field, wtype) (offsetof(lila_kernels, field) + (size_t)(wtype) * sizeof(any_fn *))

static any_fn *kernel_at(const lila_kernels *k, size_t slot)
{
    any_fn *fn;
    memcpy(&fn, (const char *)k + slot, sizeof fn);
    return fn;
}

static size_t matmul_slot(int32_t wtype, size_t cols)
{
    return cols == 1 ? TYPED_SLOT(gemv, wtype) : TYPED_SLOT(gemm, wtype);
}

static size_t glu_slot(int32_t flags)
{
    return (flags & LILA_GLU_SILU) ? SLOT(silu_mul) : SLOT(gelu_mul);
}

static size_t rope_slot(int32_t flags)
{
    return (flags & LILA_NEOX) ? SLOT(rope_neox) : SLOT(rope_interleaved);
}

/* Values and bytes per block of each weight type with kernels; {0, 0} for the others. */
#define BLOCK_OF(NAME, name, id, values, bytes, kernels, ...) [id] = {values, bytes},
static const struct { size_t values, bytes; } blocks[LILA_NTYPES] = { LILA_WEIGHT_TYPES(BLOCK_OF, 0) };

/* Whether rows of `width` values of wtype take exactly row_bytes. */
static int rows_fit(int32_t wtype, size_t width, size_t row_bytes)
{
    if (wtype < 0 || wtype >= LILA_NTYPES || blocks[wtype].values == 0) return 0;
    size_t values = blocks[wtype].values;
    return width % values == 0 && row_bytes == width / values * blocks[wtype].bytes;
}

/* What adapters add to an op's kernels: Q8_0 products (their A, gates and B), the
 * quantization of the coefficients, the transposed B product and the add of B's tiles. */
static size_t adapter_kernels(size_t *found, size_t n)
{
    found[n++] = matmul_slot(LILA_Q8_0, 1);
    found[n++] = matmul_slot(LILA_Q8_0, 2);
    found[n++] = SLOT(quantize_q8);
    found[n++] = SLOT(lora_up);
    found[n++] = SLOT(add);
    return n;
}

int lila_op_kernels(const lila_op *op, size_t *slots, size_t max)
{
    size_t n = 0, found[LILA_MAX_OP_KERNELS];
    switch (op->kind) {
    case LILA_OP_EMBED:
        if (!rows_fit(op->wtype, op->width, op->table_row_bytes)) return -1;
        found[n++] = TYPED_SLOT(embed, op->wtype);
        break;
    case LILA_OP_RMSNORM:
        if (op->heads < 1 || op->width % (size_t)op->heads) return -1;
        found[n++] = SLOT(rmsnorm);
        break;
    case LILA_OP_RMSNORM_Q8: found[n++] = SLOT(rmsnorm_q8); break;
    case LILA_OP_QUANTIZE: found[n++] = SLOT(quantize_q8); break;
    case LILA_OP_MATMUL: {
        int glu = op->flags & (LILA_GLU_SILU | LILA_GLU_GELU), add = op->flags & LILA_ACCUMULATE;
        if (op->n_parts < 1 || op->n_parts > MAX_PARTS || (glu && op->n_parts != 2)) return -1;
        for (int i = 0; i < op->n_parts; i++) {
            const lila_matmul_part *p = &op->parts[i];
            if (!rows_fit(p->wtype, op->nb * Q8_VALUES, p->row_bytes)) return -1;
            found[n++] = matmul_slot(p->wtype, 1);
            found[n++] = matmul_slot(p->wtype, 2);
            add |= p->bias != NULL;
        }
        if (glu) found[n++] = glu_slot(op->flags);
        if (add) found[n++] = SLOT(add);
        if (op->lora) n = adapter_kernels(found, n);
        break;   /* at most 3 x 2 + 2 + 5 entries: LILA_MAX_OP_KERNELS */
    }
    case LILA_OP_LORA:
        if (op->n_parts < 1 || op->n_parts > MAX_PARTS) return -1;
        if (op->lora) n = adapter_kernels(found, n);
        break;
    case LILA_OP_ROPE: found[n++] = rope_slot(op->flags); break;
    case LILA_OP_ATTENTION:
        if (op->kv_heads < 1 || op->heads % op->kv_heads || op->kv_layer < 0) return -1;
        found[n++] = SLOT(to_f16);
        found[n++] = SLOT(attn_scores);
        found[n++] = SLOT(softmax);
        found[n++] = SLOT(attn_values);
        break;
    case LILA_OP_GLU: found[n++] = glu_slot(op->flags); break;
    case LILA_OP_ADD: found[n++] = SLOT(add); break;
    default: return -1;
    }
    if (n > max) return -1;
    memcpy(slots, found, n * sizeof *found);
    return (int)n;
}

/* Every op valid, and every kernel it calls in the table. */
static int program_runs(const lila_program *program)
{
    for (size_t i = 0; i < program->n_ops; i++) {
        const lila_op *op = &program->ops[i];
        if (op->kind == LILA_OP_ATTENTION && (size_t)op->kv_layer >= program->n_kv_layers)
            return 0;
        size_t slots[LILA_MAX_OP_KERNELS];
        int n = lila_op_kernels(op, slots, LILA_MAX_OP_KERNELS);
        if (n < 0) return 0;
        for (int j = 0; j < n; j++)
            if (!kernel_at(program->kernels, slots[j])) return 0;
    }
    return 1;
}

static void run_embed(lila_ctx *ctx, const lila_op *op, int tid)
{
    size_t lo, hi;
    share(ctx->n, tid, ctx->n_threads, 1, &lo, &hi);
    const uint8_t *table = op->table;
    for (size_t t = lo; t < hi; t++)
        K(ctx)->embed[op->wtype](table + (size_t)ctx->tokens[t] * op->table_row_bytes,
                                 op->width, op->scale, op->out + t * op->out_stride);
}

static void run_rmsnorm(lila_ctx *ctx, const lila_op *op, int tid)
{
    size_t heads = (size_t)op->heads, slice = op->width / heads, lo, hi;
    share(ctx->n * heads, tid, ctx->n_threads, 1, &lo, &hi);
    for (size_t i = lo; i < hi; i++) {
        size_t t = i / heads, h = i % heads;
        K(ctx)->rmsnorm(op->in + t * op->in_stride + h * slice, op->table, slice, op->eps,
                        op->out + t * op->out_stride + h * slice);
    }
}

static void run_rmsnorm_q8(lila_ctx *ctx, const lila_op *op, int tid)
{
    size_t lo, hi;
    share(ctx->n, tid, ctx->n_threads, 1, &lo, &hi);
    for (size_t t = lo; t < hi; t++)
        K(ctx)->rmsnorm_q8(op->in + t * op->in_stride, op->table, op->width, op->eps,
                           op->q8 + t * op->q8_stride);
}

static void run_quantize(lila_ctx *ctx, const lila_op *op, int tid)
{
    /* split by blocks, not rows: a decode step has one row */
    size_t per_row = op->width / Q8_VALUES, lo, hi;
    share(ctx->n * per_row, tid, ctx->n_threads, 1, &lo, &hi);
    for (size_t i = lo; i < hi;) {
        size_t t = i / per_row, b = i % per_row;
        size_t count = per_row - b < hi - i ? per_row - b : hi - i;
        K(ctx)->quantize_q8(op->in + t * op->in_stride + b * Q8_VALUES, count * Q8_VALUES,
                            op->q8 + t * op->q8_stride + b);
        i += count;
    }
}

/* The batch's columns an op computes: all, or only the last for the LM head. */
static void op_columns(const lila_ctx *ctx, const lila_op *op, size_t *col0, size_t *cols)
{
    int last_only = (op->flags & LILA_LAST_ROW_ONLY) && !ctx->all_logits;
    *col0 = last_only ? ctx->n - 1 : 0;
    *cols = last_only ? 1 : ctx->n;
}

/* -- the memory fabric's adapters ------------------------------------------------------ */

/* A namespace's gate: shut (exactly 0) below the floor, so that a shut adapter leaves the
 * outputs as they are, bit for bit, rather than nudging 8-bit roundings. */
static float gate(float logit)
{
    float g = 1.0f / (1.0f + expf(-logit));
    return g < ldexpf(1.0f, LILA_GATE_FLOOR_LOG2) ? 0.0f : g;
}

/* How the op's A rows are taken: `chunks` chunks of `rows` rows, at least two chunks per
 * thread, so that a few rows are not all one thread's while the others wait at the op's
 * end. */
static void a_chunks(const lila_ctx *ctx, const lila_lora *lora, size_t *chunks, size_t *rows)
{
    size_t total = 0;
    for (size_t i = 0; i < lora->n_down; i++) total += lora->down[i].n;
    size_t even = (total + 2 * (size_t)ctx->n_threads - 1) / (2 * (size_t)ctx->n_threads);
    *rows = even < A_CHUNK ? (even + 3) / 4 * 4 : A_CHUNK;
    *chunks = (total + *rows - 1) / *rows;
}

/* Chunks of the adapters' A products (and gates) for the op's columns, taken until none
 * are left, each counted done on the op's progress. */
static void adapters_down(lila_ctx *ctx, const lila_op *op)
{
    const lila_lora *lora = op->lora;
    lora_progress *progress = &ctx->lora[op - ctx->prog.ops];
    size_t col0, cols, chunks, rows, chunk;
    a_chunks(ctx, lora, &chunks, &rows);
    op_columns(ctx, op, &col0, &cols);
    size_t row_bytes = op->nb * blocks[LILA_Q8_0].bytes;
    lila_matmul_fn *fn = (lila_matmul_fn *)kernel_at(K(ctx), matmul_slot(LILA_Q8_0, cols));
    while ((chunk = (size_t)atomic_fetch_add(&progress->taken, 1)) < chunks) {
        size_t lo = chunk * rows, hi = lo + rows, first = 0;
        for (size_t i = 0; i < lora->n_down && first < hi; first += lora->down[i++].n) {
            const lila_lora_down *d = &lora->down[i];
            size_t a = lo > first ? lo - first : 0, b = hi - first < d->n ? hi - first : d->n;
            if (a >= b) continue;
            float *out = d->out + col0 * d->out_stride + a;
            fn((const uint8_t *)d->rows + a * row_bytes, row_bytes, b - a,
               op->q8 + col0 * op->q8_stride, op->nb, cols, out, d->out_stride);
            if (d->gate_bias)
                for (size_t c = 0; c < cols; c++)
                    for (size_t r = a; r < b; r++)
                        out[c * d->out_stride + r - a] = gate(out[c * d->out_stride + r - a] + d->gate_bias[r]);
        }
        atomic_fetch_add(&progress->done, 1);
    }
}

/* Waits until every chunk of the op's A products is done; 0 if the pass faulted
 * meanwhile (a thread that faulted never counts its chunk done). */
static int adapters_ready(lila_ctx *ctx, const lila_op *op)
{
    atomic_int *done = &ctx->lora[op - ctx->prog.ops].done;
    size_t chunks, rows;
    a_chunks(ctx, op->lora, &chunks, &rows);
    for (unsigned spins = 0; (size_t)atomic_load(done) < chunks; spins++) {
        if (atomic_load(&ctx->faulted)) return 0;
        if (spins < SPIN_BEFORE_YIELD)
            cpu_relax();
        else
            sched_yield();
    }
    return 1;
}

static int transposed(const lila_lora *lora, int i)
{
    return lora->up_rank[i] <= LILA_LORA_TRANSPOSED_RANK;
}

static size_t rank_blocks(const lila_lora *lora, int i)
{
    return (lora->up_rank[i] + Q8_VALUES - 1) / Q8_VALUES;
}

/* This thread's coefficients for the op's columns: fp32 rows, and for each part whose B
 * is in rows, its part quantized as the matmul kernels read a batch (column c at
 * coef_q8 + cols * up_block[i] + c * its blocks). */
static void adapter_coefficients(lila_ctx *ctx, const lila_op *op, int tid)
{
    const lila_lora *lora = op->lora;
    size_t col0, cols, width = lora->u_width, row = lora->coef_blocks * Q8_VALUES;
    op_columns(ctx, op, &col0, &cols);
    float *coef = lora->coef + (size_t)tid * ctx->prog.max_batch * row;
    lila_q8 *q8 = lora->coef_q8 + (size_t)tid * ctx->prog.max_batch * lora->coef_blocks;
    for (size_t c = 0; c < cols; c++, coef += row) {
        const float *u = lora->u + (col0 + c) * width;
        const float *gates = lora->gates ? lora->gates + (col0 + c) * LILA_NAMESPACES : NULL;
        memset(coef, 0, row * sizeof *coef);
        for (size_t j = 0; j < width; j++) {
            int32_t g = lora->col_gate[j];
            coef[lora->col_slot[j]] = u[j] * lora->col_scale[j] * (g >= 0 && gates ? gates[g] : 1.0f);
        }
        for (int i = 0; i < op->n_parts; i++)
            if (lora->up[i] && !transposed(lora, i))
                K(ctx)->quantize_q8(coef + lora->up_block[i] * Q8_VALUES, rank_blocks(lora, i) * Q8_VALUES,
                                    q8 + cols * lora->up_block[i] + c * rank_blocks(lora, i));
    }
}

/* dst += part i's adapters for rows [lo, hi), as multiply() lays dst out. */
static void add_adapters(lila_ctx *ctx, const lila_op *op, int i, size_t lo, size_t hi,
                         size_t cols, float *dst, size_t dst_stride, int tid)
{
    const lila_lora *lora = op->lora;
    scratch *s = &ctx->scratch[tid];
    if (s->coef_op != op) {
        if (!adapters_ready(ctx, op)) return;
        adapter_coefficients(ctx, op, tid);
        s->coef_op = op;
    }
    size_t row = lora->coef_blocks * Q8_VALUES, block_bytes = blocks[LILA_Q8_0].bytes;
    if (transposed(lora, i)) {
        size_t rank = lora->up_rank[i];
        const float *coef = lora->coef + (size_t)tid * ctx->prog.max_batch * row + lora->up_block[i] * Q8_VALUES;
        for (size_t r = lo; r < hi; r += ROW_TILE) {
            /* whole blocks from the one holding row r: the tile's values start at r % 32 */
            size_t end = r + ROW_TILE < hi ? r + ROW_TILE : hi, len = end - r, skip = r % Q8_VALUES;
            size_t first = r / Q8_VALUES, nb = (skip + len + Q8_VALUES - 1) / Q8_VALUES;
            size_t stride = nb * Q8_VALUES;
            for (size_t k = 0; k < nb; k++)   /* block-major: block k of every rank in one run */
                K(ctx)->lora_up((const uint8_t *)lora->up[i] + (first + k) * rank * block_bytes,
                                block_bytes, rank, 1, coef, row, cols, s->tile_c + k * Q8_VALUES,
                                stride);
            for (size_t c = 0; c < cols; c++)
                K(ctx)->add(dst + c * dst_stride + (r - lo), s->tile_c + c * stride + skip, len,
                            dst + c * dst_stride + (r - lo));
        }
        return;
    }
    size_t nb = rank_blocks(lora, i), row_bytes = nb * block_bytes, tile = tile_rows(ctx, cols);
    const lila_q8 *coef = lora->coef_q8 + (size_t)tid * ctx->prog.max_batch * lora->coef_blocks
                          + cols * lora->up_block[i];
    lila_matmul_fn *fn = (lila_matmul_fn *)kernel_at(K(ctx), matmul_slot(LILA_Q8_0, cols));
    for (size_t r = lo; r < hi; r += tile) {
        size_t len = (r + tile < hi ? r + tile : hi) - r;
        fn((const uint8_t *)lora->up[i] + r * row_bytes, row_bytes, len, coef, nb, cols, s->tile_c, len);
        for (size_t c = 0; c < cols; c++)
            K(ctx)->add(dst + c * dst_stride + (r - lo), s->tile_c + c * len, len,
                        dst + c * dst_stride + (r - lo));
    }
}

/* The one place a linear layer is computed: rows [lo, hi) of part i for the batch's
 * columns from col0, weights times input, plus bias, plus the fabric's adapters, into dst
 * (dst_stride apart). */
static void multiply(lila_ctx *ctx, const lila_op *op, int i, size_t lo, size_t hi,
                     size_t col0, size_t cols, float *dst, size_t dst_stride, int tid)
{
    const lila_matmul_part *p = &op->parts[i];
    lila_matmul_fn *fn = (lila_matmul_fn *)kernel_at(K(ctx), matmul_slot(p->wtype, cols));
    fn((const uint8_t *)p->w + lo * p->row_bytes, p->row_bytes, hi - lo,
       op->q8 + col0 * op->q8_stride, op->nb, cols, dst, dst_stride);
    if (p->bias)
        for (size_t c = 0; c < cols; c++)
            K(ctx)->add(dst + c * dst_stride, p->bias + lo, hi - lo, dst + c * dst_stride);
    if (op->lora && op->lora->up[i])
        add_adapters(ctx, op, i, lo, hi, cols, dst, dst_stride, tid);
}

/* Part i's rows within rows [lo, hi) of the op's parts taken end to end, as [*a, *b);
 * 0 if none. */
static int part_rows(const lila_op *op, int i, size_t lo, size_t hi, size_t *a, size_t *b)
{
    size_t first = 0;   /* part i's row 0 in the concatenation */
    for (int j = 0; j < i; j++) first += op->parts[j].rows;
    size_t rows = op->parts[i].rows;
    *a = lo > first ? lo - first : 0;
    *b = hi > first ? (hi - first < rows ? hi - first : rows) : 0;
    return *a < *b;
}

static size_t total_rows(const lila_op *op)
{
    size_t total = 0;
    for (int i = 0; i < op->n_parts; i++) total += op->parts[i].rows;
    return total;
}

static void run_matmul(lila_ctx *ctx, const lila_op *op, int tid)
{
    size_t col0, cols;
    op_columns(ctx, op, &col0, &cols);
    if (op->lora) adapters_down(ctx, op);
    scratch *s = &ctx->scratch[tid];
    int glu = op->flags & (LILA_GLU_SILU | LILA_GLU_GELU);
    if (glu) {
        /* gate and up share row indices: each thread does the same rows of both */
        const lila_matmul_part *gate = &op->parts[0];
        lila_glu_fn *act = (lila_glu_fn *)kernel_at(K(ctx), glu_slot(op->flags));
        size_t lo, hi;
        share(gate->rows, tid, ctx->n_threads, 16, &lo, &hi);
        size_t tile = tile_rows(ctx, cols);
        for (size_t r = lo; r < hi; r += tile) {
            size_t end = r + tile < hi ? r + tile : hi, len = end - r;
            multiply(ctx, op, 0, r, end, col0, cols, s->tile_a, len, tid);
            multiply(ctx, op, 1, r, end, col0, cols, s->tile_b, len, tid);
            for (size_t c = 0; c < cols; c++)
                act(s->tile_a + c * len, s->tile_b + c * len, len,
                    gate->out + (col0 + c) * gate->out_stride + r);
        }
        return;
    }
    size_t lo, hi, a, b;
    share(total_rows(op), tid, ctx->n_threads, 16, &lo, &hi);
    for (int i = 0; i < op->n_parts; i++) {
        const lila_matmul_part *p = &op->parts[i];
        if (!part_rows(op, i, lo, hi, &a, &b)) continue;
        float *out = p->out + col0 * p->out_stride;
        if (!(op->flags & LILA_ACCUMULATE)) {
            multiply(ctx, op, i, a, b, col0, cols, out + a, p->out_stride, tid);
            continue;
        }
        for (size_t r = a, tile = tile_rows(ctx, cols); r < b; r += tile) {
            size_t end = r + tile < b ? r + tile : b, len = end - r;
            multiply(ctx, op, i, r, end, col0, cols, s->tile_a, len, tid);
            for (size_t c = 0; c < cols; c++)
                K(ctx)->add(out + c * p->out_stride + r, s->tile_a + c * len, len,
                            out + c * p->out_stride + r);
        }
    }
}

/* A separate adapter op (the fabric unfused, to measure what fusing saves): the A
 * products, a barrier, then each thread adds B products to its share of the rows. */
static void run_lora(lila_ctx *ctx, const lila_op *op, int step, int tid)
{
    if (!op->lora) return;
    if (step == 0) {
        adapters_down(ctx, op);
        return;
    }
    size_t col0, cols, lo, hi, a, b;
    op_columns(ctx, op, &col0, &cols);
    share(total_rows(op), tid, ctx->n_threads, 16, &lo, &hi);
    for (int i = 0; i < op->n_parts; i++) {
        const lila_matmul_part *p = &op->parts[i];
        if (op->lora->up[i] && part_rows(op, i, lo, hi, &a, &b))
            add_adapters(ctx, op, i, a, b, cols, p->out + col0 * p->out_stride + a,
                         p->out_stride, tid);
    }
}

static void run_rope(lila_ctx *ctx, const lila_op *op, int tid)
{
    size_t lo, hi;
    share(ctx->n, tid, ctx->n_threads, 1, &lo, &hi);
    lila_rope_fn *rope = (lila_rope_fn *)kernel_at(K(ctx), rope_slot(op->flags));
    const float *table = ctx->rope_tables + (size_t)op->rope_table * ctx->rope_stride;
    for (size_t t = lo; t < hi; t++)
        rope(op->in + t * op->in_stride, (size_t)op->heads, (size_t)op->head_dim,
             (size_t)op->rot_dim, table + t * (size_t)op->rot_dim);
}

/* Attention runs in two steps with a barrier between them (run_program): the batch's
 * keys and values go into the cache, then every query sees them. */
static void store_kv(lila_ctx *ctx, const lila_op *op, int tid)
{
    size_t kv_width = (size_t)op->kv_heads * (size_t)op->head_dim, lo, hi;
    uint16_t *k_cache = ctx->kv->k[op->kv_layer], *v_cache = ctx->kv->v[op->kv_layer];
    share(ctx->n * 2, tid, ctx->n_threads, 1, &lo, &hi);
    for (size_t i = lo; i < hi; i++) {
        size_t t = i / 2, pos = ctx->pos0 + t;
        if (i % 2 == 0)
            K(ctx)->to_f16(op->k_in + t * op->kv_in_stride, kv_width, k_cache + pos * kv_width);
        else
            K(ctx)->to_f16(op->v_in + t * op->kv_in_stride, kv_width, v_cache + pos * kv_width);
    }
}

static void run_attention(lila_ctx *ctx, const lila_op *op, int tid)
{
    size_t kvh = (size_t)op->kv_heads, hd = (size_t)op->head_dim, heads = (size_t)op->heads;
    size_t kv_width = kvh * hd, group = heads / kvh, lo, hi;
    const uint16_t *k_cache = ctx->kv->k[op->kv_layer], *v_cache = ctx->kv->v[op->kv_layer];
    float *scores = ctx->scratch[tid].scores;
    share(ctx->n * heads, tid, ctx->n_threads, 1, &lo, &hi);
    for (size_t i = lo; i < hi; i++) {
        size_t t = i / heads, h = i % heads, kv = h / group, pos = ctx->pos0 + t;
        size_t first = op->window > 0 && pos + 1 > (size_t)op->window ? pos + 1 - (size_t)op->window : 0;
        size_t count = pos + 1 - first;
        K(ctx)->attn_scores(op->in + t * op->in_stride + h * hd, k_cache + first * kv_width + kv * hd,
                            kv_width, count, hd, op->scale, scores);
        K(ctx)->softmax(scores, count);
        K(ctx)->attn_values(scores, v_cache + first * kv_width + kv * hd, kv_width, count, hd,
                            op->out + t * op->out_stride + h * hd);
    }
}

static void run_elementwise(lila_ctx *ctx, const lila_op *op, int tid)
{
    /* split each row too: a decode step has one */
    lila_glu_fn *act = op->kind == LILA_OP_GLU
        ? (lila_glu_fn *)kernel_at(K(ctx), glu_slot(op->flags)) : NULL;
    size_t lo, hi;
    share(ctx->n * op->width, tid, ctx->n_threads, 64, &lo, &hi);
    for (size_t i = lo; i < hi;) {
        size_t t = i / op->width, c = i % op->width;
        size_t count = op->width - c < hi - i ? op->width - c : hi - i;
        const float *a = op->in + t * op->in_stride + c, *b = op->in2 + t * op->in2_stride + c;
        float *out = op->out + t * op->out_stride + c;
        if (op->kind == LILA_OP_ADD)
            K(ctx)->add(a, b, count, out);
        else
            act(a, b, count, out);
        i += count;
    }
}

/* Step `step` of an op: every op has one, but attention two (steps_of). No step waits
 * at a barrier, so a thread that leaves one early (a fault) cannot strand the others. */
static void run_step(lila_ctx *ctx, const lila_op *op, int step, int tid)
{
    switch (op->kind) {
    case LILA_OP_EMBED: run_embed(ctx, op, tid); break;
    case LILA_OP_RMSNORM: run_rmsnorm(ctx, op, tid); break;
    case LILA_OP_RMSNORM_Q8: run_rmsnorm_q8(ctx, op, tid); break;
    case LILA_OP_QUANTIZE: run_quantize(ctx, op, tid); break;
    case LILA_OP_MATMUL: run_matmul(ctx, op, tid); break;
    case LILA_OP_ROPE: run_rope(ctx, op, tid); break;
    case LILA_OP_ATTENTION: (step == 0 ? store_kv : run_attention)(ctx, op, tid); break;
    case LILA_OP_GLU:
    case LILA_OP_ADD: run_elementwise(ctx, op, tid); break;
    case LILA_OP_LORA: run_lora(ctx, op, step, tid); break;
    }
}

static int steps_of(const lila_op *op)
{
    return op->kind == LILA_OP_ATTENTION || op->kind == LILA_OP_LORA ? 2 : 1;
}

/* -- SIGBUS ----------------------------------------------------------------------------
 * While a thread runs an op, fault_jump points at where a fault returns it to; any other
 * SIGBUS goes to the handler that was there before (Python's faulthandler, or the
 * default: the process ends, as it would have without Lila). */

/* initial-exec: reading it in the handler must not call into the dynamic linker */
static _Thread_local __attribute__((tls_model("initial-exec"))) sigjmp_buf *fault_jump;
static struct sigaction previous_bus;
static pthread_once_t bus_handler_once = PTHREAD_ONCE_INIT;

static void on_bus(int sig, siginfo_t *info, void *context)
{
    if (fault_jump) siglongjmp(*fault_jump, 1);
    if (previous_bus.sa_flags & SA_SIGINFO) {
        previous_bus.sa_sigaction(sig, info, context);
    } else if (previous_bus.sa_handler == SIG_DFL) {
        signal(sig, SIG_DFL);     /* the fault recurs on return, now fatal */
    } else if (previous_bus.sa_handler != SIG_IGN) {
        previous_bus.sa_handler(sig);
    }
}

static void install_bus_handler(void)
{
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_bus;
    /* NODEFER: the handler leaves by siglongjmp, which (with sigsetjmp(, 0), no system
       call per op) restores no signal mask, so SIGBUS must not be blocked in it */
    action.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    sigemptyset(&action.sa_mask);
    sigaction(SIGBUS, &action, &previous_bus);
}

/* 1 if the step faulted. Its own function, so that nothing the jump skips is live after
 * it. */
static int guarded_step(lila_ctx *ctx, const lila_op *op, int step, int tid)
{
    sigjmp_buf jump;
    if (sigsetjmp(jump, 0)) {
        fault_jump = NULL;
        return 1;
    }
    fault_jump = &jump;
    run_step(ctx, op, step, tid);
    fault_jump = NULL;
    return 0;
}

static void run_program(lila_ctx *ctx, int tid)
{
    ctx->scratch[tid].coef_op = NULL;
    for (size_t i = 0; i < ctx->prog.n_ops; i++) {
        const lila_op *op = &ctx->prog.ops[i];
        for (int step = 0; step < steps_of(op); step++) {
            if (!atomic_load_explicit(&ctx->faulted, memory_order_relaxed)
                && guarded_step(ctx, op, step, tid))
                atomic_store(&ctx->faulted, 1);
            barrier(ctx);
        }
    }
}

typedef struct {
    lila_ctx *ctx;
    int tid;
} worker_arg;

static void *worker(void *p)
{
    worker_arg arg = *(worker_arg *)p;
    free(p);
    lila_ctx *ctx = arg.ctx;
    int seen = 0;
    for (;;) {
        int spins = 0;
        while (atomic_load(&ctx->generation) == seen && !atomic_load(&ctx->stop)) {
            if (++spins < SPIN_BEFORE_SLEEP) {
                cpu_relax();
                continue;
            }
            pthread_mutex_lock(&ctx->lock);
            atomic_fetch_add(&ctx->sleepers, 1);
            while (atomic_load(&ctx->generation) == seen && !atomic_load(&ctx->stop))
                pthread_cond_wait(&ctx->wake, &ctx->lock);
            atomic_fetch_sub(&ctx->sleepers, 1);
            pthread_mutex_unlock(&ctx->lock);
        }
        if (atomic_load(&ctx->stop)) return NULL;
        seen = atomic_load(&ctx->generation);
        run_program(ctx, arg.tid);
    }
}

static void compute_rope_tables(lila_ctx *ctx)
{
    for (size_t r = 0; r < ctx->prog.n_ropes; r++) {
        const lila_rope_spec *spec = &ctx->prog.ropes[r];
        size_t half = (size_t)spec->rot_dim / 2;
        float *table = ctx->rope_tables + r * ctx->rope_stride;
        for (size_t j = 0; j < half; j++) {   /* the frequency once, for every token */
            double inv_freq = pow(spec->base, -2.0 * (double)j / spec->rot_dim);
            if (spec->freq_factors) inv_freq /= spec->freq_factors[j];
            for (size_t t = 0; t < ctx->n; t++) {
                double angle = (double)(ctx->pos0 + t) * spec->scale * inv_freq;
                float *row = table + t * (size_t)spec->rot_dim;
                row[j] = (float)cos(angle);
                row[half + j] = (float)sin(angle);
            }
        }
    }
}

int lila_forward(lila_ctx *ctx, const lila_kv *kv, const int32_t *tokens, size_t n,
                 size_t pos0, int all_logits)
{
    if (n == 0 || n > ctx->prog.max_batch || n > ctx->prog.n_ctx || pos0 > ctx->prog.n_ctx - n)
        return LILA_BAD_CALL;
    /* the cache: one K and one V for each layer, each long enough */
    if (kv->n_layers != ctx->prog.n_kv_layers || pos0 + n > kv->n_ctx)
        return LILA_BAD_CALL;
    for (size_t i = 0; i < kv->n_layers; i++)
        if (!kv->k[i] || !kv->v[i]) return LILA_BAD_CALL;
    for (size_t i = 0; i < ctx->prog.n_ops; i++) {
        const lila_op *op = &ctx->prog.ops[i];
        if (op->kind != LILA_OP_EMBED) continue;
        for (size_t t = 0; t < n; t++)
            if (tokens[t] < 0 || (size_t)tokens[t] >= op->table_rows) return LILA_BAD_CALL;
    }
    ctx->kv = kv;
    atomic_store(&ctx->faulted, 0);
    for (size_t i = 0; i < ctx->prog.n_ops; i++) {
        atomic_store_explicit(&ctx->lora[i].taken, 0, memory_order_relaxed);
        atomic_store_explicit(&ctx->lora[i].done, 0, memory_order_relaxed);
    }
    ctx->tokens = tokens;
    ctx->n = n;
    ctx->pos0 = pos0;
    ctx->all_logits = all_logits;
    compute_rope_tables(ctx);
    atomic_fetch_add(&ctx->generation, 1);
    if (atomic_load(&ctx->sleepers) > 0) {
        pthread_mutex_lock(&ctx->lock);
        pthread_cond_broadcast(&ctx->wake);
        pthread_mutex_unlock(&ctx->lock);
    }
    run_program(ctx, 0);   /* ends at a barrier: every worker has finished */
    return atomic_load(&ctx->faulted) ? LILA_FAULT : 0;
}

static void *alloc_floats(size_t count)
{
    size_t bytes = (count * sizeof(float) + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE;
    void *p = aligned_alloc(CACHE_LINE, bytes ? bytes : CACHE_LINE);
    if (p) memset(p, 0, bytes);
    return p;
}

/* Starts threads 1..n_threads-1 with every signal blocked but the faults an instruction
 * raises: Ctrl-C and the like then go to a thread of the caller's, where Python handles
 * them, and never stop a worker in the middle of an op. 1 if all started. */
static int start_workers(lila_ctx *ctx)
{
    sigset_t all, caller;
    sigfillset(&all);
    sigdelset(&all, SIGBUS);
    sigdelset(&all, SIGSEGV);
    sigdelset(&all, SIGFPE);
    sigdelset(&all, SIGILL);
    pthread_sigmask(SIG_BLOCK, &all, &caller);
    int ok = 1;
    for (int t = 1; t < ctx->n_threads && ok; t++) {
        worker_arg *arg = malloc(sizeof *arg);
        ok = arg != NULL;
        if (ok) {
            arg->ctx = ctx;
            arg->tid = t;
            ok = pthread_create(&ctx->workers[t], NULL, worker, arg) == 0;
            if (ok) {
                ctx->started = t;
#if defined(__linux__)
                pthread_setname_np(ctx->workers[t], "lila-worker");   /* for top -H, /proc */
#endif
            } else {
                free(arg);
            }
        }
    }
    pthread_sigmask(SIG_SETMASK, &caller, NULL);
    return ok;
}

lila_ctx *lila_create(const lila_program *program, int n_threads)
{
    if (n_threads < 1 || n_threads > 1024 || program->max_batch == 0 || program->n_ctx == 0
        || !program_runs(program))
        return NULL;
    pthread_once(&bus_handler_once, install_bus_handler);
    lila_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return NULL;
    ctx->prog = *program;
    ctx->n_threads = n_threads;
    size_t widest_rope = 0;
    for (size_t r = 0; r < program->n_ropes; r++)
        if ((size_t)program->ropes[r].rot_dim > widest_rope) widest_rope = (size_t)program->ropes[r].rot_dim;
    ctx->rope_stride = program->max_batch * widest_rope;
    ctx->rope_tables = alloc_floats(program->n_ropes * ctx->rope_stride);
    ctx->scratch = calloc((size_t)n_threads, sizeof *ctx->scratch);
    ctx->workers = calloc((size_t)n_threads, sizeof *ctx->workers);
    ctx->lora = calloc(program->n_ops ? program->n_ops : 1, sizeof *ctx->lora);
    pthread_mutex_init(&ctx->lock, NULL);
    pthread_cond_init(&ctx->wake, NULL);
    if (!ctx->rope_tables || !ctx->scratch || !ctx->workers || !ctx->lora) goto fail;
    for (int t = 0; t < n_threads; t++) {
        scratch *s = &ctx->scratch[t];
        s->tile_a = alloc_floats(program->max_batch * ROW_TILE);
        s->tile_b = alloc_floats(program->max_batch * ROW_TILE);
        s->tile_c = alloc_floats(program->max_batch * (ROW_TILE + Q8_VALUES));
        s->scores = alloc_floats(program->n_ctx);
        if (!s->tile_a || !s->tile_b || !s->tile_c || !s->scores) goto fail;
    }
    if (!start_workers(ctx)) goto fail;
    return ctx;
fail:
    lila_destroy(ctx);
    return NULL;
}

void lila_destroy(lila_ctx *ctx)
{
    if (!ctx) return;
    pthread_mutex_lock(&ctx->lock);
    atomic_store(&ctx->stop, 1);
    pthread_cond_broadcast(&ctx->wake);
    pthread_mutex_unlock(&ctx->lock);
    for (int t = 1; t <= ctx->started; t++)
        pthread_join(ctx->workers[t], NULL);
    if (ctx->scratch)
        for (int t = 0; t < ctx->n_threads; t++) {
            free(ctx->scratch[t].tile_a);
            free(ctx->scratch[t].tile_b);
            free(ctx->scratch[t].tile_c);
            free(ctx->scratch[t].scores);
        }
    free(ctx->scratch);
    free(ctx->workers);
    free(ctx->lora);
    free(ctx->rope_tables);
    pthread_mutex_destroy(&ctx->lock);
    pthread_cond_destroy(&ctx->wake);
    free(ctx);
}
