/* Matrix-vector products over GGUF quantized blocks, for decode steps: y[b, n] = sum_k W[n, k] * x[b, k] for
 * a few rows x (b < 16), with W kept as the file's blocks. Each block is dequantized into 32 or 256 floats
 * exactly as ggml's reference (and leanformers/gguf_quants.py) does, then dotted with every x row, so W is
 * read once per call. Built with -ffp-contract=off: a weight is the same float the eager path computes.
 * Output rows are shared among OpenMP threads in small chunks (dynamic), so a thread whose core is taken
 * by another process holds up at most one chunk. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__F16C__)
#include <immintrin.h>
static inline float half_to_float(const uint8_t *p) { /* one instruction where the CPU has F16C */
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}
#else
static inline float half_to_float(const uint8_t *p) {
    uint16_t h = (uint16_t)(p[0] | (p[1] << 8));
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    float f;
    if (exp == 0) {
        f = (float)man * (1.0f / 16777216.0f); /* zero or subnormal: man * 2^-24 */
        memcpy(&bits, &f, 4);
        bits |= sign;
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    }
    memcpy(&f, &bits, 4);
    return f;
}
#endif

/* -- one block -> floats, in ggml's order ---------------------------------------------------------- */

static inline void block_q8_0(const uint8_t *b, float *y) { /* d | 32 int8 */
    float d = half_to_float(b);
    const int8_t *q = (const int8_t *)(b + 2);
    for (int j = 0; j < 32; j++) y[j] = (float)q[j] * d;
}

static inline void block_q4_0(const uint8_t *b, float *y) { /* d | 16 bytes of nibbles */
    float d = half_to_float(b);
    const uint8_t *q = b + 2;
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)((int)(q[j] & 0xF) - 8);
        y[j + 16] = d * (float)((int)(q[j] >> 4) - 8);
    }
}

static inline void block_q4_1(const uint8_t *b, float *y) { /* d | m | 16 bytes of nibbles */
    float d = half_to_float(b), m = half_to_float(b + 2);
    const uint8_t *q = b + 4;
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)(q[j] & 0xF) + m;
        y[j + 16] = d * (float)(q[j] >> 4) + m;
    }
}

static inline void block_q5_0(const uint8_t *b, float *y) { /* d | 32 fifth bits | 16 bytes of nibbles */
    float d = half_to_float(b);
    uint32_t qh = (uint32_t)b[2] | ((uint32_t)b[3] << 8) | ((uint32_t)b[4] << 16) | ((uint32_t)b[5] << 24);
    const uint8_t *q = b + 6;
    for (int j = 0; j < 16; j++) {
        int low = (int)((q[j] & 0xF) | (((qh >> j) & 1u) << 4));
        int high = (int)((q[j] >> 4) | (((qh >> (j + 16)) & 1u) << 4));
        y[j] = d * (float)(low - 16);
        y[j + 16] = d * (float)(high - 16);
    }
}

/* Q4_K/Q5_K: sub-block j's (of 8) scale d * sc and min dmin * mn, its 6-bit sc and mn packed in 12 bytes
 * after the block's d and dmin. */
