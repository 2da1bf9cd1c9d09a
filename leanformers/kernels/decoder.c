/* One decode step through every layer of a Llama-shaped decoder in one call: for each layer, RMSNorm, the
 * q/k/v products, per-head RMSNorm of q and k where the model has it (Qwen3), the rotary embedding, the new
 * keys and values written into the cache, attention over the cache, the output product added to the
 * residual, RMSNorm, the gate/up products with SiLU(gate) * up computed as each chunk of rows is done, and the
 * down product added to the residual. Activations are fp32, or bf16 values held in fp32 and rounded where
 * torch's bf16 ops round (each op's result; attention in fp32 over the fp32 cache, as the model's bf16 forward
 * does on CPU); a weight is fp32 or bf16 rows (matvec.c) or GGUF blocks (quant.c). A batch of up to 16 rows,
 * each one new token at the same cache position, left padding hidden by a mask.
 *
 * Why one call: a step of SmolLM2-135M otherwise makes 211 products and ~600 small torch ops from Python, each
 * a call, a dispatch and (for the products) a parallel region of its own; here the whole step is one
 * parallel region whose threads meet at a barrier between dependent ops. The weight products are shared out
 * in chunks of rows, dynamically, as in the one-product kernels.
 *
 * Built with -ffp-contract=off: each op rounds as its eager twin (the model's own forward) does; the sums run
 * in another order, so results agree within fp32 rounding, not to the bit. */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BATCH 16
#define CHUNK_BYTES 65536 /* a chunk of rows: a few microseconds of work, so a slow thread holds up little */

int64_t lf_row_bytes(int qtype, int64_t k);
void lf_group_sums(const float *x, int64_t k, int64_t batch, float *xsum);
int lf_quantized_rows(int qtype, const uint8_t *w, int64_t n, int64_t k, const float *x, const float *xsum,
                      int64_t batch, float *y, int64_t y_stride);
void lf_fp32_rows(const float *w, const float *bias, int64_t n, int64_t k, const float *x, int64_t batch, float *y,
                  int64_t y_stride);
void lf_bf16_rows(const uint16_t *w, const uint16_t *bias, int64_t n, int64_t k, const void *x, int64_t batch,
                  float *y, int64_t y_stride);
int lf_bf16_reads_bf16_x(void);

#define FP32_ROWS -1
#define BF16_ROWS -2

typedef struct {
    int64_t kind; /* FP32_ROWS, BF16_ROWS, or ggml's number for the type of GGUF blocks the rows are held in */
    const void *data;
    const void *bias; /* (rows,) fp32 (bf16 for bf16 rows), or NULL */
    int64_t rows, cols;
} lf_weight;

typedef struct {
    lf_weight q, k, v, o, gate, up, down;
    const float *input_norm, *post_norm; /* (hidden,) fp32 (a bf16 model's weights widened) */
    const float *q_norm, *k_norm;        /* (head_dim,) per-head norms, or NULL */
    int64_t window;                      /* sliding attention window in positions, 0 for none */
} lf_layer;

typedef struct {
    int64_t layers, hidden, heads, kv_heads, head_dim, intermediate;
    int64_t bf16;     /* activations rounded to bf16 as torch's bf16 ops round them */
    float eps, scale; /* the norms' epsilon; attention's scale of q . k */
    const lf_layer *layer;
} lf_decoder;

/* A float rounded to the nearest bf16 (ties to even), kept as a float; NaN stays NaN. */
static inline float round_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) <= 0x7f800000u) bits = (bits + 0x7fffu + ((bits >> 16) & 1u)) & 0xffff0000u;
    memcpy(&f, &bits, 4);
    return f;
}

/* The product inputs a step prepares once per x: each 32 values' sum (the quantized kernels add a group's
 * offset with it) and, for bf16 weights where the kernel multiplies bf16 pairs, x as bf16. */
typedef struct {
    float *sums;
    uint16_t *bf16;
} prepared;

static void prepare(const float *x, int64_t k, int64_t batch, const lf_decoder *d, prepared p) {
    lf_group_sums(x, k, batch, p.sums);
    if (d->bf16 && lf_bf16_reads_bf16_x())
        for (int64_t i = 0; i < batch * k; i++) {
            uint32_t bits;
            memcpy(&bits, &x[i], 4);
            p.bf16[i] = (uint16_t)(bits >> 16); /* exact: x holds bf16 values */
        }
}

