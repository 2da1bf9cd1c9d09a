/* Matrix-vector products over dense fp32 or bf16 weights, for decode steps: y[b, n] = sum_k W[n, k] * x[b, k]
 * (+ bias[n]) for a few rows x (b < 16), W a linear layer's weight (N, K) as it lies in memory, row-major, no
 * copy. Weights that read the same x (q/k/v, gate/up) go through one call, one parallel region over all their
 * rows, their outputs side by side in the columns of y.
 *
 * W is read from memory once per call: a tile of TILE_ROWS weight rows is dotted with every x row while it is
 * in cache, TILE_BATCH x rows at a time (a tile's accumulators stay in vector registers). bf16: W, x, bias and
 * y are bf16; the products (exact in fp32) are summed in fp32 and y rounded to nearest even once, as torch's
 * bf16 matmul on CPU does. Built with -ffp-contract=off like quant.c.
 * Row chunks are shared among OpenMP threads dynamically, so a thread slowed by another process on its core
 * takes fewer of them. (The region's closing barrier still waits for every thread of the team, one not yet
 * scheduled too, as torch's own parallel regions do: measured on 2 cores with one taken by a busy loop,
 * SmolLM2's fp32 matvecs of a decode step took a median 33.5 ms, at times 225, against torch's one-core 35.5;
 * 14.6 with both cores free.) */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BATCH 16      /* x rows per call: leanformers.kernels.MAX_MATVEC_ROWS */
#define MAX_WEIGHTS 8     /* weights per call */
#define TILE_ROWS 4       /* weight rows dotted together: four streams from memory, four accumulators at batch 1 */
/* A thread's share at a time: ~6 us of reading, the most a thread descheduled in the middle of one delays
 * the call. Smaller chunks read slower, each starting new streams for the prefetchers to pick up (SmolLM2's
 * weights at batch 1, fp32, 2 cores: 16 KB chunks 23.8 GB/s, 64 KB 25.2, 128 KB 25.8, 256 KB 26.6). */
#define CHUNK_BYTES 131072