static inline void k_scale_min(const uint8_t *block, int j, float d, float dmin, float *scale, float *min) {
    const uint8_t *q = block + 4;
    int sc, mn;
    if (j < 4) {
        sc = q[j] & 63;
        mn = q[j + 4] & 63;
    } else {
        sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
    *scale = d * (float)sc;
    *min = dmin * (float)mn;
}

static inline void block_q4_k(const uint8_t *b, float *y) { /* d | dmin | 12 bytes of scales | 128 of nibbles */
    float d = half_to_float(b), dmin = half_to_float(b + 2);
    const uint8_t *q = b + 16;
    for (int chunk = 0; chunk < 4; chunk++, q += 32, y += 64) {
        float d1, m1, d2, m2;
        k_scale_min(b, 2 * chunk, d, dmin, &d1, &m1);
        k_scale_min(b, 2 * chunk + 1, d, dmin, &d2, &m2);
        for (int l = 0; l < 32; l++) {
            y[l] = d1 * (float)(q[l] & 0xF) - m1;
            y[l + 32] = d2 * (float)(q[l] >> 4) - m2;
        }
    }
}

static inline void block_q5_k(const uint8_t *b, float *y) { /* d | dmin | scales | 32 bytes of fifth bits | nibbles */
    float d = half_to_float(b), dmin = half_to_float(b + 2);
    const uint8_t *qh = b + 16, *q = b + 48;
    for (int chunk = 0; chunk < 4; chunk++, q += 32, y += 64) {
        float d1, m1, d2, m2;
        k_scale_min(b, 2 * chunk, d, dmin, &d1, &m1);
        k_scale_min(b, 2 * chunk + 1, d, dmin, &d2, &m2);
        uint8_t u1 = (uint8_t)(1u << (2 * chunk)), u2 = (uint8_t)(2u << (2 * chunk));
        for (int l = 0; l < 32; l++) {
            y[l] = d1 * (float)((q[l] & 0xF) + ((qh[l] & u1) ? 16 : 0)) - m1;
            y[l + 32] = d2 * (float)((q[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
        }
    }
}

static inline void block_q6_k(const uint8_t *b, float *y) { /* 128 bytes low bits | 64 high bits | 16 scales | d */
    float d = half_to_float(b + 208);
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    for (int half = 0; half < 2; half++, ql += 64, qh += 32, sc += 8, y += 128) {
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = (int)((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
            int q2 = (int)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            int q3 = (int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            int q4 = (int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * (float)sc[is] * (float)q1;
            y[l + 32] = d * (float)sc[is + 2] * (float)q2;
            y[l + 64] = d * (float)sc[is + 4] * (float)q3;
            y[l + 96] = d * (float)sc[is + 6] * (float)q4;
        }
    }
}

/* -- y = x @ W.T over blocks ------------------------------------------------------------------------- */

/* The dot products. Every type's weights come in groups (of 32, or 16 for Q6_K) that share an affine map
 * w = scale * q + offset of small integers q, so a group's share of a dot product with x is
 * scale * sum(q * x) + offset * sum(x): the integers are converted to floats and multiplied with x in
 * vector registers (AVX-512: 16 lanes, AVX2: 8), and the sums of x per group are computed once per call.
 * Elsewhere each block is dequantized into floats (as above) and dotted. */

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>

#if defined(__AVX512F__)
#define LANES 16
typedef __m512 vec;
/* 16 bytes -> floats, unsigned or signed */
static inline void bytes_to_vecs(__m128i b, int is_signed, vec *out) {
    out[0] = _mm512_cvtepi32_ps(is_signed ? _mm512_cvtepi8_epi32(b) : _mm512_cvtepu8_epi32(b));
}
#define vzero _mm512_setzero_ps
#define vset1 _mm512_set1_ps
#define vload _mm512_loadu_ps
#define vmul _mm512_mul_ps
#define vsub _mm512_sub_ps
#define vfmadd _mm512_fmadd_ps
static inline float vsum(vec v) { return _mm512_reduce_add_ps(v); }
#else
#define LANES 8
typedef __m256 vec;
static inline void bytes_to_vecs(__m128i b, int is_signed, vec *out) {
    __m128i high = _mm_srli_si128(b, 8);
    out[0] = _mm256_cvtepi32_ps(is_signed ? _mm256_cvtepi8_epi32(b) : _mm256_cvtepu8_epi32(b));
    out[1] = _mm256_cvtepi32_ps(is_signed ? _mm256_cvtepi8_epi32(high) : _mm256_cvtepu8_epi32(high));
}
#define vzero _mm256_setzero_ps
#define vset1 _mm256_set1_ps
#define vload _mm256_loadu_ps
#define vmul _mm256_mul_ps
#define vsub _mm256_sub_ps
#define vfmadd _mm256_fmadd_ps
static inline float vsum(vec v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif
#define PER16 (16 / LANES) /* vectors holding 16 weights */

static inline __m128i load16(const uint8_t *p) { return _mm_loadu_si128((const __m128i *)p); }
static inline __m128i low_nibbles(__m128i v) { return _mm_and_si128(v, _mm_set1_epi8(0x0F)); }
static inline __m128i high_nibbles(__m128i v) { return _mm_and_si128(_mm_srli_epi16(v, 4), _mm_set1_epi8(0x0F)); }
/* bit `shift` of each of 16 bytes, moved to bit 4 (0 or 16) */
static inline __m128i fifth_bit(const uint8_t *qh, int shift) {
    return _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(load16(qh), shift), _mm_set1_epi8(1)), 4);
}

/* A group: 32 integer weights as floats in vectors, with its scale and offset (w = scale * q + offset). */
typedef struct { vec q[32 / LANES]; float scale, offset; } group32;

static inline void fill(group32 *g, __m128i first16, __m128i last16, int is_signed, float scale, float offset) {
    bytes_to_vecs(first16, is_signed, g->q);
    bytes_to_vecs(last16, is_signed, g->q + PER16);
    g->scale = scale;
    g->offset = offset;
}

#define DOT_GROUPS(NAME, QK, BYTES, ...)                                                                      \
    static void rows_##NAME(const uint8_t *w, int64_t n, int64_t k, const float *x, const float *xsum,       \
                            int64_t batch, float *y, int64_t y_stride) {                                     \
        int64_t blocks = k / QK, row_bytes = blocks * BYTES, groups = k / 32;                                \
        for (int64_t row = 0; row < n; row++) {                                                              \
            vec acc[16];                                                                                     \
            float offsets[16] = {0};                                                                         \
            for (int64_t b = 0; b < batch; b++) acc[b] = vzero();                                            \
            const uint8_t *r = w + row * row_bytes;                                                          \
            for (int64_t blk = 0; blk < blocks; blk++) {                                                     \
                const uint8_t *block = r + blk * BYTES;                                                      \
                group32 grp[QK / 32];                                                                        \
                __VA_ARGS__                                                                                  \
                for (int g = 0; g < QK / 32; g++) {                                                          \
                    vec scale = vset1(grp[g].scale);                                                         \
                    int64_t col = blk * QK + g * 32;                                                         \
                    for (int64_t b = 0; b < batch; b++) {                                                    \
                        const float *xb = x + b * k + col;                                                   \
                        vec t = vmul(grp[g].q[0], vload(xb));                                                \
                        for (int i = 1; i < 32 / LANES; i++) t = vfmadd(grp[g].q[i], vload(xb + i * LANES), t); \
                        acc[b] = vfmadd(t, scale, acc[b]);                                                   \
                        offsets[b] += grp[g].offset * xsum[b * groups + col / 32];                           \
                    }                                                                                        \
                }                                                                                            \
            }                                                                                                \
            for (int64_t b = 0; b < batch; b++) y[b * y_stride + row] = vsum(acc[b]) + offsets[b];           \
        }                                                                                                    \
    }

DOT_GROUPS(q8_0, 32, 34, {
    fill(&grp[0], load16(block + 2), load16(block + 18), 1, half_to_float(block), 0.0f);
})
DOT_GROUPS(q4_0, 32, 18, {
    float d = half_to_float(block);
    __m128i v = load16(block + 2);
    fill(&grp[0], low_nibbles(v), high_nibbles(v), 0, d, -8.0f * d);
})
DOT_GROUPS(q4_1, 32, 20, {
    __m128i v = load16(block + 4);
    fill(&grp[0], low_nibbles(v), high_nibbles(v), 0, half_to_float(block), half_to_float(block + 2));
})
DOT_GROUPS(q5_0, 32, 22, {
    float d = half_to_float(block);
    uint8_t fifth[32]; /* weight j's fifth bit is bit j of qh */
    for (int j = 0; j < 32; j++) fifth[j] = (uint8_t)(((block[2 + j / 8] >> (j % 8)) & 1u) << 4);
    __m128i v = load16(block + 6);
    fill(&grp[0], _mm_or_si128(low_nibbles(v), load16(fifth)), _mm_or_si128(high_nibbles(v), load16(fifth + 16)), 0,
         d, -16.0f * d);
})
DOT_GROUPS(q4_k, 256, 144, {
    float d = half_to_float(block), dmin = half_to_float(block + 2);
    for (int chunk = 0; chunk < 4; chunk++) {
        const uint8_t *q = block + 16 + 32 * chunk;
        __m128i v0 = load16(q), v1 = load16(q + 16);
        float scale, min;
        k_scale_min(block, 2 * chunk, d, dmin, &scale, &min);
        fill(&grp[2 * chunk], low_nibbles(v0), low_nibbles(v1), 0, scale, -min);
        k_scale_min(block, 2 * chunk + 1, d, dmin, &scale, &min);
        fill(&grp[2 * chunk + 1], high_nibbles(v0), high_nibbles(v1), 0, scale, -min);
    }
})
DOT_GROUPS(q5_k, 256, 176, {
    float d = half_to_float(block), dmin = half_to_float(block + 2);
    const uint8_t *qh = block + 16;
    for (int chunk = 0; chunk < 4; chunk++) {
        const uint8_t *q = block + 48 + 32 * chunk;
        __m128i v0 = load16(q), v1 = load16(q + 16);
        float scale, min;
        k_scale_min(block, 2 * chunk, d, dmin, &scale, &min);
        fill(&grp[2 * chunk], _mm_or_si128(low_nibbles(v0), fifth_bit(qh, 2 * chunk)),
             _mm_or_si128(low_nibbles(v1), fifth_bit(qh + 16, 2 * chunk)), 0, scale, -min);
        k_scale_min(block, 2 * chunk + 1, d, dmin, &scale, &min);
        fill(&grp[2 * chunk + 1], _mm_or_si128(high_nibbles(v0), fifth_bit(qh, 2 * chunk + 1)),
             _mm_or_si128(high_nibbles(v1), fifth_bit(qh + 16, 2 * chunk + 1)), 0, scale, -min);
    }
})

/* Q6_K's scale covers 16 weights, so its groups of 32 carry the scales in the floats: (q - 32) * sc. */
DOT_GROUPS(q6_k, 256, 210, {
    float d = half_to_float(block + 208);
    const int8_t *sc = (const int8_t *)(block + 192);
    for (int half = 0; half < 2; half++) {
        const uint8_t *ql = block + 64 * half, *qh = block + 128 + 32 * half;
        for (int part = 0; part < 4; part++) { /* weights 32 * part .. + 32 of this half */
            const uint8_t *low = ql + (part & 1) * 32;
            group32 *g = &grp[4 * half + part];
            for (int i = 0; i < 2; i++) {
                __m128i bits4 = part < 2 ? low_nibbles(load16(low + 16 * i)) : high_nibbles(load16(low + 16 * i));
                __m128i bits2 = _mm_and_si128(_mm_srli_epi16(load16(qh + 16 * i), 2 * part), _mm_set1_epi8(3));
                bytes_to_vecs(_mm_or_si128(bits4, _mm_slli_epi16(bits2, 4)), 0, g->q + i * PER16);
                vec scale = vset1((float)sc[8 * half + 2 * part + i]), shift = vset1(32.0f);
                for (int j = 0; j < PER16; j++) g->q[i * PER16 + j] = vmul(vsub(g->q[i * PER16 + j], shift), scale);
            }
            g->scale = d;
            g->offset = 0.0f;
        }
    }
})

#else

#define DOT_BLOCKS(NAME, BLOCK, QK, BYTES)                                                                    \
    static void rows_##NAME(const uint8_t *w, int64_t n, int64_t k, const float *x, const float *xsum,       \
                            int64_t batch, float *y, int64_t y_stride) {                                     \
        (void)xsum; /* each block is dequantized whole here */                                               \
        int64_t blocks = k / QK, row_bytes = blocks * BYTES;                                                 \
        for (int64_t row = 0; row < n; row++) {                                                              \
            float acc[16][32], weights[QK];                                                                  \
            memset(acc, 0, sizeof(float) * 32 * (size_t)batch);                                              \
            const uint8_t *r = w + row * row_bytes;                                                          \
            for (int64_t blk = 0; blk < blocks; blk++) {                                                     \
                BLOCK(r + blk * BYTES, weights);                                                             \
                for (int64_t b = 0; b < batch; b++) {                                                        \
                    const float *xb = x + b * k + blk * QK;                                                  \
                    for (int c = 0; c < QK; c += 32)                                                         \
                        for (int j = 0; j < 32; j++) acc[b][j] += weights[c + j] * xb[c + j];                \
                }                                                                                            \
            }                                                                                                \
            for (int64_t b = 0; b < batch; b++) {                                                            \
                float sum = 0.0f;                                                                            \
                for (int j = 0; j < 32; j++) sum += acc[b][j];                                               \
                y[b * y_stride + row] = sum;                                                                 \
            }                                                                                                \
        }                                                                                                    \
    }

DOT_BLOCKS(q8_0, block_q8_0, 32, 34)
DOT_BLOCKS(q4_0, block_q4_0, 32, 18)
DOT_BLOCKS(q4_1, block_q4_1, 32, 20)
DOT_BLOCKS(q5_0, block_q5_0, 32, 22)
DOT_BLOCKS(q4_k, block_q4_k, 256, 144)
DOT_BLOCKS(q5_k, block_q5_k, 256, 176)
DOT_BLOCKS(q6_k, block_q6_k, 256, 210)

#endif

/* Bytes of one row of k weights of a type (ggml's number), or -1 for a type without a kernel. */
int64_t lf_row_bytes(int qtype, int64_t k) {
    switch (qtype) {
    case 8: return k / 32 * 34;
    case 2: return k / 32 * 18;
    case 3: return k / 32 * 20;
    case 6: return k / 32 * 22;
    case 12: return k / 256 * 144;
    case 13: return k / 256 * 176;
    case 14: return k / 256 * 210;
    default: return -1;
    }
}

typedef void (*rows_function)(const uint8_t *, int64_t, int64_t, const float *, const float *, int64_t, float *,
                              int64_t);

static rows_function rows_of(int qtype) {
    switch (qtype) {
    case 8: return rows_q8_0;
    case 2: return rows_q4_0;
    case 3: return rows_q4_1;
    case 6: return rows_q5_0;
    case 12: return rows_q4_k;
    case 13: return rows_q5_k;
    case 14: return rows_q6_k;
    default: return NULL;
    }
}

/* Sums of each 32 consecutive x values, (batch, k / 32): what the dot products add each group's offset with. */
void lf_group_sums(const float *x, int64_t k, int64_t batch, float *xsum) {
    int64_t groups = k / 32;
    for (int64_t b = 0; b < batch; b++)
        for (int64_t g = 0; g < groups; g++) {
            float s = 0.0f;
            for (int j = 0; j < 32; j++) s += x[b * k + g * 32 + j];
            xsum[b * groups + g] = s;
        }
}

/* Rows [0, n) of w (blocks, from the row it points at) against every x row, into y[b * y_stride + row]: one
 * thread's share of a product, for callers already inside a parallel region (decoder.c). xsum: lf_group_sums
 * of x. Returns -1 for a type without a kernel. */
int lf_quantized_rows(int qtype, const uint8_t *w, int64_t n, int64_t k, const float *x, const float *xsum,
                      int64_t batch, float *y, int64_t y_stride) {
    rows_function rows = rows_of(qtype);
    if (rows == NULL || batch < 1 || batch > 16) return -1;
    rows(w, n, k, x, xsum, batch, y, y_stride);
    return 0;
}

/* qtype: ggml's type number. Returns 0, or -1 for a type without a kernel or a batch over 16. */
int lf_quantized_matvec(int qtype, const uint8_t *w, int64_t n, int64_t k, const float *x, int64_t batch, float *y,
                        int threads) {
    rows_function rows = rows_of(qtype);
    if (rows == NULL || batch < 1 || batch > 16) return -1;
    int64_t row_bytes = lf_row_bytes(qtype, k);
    float *xsum = (float *)malloc(sizeof(float) * (size_t)(batch * (k / 32)));
    if (xsum == NULL) return -1;
    lf_group_sums(x, k, batch, xsum);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int64_t start = 0; start < n; start += 16)
        rows(w + start * row_bytes, n - start < 16 ? n - start : 16, k, x, xsum, batch, y + start, n);
    free(xsum);
    return 0;
}

/* Rows `rows` (count of them) of W dequantized into out (count, k): the embedding lookup and prefill tiles. */
int lf_dequantize_rows(int qtype, const uint8_t *w, int64_t k, const int64_t *rows, int64_t count, float *out,
                       int threads) {
    void (*block)(const uint8_t *, float *);
    switch (qtype) {
    case 8: block = block_q8_0; break;
    case 2: block = block_q4_0; break;
    case 3: block = block_q4_1; break;
    case 6: block = block_q5_0; break;
    case 12: block = block_q4_k; break;
    case 13: block = block_q5_k; break;
    case 14: block = block_q6_k; break;
    default: return -1;
    }
    int64_t qk = (qtype == 12 || qtype == 13 || qtype == 14) ? 256 : 32, blocks = k / qk,
            row_bytes = lf_row_bytes(qtype, k), bytes = lf_row_bytes(qtype, qk);
#pragma omp parallel for schedule(dynamic, 16) num_threads(threads)
    for (int64_t i = 0; i < count; i++) {
        const uint8_t *r = w + rows[i] * row_bytes;
        for (int64_t blk = 0; blk < blocks; blk++) block(r + blk * bytes, out + i * k + blk * qk);
    }
    return 0;
}