static int64_t chunk_rows(const lf_weight *w) {
    int64_t row_bytes = w->kind == FP32_ROWS ? w->cols * 4 : w->kind == BF16_ROWS ? w->cols * 2
                                                                                : lf_row_bytes((int)w->kind, w->cols);
    int64_t rows = CHUNK_BYTES / row_bytes / 16 * 16;
    return rows < 16 ? 16 : rows;
}

static int64_t chunk_count(const lf_weight *w) { return (w->rows + chunk_rows(w) - 1) / chunk_rows(w); }

/* Rows [start, start + n) of w . x into y (already at column start), bias added. */
static void weight_rows(const lf_weight *w, int64_t start, int64_t n, const float *x, prepared p, int64_t batch,
                        float *y, int64_t y_stride) {
    if (w->kind == FP32_ROWS) {
        lf_fp32_rows((const float *)w->data + start * w->cols, w->bias ? (const float *)w->bias + start : NULL, n,
                     w->cols, x, batch, y, y_stride);
    } else if (w->kind == BF16_ROWS) {
        lf_bf16_rows((const uint16_t *)w->data + start * w->cols, w->bias ? (const uint16_t *)w->bias + start : NULL, n,
                     w->cols, lf_bf16_reads_bf16_x() ? (const void *)p.bf16 : (const void *)x, batch, y, y_stride);
    } else {
        lf_quantized_rows((int)w->kind, (const uint8_t *)w->data + start * lf_row_bytes((int)w->kind, w->cols), n,
                          w->cols, x, p.sums, batch, y, y_stride);
        if (w->bias)
            for (int64_t b = 0; b < batch; b++)
                for (int64_t r = 0; r < n; r++) y[b * y_stride + r] += ((const float *)w->bias)[start + r];
    }
}

/* The products of up to three weights reading the same x, side by side in the columns of y (batch, y_stride);
 * with residual, y is scratch and each finished chunk is added into residual (batch, y_stride). Inside the
 * parallel region: every thread calls it, and it returns when all chunks are done. */
static void products(const lf_weight *const *ws, int count, const float *x, prepared p, int64_t batch, float *y,
                     int64_t y_stride, float *residual, int bf16) {
    int64_t first[4] = {0}, column[4] = {0};
    for (int i = 0; i < count; i++) {
        first[i + 1] = first[i] + chunk_count(ws[i]);
        column[i + 1] = column[i] + ws[i]->rows;
    }
#pragma omp for schedule(dynamic, 1)
    for (int64_t chunk = 0; chunk < first[count]; chunk++) {
        int i = 0;
        while (chunk >= first[i + 1]) i++;
        int64_t size = chunk_rows(ws[i]), start = (chunk - first[i]) * size;
        int64_t n = ws[i]->rows - start < size ? ws[i]->rows - start : size, at = column[i] + start;
        weight_rows(ws[i], start, n, x, p, batch, y + at, y_stride);
        if (residual)
            for (int64_t b = 0; b < batch; b++)
                for (int64_t r = 0; r < n; r++) {
                    float *sum = &residual[b * y_stride + at + r];
                    *sum += y[b * y_stride + at + r];
                    if (bf16) *sum = round_bf16(*sum);
                }
    }
}

/* act = silu(x . gate) * (x . up), (batch, intermediate): a chunk's gate and up rows, then their product. */
static void gated_products(const lf_weight *gate, const lf_weight *up, const float *x, prepared p, int64_t batch,
                           float *gate_up, float *act, int bf16) {
    int64_t size = chunk_rows(gate), n_all = gate->rows;
#pragma omp for schedule(dynamic, 1)
    for (int64_t start = 0; start < n_all; start += size) {
        int64_t n = n_all - start < size ? n_all - start : size;
        weight_rows(gate, start, n, x, p, batch, gate_up + start, 2 * n_all);
        weight_rows(up, start, n, x, p, batch, gate_up + n_all + start, 2 * n_all);
        for (int64_t b = 0; b < batch; b++)
            for (int64_t r = start; r < start + n; r++) {
                float g = gate_up[b * 2 * n_all + r], u = gate_up[b * 2 * n_all + n_all + r];
                float silu = g / (1.0f + expf(-g));
                act[b * n_all + r] = bf16 ? round_bf16(round_bf16(silu) * u) : silu * u;
            }
    }
}

