/* The batch-1 decode step's operations for x86-64 with AVX2 and FMA, in float32 and bfloat16.
 *
 * Decoding one token reads every weight once, so the matrix-vector products are written to stream
 * memory: each thread walks its own contiguous run of rows front to back (one sequential stream the
 * hardware prefetcher follows), x stays in L1, four independent accumulators hide the FMA latency,
 * sums are accumulated in float32. torch's own kernels reach about half the read bandwidth here
 * (MKL's sgemv on row-major weights; bfloat16 on AVX2 has no fast kernel at all). The small work
 * around them (RMSNorm, SwiGLU, RoPE, the cache write, attention for one query) is fused into the
 * same calls, because an eager step otherwise spends a fifth of its time on ~600 tiny operator calls.
 *
 * bfloat16 tensors are passed as their bit patterns (uint16_t). Every bfloat16 result is rounded
 * where the module path (mythos_convert/model/model.py) rounds it, to nearest even, so the two
 * paths differ only by the order of float32 sums.
 *
 * Threads: OpenMP, as many as the caller passes (torch.get_num_threads()). Loaded after torch, the
 * library binds to the libgomp already in the process, so torch and these kernels share one pool.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ABI_VERSION 4
#define STACK_FLOATS 8192

/* ---- scalars --------------------------------------------------------------------------------- */

static inline float bf(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t to_bf(float f) { /* round to nearest even; NaN stays NaN, as in torch */
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float round_bf(float f) { return bf(to_bf(f)); }

static inline float silu(float g) { return g / (1.0f + expf(-g)); }

/* ---- dot products ---------------------------------------------------------------------------- */

static inline float hsum(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_hadd_ps(lo, lo);
    lo = _mm_hadd_ps(lo, lo);
    return _mm_cvtss_f32(lo);
}

static inline float dot_f32(const float *w, const float *x, long K) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    long k = 0;
    for (; k + 32 <= K; k += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(x + k), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k + 8), _mm256_loadu_ps(x + k + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k + 16), _mm256_loadu_ps(x + k + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k + 24), _mm256_loadu_ps(x + k + 24), a3);
    }
    for (; k + 8 <= K; k += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(x + k), a0);
    float s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; k < K; k++) s += w[k] * x[k];
    return s;
}

/* bfloat16 is the high half of a float32: of 16 weights loaded as 8 32-bit words, `word << 16` is
 * the even ones and `word & 0xffff0000` the odd ones, two plain integer ops and no shuffle (4% more
 * tokens/s than widening 8 at a time, measured on the mythos-172m step). x comes de-interleaved to
 * match, per block of 16: 8 evens, then 8 odds (xeo); the tail uses x as is. */
static inline float dot_bf16(const uint16_t *w, const float *xeo, const float *x, long K) {
    const __m256i high = _mm256_set1_epi32((int)0xffff0000u);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    long k = 0;
    for (; k + 32 <= K; k += 32) {
        __m256i v0 = _mm256_loadu_si256((const __m256i *)(w + k));
        __m256i v1 = _mm256_loadu_si256((const __m256i *)(w + k + 16));
        a0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v0, 16)), _mm256_loadu_ps(xeo + k), a0);
        a1 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v0, high)), _mm256_loadu_ps(xeo + k + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v1, 16)), _mm256_loadu_ps(xeo + k + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v1, high)), _mm256_loadu_ps(xeo + k + 24), a3);
    }
    for (; k + 16 <= K; k += 16) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(w + k));
        a0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v, 16)), _mm256_loadu_ps(xeo + k), a0);
        a1 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v, high)), _mm256_loadu_ps(xeo + k + 8), a1);
    }
    float s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; k < K; k++) s += bf(w[k]) * x[k];
    return s;
}

/* A product's input in float32: on the stack up to STACK_FLOATS, else on the heap. */
static float *scratch(float *stack, long n) { return n <= STACK_FLOATS ? stack : (float *)malloc((size_t)n * sizeof(float)); }
static void release(float *buf, float *stack) { if (buf != stack) free(buf); }

/* ---- products ---------------------------------------------------------------------------------- */