static inline float bf16_to_float(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t float_to_bf16(float f) { /* round to nearest even; a NaN stays a (quiet) NaN */
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40u);
    return (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

/* How a tile multiplies: fp32 weights by fp32 x; bf16 weights widened to fp32 (exactly: a 16-bit shift) by x
 * widened once per call; or, where the CPU has AVX512_BF16, bf16 weights by bf16 x in pairs (vdpbf16ps: each
 * lane adds two exact products, 32 multiply-adds an instruction, twice the fp32 rate, nothing widened). */
#define FP32 0
#define BF16_WIDENED 1
#define BF16_PAIRS 2

/* -- a tiny vector layer: AVX-512 (16 lanes), AVX2 + FMA (8), or plain C (8 lanes the compiler may vectorize) */

#if defined(__AVX512F__)
#include <immintrin.h>
#define LANES 16
#define TILE_BATCH 4 /* 4 x 4 accumulators + 4 weight vectors + x: 21 of 32 registers */
typedef __m512 vec;
static inline vec vzero(void) { return _mm512_setzero_ps(); }
static inline vec vload(const float *p) { return _mm512_loadu_ps(p); }
static inline vec vload_bf16(const uint16_t *p) {
    __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}
static inline vec vfmadd(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
static inline float vsum(vec v) { return _mm512_reduce_add_ps(v); }
/* Each weight vector and x vector of a tile serves several multiply-adds: loaded once into a register, not
 * (as GCC would fold it) once per multiply-add, which made the loads, not the multiply-adds, the limit at
 * several x rows. */
static inline void keep_in_register(vec *v) { __asm__("" : "+v"(*v)); }
#if defined(__AVX512BF16__)
#define BF16_MODE BF16_PAIRS
static inline vec vload_pairs(const uint16_t *p) { return _mm512_castsi512_ps(_mm512_loadu_si512(p)); }
static inline vec vdot_pairs(vec a, vec b, vec c) { return _mm512_dpbf16_ps(c, (__m512bh)a, (__m512bh)b); }
#endif
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define LANES 8
#define TILE_BATCH 2 /* 4 x 2 accumulators + 4 weight vectors + x: 13 of 16 registers */
typedef __m256 vec;
static inline vec vzero(void) { return _mm256_setzero_ps(); }
static inline vec vload(const float *p) { return _mm256_loadu_ps(p); }
static inline vec vload_bf16(const uint16_t *p) {
    __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}
static inline vec vfmadd(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
static inline float vsum(vec v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline void keep_in_register(vec *v) { __asm__("" : "+x"(*v)); }
#else
#define LANES 8
#define TILE_BATCH 2
typedef struct { float lane[LANES]; } vec;
static inline vec vzero(void) {
    vec v = {{0}};
    return v;
}
static inline vec vload(const float *p) {
    vec v;
    memcpy(v.lane, p, sizeof v.lane);
    return v;
}
static inline vec vload_bf16(const uint16_t *p) {
    vec v;
    for (int j = 0; j < LANES; j++) v.lane[j] = bf16_to_float(p[j]);
    return v;
}
static inline vec vfmadd(vec a, vec b, vec c) {
    for (int j = 0; j < LANES; j++) c.lane[j] += a.lane[j] * b.lane[j];
    return c;
}
static inline float vsum(vec v) {
    float s = 0.0f;
    for (int j = 0; j < LANES; j++) s += v.lane[j];
    return s;
}
static inline void keep_in_register(vec *v) { (void)v; }
#endif
#ifndef BF16_MODE
#define BF16_MODE BF16_WIDENED
#endif

/* -- one tile: `rows` weight rows (k apart) dotted with `batch` x rows (k apart) ------------------------------ */

static inline vec load_weights(const void *w, int64_t i, int mode) {
#if BF16_MODE == BF16_PAIRS
    if (mode == BF16_PAIRS) return vload_pairs((const uint16_t *)w + i);
#endif
    return mode == BF16_WIDENED ? vload_bf16((const uint16_t *)w + i) : vload((const float *)w + i);
}

static inline vec load_x(const void *x, int64_t i, int mode) {
#if BF16_MODE == BF16_PAIRS
    if (mode == BF16_PAIRS) return vload_pairs((const uint16_t *)x + i);
#else
    (void)mode; /* every mode of this build multiplies fp32 x */
#endif
    return vload((const float *)x + i);
}

static inline vec multiply_add(vec w, vec x, vec acc, int mode) {
#if BF16_MODE == BF16_PAIRS
    if (mode == BF16_PAIRS) return vdot_pairs(w, x, acc);
#else
    (void)mode; /* every mode of this build multiplies in fp32 */
#endif
    return vfmadd(w, x, acc);
}

static inline float weight_at(const void *w, int64_t i, int bf16) {
    return bf16 ? bf16_to_float(((const uint16_t *)w)[i]) : ((const float *)w)[i];
}

/* Always inlined where mode, rows and batch are constants: the loops over them unroll and acc lives in
 * registers. sums[b][r] = row r of w . x row b; x is bf16 in mode BF16_PAIRS, else fp32. */
static inline __attribute__((always_inline)) void dot_tile(const void *w, int mode, const void *x, int64_t k,
                                                           int rows, int batch, float sums[TILE_BATCH][TILE_ROWS]) {
    int64_t step = mode == BF16_PAIRS ? 2 * LANES : LANES; /* columns one vector of weights holds */
    vec acc[TILE_ROWS][TILE_BATCH];
    for (int r = 0; r < rows; r++)
        for (int b = 0; b < batch; b++) acc[r][b] = vzero();
    int64_t i = 0;
    for (; i + step <= k; i += step) {
        vec wv[TILE_ROWS];
        for (int r = 0; r < rows; r++) {
            wv[r] = load_weights(w, r * k + i, mode);
            keep_in_register(&wv[r]);
            /* The same columns of the next tile's rows, on their way into L2 while this tile computes (into L1
             * they took the few L1 miss buffers the loads need). SmolLM2's weights, 2 cores: fp32 batch 1
             * 23 -> 26 GB/s, batch 8 17 -> 23.5; bf16 18 -> 24 and 15 -> 20. A prefetch past the weight's end
             * is only a hint: it never faults. */
            __builtin_prefetch((const char *)w + ((TILE_ROWS + r) * k + i) * (mode == FP32 ? 4 : 2), 0, 2);
        }
        for (int b = 0; b < batch; b++) {
            vec xv = load_x(x, b * k + i, mode);
            keep_in_register(&xv);
            for (int r = 0; r < rows; r++) acc[r][b] = multiply_add(wv[r], xv, acc[r][b], mode);
        }
    }
    for (int r = 0; r < rows; r++)
        for (int b = 0; b < batch; b++) sums[b][r] = vsum(acc[r][b]);
    for (; i < k; i++) /* the last k % step columns */
        for (int r = 0; r < rows; r++)
            for (int b = 0; b < batch; b++)
                sums[b][r] += weight_at(w, r * k + i, mode != FP32) * weight_at(x, b * k + i, mode == BF16_PAIRS);
}

/* The four shapes of tile a chunk is cut into: TILE_ROWS or one row (the last N % TILE_ROWS), TILE_BATCH x rows
 * or one (the last B % TILE_BATCH), each for fp32 and bf16 weights. */
static void dot_any_tile(const void *w, int bf16, const void *x, int64_t k, int rows, int batch,
                         float sums[TILE_BATCH][TILE_ROWS]) {
#define DOT_TILE(ROWS, BATCH)                                                                                      \
    (bf16 ? dot_tile(w, BF16_MODE, x, k, ROWS, BATCH, sums) : dot_tile(w, FP32, x, k, ROWS, BATCH, sums))
    if (rows == TILE_ROWS)
        batch == TILE_BATCH ? DOT_TILE(TILE_ROWS, TILE_BATCH) : DOT_TILE(TILE_ROWS, 1);
    else
        batch == TILE_BATCH ? DOT_TILE(1, TILE_BATCH) : DOT_TILE(1, 1);
#undef DOT_TILE
}

/* Rows [0, n) of w against every x row into columns [0, n) of y (its rows y_stride apart), bias added. */
static void dot_rows(const void *w, const void *bias, int bf16, int64_t n, int64_t k, const void *x, int64_t batch,
                     void *y, int64_t y_stride) {
    int64_t element = bf16 ? 2 : 4, x_element = bf16 && BF16_MODE == BF16_PAIRS ? 2 : 4;
    for (int64_t row = 0, rows; row < n; row += rows) {
        rows = n - row >= TILE_ROWS ? TILE_ROWS : 1;
        for (int64_t b0 = 0, tile_batch; b0 < batch; b0 += tile_batch) {
            tile_batch = batch - b0 >= TILE_BATCH ? TILE_BATCH : 1;
            float sums[TILE_BATCH][TILE_ROWS];
            dot_any_tile((const char *)w + row * k * element, bf16, (const char *)x + b0 * k * x_element, k, (int)rows,
                         (int)tile_batch, sums);
            for (int b = 0; b < tile_batch; b++)
                for (int r = 0; r < rows; r++) {
                    int64_t at = (b0 + b) * y_stride + row + r;
                    float s = sums[b][r] + (bias ? weight_at(bias, row + r, bf16) : 0.0f);
                    if (bf16)
                        ((uint16_t *)y)[at] = float_to_bf16(s);
                    else
                        ((float *)y)[at] = s;
                }
        }
    }
}

/* dtype: 0 fp32, 1 bf16 (weights, biases, x and y alike). weights[i] (rows[i], k), biases[i] (rows[i]) or NULL;
 * x (batch, k); y (batch, sum of rows), weight i's outputs in the columns after those of the weights before it.
 * Returns 0, or -1 for a dtype, batch, count of weights, row count or thread count out of range. */
int lf_dense_matvec(int dtype, int64_t count, const void *const *weights, const void *const *biases,
                    const int64_t *rows, int64_t k, const void *x, int64_t batch, void *y, int threads) {
    if ((dtype != 0 && dtype != 1) || batch < 1 || batch > MAX_BATCH || count < 1 || count > MAX_WEIGHTS || k < 1 ||
        threads < 1)
        return -1;
    int bf16 = dtype == 1;
    int64_t element = bf16 ? 2 : 4, column[MAX_WEIGHTS + 1] = {0}, first_chunk[MAX_WEIGHTS + 1] = {0};
    int64_t chunk_rows = CHUNK_BYTES / (k * element) / TILE_ROWS * TILE_ROWS;
    if (chunk_rows < TILE_ROWS) chunk_rows = TILE_ROWS;
    for (int64_t i = 0; i < count; i++) {
        if (rows[i] < 0) return -1;
        column[i + 1] = column[i] + rows[i];
        first_chunk[i + 1] = first_chunk[i] + (rows[i] + chunk_rows - 1) / chunk_rows;
    }
    float *widened = NULL;
    if (bf16 && BF16_MODE == BF16_WIDENED) {
        widened = (float *)malloc(sizeof(float) * (size_t)(batch * k));
        if (widened == NULL) return -1;
        for (int64_t i = 0; i < batch * k; i++) widened[i] = bf16_to_float(((const uint16_t *)x)[i]);
        x = widened;
    }
    int64_t total = column[count];
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int64_t chunk = 0; chunk < first_chunk[count]; chunk++) {
        int64_t i = 0;
        while (chunk >= first_chunk[i + 1]) i++;
        int64_t start = (chunk - first_chunk[i]) * chunk_rows;
        int64_t n = rows[i] - start < chunk_rows ? rows[i] - start : chunk_rows;
        const void *bias = biases[i] ? (const char *)biases[i] + start * element : NULL;
        dot_rows((const char *)weights[i] + start * k * element, bias, bf16, n, k, x, batch,
                 (char *)y + (column[i] + start) * element, total);
    }
    free(widened);
    return 0;
}

/* Rows [0, n) of one fp32 weight (from the row w points at; bias likewise, or NULL) against every fp32 x row,
 * into y[b * y_stride + row]: one thread's share of a product, for callers already inside a parallel region
 * (decoder.c). */
void lf_fp32_rows(const float *w, const float *bias, int64_t n, int64_t k, const float *x, int64_t batch, float *y,
                  int64_t y_stride) {
    dot_rows(w, bias, 0, n, k, x, batch, y, y_stride);
}

/* The same for one bf16 weight (bias bf16 or NULL) with x as dot_rows reads it for bf16 weights (bf16 where
 * lf_bf16_reads_bf16_x() says so, else fp32 holding bf16 values): y as fp32 holding the bf16 result, rounded
 * once as lf_dense_matvec rounds it. */
void lf_bf16_rows(const uint16_t *w, const uint16_t *bias, int64_t n, int64_t k, const void *x, int64_t batch,
                  float *y, int64_t y_stride) {
    enum { PART = 64 };
    uint16_t part[MAX_BATCH * PART];
    for (int64_t start = 0; start < n; start += PART) {
        int64_t rows = n - start < PART ? n - start : PART;
        dot_rows(w + start * k, bias ? bias + start : NULL, 1, rows, k, x, batch, part, PART);
        for (int64_t b = 0; b < batch; b++)
            for (int64_t r = 0; r < rows; r++) y[b * y_stride + start + r] = bf16_to_float(part[b * PART + r]);
    }
}

int lf_bf16_reads_bf16_x(void) { return BF16_MODE == BF16_PAIRS; }