/* a . b in 16 running sums, which the compiler keeps in vector registers: one sum alone is a chain of
 * dependent additions it may not reorder (SmolLM2 bf16 at batch 8: the layers' step 16.4 -> 15.0 ms). */
static float dot(const float *a, const float *b, int64_t n) {
    float part[16] = {0}, sum = 0.0f;
    int64_t j = 0;
    for (; j + 16 <= n; j += 16)
        for (int l = 0; l < 16; l++) part[l] += a[j + l] * b[j + l];
    for (int l = 0; l < 16; l++) sum += part[l];
    for (; j < n; j++) sum += a[j] * b[j];
    return sum;
}

/* bf16: normalised, rounded, then scaled by the weight and rounded, as the model's RMSNorm does in bf16. */
static void rms_norm(const float *x, const float *weight, int64_t n, float eps, int bf16, float *out) {
    float squares = dot(x, x, n);
    float scale = 1.0f / sqrtf(squares / (float)n + eps);
    for (int64_t i = 0; i < n; i++)
        out[i] = bf16 ? round_bf16(weight[i] * round_bf16(x[i] * scale)) : x[i] * scale * weight[i];
}

/* x (head_dim,) rotated in place: x * cos + rotate_half(x) * sin, with sin's first half negated (signed_sin).
 * bf16: x * cos rounded, then the sum (torch's addcmul) rounded. */
static void rotate(float *x, const float *cos, const float *signed_sin, int64_t d, int bf16) {
    float turned[512];
    int64_t half = d / 2;
    for (int64_t j = 0; j < d; j++)
        turned[j] = bf16 ? round_bf16(round_bf16(x[j] * cos[j]) + x[(j + half) % d] * signed_sin[j])
                         : x[j] * cos[j] + x[(j + half) % d] * signed_sin[j];
    memcpy(x, turned, sizeof(float) * (size_t)d);
}

/* One query head over the cached positions 0..past (the new token's key and value already at past). */
static void attend(const float *q, const float *keys, const float *values, int64_t past, int64_t d,
                   const uint8_t *keep, int64_t window, float scale, int bf16, float *scores, float *out) {
    float peak = -INFINITY;
    for (int64_t t = 0; t <= past; t++) {
        int visible = (keep == NULL || keep[t]) && (window <= 0 || t > past - window);
        float s = -INFINITY;
        if (visible) s = dot(q, keys + t * d, d) * scale;
        scores[t] = s;
        if (s > peak) peak = s;
    }
    memset(out, 0, sizeof(float) * (size_t)d);
    if (peak == -INFINITY) return; /* nothing visible: zeros, as torch's attention gives */
    float total = 0.0f;
    for (int64_t t = 0; t <= past; t++) {
        float p = scores[t] == -INFINITY ? 0.0f : expf(scores[t] - peak);
        scores[t] = p;
        total += p;
    }
    for (int64_t t = 0; t <= past; t++)
        if (scores[t] != 0.0f)
            for (int64_t j = 0; j < d; j++) out[j] += scores[t] * values[t * d + j];
    for (int64_t j = 0; j < d; j++) out[j] = bf16 ? round_bf16(out[j] / total) : out[j] / total;
}

/* x (batch, hidden): the new tokens' embeddings in, the last layer's output out (before the final norm).
 * keys[i], values[i]: layer i's cache, element (b, h, t, j) at b * batch_stride + h * head_stride + t * head_dim
 * + j, holding `past` positions; the new ones go to position past. cos, signed_sin (batch, head_dim): each row's
 * rotary embedding at its position. keep (batch, past + 1) or NULL: 0 where a row must not attend (padding).
 * Returns 0, or -1 for sizes out of range or memory not allocated. */