/* y = add + [W0; W1; W2] @ xf, each W row-major [N_i, K]; xf already float32 (and rounded like the
 * module's input). The rows of up to three matrices read as one stacked matrix: q|k|v and w1|w3 are
 * one product without a fused copy of the weights (as much memory again, and a copy's time on every
 * generate call). y may be add itself: row n reads add[n] before it writes y[n]. */
#define STACKED_ROW(W0, N0, W1, N1, W2, n, K) \
    ((n) < (N0) ? (W0) + (n) * (K) : (n) < (N0) + (N1) ? (W1) + ((n) - (N0)) * (K) : (W2) + ((n) - (N0) - (N1)) * (K))

static void mv_core_f32(const float *W0, long N0, const float *W1, long N1, const float *W2, long N2, const float *xf,
                        const float *add, float *y, long K, int threads) {
    long N = N0 + N1 + N2;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long n = 0; n < N; n++) {
        float s = dot_f32(STACKED_ROW(W0, N0, W1, N1, W2, n, K), xf, K);
        y[n] = add ? add[n] + s : s;
    }
}

static void mv_core_bf16(const uint16_t *W0, long N0, const uint16_t *W1, long N1, const uint16_t *W2, long N2,
                         const float *xf, const uint16_t *add, uint16_t *y, long K, int threads) {
    long N = N0 + N1 + N2;
    float stack[STACK_FLOATS], *xeo = scratch(stack, K);
    if (!xeo) return;
    for (long b = 0; b + 16 <= K; b += 16)
        for (int i = 0; i < 8; i++) {
            xeo[b + i] = xf[b + 2 * i];
            xeo[b + 8 + i] = xf[b + 2 * i + 1];
        }
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long n = 0; n < N; n++) {
        float s = round_bf(dot_bf16(STACKED_ROW(W0, N0, W1, N1, W2, n, K), xeo, xf, K));
        y[n] = add ? to_bf(bf(add[n]) + s) : to_bf(s);
    }
    release(xeo, stack);
}

/* rsqrt(mean(x^2) + eps), x given in float32 */
static float rms_scale(const float *x, long K, float eps) {
    float sum = 0.0f;
    for (long k = 0; k < K; k++) sum += x[k] * x[k];
    return 1.0f / sqrtf(sum / (float)K + eps);
}

/* ---- exported operations ---------------------------------------------------------------------- */

int mythos_abi(void) { return ABI_VERSION; }

void mv_f32(const float *W, const float *x, const float *add, float *y, long N, long K, int threads) {
    mv_core_f32(W, N, NULL, 0, NULL, 0, x, add, y, K, threads);
}

void mv_bf16(const uint16_t *W, const uint16_t *x, const uint16_t *add, uint16_t *y, long N, long K, int threads) {
    float stack[STACK_FLOATS], *xf = scratch(stack, K);
    if (!xf) return;
    for (long k = 0; k < K; k++) xf[k] = bf(x[k]);
    mv_core_bf16(W, N, NULL, 0, NULL, 0, xf, add, y, K, threads);
    release(xf, stack);
}

/* y = [W0; W1; W2] @ (rmsnorm(x) * g): the norm before q|k|v, before w1|w3 and before the output head */
void norm_mv_f32(const float *W0, long N0, const float *W1, long N1, const float *W2, long N2, const float *x,
                 const float *g, float eps, float *y, long K, int threads) {
    float stack[STACK_FLOATS], *xf = scratch(stack, K);
    if (!xf) return;
    float r = rms_scale(x, K, eps);
    for (long k = 0; k < K; k++) xf[k] = (x[k] * r) * g[k];
    mv_core_f32(W0, N0, W1, N1, W2, N2, xf, NULL, y, K, threads);
    release(xf, stack);
}

void norm_mv_bf16(const uint16_t *W0, long N0, const uint16_t *W1, long N1, const uint16_t *W2, long N2,
                  const uint16_t *x, const uint16_t *g, float eps, uint16_t *y, long K, int threads) {
    float stack[STACK_FLOATS], *xf = scratch(stack, K);
    if (!xf) return;
    for (long k = 0; k < K; k++) xf[k] = bf(x[k]);
    float r = rms_scale(xf, K, eps);
    for (long k = 0; k < K; k++) xf[k] = round_bf(round_bf(xf[k] * r) * bf(g[k])); /* normalise in fp32, round, scale */
    mv_core_bf16(W0, N0, W1, N1, W2, N2, xf, NULL, y, K, threads);
    release(xf, stack);
}

/* y = add + W @ (silu(gate) * up), gu = [gate (K) | up (K)] */
void swiglu_mv_f32(const float *W, const float *gu, const float *add, float *y, long N, long K, int threads) {
    float stack[STACK_FLOATS], *xf = scratch(stack, K);
    if (!xf) return;
    for (long k = 0; k < K; k++) xf[k] = silu(gu[k]) * gu[K + k];
    mv_core_f32(W, N, NULL, 0, NULL, 0, xf, add, y, K, threads);
    release(xf, stack);
}

void swiglu_mv_bf16(const uint16_t *W, const uint16_t *gu, const uint16_t *add, uint16_t *y, long N, long K,
                    int threads) {
    float stack[STACK_FLOATS], *xf = scratch(stack, K);
    if (!xf) return;
    for (long k = 0; k < K; k++) xf[k] = round_bf(round_bf(silu(bf(gu[k]))) * bf(gu[K + k]));
    mv_core_bf16(W, N, NULL, 0, NULL, 0, xf, add, y, K, threads);
    release(xf, stack);
}

/* One query's attention at position pos, for all heads, on top of the cache.
 * qkv [(n_q + 2 n_kv) d]: q heads, k heads, v heads (from the fused projection). RoPE (rotate-half
 * layout, sin_signed = [-sin | sin]) goes onto q and k; k and v are written into the caches
 * [n_kv, max_len, d] at pos; out [n_q d] = softmax(q k^T / sqrt(d)) v over positions 0..pos, query
 * head h reading kv head h / (n_q / n_kv). */
/* Attention's inner loops, vectorised like the products: q . k_t (qeo is q de-interleaved for the
 * bf16 dot) and acc += p v_t. */
static inline float key_dot_f32(const float *k, const float *q, const float *qeo, long d) {
    (void)qeo;
    return dot_f32(k, q, d);
}
static inline float key_dot_bf16(const uint16_t *k, const float *q, const float *qeo, long d) {
    return dot_bf16(k, qeo, q, d);
}
static inline void value_axpy_f32(float *acc, float p, const float *v, long d) {
    __m256 pv = _mm256_set1_ps(p);
    long i = 0;
    for (; i + 8 <= d; i += 8)
        _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(pv, _mm256_loadu_ps(v + i), _mm256_loadu_ps(acc + i)));
    for (; i < d; i++) acc[i] += p * v[i];
}
static inline void value_axpy_bf16(float *acc, float p, const uint16_t *v, long d) {
    __m256 pv = _mm256_set1_ps(p);
    long i = 0;
    for (; i + 8 <= d; i += 8) {
        __m256 w = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(v + i))), 16));
        _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(pv, w, _mm256_loadu_ps(acc + i)));
    }
    for (; i < d; i++) acc[i] += p * bf(v[i]);
}