int lf_decode_step(const lf_decoder *d, float *x, int64_t batch, float *const *keys, float *const *values,
                   int64_t batch_stride, int64_t head_stride, int64_t past, const float *cos, const float *signed_sin,
                   const uint8_t *keep, int threads) {
    int64_t hidden = d->hidden, heads = d->heads, kv_heads = d->kv_heads, hd = d->head_dim, inter = d->intermediate;
    if (batch < 1 || batch > MAX_BATCH || threads < 1 || hd > 512 || hd < 2 || kv_heads < 1 || heads % kv_heads ||
        past < 0)
        return -1;
    int64_t qkv_width = (heads + 2 * kv_heads) * hd, widest = hidden > inter ? hidden : inter;
    if (heads * hd > widest) widest = heads * hd;
#define FLOATS(count) malloc(sizeof(float) * (size_t)(count))
    float *normed = FLOATS(batch * widest), *qkv = FLOATS(batch * qkv_width), *attended = FLOATS(batch * heads * hd),
          *scratch = FLOATS(batch * 2 * widest), *act = FLOATS(batch * inter),
          *xsum = FLOATS(batch * (widest / 32 + 1)), *scores = FLOATS(batch * heads * (past + 1));
#undef FLOATS
    uint16_t *x_bf16 = malloc(sizeof(uint16_t) * (size_t)(batch * widest));
    prepared p = {xsum, x_bf16};
    int status = 0, bf16 = d->bf16 != 0;
    if (!normed || !qkv || !attended || !scratch || !act || !xsum || !scores || !x_bf16) {
        status = -1;
        goto done;
    }
#pragma omp parallel num_threads(threads)
    for (int64_t li = 0; li < d->layers; li++) {
        const lf_layer *L = &d->layer[li];
#pragma omp single
        {
            for (int64_t b = 0; b < batch; b++)
                rms_norm(x + b * hidden, L->input_norm, hidden, d->eps, bf16, normed + b * hidden);
            prepare(normed, hidden, batch, d, p);
        }
        const lf_weight *qkv_weights[3] = {&L->q, &L->k, &L->v};
        products(qkv_weights, 3, normed, p, batch, qkv, qkv_width, NULL, bf16);
        /* per head: its norm, the rotation, and (keys, values) into the cache */
#pragma omp for schedule(static)
        for (int64_t bh = 0; bh < batch * (heads + kv_heads); bh++) {
            int64_t b = bh / (heads + kv_heads), h = bh % (heads + kv_heads);
            float *head = qkv + b * qkv_width + h * hd;
            int is_key = h >= heads;
            const float *norm = is_key ? L->k_norm : L->q_norm;
            if (norm) rms_norm(head, norm, hd, d->eps, bf16, head);
            rotate(head, cos + b * hd, signed_sin + b * hd, hd, bf16);
            if (is_key) {
                int64_t kh = h - heads, at = b * batch_stride + kh * head_stride + past * hd;
                memcpy(keys[li] + at, head, sizeof(float) * (size_t)hd);
                memcpy(values[li] + at, head + kv_heads * hd, sizeof(float) * (size_t)hd);
            }
        }
#pragma omp for schedule(static)
        for (int64_t bh = 0; bh < batch * heads; bh++) {
            int64_t b = bh / heads, h = bh % heads, kh = h / (heads / kv_heads);
            int64_t at = b * batch_stride + kh * head_stride;
            attend(qkv + b * qkv_width + h * hd, keys[li] + at, values[li] + at, past, hd,
                   keep ? keep + b * (past + 1) : NULL, L->window, d->scale, bf16, scores + bh * (past + 1),
                   attended + b * heads * hd + h * hd);
        }
#pragma omp single
        prepare(attended, heads * hd, batch, d, p);
        const lf_weight *output[1] = {&L->o};
        products(output, 1, attended, p, batch, scratch, hidden, x, bf16);
#pragma omp single
        {
            for (int64_t b = 0; b < batch; b++)
                rms_norm(x + b * hidden, L->post_norm, hidden, d->eps, bf16, normed + b * hidden);
            prepare(normed, hidden, batch, d, p);
        }
        gated_products(&L->gate, &L->up, normed, p, batch, scratch, act, bf16);
#pragma omp single
        prepare(act, inter, batch, d, p);
        const lf_weight *down[1] = {&L->down};
        products(down, 1, act, p, batch, scratch, hidden, x, bf16);
    }
done:
    free(normed);
    free(qkv);
    free(attended);
    free(scratch);
    free(act);
    free(xsum);
    free(scores);
    free(x_bf16);
    return status;
}