#define ATTEND(SUFFIX, T, LOAD, STORE, ROUND)                                                                     \
    void attend_##SUFFIX(const T *qkv, const T *cos, const T *sin, T *kc, T *vc, T *out, long n_q, long n_kv,      \
                         long d, long pos, long max_len, int threads) {                                           \
        long half = d / 2, group = n_q / n_kv, end = pos + 1;                                                    \
        float qstack[STACK_FLOATS], *q = scratch(qstack, n_q * d);                                               \
        if (!q) return;                                                                                          \
        for (long h = 0; h < n_q + n_kv; h++) {                                                                  \
            const T *src = qkv + h * d;                                                                          \
            for (long i = 0; i < d; i++) {                                                                       \
                float swapped = LOAD(src[i < half ? i + half : i - half]);                                       \
                float v = ROUND(ROUND(LOAD(src[i]) * LOAD(cos[i])) + ROUND(swapped * LOAD(sin[i])));             \
                if (h < n_q) q[h * d + i] = v;                                                                   \
                else kc[((h - n_q) * max_len + pos) * d + i] = STORE(v);                                         \
            }                                                                                                    \
        }                                                                                                        \
        for (long h = 0; h < n_kv; h++) memcpy(vc + (h * max_len + pos) * d, qkv + (n_q + n_kv + h) * d, d * sizeof(T)); \
        float scale = 1.0f / sqrtf((float)d);                                                                    \
        _Pragma("omp parallel for schedule(static) num_threads(threads)")                                        \
        for (long h = 0; h < n_q; h++) {                                                                         \
            float sstack[STACK_FLOATS], *score = scratch(sstack, end);                                          \
            const T *keys = kc + (h / group) * max_len * d, *values = vc + (h / group) * max_len * d;           \
            const float *qh = q + h * d;                                                                         \
            float top = -INFINITY, total = 0.0f, acc[1024], qeo[1024];                                           \
            for (long b = 0; b + 16 <= d; b += 16)                                                               \
                for (int i = 0; i < 8; i++) {                                                                    \
                    qeo[b + i] = qh[b + 2 * i];                                                                  \
                    qeo[b + 8 + i] = qh[b + 2 * i + 1];                                                          \
                }                                                                                                \
            for (long t = 0; t < end; t++) {                                                                     \
                score[t] = key_dot_##SUFFIX(keys + t * d, qh, qeo, d) * scale;                                   \
                if (score[t] > top) top = score[t];                                                              \
            }                                                                                                    \
            for (long i = 0; i < d; i++) acc[i] = 0.0f;                                                          \
            for (long t = 0; t < end; t++) {                                                                     \
                float p = expf(score[t] - top);                                                                  \
                total += p;                                                                                      \
                value_axpy_##SUFFIX(acc, p, values + t * d, d);                                                 \
            }                                                                                                    \
            for (long i = 0; i < d; i++) out[h * d + i] = STORE(acc[i] / total);                                 \
            release(score, sstack);                                                                              \
        }                                                                                                        \
        release(q, qstack);                                                                                      \
    }

static inline float load_f32(float v) { return v; }
static inline float store_f32(float v) { return v; }
static inline float keep(float v) { return v; }

ATTEND(f32, float, load_f32, store_f32, keep)
ATTEND(bf16, uint16_t, bf, to_bf, round_bf)

/* ---- one whole token --------------------------------------------------------------------------- */

/* The five operations of every layer and the output head in one call: no Python between the ~120
 * products of a token (each call from Python costs 5-8 us of ctypes and allocation).
 * layers: per layer 11 pointers: attn_norm, wq, wk, wv, wo, ffn_norm, w1, w3, w2, k cache, v cache.
 * x: the token's embedding row [D] (read only); logits [V]. */
#define STEP(SUFFIX, T)                                                                                          \
    void step_##SUFFIX(void *const *layers, long n_layers, const T *x_in, const T *norm, const T *output, long V, \
                       const T *cos, const T *sin, long pos, long max_len, long D, long n_q, long n_kv, long d,     \
                       long F, float eps, T *logits, int threads) {                                              \
        long n_qkv = (n_q + 2 * n_kv) * d;                                                                       \
        T *x = (T *)malloc((size_t)(D + n_qkv + n_q * d + 2 * F) * sizeof(T));                                  \
        if (!x) return;                                                                                          \
        T *qkv = x + D, *att = qkv + n_qkv, *gu = att + n_q * d;                                                 \
        memcpy(x, x_in, (size_t)D * sizeof(T));                                                                  \
        for (long l = 0; l < n_layers; l++) {                                                                    \
            void *const *p = layers + 11 * l;                                                                    \
            norm_mv_##SUFFIX((const T *)p[1], n_q * d, (const T *)p[2], n_kv * d, (const T *)p[3], n_kv * d, x,    \
                             (const T *)p[0], eps, qkv, D, threads);                                             \
            attend_##SUFFIX(qkv, cos, sin, (T *)p[9], (T *)p[10], att, n_q, n_kv, d, pos, max_len, threads);      \
            mv_##SUFFIX((const T *)p[4], att, x, x, D, n_q * d, threads);                                        \
            norm_mv_##SUFFIX((const T *)p[6], F, (const T *)p[7], F, NULL, 0, x, (const T *)p[5], eps, gu, D,      \
                             threads);                                                                           \
            swiglu_mv_##SUFFIX((const T *)p[8], gu, x, x, D, F, threads);                                        \
        }                                                                                                        \
        norm_mv_##SUFFIX(output, V, NULL, 0, NULL, 0, x, norm, eps, logits, D, threads);                         \
        free(x);                                                                                                 \
    }

STEP(f32, float)
STEP(bf16, uint16_t)
