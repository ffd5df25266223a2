/* llama.cpp's quantizers for the GGUF types mythos-convert writes, compiled on first use.
 *
 * Everything below the marked line is copied verbatim from llama.cpp's ggml/src/ggml-quants.c
 * (the version vendored by llama-cpp-python 0.3.36): the reference quantizers
 * (quantize_row_*_ref), the importance-weighted ones (quantize_row_*_impl), their searches
 * (make_qx_quants, make_q3_quants, make_qkx2/3_quants, make_qp_quants) and the quantize_<type>
 * entry points llama.cpp's quantizer calls. The only edit: every function is static. Above the
 * line: the block layouts, macros and fp16 conversion of ggml-common.h / ggml-impl.h. After the
 * copy: the K-quants' searches run on 8 sub-blocks at once (same bytes, several times faster;
 * see the comment there), and mq_quantize, the one exported function.
 *
 * Byte identity with llama.cpp needs llama.cpp's float32 arithmetic in its order, so this file
 * is compiled without -ffast-math and with -ffp-contract=off (no fused multiply-adds the reference
 * build does not make) and for the baseline ISA: vectorisation the compiler finds (element-wise
 * loops) cannot change a result; reductions stay sequential.
 *
 * The ggml code is MIT licensed:
 *
 * MIT License
 *
 * Copyright (c) 2023-2026 The ggml authors
 *
 * Permission is hereby granted, free of charge, to any person obtaining a copy
 * of this software and associated documentation files (the "Software"), to deal
 * in the Software without restriction, including without limitation the rights
 * to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
 * copies of the Software, and to permit persons to whom the Software is
 * furnished to do so, subject to the following conditions:
 *
 * The above copyright notice and this permission notice shall be included in all
 * copies or substantial portions of the Software.
 *
 * THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
 * IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
 * FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
 * AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
 * LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
 * OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
 * SOFTWARE.
 */

#define NDEBUG
#include <assert.h>
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MQ_ABI 7
#define MQ_EXPORT __attribute__((visibility("default")))

#define GGML_RESTRICT restrict
#define GGML_ASSERT(x) do { if (!(x)) abort(); } while (0)
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define GROUP_MAX_EPS 1e-15f

typedef uint16_t ggml_half;

/* ggml_type values (the GGUF tensor type ids) of the types quantized here */
enum ggml_type {
    GGML_TYPE_F16 = 1, GGML_TYPE_Q4_0 = 2, GGML_TYPE_Q4_1 = 3, GGML_TYPE_Q5_0 = 6, GGML_TYPE_Q5_1 = 7, GGML_TYPE_Q8_0 = 8,
    GGML_TYPE_Q2_K = 10, GGML_TYPE_Q3_K = 11, GGML_TYPE_Q4_K = 12, GGML_TYPE_Q5_K = 13, GGML_TYPE_Q6_K = 14,
    GGML_TYPE_BF16 = 30,
};

#define QK4_0 32
#define QK4_1 32
#define QK5_0 32
#define QK5_1 32
#define QK8_0 32
#define QK_K 256

/* ggml-common.h's blocks (all members are bytes or ggml_half: no padding) */
typedef struct { ggml_half d; uint8_t qs[QK4_0 / 2]; } block_q4_0;
typedef struct { ggml_half d; ggml_half m; uint8_t qs[QK4_1 / 2]; } block_q4_1;
typedef struct { ggml_half d; uint8_t qh[4]; uint8_t qs[QK5_0 / 2]; } block_q5_0;
typedef struct { ggml_half d; ggml_half m; uint8_t qh[4]; uint8_t qs[QK5_1 / 2]; } block_q5_1;
typedef struct { ggml_half d; int8_t qs[QK8_0]; } block_q8_0;
typedef struct { uint8_t scales[QK_K / 16]; uint8_t qs[QK_K / 4]; ggml_half d; ggml_half dmin; } block_q2_K;
typedef struct { uint8_t hmask[QK_K / 8]; uint8_t qs[QK_K / 4]; uint8_t scales[12]; ggml_half d; } block_q3_K;
typedef struct { ggml_half d; ggml_half dmin; uint8_t scales[12]; uint8_t qs[QK_K / 2]; } block_q4_K;
typedef struct { ggml_half d; ggml_half dmin; uint8_t scales[12]; uint8_t qh[QK_K / 8]; uint8_t qs[QK_K / 2]; } block_q5_K;
typedef struct { uint8_t ql[QK_K / 2]; uint8_t qh[QK_K / 4]; int8_t scales[QK_K / 16]; ggml_half d; } block_q6_K;

_Static_assert(sizeof(block_q4_0) == 18, "q4_0");
_Static_assert(sizeof(block_q4_1) == 20, "q4_1");
_Static_assert(sizeof(block_q5_0) == 22, "q5_0");
_Static_assert(sizeof(block_q5_1) == 24, "q5_1");
_Static_assert(sizeof(block_q8_0) == 34, "q8_0");
_Static_assert(sizeof(block_q2_K) == 84, "q2_K");
_Static_assert(sizeof(block_q3_K) == 110, "q3_K");
_Static_assert(sizeof(block_q4_K) == 144, "q4_K");
_Static_assert(sizeof(block_q5_K) == 176, "q5_K");
_Static_assert(sizeof(block_q6_K) == 210, "q6_K");

static size_t ggml_row_size(enum ggml_type type, int64_t n_per_row) {
    switch (type) {
        case GGML_TYPE_Q4_0: return n_per_row / QK4_0 * sizeof(block_q4_0);
        case GGML_TYPE_Q4_1: return n_per_row / QK4_1 * sizeof(block_q4_1);
        case GGML_TYPE_Q5_0: return n_per_row / QK5_0 * sizeof(block_q5_0);
        case GGML_TYPE_Q5_1: return n_per_row / QK5_1 * sizeof(block_q5_1);
        case GGML_TYPE_Q8_0: return n_per_row / QK8_0 * sizeof(block_q8_0);
        case GGML_TYPE_Q2_K: return n_per_row / QK_K * sizeof(block_q2_K);
        case GGML_TYPE_Q3_K: return n_per_row / QK_K * sizeof(block_q3_K);
        case GGML_TYPE_Q4_K: return n_per_row / QK_K * sizeof(block_q4_K);
        case GGML_TYPE_Q5_K: return n_per_row / QK_K * sizeof(block_q5_K);
        case GGML_TYPE_Q6_K: return n_per_row / QK_K * sizeof(block_q6_K);
        case GGML_TYPE_BF16: return n_per_row * sizeof(uint16_t);
        case GGML_TYPE_F16: return n_per_row * sizeof(uint16_t);
    }
    return 0;
}

/* ggml-impl.h's fp16 conversions (round to nearest even), without F16C instructions */
static inline float fp32_from_bits(uint32_t w) { float f; memcpy(&f, &w, sizeof f); return f; }
static inline uint32_t fp32_to_bits(float f) { uint32_t w; memcpy(&w, &f, sizeof w); return w; }

static inline float ggml_compute_fp16_to_fp32(ggml_half h) {
    const uint32_t w = (uint32_t) h << 16;
    const uint32_t sign = w & UINT32_C(0x80000000);
    const uint32_t two_w = w + w;
    const uint32_t exp_offset = UINT32_C(0xE0) << 23;
    const float exp_scale = 0x1.0p-112f;
    const float normalized_value = fp32_from_bits((two_w >> 4) + exp_offset) * exp_scale;
    const uint32_t magic_mask = UINT32_C(126) << 23;
    const float magic_bias = 0.5f;
    const float denormalized_value = fp32_from_bits((two_w >> 17) | magic_mask) - magic_bias;
    const uint32_t denormalized_cutoff = UINT32_C(1) << 27;
    const uint32_t result = sign |
        (two_w < denormalized_cutoff ? fp32_to_bits(denormalized_value) : fp32_to_bits(normalized_value));
    return fp32_from_bits(result);
}

static inline ggml_half ggml_compute_fp32_to_fp16(float f) {
    const float scale_to_inf = 0x1.0p+112f;
    const float scale_to_zero = 0x1.0p-110f;
    float base = (fabsf(f) * scale_to_inf) * scale_to_zero;
    const uint32_t w = fp32_to_bits(f);
    const uint32_t shl1_w = w + w;
    const uint32_t sign = w & UINT32_C(0x80000000);
    uint32_t bias = shl1_w & UINT32_C(0xFF000000);
    if (bias < UINT32_C(0x71000000)) {
        bias = UINT32_C(0x71000000);
    }
    base = fp32_from_bits((bias >> 1) + UINT32_C(0x07800000)) + base;
    const uint32_t bits = fp32_to_bits(base);
    const uint32_t exp_bits = (bits >> 13) & UINT32_C(0x00007C00);
    const uint32_t mantissa_bits = bits & UINT32_C(0x00000FFF);
    const uint32_t nonsign = exp_bits + mantissa_bits;
    return (sign >> 16) | (shl1_w > UINT32_C(0xFF000000) ? UINT16_C(0x7E00) : nonsign);
}

#define GGML_FP16_TO_FP32(x) ggml_compute_fp16_to_fp32(x)
#define GGML_FP32_TO_FP16(x) ggml_compute_fp32_to_fp16(x)

/* ======== verbatim from ggml-quants.c below (functions made static) ======== */

// ggml-quants.c: quantize_row_q4_0_ref
static void quantize_row_q4_0_ref(const float * GGML_RESTRICT x, block_q4_0 * GGML_RESTRICT y, int64_t k) {
    static const int qk = QK4_0;

    assert(k % qk == 0);

    const int nb = k / qk;

    for (int i = 0; i < nb; i++) {
        float amax = 0.0f; // absolute max
        float max  = 0.0f;

        for (int j = 0; j < qk; j++) {
            const float v = x[i*qk + j];
            if (amax < fabsf(v)) {
                amax = fabsf(v);
                max  = v;
            }
        }

        const float d  = max / -8;
        const float id = d ? 1.0f/d : 0.0f;

        y[i].d = GGML_FP32_TO_FP16(d);

        for (int j = 0; j < qk/2; ++j) {
            const float x0 = x[i*qk + 0    + j]*id;
            const float x1 = x[i*qk + qk/2 + j]*id;

            const uint8_t xi0 = MIN(15, (int8_t)(x0 + 8.5f));
            const uint8_t xi1 = MIN(15, (int8_t)(x1 + 8.5f));

            y[i].qs[j]  = xi0;
            y[i].qs[j] |= xi1 << 4;
        }
    }
}

// ggml-quants.c: quantize_row_q4_1_ref
static void quantize_row_q4_1_ref(const float * GGML_RESTRICT x, block_q4_1 * GGML_RESTRICT y, int64_t k) {
    const int qk = QK4_1;

    assert(k % qk == 0);

    const int nb = k / qk;

    for (int i = 0; i < nb; i++) {
        float min = FLT_MAX;
        float max = -FLT_MAX;

        for (int j = 0; j < qk; j++) {
            const float v = x[i*qk + j];

            if (v < min) min = v;
            if (v > max) max = v;
        }

        const float d  = (max - min) / ((1 << 4) - 1);
        const float id = d ? 1.0f/d : 0.0f;

        y[i].d = GGML_FP32_TO_FP16(d);
        y[i].m = GGML_FP32_TO_FP16(min);

        for (int j = 0; j < qk/2; ++j) {
            const float x0 = (x[i*qk + 0    + j] - min)*id;
            const float x1 = (x[i*qk + qk/2 + j] - min)*id;

            const uint8_t xi0 = MIN(15, (int8_t)(x0 + 0.5f));
            const uint8_t xi1 = MIN(15, (int8_t)(x1 + 0.5f));

            y[i].qs[j]  = xi0;
            y[i].qs[j] |= xi1 << 4;
        }
    }
}

// ggml-quants.c: quantize_row_q5_0_ref
static void quantize_row_q5_0_ref(const float * GGML_RESTRICT x, block_q5_0 * GGML_RESTRICT y, int64_t k) {
    static const int qk = QK5_0;

    assert(k % qk == 0);

    const int nb = k / qk;

    for (int i = 0; i < nb; i++) {
        float amax = 0.0f; // absolute max
        float max  = 0.0f;

        for (int j = 0; j < qk; j++) {
            const float v = x[i*qk + j];
            if (amax < fabsf(v)) {
                amax = fabsf(v);
                max  = v;
            }
        }

        const float d  = max / -16;
        const float id = d ? 1.0f/d : 0.0f;

        y[i].d = GGML_FP32_TO_FP16(d);

        uint32_t qh = 0;

        for (int j = 0; j < qk/2; ++j) {
            const float x0 = x[i*qk + 0    + j]*id;
            const float x1 = x[i*qk + qk/2 + j]*id;

            const uint8_t xi0 = MIN(31, (int8_t)(x0 + 16.5f));
            const uint8_t xi1 = MIN(31, (int8_t)(x1 + 16.5f));

            y[i].qs[j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);

            // get the 5-th bit and store it in qh at the right position
            qh |= ((xi0 & 0x10u) >> 4) << (j + 0);
            qh |= ((xi1 & 0x10u) >> 4) << (j + qk/2);
        }

        memcpy(&y[i].qh, &qh, sizeof(qh));
    }
}

// ggml-quants.c: quantize_row_q5_1_ref
static void quantize_row_q5_1_ref(const float * GGML_RESTRICT x, block_q5_1 * GGML_RESTRICT y, int64_t k) {
    const int qk = QK5_1;

    assert(k % qk == 0);

    const int nb = k / qk;

    for (int i = 0; i < nb; i++) {
        float min = FLT_MAX;
        float max = -FLT_MAX;

        for (int j = 0; j < qk; j++) {
            const float v = x[i*qk + j];

            if (v < min) min = v;
            if (v > max) max = v;
        }

        const float d  = (max - min) / ((1 << 5) - 1);
        const float id = d ? 1.0f/d : 0.0f;

        y[i].d = GGML_FP32_TO_FP16(d);
        y[i].m = GGML_FP32_TO_FP16(min);

        uint32_t qh = 0;

        for (int j = 0; j < qk/2; ++j) {
            const float x0 = (x[i*qk + 0    + j] - min)*id;
            const float x1 = (x[i*qk + qk/2 + j] - min)*id;

            const uint8_t xi0 = (uint8_t)(x0 + 0.5f);
            const uint8_t xi1 = (uint8_t)(x1 + 0.5f);

            y[i].qs[j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);

            // get the 5-th bit and store it in qh at the right position
            qh |= ((xi0 & 0x10u) >> 4) << (j + 0);
            qh |= ((xi1 & 0x10u) >> 4) << (j + qk/2);
        }

        memcpy(&y[i].qh, &qh, sizeof(y[i].qh));
    }
}

// ggml-quants.c: quantize_row_q8_0_ref
static void quantize_row_q8_0_ref(const float * GGML_RESTRICT x, block_q8_0 * GGML_RESTRICT y, int64_t k) {
    assert(k % QK8_0 == 0);
    const int nb = k / QK8_0;

    for (int i = 0; i < nb; i++) {
        float amax = 0.0f; // absolute max

        for (int j = 0; j < QK8_0; j++) {
            const float v = x[i*QK8_0 + j];
            amax = MAX(amax, fabsf(v));
        }

        const float d = amax / ((1 << 7) - 1);
        const float id = d ? 1.0f/d : 0.0f;

        y[i].d = GGML_FP32_TO_FP16(d);

        for (int j = 0; j < QK8_0; ++j) {
            const float x0 = x[i*QK8_0 + j]*id;

            y[i].qs[j] = roundf(x0);
        }
    }
}

// ggml-quants.c: nearest_int
static inline int nearest_int(float fval) {
    assert(fabsf(fval) <= 4194303.f);
    float val = fval + 12582912.f;
    int i; memcpy(&i, &val, sizeof(int));
    return (i & 0x007fffff) - 0x00400000;
}

// ggml-quants.c: make_qx_quants
static float make_qx_quants(int n, int nmax, const float * GGML_RESTRICT x, int8_t * GGML_RESTRICT L, int rmse_type,
        const float * GGML_RESTRICT qw) {
    float max = 0;
    float amax = 0;
    for (int i = 0; i < n; ++i) {
        float ax = fabsf(x[i]);
        if (ax > amax) { amax = ax; max = x[i]; }
    }
    if (amax < GROUP_MAX_EPS) { // all zero
        for (int i = 0; i < n; ++i) {
            L[i] = 0;
        }
        return 0.f;
    }
    float iscale = -nmax / max;
    if (rmse_type == 0) {
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * x[i]);
            L[i] = nmax + MAX(-nmax, MIN(nmax-1, l));
        }
        return 1/iscale;
    }
    bool return_early = false;
    if (rmse_type < 0) {
        rmse_type = -rmse_type;
        return_early = true;
    }
    float sumlx = 0;
    float suml2 = 0;
#ifdef HAVE_BUGGY_APPLE_LINKER
    // use 'volatile' to prevent unroll and work around a bug in Apple ld64 1015.7
    for (volatile int i = 0; i < n; ++i) {
#else
    for (int i = 0; i < n; ++i) {
#endif
        int l = nearest_int(iscale * x[i]);
        l = MAX(-nmax, MIN(nmax-1, l));
        L[i] = l + nmax;
        float w = qw ? qw[i] : rmse_type == 1 ? x[i] * x[i] : rmse_type == 2 ? 1 : rmse_type == 3 ? fabsf(x[i]) : sqrtf(fabsf(x[i]));
        sumlx += w*x[i]*l;
        suml2 += w*l*l;
    }
    float scale = suml2 ? sumlx/suml2 : 0.0f;
    if (return_early) return suml2 > 0 ? 0.5f*(scale + 1/iscale) : 1/iscale;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) {
            continue;
        }
        iscale = -(nmax + 0.1f*is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * x[i]);
            l = MAX(-nmax, MIN(nmax-1, l));
            float w = qw ? qw[i] : rmse_type == 1 ? x[i] * x[i] : rmse_type == 2 ? 1 : rmse_type == 3 ? fabsf(x[i]) : sqrtf(fabsf(x[i]));
            sumlx += w*x[i]*l;
            suml2 += w*l*l;
        }
        if (suml2 > 0 && sumlx*sumlx > best*suml2) {
            for (int i = 0; i < n; ++i) {
                int l = nearest_int(iscale * x[i]);
                L[i] = nmax + MAX(-nmax, MIN(nmax-1, l));
            }
            scale = sumlx/suml2; best = scale*sumlx;
        }
    }
    return scale;
}

// ggml-quants.c: make_q3_quants
static float make_q3_quants(int n, int nmax, const float * GGML_RESTRICT x, int8_t * GGML_RESTRICT L, bool do_rmse) {
    float max = 0;
    float amax = 0;
    for (int i = 0; i < n; ++i) {
        float ax = fabsf(x[i]);
        if (ax > amax) { amax = ax; max = x[i]; }
    }
    if (amax < GROUP_MAX_EPS) { // all zero
        for (int i = 0; i < n; ++i) { L[i] = 0; }
        return 0.f;
    }
    float iscale = -nmax / max;
    if (do_rmse) {
        float sumlx = 0;
        float suml2 = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * x[i]);
            l = MAX(-nmax, MIN(nmax-1, l));
            L[i] = l;
            float w = x[i]*x[i];
            sumlx += w*x[i]*l;
            suml2 += w*l*l;
        }
        for (int itry = 0; itry < 5; ++itry) {
            int n_changed = 0;
            for (int i = 0; i < n; ++i) {
                float w = x[i]*x[i];
                float slx = sumlx - w*x[i]*L[i];
                if (slx > 0) {
                    float sl2 = suml2 - w*L[i]*L[i];
                    int new_l = nearest_int(x[i] * sl2 / slx);
                    new_l = MAX(-nmax, MIN(nmax-1, new_l));
                    if (new_l != L[i]) {
                        slx += w*x[i]*new_l;
                        sl2 += w*new_l*new_l;
                        if (sl2 > 0 && slx*slx*suml2 > sumlx*sumlx*sl2) {
                            L[i] = new_l; sumlx = slx; suml2 = sl2;
                            ++n_changed;
                        }
                    }
                }
            }
            if (!n_changed) {
                break;
            }
        }
        for (int i = 0; i < n; ++i) {
            L[i] += nmax;
        }
        return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
    }
    for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * x[i]);
        l = MAX(-nmax, MIN(nmax-1, l));
        L[i] = l + nmax;
    }
    return 1/iscale;
}

// ggml-quants.c: make_qkx2_quants
static float make_qkx2_quants(int n, int nmax, const float * GGML_RESTRICT x, const float * GGML_RESTRICT weights,
        uint8_t * GGML_RESTRICT L, float * GGML_RESTRICT the_min, uint8_t * GGML_RESTRICT Laux,
        float rmin, float rdelta, int nstep, bool use_mad) {
    float min = x[0];
    float max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
#ifdef HAVE_BUGGY_APPLE_LINKER
    // use 'volatile' to prevent unroll and work around a bug in Apple ld64 1015.7
    for (volatile int i = 1; i < n; ++i) {
#else
    for (int i = 1; i < n; ++i) {
#endif
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax/(max - min);
    float scale = 1/iscale;
    float best_error = 0;
    for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale*(x[i] - min));
        L[i] = MAX(0, MIN(nmax, l));
        float diff = scale * L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        float w = weights[i];
        best_error += w * diff;
    }
    if (nstep < 1) {
        *the_min = -min;
        return scale;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta*is + nmax)/(max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale*(x[i] - min));
            l = MAX(0, MIN(nmax, l));
            Laux[i] = l;
            float w = weights[i];
            sum_l += w*l;
            sum_l2 += w*l*l;
            sum_xl += w*l*x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l)/D;
            float this_min   = (sum_l2 * sum_x - sum_l * sum_xl)/D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                float w = weights[i];
                cur_error += w * diff;
            }
            if (cur_error < best_error) {
                for (int i = 0; i < n; ++i) {
                    L[i] = Laux[i];
                }
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

// ggml-quants.c: get_scale_min_k4
static inline void get_scale_min_k4(int j, const uint8_t * GGML_RESTRICT q, uint8_t * GGML_RESTRICT d, uint8_t * GGML_RESTRICT m) {
    if (j < 4) {
        *d = q[j] & 63; *m = q[j + 4] & 63;
    } else {
        *d = (q[j+4] & 0xF) | ((q[j-4] >> 6) << 4);
        *m = (q[j+4] >>  4) | ((q[j-0] >> 6) << 4);
    }
}

// ggml-quants.c: quantize_row_q2_K_ref
static void quantize_row_q2_K_ref(const float * GGML_RESTRICT x, block_q2_K * GGML_RESTRICT y, int64_t k) {
    assert(k % QK_K == 0);
    const int nb = k / QK_K;

    uint8_t L[QK_K];
    uint8_t Laux[16];
    float   weights[16];
    float mins[QK_K/16];
    float scales[QK_K/16];

    const float q4scale = 15.f;

    for (int i = 0; i < nb; i++) {
        float max_scale = 0; // as we are deducting the min, scales are always positive
        float max_min = 0;
        for (int j = 0; j < QK_K/16; ++j) {
            for (int l = 0; l < 16; ++l) weights[l] = fabsf(x[16*j + l]);
            scales[j] = make_qkx2_quants(16, 3, x + 16*j, weights, L + 16*j, &mins[j], Laux, -0.5f, 0.1f, 15, true);
            float scale = scales[j];
            if (scale > max_scale) {
                max_scale = scale;
            }
            float min = mins[j];
            if (min > max_min) {
                max_min = min;
            }
        }

        if (max_scale > 0) {
            float iscale = q4scale/max_scale;
            for (int j = 0; j < QK_K/16; ++j) {
                int l = nearest_int(iscale*scales[j]);
                y[i].scales[j] = l;
            }
            y[i].d = GGML_FP32_TO_FP16(max_scale/q4scale);
        } else {
            for (int j = 0; j < QK_K/16; ++j) y[i].scales[j] = 0;
            y[i].d = GGML_FP32_TO_FP16(0.f);
        }
        if (max_min > 0) {
            float iscale = q4scale/max_min;
            for (int j = 0; j < QK_K/16; ++j) {
                int l = nearest_int(iscale*mins[j]);
                y[i].scales[j] |= (l << 4);
            }
            y[i].dmin = GGML_FP32_TO_FP16(max_min/q4scale);
        } else {
            y[i].dmin = GGML_FP32_TO_FP16(0.f);
        }
        for (int j = 0; j < QK_K/16; ++j) {
            const float d = GGML_FP16_TO_FP32(y[i].d) * (y[i].scales[j] & 0xF);
            if (!d) continue;
            const float dm = GGML_FP16_TO_FP32(y[i].dmin) * (y[i].scales[j] >> 4);
            for (int ii = 0; ii < 16; ++ii) {
                int l = nearest_int((x[16*j + ii] + dm)/d);
                l = MAX(0, MIN(3, l));
                L[16*j + ii] = l;
            }
        }

        for (int j = 0; j < QK_K; j += 128) {
            for (int l = 0; l < 32; ++l) {
                y[i].qs[j/4 + l] = L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6);
            }
        }

        x += QK_K;
    }
}

// ggml-quants.c: make_qkx3_quants
static float make_qkx3_quants(int n, int nmax, const float * GGML_RESTRICT x, const float * GGML_RESTRICT weights,
        uint8_t * GGML_RESTRICT L, float * GGML_RESTRICT the_min, uint8_t * GGML_RESTRICT Laux,
        float rmin, float rdelta, int nstep, bool use_mad) {
    float min = x[0];
    float max = x[0];
    float sum_w = weights ? weights[0] : x[0]*x[0];
    float sum_x = sum_w * x[0];
#ifdef HAVE_BUGGY_APPLE_LINKER
    // use 'volatile' to prevent unroll and work around a bug in Apple ld64 1015.7
    for (volatile int i = 1; i < n; ++i) {
#else
    for (int i = 1; i < n; ++i) {
#endif
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        float w = weights ? weights[i] : x[i]*x[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) {
        min = 0;
    }
    if (max <= min) {
        memset(L, 0, n);
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax/(max - min);
    float scale = 1/iscale;
    float best_mad = 0;
    for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale*(x[i] - min));
        L[i] = MAX(0, MIN(nmax, l));
        float diff = scale * L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff*diff;
        float w = weights ? weights[i] : x[i]*x[i];
        best_mad += w * diff;
    }
    if (nstep < 1) {
        *the_min = -min;
        return scale;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta*is + nmax)/(max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale*(x[i] - min));
            l = MAX(0, MIN(nmax, l));
            Laux[i] = l;
            float w = weights ? weights[i] : x[i]*x[i];
            sum_l  += w*l;
            sum_l2 += w*l*l;
            sum_xl += w*l*x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l)/D;
            float this_min   = (sum_l2 * sum_x - sum_l * sum_xl)/D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float mad = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff*diff;
                float w = weights ? weights[i] : x[i]*x[i];
                mad += w * diff;
            }
            if (mad < best_mad) {
                for (int i = 0; i < n; ++i) {
                    L[i] = Laux[i];
                }
                best_mad = mad;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

// ggml-quants.c: make_qp_quants
static float make_qp_quants(int n, int nmax, const float * GGML_RESTRICT x, uint8_t * GGML_RESTRICT L, const float * quant_weights) {
    float max = 0;
    for (int i = 0; i < n; ++i) {
        max = MAX(max, x[i]);
    }
    if (max < GROUP_MAX_EPS) { // all zero
        for (int i = 0; i < n; ++i) { L[i] = 0; }
        return 0.f;
    }
    float iscale = nmax / max;
    for (int i = 0; i < n; ++i) {
        L[i] = nearest_int(iscale * x[i]);
    }
    float scale = 1/iscale;
    float best_mse = 0;
    for (int i = 0; i < n; ++i) {
        float diff = x[i] - scale*L[i];
        float w = quant_weights[i];
        best_mse += w*diff*diff;
    }
    for (int is = -4; is <= 4; ++is) {
        if (is == 0) continue;
        float iscale_is = (0.1f*is + nmax)/max;
        float scale_is = 1/iscale_is;
        float mse = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale_is*x[i]);
            l = MIN(nmax, l);
            float diff = x[i] - scale_is*l;
            float w = quant_weights[i];
            mse += w*diff*diff;
        }
        if (mse < best_mse) {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    float sumlx = 0;
    float suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * x[i]);
        l = MIN(nmax, l);
        L[i] = l;
        float w = quant_weights[i];
        sumlx += w*x[i]*l;
        suml2 += w*l*l;
    }
    for (int itry = 0; itry < 5; ++itry) {
        int n_changed = 0;
        for (int i = 0; i < n; ++i) {
            float w = quant_weights[i];
            float slx = sumlx - w*x[i]*L[i];
            float sl2 = suml2 - w*L[i]*L[i];
            if (slx > 0 && sl2 > 0) {
                int new_l = nearest_int(x[i] * sl2 / slx);
                new_l = MIN(nmax, new_l);
                if (new_l != L[i]) {
                    slx += w*x[i]*new_l;
                    sl2 += w*new_l*new_l;
                    if (slx*slx*suml2 > sumlx*sumlx*sl2) {
                        L[i] = new_l; sumlx = slx; suml2 = sl2;
                        ++n_changed;
                    }
                }
            }
        }
        if (!n_changed) {
            break;
        }
    }
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// ggml-quants.c: quantize_row_q2_K_impl
static void quantize_row_q2_K_impl(const float * GGML_RESTRICT x, block_q2_K * GGML_RESTRICT y, int k, const float * GGML_RESTRICT quant_weights) {
    GGML_ASSERT(quant_weights);
    assert(k % QK_K == 0);
    const int nb = k / QK_K;
    const bool requantize = true;

    uint8_t L[QK_K];
    uint8_t Laux[16];
    float mins[QK_K/16];
    float scales[QK_K/16];
    float sw[QK_K/16];
    float weight[16];
    uint8_t Ls[QK_K/16], Lm[QK_K/16];

    for (int i = 0; i < nb; i++) {
        memset(sw, 0, QK_K/16*sizeof(float));
        float sumx2 = 0;
        for (int j = 0; j < QK_K; ++j) sumx2 += x[j]*x[j];
        float sigma2 = sumx2/QK_K;
        for (int j = 0; j < QK_K/16; ++j) {
            const float * GGML_RESTRICT qw = quant_weights + QK_K * i + 16*j;
            for (int l = 0; l < 16; ++l) weight[l] = qw[l] * sqrtf(sigma2 + x[16*j + l]*x[16*j + l]);
            for (int l = 0; l < QK_K/16; ++l) sw[j] += weight[l];
            scales[j] = make_qkx3_quants(16, 3, x + 16*j, weight, L + 16*j, &mins[j], Laux, -0.9f, 0.05f, 36, false);
        }

        float dm, mm;
        dm  = make_qp_quants(QK_K/16, 15, scales, Ls, sw);
        mm  = make_qp_quants(QK_K/16, 15, mins,   Lm, sw);

        y[i].d    = GGML_FP32_TO_FP16(dm);
        y[i].dmin = GGML_FP32_TO_FP16(mm);
        dm        = GGML_FP16_TO_FP32(y[i].d);
        mm        = GGML_FP16_TO_FP32(y[i].dmin);

        for (int j = 0; j < QK_K/16; ++j) {
            y[i].scales[j] = Ls[j] | (Lm[j] << 4);
        }

        if (requantize) {
            for (int j = 0; j < QK_K/16; ++j) {
                const float d = dm * (y[i].scales[j] & 0xF);
                if (!d) continue;
                const float m = mm * (y[i].scales[j] >> 4);
                for (int ii = 0; ii < 16; ++ii) {
                    int l = nearest_int((x[16*j + ii] + m)/d);
                    l = MAX(0, MIN(3, l));
                    L[16*j + ii] = l;
                }
            }
        }

        for (int j = 0; j < QK_K; j += 128) {
            for (int l = 0; l < 32; ++l) {
                y[i].qs[j/4 + l] = L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6);
            }
        }

        x += QK_K;
    }
}

// ggml-quants.c: quantize_q2_K
static size_t quantize_q2_K(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrow, int64_t n_per_row, const float * quant_weights) {
    size_t row_size = ggml_row_size(GGML_TYPE_Q2_K, n_per_row);
    if (!quant_weights) {
        quantize_row_q2_K_ref(src, dst, (int64_t)nrow*n_per_row);
    }
    else {
        char * qrow = (char *)dst;
        for (int64_t row = 0; row < nrow; ++row) {
            quantize_row_q2_K_impl(src, (block_q2_K*)qrow, n_per_row, quant_weights);
            src += n_per_row;
            qrow += row_size;
        }
    }
    return nrow * row_size;
}

// ggml-quants.c: quantize_row_q3_K_ref
static void quantize_row_q3_K_ref(const float * GGML_RESTRICT x, block_q3_K * GGML_RESTRICT y, int64_t k) {
    assert(k % QK_K == 0);
    const int nb = k / QK_K;

    int8_t L[QK_K];
    float scales[QK_K / 16];

    for (int i = 0; i < nb; i++) {

        float max_scale = 0;
        float amax = 0;
        for (int j = 0; j < QK_K/16; ++j) {
            scales[j] = make_q3_quants(16, 4, x + 16*j, L + 16*j, true);
            float scale = fabsf(scales[j]);
            if (scale > amax) {
                amax = scale; max_scale = scales[j];
            }
        }

        memset(y[i].scales, 0, 12);
        if (max_scale) {
            float iscale = -32.f/max_scale;
            for (int j = 0; j < QK_K/16; ++j) {
                int8_t l = nearest_int(iscale*scales[j]);
                l = MAX(-32, MIN(31, l)) + 32;
                if (j < 8) {
                    y[i].scales[j] = l & 0xF;
                } else {
                    y[i].scales[j-8] |= ((l & 0xF) << 4);
                }
                l >>= 4;
                y[i].scales[j%4 + 8] |= (l << (2*(j/4)));
            }
            y[i].d = GGML_FP32_TO_FP16(1/iscale);
        } else {
            y[i].d = GGML_FP32_TO_FP16(0.f);
        }

        int8_t sc;
        for (int j = 0; j < QK_K/16; ++j) {
            sc = j < 8 ? y[i].scales[j] & 0xF : y[i].scales[j-8] >> 4;
            sc = (sc | (((y[i].scales[8 + j%4] >> (2*(j/4))) & 3) << 4)) - 32;
            float d = GGML_FP16_TO_FP32(y[i].d) * sc;
            if (!d) {
                continue;
            }
            for (int ii = 0; ii < 16; ++ii) {
                int l = nearest_int(x[16*j + ii]/d);
                l = MAX(-4, MIN(3, l));
                L[16*j + ii] = l + 4;
            }
        }

        memset(y[i].hmask, 0, QK_K/8);
        // We put the high-bit for the 1st 8 quants into bit 0, the next 8 into bit 1, etc.
        int m = 0;
        uint8_t hm = 1;
        for (int j = 0; j < QK_K; ++j) {
            if (L[j] > 3) {
                y[i].hmask[m] |= hm;
                L[j] -= 4;
            }
            if (++m == QK_K/8) {
                m = 0; hm <<= 1;
            }
        }
        for (int j = 0; j < QK_K; j += 128) {
            for (int l = 0; l < 32; ++l) {
                y[i].qs[j/4 + l] = L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6);
            }
        }

        x += QK_K;
    }
}

// ggml-quants.c: quantize_row_q3_K_impl
static void quantize_row_q3_K_impl(const float * GGML_RESTRICT x, block_q3_K * GGML_RESTRICT y, int64_t n_per_row, const float * GGML_RESTRICT quant_weights) {
    assert(n_per_row % QK_K == 0);
    const int nb = n_per_row / QK_K;

    int8_t L[QK_K];
    float scales[QK_K / 16];
    float weight[16];
    float sw[QK_K / 16];
    int8_t Ls[QK_K / 16];

    for (int i = 0; i < nb; i++) {

        float sumx2 = 0;
        for (int j = 0; j < QK_K; ++j) sumx2 += x[j]*x[j];
        float sigma2 = 2*sumx2/QK_K;

        for (int j = 0; j < QK_K/16; ++j) {
            if (quant_weights) {
                const float * qw = quant_weights + QK_K * i + 16*j;
                for (int l = 0; l < 16; ++l) weight[l] = qw[l] * sqrtf(sigma2 + x[16*j+l]*x[16*j+l]);
            } else {
                for (int l = 0; l < 16; ++l) weight[l] = x[16*j+l]*x[16*j+l];
            }
            float sumw = 0;
            for (int l = 0; l < 16; ++l) sumw += weight[l];
            sw[j] = sumw;

            scales[j] = make_qx_quants(16, 4, x + 16*j, L + 16*j, 1, weight);

        }

        memset(y[i].scales, 0, 12);

        float d_block = make_qx_quants(QK_K/16, 32, scales, Ls, 1, sw);
        for (int j = 0; j < QK_K/16; ++j) {
            int l = Ls[j];
            if (j < 8) {
                y[i].scales[j] = l & 0xF;
            } else {
                y[i].scales[j-8] |= ((l & 0xF) << 4);
            }
            l >>= 4;
            y[i].scales[j%4 + 8] |= (l << (2*(j/4)));
        }
        y[i].d = GGML_FP32_TO_FP16(d_block);

        int8_t sc;
        for (int j = 0; j < QK_K/16; ++j) {
            sc = j < 8 ? y[i].scales[j] & 0xF : y[i].scales[j-8] >> 4;
            sc = (sc | (((y[i].scales[8 + j%4] >> (2*(j/4))) & 3) << 4)) - 32;
            float d = GGML_FP16_TO_FP32(y[i].d) * sc;
            if (!d) {
                continue;
            }
            for (int ii = 0; ii < 16; ++ii) {
                int l = nearest_int(x[16*j + ii]/d);
                l = MAX(-4, MIN(3, l));
                L[16*j + ii] = l + 4;
            }
        }

        memset(y[i].hmask, 0, QK_K/8);
        // We put the high-bit for the 1st 8 quants into bit 0, the next 8 into bit 1, etc.
        int m = 0;
        uint8_t hm = 1;
        for (int j = 0; j < QK_K; ++j) {
            if (L[j] > 3) {
                y[i].hmask[m] |= hm;
                L[j] -= 4;
            }
            if (++m == QK_K/8) {
                m = 0; hm <<= 1;
            }
        }
        for (int j = 0; j < QK_K; j += 128) {
            for (int l = 0; l < 32; ++l) {
                y[i].qs[j/4 + l] = L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6);
            }
        }

        x += QK_K;
    }
}

// ggml-quants.c: quantize_q3_K
static size_t quantize_q3_K(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrow, int64_t n_per_row, const float * quant_weights) {
    size_t row_size = ggml_row_size(GGML_TYPE_Q3_K, n_per_row);
    if (!quant_weights) {
        quantize_row_q3_K_ref(src, dst, (int64_t)nrow*n_per_row);
    }
    else {
        char * qrow = (char *)dst;
        for (int64_t row = 0; row < nrow; ++row) {
            quantize_row_q3_K_impl(src, (block_q3_K*)qrow, n_per_row, quant_weights);
            src += n_per_row;
            qrow += row_size;
        }
    }
    return nrow * row_size;
}

// ggml-quants.c: quantize_row_q4_K_ref
static void quantize_row_q4_K_ref(const float * GGML_RESTRICT x, block_q4_K * GGML_RESTRICT y, int64_t k) {
    assert(k % QK_K == 0);
    const int nb = k / QK_K;

    uint8_t L[QK_K];
    uint8_t Laux[32];
    float   weights[32];
    float mins[QK_K/32];
    float scales[QK_K/32];

    for (int i = 0; i < nb; i++) {
        float max_scale = 0; // as we are deducting the min, scales are always positive
        float max_min = 0;
        for (int j = 0; j < QK_K/32; ++j) {
            //scales[j] = make_qkx1_quants(32, 15, x + 32*j, L + 32*j, &mins[j], 9, 0.5f);
            float sum_x2 = 0;
            for (int l = 0; l < 32; ++l) sum_x2 += x[32*j + l] * x[32*j + l];
            float av_x = sqrtf(sum_x2/32);
            for (int l = 0; l < 32; ++l) weights[l] = av_x + fabsf(x[32*j + l]);
            scales[j] = make_qkx2_quants(32, 15, x + 32*j, weights, L + 32*j, &mins[j], Laux, -1.f, 0.1f, 20, false);
            float scale = scales[j];
            if (scale > max_scale) {
                max_scale = scale;
            }
            float min = mins[j];
            if (min > max_min) {
                max_min = min;
            }
        }

        float inv_scale = max_scale > 0 ? 63.f/max_scale : 0.f;
        float inv_min   = max_min   > 0 ? 63.f/max_min   : 0.f;
        for (int j = 0; j < QK_K/32; ++j) {
            uint8_t ls = nearest_int(inv_scale*scales[j]);
            uint8_t lm = nearest_int(inv_min*mins[j]);
            ls = MIN(63, ls);
            lm = MIN(63, lm);
            if (j < 4) {
                y[i].scales[j] = ls;
                y[i].scales[j+4] = lm;
            } else {
                y[i].scales[j+4] = (ls & 0xF) | ((lm & 0xF) << 4);
                y[i].scales[j-4] |= ((ls >> 4) << 6);
                y[i].scales[j-0] |= ((lm >> 4) << 6);
            }
        }
        y[i].d = GGML_FP32_TO_FP16(max_scale/63.f);
        y[i].dmin = GGML_FP32_TO_FP16(max_min/63.f);

        uint8_t sc, m;
        for (int j = 0; j < QK_K/32; ++j) {
            get_scale_min_k4(j, y[i].scales, &sc, &m);
            const float d = GGML_FP16_TO_FP32(y[i].d) * sc;
            if (!d) continue;
            const float dm = GGML_FP16_TO_FP32(y[i].dmin) * m;
            for (int ii = 0; ii < 32; ++ii) {
                int l = nearest_int((x[32*j + ii] + dm)/d);
                l = MAX(0, MIN(15, l));
                L[32*j + ii] = l;
            }
        }

        uint8_t * q = y[i].qs;
        for (int j = 0; j < QK_K; j += 64) {
            for (int l = 0; l < 32; ++l) q[l] = L[j + l] | (L[j + l + 32] << 4);
            q += 32;
        }

        x += QK_K;
    }
}

// ggml-quants.c: quantize_row_q4_K_impl
static void quantize_row_q4_K_impl(const float * GGML_RESTRICT x, block_q4_K * GGML_RESTRICT y, int64_t n_per_row, const float * quant_weights) {
    assert(n_per_row % QK_K == 0);
    const int64_t nb = n_per_row / QK_K;

    uint8_t L[QK_K];
    uint8_t Laux[32];
    uint8_t Ls[QK_K/32];
    uint8_t Lm[QK_K/32];
    float   weights[32];
    float   sw[QK_K/32];
    float   mins[QK_K/32];
    float   scales[QK_K/32];

    for (int i = 0; i < nb; i++) {

        float sum_x2 = 0;
        for (int l = 0; l < QK_K; ++l) sum_x2 += x[l] * x[l];
        float sigma2 = 2*sum_x2/QK_K;
        float av_x = sqrtf(sigma2);

        for (int j = 0; j < QK_K/32; ++j) {
            if (quant_weights) {
                const float * qw = quant_weights + QK_K*i + 32*j;
                for (int l = 0; l < 32; ++l) weights[l] = qw[l] * sqrtf(sigma2 + x[32*j + l]*x[32*j + l]);
            } else {
                for (int l = 0; l < 32; ++l) weights[l] = av_x + fabsf(x[32*j + l]);
            }
            float sumw = 0;
            for (int l = 0; l < 32; ++l) sumw += weights[l];
            sw[j] = sumw;
            scales[j] = make_qkx3_quants(32, 15, x + 32*j, weights, L + 32*j, &mins[j], Laux, -0.9f, 0.05f, 36, false);
        }

        float d_block = make_qp_quants(QK_K/32, 63, scales, Ls, sw);
        float m_block = make_qp_quants(QK_K/32, 63, mins,   Lm, sw);
        for (int j = 0; j < QK_K/32; ++j) {
            uint8_t ls = Ls[j];
            uint8_t lm = Lm[j];
            if (j < 4) {
                y[i].scales[j] = ls;
                y[i].scales[j+4] = lm;
            } else {
                y[i].scales[j+4] = (ls & 0xF) | ((lm & 0xF) << 4);
                y[i].scales[j-4] |= ((ls >> 4) << 6);
                y[i].scales[j-0] |= ((lm >> 4) << 6);
            }
        }
        y[i].d = GGML_FP32_TO_FP16(d_block);
        y[i].dmin = GGML_FP32_TO_FP16(m_block);

        uint8_t sc, m;
        for (int j = 0; j < QK_K/32; ++j) {
            get_scale_min_k4(j, y[i].scales, &sc, &m);
            const float d = GGML_FP16_TO_FP32(y[i].d) * sc;
            if (!d) continue;
            const float dm = GGML_FP16_TO_FP32(y[i].dmin) * m;
            for (int ii = 0; ii < 32; ++ii) {
                int l = nearest_int((x[32*j + ii] + dm)/d);
                l = MAX(0, MIN(15, l));
                L[32*j + ii] = l;
            }
        }
        uint8_t * q = y[i].qs;
        for (int j = 0; j < QK_K; j += 64) {
            for (int l = 0; l < 32; ++l) q[l] = L[j + l] | (L[j + l + 32] << 4);
            q += 32;
        }

        x += QK_K;

    }
}

// ggml-quants.c: quantize_q4_K
static size_t quantize_q4_K(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrow, int64_t n_per_row, const float * quant_weights) {
    size_t row_size = ggml_row_size(GGML_TYPE_Q4_K, n_per_row);
    if (!quant_weights) {
        quantize_row_q4_K_ref(src, dst, (int64_t)nrow*n_per_row);
    }
    else {
        char * qrow = (char *)dst;
        for (int64_t row = 0; row < nrow; ++row) {
            quantize_row_q4_K_impl(src, (block_q4_K*)qrow, n_per_row, quant_weights);
            src += n_per_row;
            qrow += row_size;
        }
    }
    return nrow * row_size;
}

// ggml-quants.c: quantize_row_q5_K_ref
static void quantize_row_q5_K_ref(const float * GGML_RESTRICT x, block_q5_K * GGML_RESTRICT y, int64_t k) {
    assert(k % QK_K == 0);
    const int64_t nb = k / QK_K;

    uint8_t L[QK_K];
    float mins[QK_K/32];
    float scales[QK_K/32];
    float weights[32];
    uint8_t Laux[32];

    for (int i = 0; i < nb; i++) {
        float max_scale = 0; // as we are deducting the min, scales are always positive
        float max_min = 0;
        for (int j = 0; j < QK_K/32; ++j) {
            //scales[j] = make_qkx1_quants(32, 31, x + 32*j, L + 32*j, &mins[j], 9, 0.5f);
            float sum_x2 = 0;
            for (int l = 0; l < 32; ++l) sum_x2 += x[32*j + l] * x[32*j + l];
            float av_x = sqrtf(sum_x2/32);
            for (int l = 0; l < 32; ++l) weights[l] = av_x + fabsf(x[32*j + l]);
            scales[j] = make_qkx2_quants(32, 31, x + 32*j, weights, L + 32*j, &mins[j], Laux, -0.5f, 0.1f, 15, false);
            float scale = scales[j];
            if (scale > max_scale) {
                max_scale = scale;
            }
            float min = mins[j];
            if (min > max_min) {
                max_min = min;
            }
        }

        float inv_scale = max_scale > 0 ? 63.f/max_scale : 0.f;
        float inv_min   = max_min   > 0 ? 63.f/max_min   : 0.f;
        for (int j = 0; j < QK_K/32; ++j) {
            uint8_t ls = nearest_int(inv_scale*scales[j]);
            uint8_t lm = nearest_int(inv_min*mins[j]);
            ls = MIN(63, ls);
            lm = MIN(63, lm);
            if (j < 4) {
                y[i].scales[j] = ls;
                y[i].scales[j+4] = lm;
            } else {
                y[i].scales[j+4] = (ls & 0xF) | ((lm & 0xF) << 4);
                y[i].scales[j-4] |= ((ls >> 4) << 6);
                y[i].scales[j-0] |= ((lm >> 4) << 6);
            }
        }
        y[i].d = GGML_FP32_TO_FP16(max_scale/63.f);
        y[i].dmin = GGML_FP32_TO_FP16(max_min/63.f);

        uint8_t sc, m;
        for (int j = 0; j < QK_K/32; ++j) {
            get_scale_min_k4(j, y[i].scales, &sc, &m);
            const float d = GGML_FP16_TO_FP32(y[i].d) * sc;
            if (!d) continue;
            const float dm = GGML_FP16_TO_FP32(y[i].dmin) * m;
            for (int ii = 0; ii < 32; ++ii) {
                int l = nearest_int((x[32*j + ii] + dm)/d);
                l = MAX(0, MIN(31, l));
                L[32*j + ii] = l;
            }
        }

        uint8_t * GGML_RESTRICT qh = y[i].qh;
        uint8_t * GGML_RESTRICT ql = y[i].qs;
        memset(qh, 0, QK_K/8);

        uint8_t m1 = 1, m2 = 2;
        for (int n = 0; n < QK_K; n += 64) {
            for (int j = 0; j < 32; ++j) {
                int l1 = L[n + j];
                if (l1 > 15) {
                    l1 -= 16; qh[j] |= m1;
                }
                int l2 = L[n + j + 32];
                if (l2 > 15) {
                    l2 -= 16; qh[j] |= m2;
                }
                ql[j] = l1 | (l2 << 4);
            }
            m1 <<= 2; m2 <<= 2;
            ql += 32;
        }

        x += QK_K;
    }
}

// ggml-quants.c: quantize_row_q5_K_impl
static void quantize_row_q5_K_impl(const float * GGML_RESTRICT x, block_q5_K * GGML_RESTRICT y, int64_t n_per_row, const float * quant_weights) {
    assert(n_per_row % QK_K == 0);
    const int64_t nb = n_per_row / QK_K;

    uint8_t L[QK_K];
    uint8_t Laux[32];
    uint8_t Ls[QK_K/32];
    uint8_t Lm[QK_K/32];
    float   mins[QK_K/32];
    float   scales[QK_K/32];
    float   sw[QK_K/32];
    float   weights[32];

    for (int i = 0; i < nb; i++) {

        float sum_x2 = 0;
        for (int l = 0; l < QK_K; ++l) sum_x2 += x[l] * x[l];
        float sigma2 = 2*sum_x2/QK_K;
        float av_x = sqrtf(sigma2);

        for (int j = 0; j < QK_K/32; ++j) {
            if (quant_weights) {
                const float * qw = quant_weights + QK_K*i + 32*j;
                for (int l = 0; l < 32; ++l) weights[l] = qw[l] * sqrtf(sigma2 + x[32*j + l]*x[32*j + l]);
            } else {
                for (int l = 0; l < 32; ++l) weights[l] = av_x + fabsf(x[32*j + l]);
            }
            float sumw = 0;
            for (int l = 0; l < 32; ++l) sumw += weights[l];
            sw[j] = sumw;

            scales[j] = make_qkx3_quants(32, 31, x + 32*j, weights, L + 32*j, &mins[j], Laux, -0.9f, 0.05f, 36, false);
        }

        float d_block = make_qp_quants(QK_K/32, 63, scales, Ls, sw);
        float m_block = make_qp_quants(QK_K/32, 63, mins,   Lm, sw);

        for (int j = 0; j < QK_K/32; ++j) {
            uint8_t ls = Ls[j];
            uint8_t lm = Lm[j];
            ls = MIN(63, ls);
            lm = MIN(63, lm);
            if (j < 4) {
                y[i].scales[j] = ls;
                y[i].scales[j+4] = lm;
            } else {
                y[i].scales[j+4] = (ls & 0xF) | ((lm & 0xF) << 4);
                y[i].scales[j-4] |= ((ls >> 4) << 6);
                y[i].scales[j-0] |= ((lm >> 4) << 6);
            }
        }
        y[i].d = GGML_FP32_TO_FP16(d_block);
        y[i].dmin = GGML_FP32_TO_FP16(m_block);

        uint8_t sc, m;
        for (int j = 0; j < QK_K/32; ++j) {
            get_scale_min_k4(j, y[i].scales, &sc, &m);
            const float d = GGML_FP16_TO_FP32(y[i].d) * sc;
            if (!d) continue;
            const float dm = GGML_FP16_TO_FP32(y[i].dmin) * m;
            for (int ii = 0; ii < 32; ++ii) {
                int l = nearest_int((x[32*j + ii] + dm)/d);
                l = MAX(0, MIN(31, l));
                L[32*j + ii] = l;
            }
        }

        uint8_t * GGML_RESTRICT qh = y[i].qh;
        uint8_t * GGML_RESTRICT ql = y[i].qs;
        memset(qh, 0, QK_K/8);

        uint8_t m1 = 1, m2 = 2;
        for (int n = 0; n < QK_K; n += 64) {
            for (int j = 0; j < 32; ++j) {
                int l1 = L[n + j];
                if (l1 > 15) {
                    l1 -= 16; qh[j] |= m1;
                }
                int l2 = L[n + j + 32];
                if (l2 > 15) {
                    l2 -= 16; qh[j] |= m2;
                }
                ql[j] = l1 | (l2 << 4);
            }
            m1 <<= 2; m2 <<= 2;
            ql += 32;
        }

        x += QK_K;

    }
}

// ggml-quants.c: quantize_q5_K
static size_t quantize_q5_K(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrow, int64_t n_per_row, const float * quant_weights) {
    size_t row_size = ggml_row_size(GGML_TYPE_Q5_K, n_per_row);
    if (!quant_weights) {
        quantize_row_q5_K_ref(src, dst, (int64_t)nrow*n_per_row);
    }
    else {
        char * qrow = (char *)dst;
        for (int64_t row = 0; row < nrow; ++row) {
            quantize_row_q5_K_impl(src, (block_q5_K*)qrow, n_per_row, quant_weights);
            src += n_per_row;
            qrow += row_size;
        }
    }
    return nrow * row_size;
}

// ggml-quants.c: quantize_row_q6_K_ref
static void quantize_row_q6_K_ref(const float * GGML_RESTRICT x, block_q6_K * GGML_RESTRICT y, int64_t k) {
    assert(k % QK_K == 0);
    const int64_t nb = k / QK_K;

    int8_t L[QK_K];
    float   scales[QK_K/16];

    for (int i = 0; i < nb; i++) {

        float max_scale = 0;
        float max_abs_scale = 0;

        for (int ib = 0; ib < QK_K/16; ++ib) {

            const float scale = make_qx_quants(16, 32, x + 16*ib, L + 16*ib, 1, NULL);
            scales[ib] = scale;

            const float abs_scale = fabsf(scale);
            if (abs_scale > max_abs_scale) {
                max_abs_scale = abs_scale;
                max_scale = scale;
            }

        }

        if (max_abs_scale < GROUP_MAX_EPS) {
            memset(&y[i], 0, sizeof(block_q6_K));
            y[i].d = GGML_FP32_TO_FP16(0.f);
            x += QK_K;
            continue;
        }

        float iscale = -128.f/max_scale;
        y[i].d = GGML_FP32_TO_FP16(1/iscale);
        for (int ib = 0; ib < QK_K/16; ++ib) {
            y[i].scales[ib] = MIN(127, nearest_int(iscale*scales[ib]));
        }

        for (int j = 0; j < QK_K/16; ++j) {
            float d = GGML_FP16_TO_FP32(y[i].d) * y[i].scales[j];
            if (!d) {
                continue;
            }
            for (int ii = 0; ii < 16; ++ii) {
                int l = nearest_int(x[16*j + ii]/d);
                l = MAX(-32, MIN(31, l));
                L[16*j + ii] = l + 32;
            }
        }

        uint8_t * GGML_RESTRICT ql = y[i].ql;
        uint8_t * GGML_RESTRICT qh = y[i].qh;
        for (int j = 0; j < QK_K; j += 128) {
            for (int l = 0; l < 32; ++l) {
                const uint8_t q1 = L[j + l +  0] & 0xF;
                const uint8_t q2 = L[j + l + 32] & 0xF;
                const uint8_t q3 = L[j + l + 64] & 0xF;
                const uint8_t q4 = L[j + l + 96] & 0xF;
                ql[l+ 0] = q1 | (q3 << 4);
                ql[l+32] = q2 | (q4 << 4);
                qh[l] = (L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6);
            }
            ql += 64;
            qh += 32;
        }

        x += QK_K;
    }
}

// ggml-quants.c: quantize_row_q6_K_impl
static void quantize_row_q6_K_impl(const float * GGML_RESTRICT x, block_q6_K * GGML_RESTRICT y, int64_t n_per_row, const float * quant_weights) {
    assert(n_per_row % QK_K == 0);
    const int64_t nb = n_per_row / QK_K;

    int8_t L[QK_K];
    float   scales[QK_K/16];
    //float   weights[16];

    for (int i = 0; i < nb; i++) {

        //float sum_x2 = 0;
        //for (int j = 0; j < QK_K; ++j) sum_x2 += x[j]*x[j];
        //float sigma2 = sum_x2/QK_K;

        float max_scale = 0;
        float max_abs_scale = 0;

        for (int ib = 0; ib < QK_K/16; ++ib) {

            float scale;
            if (quant_weights) {
                const float * qw = quant_weights + QK_K*i + 16*ib;
                //for (int j = 0; j < 16; ++j) weights[j] = qw[j] * sqrtf(sigma2 + x[16*ib + j]*x[16*ib + j]);
                //scale = make_qx_quants(16, 32, x + 16*ib, L + 16*ib, 1, weights);
                scale = make_qx_quants(16, 32, x + 16*ib, L + 16*ib, 1, qw);
            } else {
                scale = make_qx_quants(16, 32, x + 16*ib, L + 16*ib, 1, NULL);
            }
            scales[ib] = scale;

            const float abs_scale = fabsf(scale);
            if (abs_scale > max_abs_scale) {
                max_abs_scale = abs_scale;
                max_scale = scale;
            }

        }

        if (max_abs_scale < GROUP_MAX_EPS) {
            memset(&y[i], 0, sizeof(block_q6_K));
            y[i].d = GGML_FP32_TO_FP16(0.f);
            x += QK_K;
            continue;
        }

        float iscale = -128.f/max_scale;
        y[i].d = GGML_FP32_TO_FP16(1/iscale);
        for (int ib = 0; ib < QK_K/16; ++ib) {
            y[i].scales[ib] = MIN(127, nearest_int(iscale*scales[ib]));
        }

        for (int j = 0; j < QK_K/16; ++j) {
            float d = GGML_FP16_TO_FP32(y[i].d) * y[i].scales[j];
            if (!d) {
                continue;
            }
            for (int ii = 0; ii < 16; ++ii) {
                int l = nearest_int(x[16*j + ii]/d);
                l = MAX(-32, MIN(31, l));
                L[16*j + ii] = l + 32;
            }
        }

        uint8_t * GGML_RESTRICT ql = y[i].ql;
        uint8_t * GGML_RESTRICT qh = y[i].qh;
        for (int j = 0; j < QK_K; j += 128) {
            for (int l = 0; l < 32; ++l) {
                const uint8_t q1 = L[j + l +  0] & 0xF;
                const uint8_t q2 = L[j + l + 32] & 0xF;
                const uint8_t q3 = L[j + l + 64] & 0xF;
                const uint8_t q4 = L[j + l + 96] & 0xF;
                ql[l+ 0] = q1 | (q3 << 4);
                ql[l+32] = q2 | (q4 << 4);
                qh[l] = (L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6);
            }
            ql += 64;
            qh += 32;
        }

        x += QK_K;

    }
}

// ggml-quants.c: quantize_q6_K
static size_t quantize_q6_K(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrow, int64_t n_per_row, const float * quant_weights) {
    size_t row_size = ggml_row_size(GGML_TYPE_Q6_K, n_per_row);
    if (!quant_weights) {
        quantize_row_q6_K_ref(src, dst, (int64_t)nrow*n_per_row);
    }
    else {
        char * qrow = (char *)dst;
        for (int64_t row = 0; row < nrow; ++row) {
            quantize_row_q6_K_impl(src, (block_q6_K*)qrow, n_per_row, quant_weights);
            src += n_per_row;
            qrow += row_size;
        }
    }
    return nrow * row_size;
}

// ggml-quants.c: quantize_row_q4_0_impl
static void quantize_row_q4_0_impl(const float * GGML_RESTRICT x, block_q4_0 * GGML_RESTRICT y, int64_t n_per_row, const float * quant_weights) {
    static_assert(QK4_0 == 32, "QK4_0 must be 32");

    if (!quant_weights) {
        quantize_row_q4_0_ref(x, y, n_per_row);
        return;
    }

    float weight[QK4_0];
    int8_t L[QK4_0];

    float sum_x2 = 0;
    for (int j = 0; j < n_per_row; ++j) sum_x2 += x[j]*x[j];
    float sigma2 = sum_x2/n_per_row;

    const int64_t nb = n_per_row/QK4_0;
    for (int ib = 0; ib < nb; ++ib) {
        const float * xb = x + QK4_0 * ib;
        const float * qw = quant_weights + QK4_0 * ib;
        for (int j = 0; j < QK4_0; ++j) weight[j] = qw[j] * sqrtf(sigma2 + xb[j]*xb[j]);
        float d = make_qx_quants(QK4_0, 8, xb, L, 1, weight);
        y[ib].d = GGML_FP32_TO_FP16(d);
        for (int j = 0; j < 16; ++j) {
            y[ib].qs[j] = L[j] | (L[j+16] << 4);
        }
    }
}

// ggml-quants.c: quantize_q4_0
static size_t quantize_q4_0(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrow, int64_t n_per_row, const float * quant_weights) {
    if (!quant_weights) {
        quantize_row_q4_0_ref(src, dst, (int64_t)nrow*n_per_row);
        return nrow * ggml_row_size(GGML_TYPE_Q4_0, n_per_row);
    }
    size_t row_size = ggml_row_size(GGML_TYPE_Q4_0, n_per_row);
    char * qrow = (char *)dst;
    for (int64_t row = 0; row < nrow; ++row) {
        quantize_row_q4_0_impl(src, (block_q4_0*)qrow, n_per_row, quant_weights);
        src += n_per_row;
        qrow += row_size;
    }
    return nrow * row_size;
}

// ggml-quants.c: quantize_row_q4_1_impl
static void quantize_row_q4_1_impl(const float * GGML_RESTRICT x, block_q4_1 * GGML_RESTRICT y, int64_t n_per_row, const float * quant_weights) {
    static_assert(QK4_1 == 32, "QK4_1 must be 32");

    if (!quant_weights) {
        quantize_row_q4_1_ref(x, y, n_per_row);
        return;
    }

    float weight[QK4_1];
    uint8_t L[QK4_1], Laux[QK4_1];

    float sum_x2 = 0;
    for (int j = 0; j < n_per_row; ++j) sum_x2 += x[j]*x[j];
    float sigma2 = sum_x2/n_per_row;

    const int64_t nb = n_per_row/QK4_1;
    for (int ib = 0; ib < nb; ++ib) {
        const float * xb = x + QK4_1 * ib;
        const float * qw = quant_weights + QK4_1 * ib;
        for (int j = 0; j < QK4_1; ++j) weight[j] = qw[j] * sqrtf(sigma2 + xb[j]*xb[j]);
        float min;
        float d = make_qkx3_quants(QK4_1, 15, xb, weight, L, &min, Laux, -0.9f, 0.05f, 36, false);
        y[ib].d = GGML_FP32_TO_FP16(d);
        y[ib].m = GGML_FP32_TO_FP16(-min);
        for (int j = 0; j < 16; ++j) {
            y[ib].qs[j] = L[j] | (L[j+16] << 4);
        }
    }
}

// ggml-quants.c: quantize_q4_1
static size_t quantize_q4_1(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrow, int64_t n_per_row, const float * quant_weights) {
    if (!quant_weights) {
        quantize_row_q4_1_ref(src, dst, (int64_t)nrow*n_per_row);
        return nrow * ggml_row_size(GGML_TYPE_Q4_1, n_per_row);
    }
    size_t row_size = ggml_row_size(GGML_TYPE_Q4_1, n_per_row);
    char * qrow = (char *)dst;
    for (int64_t row = 0; row < nrow; ++row) {
        quantize_row_q4_1_impl(src, (block_q4_1*)qrow, n_per_row, quant_weights);
        src += n_per_row;
        qrow += row_size;
    }
    return nrow * row_size;
}

// ggml-quants.c: quantize_row_q5_0_impl
static void quantize_row_q5_0_impl(const float * GGML_RESTRICT x, block_q5_0 * GGML_RESTRICT y, int64_t n_per_row, const float * quant_weights) {
    static_assert(QK5_0 == 32, "QK5_0 must be 32");

    if (!quant_weights) {
        quantize_row_q5_0_ref(x, y, n_per_row);
        return;
    }

    float weight[QK5_0];
    int8_t L[QK5_0];

    float sum_x2 = 0;
    for (int j = 0; j < n_per_row; ++j) sum_x2 += x[j]*x[j];
    float sigma2 = sum_x2/n_per_row;

    const int64_t nb = n_per_row/QK5_0;
    for (int ib = 0; ib < nb; ++ib) {
        const float * xb = x + QK5_0 * ib;
        const float * qw = quant_weights + QK5_0 * ib;
        for (int j = 0; j < QK5_0; ++j) weight[j] = qw[j] * sqrtf(sigma2 + xb[j]*xb[j]);
        float d = make_qx_quants(QK5_0, 16, xb, L, 1, weight);
        y[ib].d = GGML_FP32_TO_FP16(d);

        uint32_t qh = 0;

        for (int j = 0; j < 16; ++j) {
            const uint8_t xi0 = L[j];
            const uint8_t xi1 = L[j+16];
            y[ib].qs[j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);

            // get the 5-th bit and store it in qh at the right position
            qh |= ((xi0 & 0x10u) >> 4) << (j + 0);
            qh |= ((xi1 & 0x10u) >> 4) << (j + QK5_0/2);
        }

        memcpy(&y[ib].qh, &qh, sizeof(qh));
    }
}

// ggml-quants.c: quantize_q5_0
static size_t quantize_q5_0(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrow, int64_t n_per_row, const float * quant_weights) {
    if (!quant_weights) {
        quantize_row_q5_0_ref(src, dst, (int64_t)nrow*n_per_row);
        return nrow * ggml_row_size(GGML_TYPE_Q5_0, n_per_row);
    }
    size_t row_size = ggml_row_size(GGML_TYPE_Q5_0, n_per_row);
    char * qrow = (char *)dst;
    for (int64_t row = 0; row < nrow; ++row) {
        quantize_row_q5_0_impl(src, (block_q5_0*)qrow, n_per_row, quant_weights);
        src += n_per_row;
        qrow += row_size;
    }
    return nrow * row_size;
}

// ggml-quants.c: quantize_row_q5_1_impl
static void quantize_row_q5_1_impl(const float * GGML_RESTRICT x, block_q5_1 * GGML_RESTRICT y, int64_t n_per_row, const float * quant_weights) {
    static_assert(QK5_1 == 32, "QK5_1 must be 32");

    if (!quant_weights) {
        quantize_row_q5_1_ref(x, y, n_per_row);
        return;
    }

    float weight[QK5_1];
    uint8_t L[QK5_1], Laux[QK5_1];

    float sum_x2 = 0;
    for (int j = 0; j < n_per_row; ++j) sum_x2 += x[j]*x[j];
    float sigma2 = sum_x2/n_per_row;

    const int64_t nb = n_per_row/QK5_1;
    for (int ib = 0; ib < nb; ++ib) {
        const float * xb = x + QK5_1 * ib;
        const float * qw = quant_weights + QK5_1 * ib;
        for (int j = 0; j < QK5_1; ++j) weight[j] = qw[j] * sqrtf(sigma2 + xb[j]*xb[j]);
        float min;
        float d = make_qkx3_quants(QK5_1, 31, xb, weight, L, &min, Laux, -0.9f, 0.05f, 36, false);
        y[ib].d = GGML_FP32_TO_FP16(d);
        y[ib].m = GGML_FP32_TO_FP16(-min);

        uint32_t qh = 0;
        for (int j = 0; j < 16; ++j) {
            const uint8_t xi0 = L[j];
            const uint8_t xi1 = L[j+16];
            y[ib].qs[j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
            // get the 5-th bit and store it in qh at the right position
            qh |= ((xi0 & 0x10u) >> 4) << (j + 0);
            qh |= ((xi1 & 0x10u) >> 4) << (j + QK5_0/2);
        }
        memcpy(&y[ib].qh, &qh, sizeof(qh));
    }
}

// ggml-quants.c: quantize_q5_1
static size_t quantize_q5_1(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrow, int64_t n_per_row, const float * quant_weights) {
    if (!quant_weights) {
        quantize_row_q5_1_ref(src, dst, (int64_t)nrow*n_per_row);
        return nrow * ggml_row_size(GGML_TYPE_Q5_1, n_per_row);
    }
    size_t row_size = ggml_row_size(GGML_TYPE_Q5_1, n_per_row);
    char * qrow = (char *)dst;
    for (int64_t row = 0; row < nrow; ++row) {
        quantize_row_q5_1_impl(src, (block_q5_1*)qrow, n_per_row, quant_weights);
        src += n_per_row;
        qrow += row_size;
    }
    return nrow * row_size;
}

// ggml-quants.c: quantize_q8_0
static size_t quantize_q8_0(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrow, int64_t n_per_row, const float * quant_weights) {
    (void)quant_weights; // not used
    const size_t row_size = ggml_row_size(GGML_TYPE_Q8_0, n_per_row);
    quantize_row_q8_0_ref(src, dst, (int64_t)nrow*n_per_row);
    return nrow * row_size;
}

/* ======== end of the ggml-quants.c copy ======== */

/* ======== lane-parallel searches (this package's, not ggml's) ========
 *
 * The searches above run one sub-block at a time, and most of their time goes to chains of
 * dependent float additions (the sums over a sub-block's values). The versions below run the
 * same searches on 8 sub-blocks at once, one per vector lane: lane k performs exactly the float32
 * operations, in exactly the order, that the scalar code performs for its sub-block (element-wise
 * IEEE arithmetic, no reassociation), and data-dependent branches become per-lane selects, so
 * every lane's result is bit for bit the scalar result. Work a scalar branch would skip (trials
 * after D <= 0, the remaining passes of make_q3_quants once a lane stops changing) is done and
 * discarded; it cannot change the selected values. mq_quantize(..., reference = 1) runs the
 * scalar code instead, and the Python self-test compares the two.
 */

#define VL 8
/* every helper of the lane code is inlined into the function calling it: the AVX2 clone and the
 * baseline one pass 32-byte vectors differently, so a call between them would break the ABI */
#define MQ_INLINE inline __attribute__((always_inline))
typedef float vf __attribute__((vector_size(VL * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(VL * sizeof(int32_t))));

/* an AVX2 build of the lane code beside the baseline one, picked at load by the CPU (same results:
 * lane-wise IEEE operations either way); MQ_NO_CLONES builds the baseline alone (tests) */
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__) && !defined(MQ_NO_CLONES)
#define MQ_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define MQ_CLONES
#endif

static MQ_INLINE vf vsplat(float s) { return (vf){s, s, s, s, s, s, s, s}; }
static MQ_INLINE vi visplat(int32_t s) { return (vi){0} + s; } /* a broadcast: GCC builds {s, s, ...} lane by lane */
static MQ_INLINE vf vsel(vi m, vf a, vf b) { return (vf)(((vi)a & m) | ((vi)b & ~m)); }
static MQ_INLINE vi visel(vi m, vi a, vi b) { return (a & m) | (b & ~m); }
static MQ_INLINE vf vabs(vf a) { return (vf)((vi)a & visplat(0x7fffffff)); }
static MQ_INLINE vf vfloat(vi a) { return __builtin_convertvector(a, vf); }
static MQ_INLINE vi vclamp(vi l, vi lo, vi hi) {
    l = visel(l < lo, lo, l);
    return visel(l > hi, hi, l);
}
/* nearest_int, lane by lane: the same magic-number bit trick */
static MQ_INLINE vi vnearest(vf v) {
    vi i = (vi)(v + vsplat(12582912.f));
    return (i & visplat(0x007fffff)) - visplat(0x00400000);
}
static MQ_INLINE vf vsqrt(vf a) {
    vf r;
    for (int k = 0; k < VL; ++k) r[k] = sqrtf(a[k]);
    return r;
}
static MQ_INLINE int vany(vi m) {
    int any = 0;
    for (int k = 0; k < VL; ++k) any |= m[k];
    return any != 0;
}

/* lane k of x[i] = src[k*stride + i] */
static MQ_INLINE void vload_cols(vf * x, const float * src, int n, int stride) {
    for (int i = 0; i < n; ++i) {
        for (int k = 0; k < VL; ++k) x[i][k] = src[k * stride + i];
    }
}

/* make_qx_quants(n, nmax, x, L, rmse_type = 1, qw) for 8 lanes; qw NULL: weights x*x */
static MQ_INLINE vf make_qx_quants_v(int n, int nmax, const vf * x, vi * L, const vf * qw) {
    vf max = vsplat(0), amax = vsplat(0);
    for (int i = 0; i < n; ++i) {
        vf ax = vabs(x[i]);
        vi up = ax > amax;
        amax = vsel(up, ax, amax);
        max = vsel(up, x[i], max);
    }
    const vi zero = amax < vsplat(GROUP_MAX_EPS);
    const vi lo = visplat(-nmax), hi = visplat(nmax - 1), offset = visplat(nmax);
    vf iscale = vsplat((float)(-nmax)) / max;
    vf sumlx = vsplat(0), suml2 = vsplat(0);
    for (int i = 0; i < n; ++i) {
        vi l = vclamp(vnearest(iscale * x[i]), lo, hi);
        L[i] = l + offset;
        vf w = qw ? qw[i] : x[i] * x[i];
        vf lf = vfloat(l);
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    vf scale = vsel(suml2 != vsplat(0), sumlx / suml2, vsplat(0));
    vf best = scale * sumlx;
    vi Lt[32];
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) {
            continue;
        }
        iscale = vsplat(-(nmax + 0.1f * is)) / max;
        sumlx = suml2 = vsplat(0);
        for (int i = 0; i < n; ++i) {
            vi l = vclamp(vnearest(iscale * x[i]), lo, hi);
            Lt[i] = l;
            vf w = qw ? qw[i] : x[i] * x[i];
            vf lf = vfloat(l);
            sumlx += w * x[i] * lf;
            suml2 += w * lf * lf;
        }
        vi better = (suml2 > vsplat(0)) & (sumlx * sumlx > best * suml2);
        if (vany(better)) {
            for (int i = 0; i < n; ++i) L[i] = visel(better, Lt[i] + offset, L[i]);
            vf s = sumlx / suml2;
            scale = vsel(better, s, scale);
            best = vsel(better, s * sumlx, best);
        }
    }
    for (int i = 0; i < n; ++i) L[i] = visel(zero, visplat(0), L[i]);
    return vsel(zero, vsplat(0), scale);
}

/* make_q3_quants(n, nmax, x, L, do_rmse = true) for 8 lanes */
static MQ_INLINE vf make_q3_quants_v(int n, int nmax, const vf * x, vi * L) {
    vf max = vsplat(0), amax = vsplat(0);
    for (int i = 0; i < n; ++i) {
        vf ax = vabs(x[i]);
        vi up = ax > amax;
        amax = vsel(up, ax, amax);
        max = vsel(up, x[i], max);
    }
    const vi zero = amax < vsplat(GROUP_MAX_EPS);
    const vi lo = visplat(-nmax), hi = visplat(nmax - 1);
    vf iscale = vsplat((float)(-nmax)) / max;
    vf sumlx = vsplat(0), suml2 = vsplat(0);
    for (int i = 0; i < n; ++i) {
        vi l = vclamp(vnearest(iscale * x[i]), lo, hi);
        L[i] = l;
        vf w = x[i] * x[i];
        vf lf = vfloat(l);
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    for (int itry = 0; itry < 5; ++itry) {
        vi changed = visplat(0);
        for (int i = 0; i < n; ++i) {
            vf w = x[i] * x[i];
            vf Lf = vfloat(L[i]);
            vf slx = sumlx - w * x[i] * Lf;
            vf sl2 = suml2 - w * Lf * Lf;
            vi new_l = vclamp(vnearest(x[i] * sl2 / slx), lo, hi);
            vf nf = vfloat(new_l);
            vf slx_new = slx + w * x[i] * nf;
            vf sl2_new = sl2 + w * nf * nf;
            vi take = (slx > vsplat(0)) & (new_l != L[i]) & (sl2_new > vsplat(0)) &
                      (slx_new * slx_new * suml2 > sumlx * sumlx * sl2_new);
            L[i] = visel(take, new_l, L[i]);
            sumlx = vsel(take, slx_new, sumlx);
            suml2 = vsel(take, sl2_new, suml2);
            changed |= take;
        }
        if (!vany(changed)) {
            break;
        }
    }
    for (int i = 0; i < n; ++i) L[i] = visel(zero, visplat(0), L[i] + visplat(nmax));
    vf scale = vsel(suml2 > vsplat(0), sumlx / suml2, vsplat(0));
    return vsel(zero, vsplat(0), scale);
}

/* make_qkx2_quants / make_qkx3_quants (the same arithmetic given weights) for 8 lanes */
static MQ_INLINE vf make_qkx2_quants_v(int n, int nmax, const vf * x, const vf * weights, vi * L, vf * the_min,
                                    float rmin, float rdelta, int nstep, bool use_mad) {
    vf min = x[0], max = x[0];
    vf sum_w = weights[0];
    vf sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        min = vsel(x[i] < min, x[i], min);
        max = vsel(x[i] > max, x[i], max);
        vf w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    min = vsel(min > vsplat(0), vsplat(0), min);
    const vi flat = max == min;
    const vi lo = visplat(0), hi = visplat(nmax);
    const vf flat_min = min;
    vf iscale = vsplat((float)nmax) / (max - min);
    vf scale = vsplat(1) / iscale;
    vf best_error = vsplat(0);
    for (int i = 0; i < n; ++i) {
        L[i] = vclamp(vnearest(iscale * (x[i] - min)), lo, hi);
        vf diff = scale * vfloat(L[i]) + min - x[i];
        diff = use_mad ? vabs(diff) : diff * diff;
        best_error += weights[i] * diff;
    }
    vi Laux[32];
    for (int is = 0; is <= nstep; ++is) {
        iscale = vsplat(rmin + rdelta * is + nmax) / (max - min);
        vf sum_l = vsplat(0), sum_l2 = vsplat(0), sum_xl = vsplat(0);
        for (int i = 0; i < n; ++i) {
            vi l = vclamp(vnearest(iscale * (x[i] - min)), lo, hi);
            Laux[i] = l;
            vf w = weights[i];
            vf lf = vfloat(l);
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        vf D = sum_w * sum_l2 - sum_l * sum_l;
        vf this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
        vf this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
        vi positive = this_min > vsplat(0);
        this_min = vsel(positive, vsplat(0), this_min);
        this_scale = vsel(positive, sum_xl / sum_l2, this_scale);
        vf cur_error = vsplat(0);
        for (int i = 0; i < n; ++i) {
            vf diff = this_scale * vfloat(Laux[i]) + this_min - x[i];
            diff = use_mad ? vabs(diff) : diff * diff;
            cur_error += weights[i] * diff;
        }
        vi better = (D > vsplat(0)) & (cur_error < best_error);
        if (vany(better)) {
            for (int i = 0; i < n; ++i) L[i] = visel(better, Laux[i], L[i]);
            best_error = vsel(better, cur_error, best_error);
            scale = vsel(better, this_scale, scale);
            min = vsel(better, this_min, min);
        }
    }
    for (int i = 0; i < n; ++i) L[i] = visel(flat, visplat(0), L[i]);
    *the_min = -vsel(flat, flat_min, min);
    return vsel(flat, vsplat(0), scale);
}

/* lane k's results back into the scalar code's arrays: out[k] and levels[k*n + i] */
static MQ_INLINE void vstore_lanes(vf v, float * out) {
    for (int k = 0; k < VL; ++k) out[k] = v[k];
}
static MQ_INLINE void vstore_levels_u8(const vi * L, uint8_t * out, int n) {
    for (int i = 0; i < n; ++i) {
        for (int k = 0; k < VL; ++k) out[k * n + i] = (uint8_t)L[i][k];
    }
}
static MQ_INLINE void vstore_levels_i8(const vi * L, int8_t * out, int n) {
    for (int i = 0; i < n; ++i) {
        for (int k = 0; k < VL; ++k) out[k * n + i] = (int8_t)L[i][k];
    }
}

/* ---- the super-block quantizers on top of the lane searches: the ggml code above, with its
 * loop over sub-blocks replaced by lane calls; everything after it is the ggml code unchanged ---- */

static MQ_INLINE void q3_pack(block_q3_K * y, int8_t * L, const float * x) {
    /* the tail of quantize_row_q3_K_ref/_impl after the scales: requantize, hmask, qs */
    int8_t sc;
    for (int j = 0; j < QK_K/16; ++j) {
        sc = j < 8 ? y->scales[j] & 0xF : y->scales[j-8] >> 4;
        sc = (sc | (((y->scales[8 + j%4] >> (2*(j/4))) & 3) << 4)) - 32;
        float d = GGML_FP16_TO_FP32(y->d) * sc;
        if (!d) {
            continue;
        }
        for (int ii = 0; ii < 16; ++ii) {
            int l = nearest_int(x[16*j + ii]/d);
            l = MAX(-4, MIN(3, l));
            L[16*j + ii] = l + 4;
        }
    }
    memset(y->hmask, 0, QK_K/8);
    int m = 0;
    uint8_t hm = 1;
    for (int j = 0; j < QK_K; ++j) {
        if (L[j] > 3) {
            y->hmask[m] |= hm;
            L[j] -= 4;
        }
        if (++m == QK_K/8) {
            m = 0; hm <<= 1;
        }
    }
    for (int j = 0; j < QK_K; j += 128) {
        for (int l = 0; l < 32; ++l) {
            y->qs[j/4 + l] = L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6);
        }
    }
}

static MQ_INLINE void q2_pack(block_q2_K * y, uint8_t * L, const float * x) {
    /* the tail of quantize_row_q2_K_ref/_impl after the scales: requantize, qs */
    for (int j = 0; j < QK_K/16; ++j) {
        const float d = GGML_FP16_TO_FP32(y->d) * (y->scales[j] & 0xF);
        if (!d) continue;
        const float dm = GGML_FP16_TO_FP32(y->dmin) * (y->scales[j] >> 4);
        for (int ii = 0; ii < 16; ++ii) {
            int l = nearest_int((x[16*j + ii] + dm)/d);
            l = MAX(0, MIN(3, l));
            L[16*j + ii] = l;
        }
    }
    for (int j = 0; j < QK_K; j += 128) {
        for (int l = 0; l < 32; ++l) {
            y->qs[j/4 + l] = L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6);
        }
    }
}

static MQ_INLINE void q45_requantize(const uint8_t * scales12, ggml_half hd, ggml_half hdmin, uint8_t * L, const float * x, int nmax) {
    uint8_t sc, m;
    for (int j = 0; j < QK_K/32; ++j) {
        get_scale_min_k4(j, scales12, &sc, &m);
        const float d = GGML_FP16_TO_FP32(hd) * sc;
        if (!d) continue;
        const float dm = GGML_FP16_TO_FP32(hdmin) * m;
        for (int ii = 0; ii < 32; ++ii) {
            int l = nearest_int((x[32*j + ii] + dm)/d);
            l = MAX(0, MIN(nmax, l));
            L[32*j + ii] = l;
        }
    }
}

static MQ_INLINE void q45_pack_scales(uint8_t * s, int j, uint8_t ls, uint8_t lm) {
    if (j < 4) {
        s[j] = ls;
        s[j+4] = lm;
    } else {
        s[j+4] = (ls & 0xF) | ((lm & 0xF) << 4);
        s[j-4] |= ((ls >> 4) << 6);
        s[j-0] |= ((lm >> 4) << 6);
    }
}

static MQ_INLINE void q5_pack_levels(block_q5_K * y, const uint8_t * L) {
    uint8_t * GGML_RESTRICT qh = y->qh;
    uint8_t * GGML_RESTRICT ql = y->qs;
    memset(qh, 0, QK_K/8);
    uint8_t m1 = 1, m2 = 2;
    for (int n = 0; n < QK_K; n += 64) {
        for (int j = 0; j < 32; ++j) {
            int l1 = L[n + j];
            if (l1 > 15) {
                l1 -= 16; qh[j] |= m1;
            }
            int l2 = L[n + j + 32];
            if (l2 > 15) {
                l2 -= 16; qh[j] |= m2;
            }
            ql[j] = l1 | (l2 << 4);
        }
        m1 <<= 2; m2 <<= 2;
        ql += 32;
    }
}

/* Q4_K and Q5_K: the 8 sub-blocks of 32 of a super-block are the 8 lanes */
MQ_CLONES static void quantize_q45_K_fast(const float * GGML_RESTRICT x, void * GGML_RESTRICT vy, int64_t nrow,
                                          int64_t n_per_row, const float * quant_weights, int nmax) {
    const int64_t nb = n_per_row / QK_K;
    const size_t block_size = nmax == 15 ? sizeof(block_q4_K) : sizeof(block_q5_K);
    uint8_t * out = vy;
    uint8_t L[QK_K];
    uint8_t Ls[QK_K/32];
    uint8_t Lm[QK_K/32];
    float mins[QK_K/32];
    float scales[QK_K/32];
    float sw[QK_K/32];
    vf X[32], W[32], the_min;
    vi Lv[32];
    for (int64_t row = 0; row < nrow; ++row) {
        for (int64_t i = 0; i < nb; i++, x += QK_K, out += block_size) {
            /* d, dmin and scales lead both blocks */
            ggml_half * hd = (ggml_half *)out;
            ggml_half * hdmin = hd + 1;
            uint8_t * s = out + 4;
            vload_cols(X, x, 32, 32);
            vf scale;
            if (!quant_weights) { /* quantize_row_q{4,5}_K_ref */
                vf sum_x2 = vsplat(0);
                for (int l = 0; l < 32; ++l) sum_x2 += X[l] * X[l];
                vf av_x = vsqrt(sum_x2 / vsplat(32));
                for (int l = 0; l < 32; ++l) W[l] = av_x + vabs(X[l]);
                scale = nmax == 15 ? make_qkx2_quants_v(32, 15, X, W, Lv, &the_min, -1.f, 0.1f, 20, false)
                                   : make_qkx2_quants_v(32, 31, X, W, Lv, &the_min, -0.5f, 0.1f, 15, false);
            } else { /* quantize_row_q{4,5}_K_impl */
                float sum_x2 = 0;
                for (int l = 0; l < QK_K; ++l) sum_x2 += x[l] * x[l];
                float sigma2 = 2*sum_x2/QK_K;
                vload_cols(W, quant_weights + QK_K*i, 32, 32);
                for (int l = 0; l < 32; ++l) W[l] = W[l] * vsqrt(vsplat(sigma2) + X[l] * X[l]);
                vf sumw = vsplat(0);
                for (int l = 0; l < 32; ++l) sumw += W[l];
                vstore_lanes(sumw, sw);
                scale = make_qkx2_quants_v(32, nmax, X, W, Lv, &the_min, -0.9f, 0.05f, 36, false);
            }
            vstore_lanes(scale, scales);
            vstore_lanes(the_min, mins);
            vstore_levels_u8(Lv, L, 32);

            if (!quant_weights) {
                float max_scale = 0;
                float max_min = 0;
                for (int j = 0; j < QK_K/32; ++j) {
                    if (scales[j] > max_scale) max_scale = scales[j];
                    if (mins[j] > max_min) max_min = mins[j];
                }
                float inv_scale = max_scale > 0 ? 63.f/max_scale : 0.f;
                float inv_min   = max_min   > 0 ? 63.f/max_min   : 0.f;
                for (int j = 0; j < QK_K/32; ++j) {
                    uint8_t ls = nearest_int(inv_scale*scales[j]);
                    uint8_t lm = nearest_int(inv_min*mins[j]);
                    ls = MIN(63, ls);
                    lm = MIN(63, lm);
                    q45_pack_scales(s, j, ls, lm);
                }
                *hd = GGML_FP32_TO_FP16(max_scale/63.f);
                *hdmin = GGML_FP32_TO_FP16(max_min/63.f);
            } else {
                float d_block = make_qp_quants(QK_K/32, 63, scales, Ls, sw);
                float m_block = make_qp_quants(QK_K/32, 63, mins,   Lm, sw);
                for (int j = 0; j < QK_K/32; ++j) {
                    uint8_t ls = Ls[j];
                    uint8_t lm = Lm[j];
                    if (nmax == 31) {
                        ls = MIN(63, ls);
                        lm = MIN(63, lm);
                    }
                    q45_pack_scales(s, j, ls, lm);
                }
                *hd = GGML_FP32_TO_FP16(d_block);
                *hdmin = GGML_FP32_TO_FP16(m_block);
            }
            q45_requantize(s, *hd, *hdmin, L, x, nmax);
            if (nmax == 15) {
                uint8_t * q = ((block_q4_K *)out)->qs;
                for (int j = 0; j < QK_K; j += 64) {
                    for (int l = 0; l < 32; ++l) q[l] = L[j + l] | (L[j + l + 32] << 4);
                    q += 32;
                }
            } else {
                q5_pack_levels((block_q5_K *)out, L);
            }
        }
    }
}

/* Q6_K: 16 sub-blocks of 16, two sets of 8 lanes */
MQ_CLONES static void quantize_q6_K_fast(const float * GGML_RESTRICT x, block_q6_K * GGML_RESTRICT y, int64_t nrow,
                                         int64_t n_per_row, const float * quant_weights) {
    const int64_t nb = n_per_row / QK_K;
    int8_t L[QK_K];
    float scales[QK_K/16];
    vf X[16], QW[16];
    vi Lv[16];
    for (int64_t row = 0; row < nrow; ++row) {
        for (int64_t i = 0; i < nb; i++, x += QK_K, y++) {
            for (int g = 0; g < 2; ++g) {
                vload_cols(X, x + 128*g, 16, 16);
                if (quant_weights) vload_cols(QW, quant_weights + QK_K*i + 128*g, 16, 16);
                vf scale = make_qx_quants_v(16, 32, X, Lv, quant_weights ? QW : NULL);
                vstore_lanes(scale, scales + 8*g);
                vstore_levels_i8(Lv, L + 128*g, 16);
            }
            float max_scale = 0;
            float max_abs_scale = 0;
            for (int ib = 0; ib < QK_K/16; ++ib) {
                const float scale = scales[ib];
                const float abs_scale = fabsf(scale);
                if (abs_scale > max_abs_scale) {
                    max_abs_scale = abs_scale;
                    max_scale = scale;
                }
            }

            if (max_abs_scale < GROUP_MAX_EPS) {
                memset(y, 0, sizeof(block_q6_K));
                y->d = GGML_FP32_TO_FP16(0.f);
                continue;
            }

            float iscale = -128.f/max_scale;
            y->d = GGML_FP32_TO_FP16(1/iscale);
            for (int ib = 0; ib < QK_K/16; ++ib) {
                y->scales[ib] = MIN(127, nearest_int(iscale*scales[ib]));
            }

            for (int j = 0; j < QK_K/16; ++j) {
                float d = GGML_FP16_TO_FP32(y->d) * y->scales[j];
                if (!d) {
                    continue;
                }
                for (int ii = 0; ii < 16; ++ii) {
                    int l = nearest_int(x[16*j + ii]/d);
                    l = MAX(-32, MIN(31, l));
                    L[16*j + ii] = l + 32;
                }
            }

            uint8_t * GGML_RESTRICT ql = y->ql;
            uint8_t * GGML_RESTRICT qh = y->qh;
            for (int j = 0; j < QK_K; j += 128) {
                for (int l = 0; l < 32; ++l) {
                    const uint8_t q1 = L[j + l +  0] & 0xF;
                    const uint8_t q2 = L[j + l + 32] & 0xF;
                    const uint8_t q3 = L[j + l + 64] & 0xF;
                    const uint8_t q4 = L[j + l + 96] & 0xF;
                    ql[l+ 0] = q1 | (q3 << 4);
                    ql[l+32] = q2 | (q4 << 4);
                    qh[l] = (L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6);
                }
                ql += 64;
                qh += 32;
            }
        }
    }
}

/* Q3_K: 16 sub-blocks of 16, two sets of 8 lanes */
MQ_CLONES static void quantize_q3_K_fast(const float * GGML_RESTRICT x, block_q3_K * GGML_RESTRICT y, int64_t nrow,
                                         int64_t n_per_row, const float * quant_weights) {
    const int64_t nb = n_per_row / QK_K;
    int8_t L[QK_K];
    float scales[QK_K/16];
    float sw[QK_K/16];
    int8_t Ls[QK_K/16];
    vf X[16], W[16];
    vi Lv[16];
    for (int64_t row = 0; row < nrow; ++row) {
        for (int64_t i = 0; i < nb; i++, x += QK_K, y++) {
            float sigma2 = 0;
            if (quant_weights) {
                float sumx2 = 0;
                for (int j = 0; j < QK_K; ++j) sumx2 += x[j]*x[j];
                sigma2 = 2*sumx2/QK_K;
            }
            for (int g = 0; g < 2; ++g) {
                vload_cols(X, x + 128*g, 16, 16);
                vf scale;
                if (!quant_weights) {
                    scale = make_q3_quants_v(16, 4, X, Lv);
                } else {
                    vload_cols(W, quant_weights + QK_K*i + 128*g, 16, 16);
                    for (int l = 0; l < 16; ++l) W[l] = W[l] * vsqrt(vsplat(sigma2) + X[l] * X[l]);
                    vf sumw = vsplat(0);
                    for (int l = 0; l < 16; ++l) sumw += W[l];
                    vstore_lanes(sumw, sw + 8*g);
                    scale = make_qx_quants_v(16, 4, X, Lv, W);
                }
                vstore_lanes(scale, scales + 8*g);
                vstore_levels_i8(Lv, L + 128*g, 16);
            }
            memset(y->scales, 0, 12);
            if (!quant_weights) { /* quantize_row_q3_K_ref */
                float max_scale = 0;
                float amax = 0;
                for (int j = 0; j < QK_K/16; ++j) {
                    float scale = fabsf(scales[j]);
                    if (scale > amax) {
                        amax = scale; max_scale = scales[j];
                    }
                }
                if (max_scale) {
                    float iscale = -32.f/max_scale;
                    for (int j = 0; j < QK_K/16; ++j) {
                        int8_t l = nearest_int(iscale*scales[j]);
                        l = MAX(-32, MIN(31, l)) + 32;
                        if (j < 8) {
                            y->scales[j] = l & 0xF;
                        } else {
                            y->scales[j-8] |= ((l & 0xF) << 4);
                        }
                        l >>= 4;
                        y->scales[j%4 + 8] |= (l << (2*(j/4)));
                    }
                    y->d = GGML_FP32_TO_FP16(1/iscale);
                } else {
                    y->d = GGML_FP32_TO_FP16(0.f);
                }
            } else { /* quantize_row_q3_K_impl */
                float d_block = make_qx_quants(QK_K/16, 32, scales, Ls, 1, sw);
                for (int j = 0; j < QK_K/16; ++j) {
                    int l = Ls[j];
                    if (j < 8) {
                        y->scales[j] = l & 0xF;
                    } else {
                        y->scales[j-8] |= ((l & 0xF) << 4);
                    }
                    l >>= 4;
                    y->scales[j%4 + 8] |= (l << (2*(j/4)));
                }
                y->d = GGML_FP32_TO_FP16(d_block);
            }
            q3_pack(y, L, x);
        }
    }
}

/* Q2_K: 16 sub-blocks of 16, two sets of 8 lanes */
MQ_CLONES static void quantize_q2_K_fast(const float * GGML_RESTRICT x, block_q2_K * GGML_RESTRICT y, int64_t nrow,
                                         int64_t n_per_row, const float * quant_weights) {
    const int64_t nb = n_per_row / QK_K;
    const float q4scale = 15.f;
    uint8_t L[QK_K];
    float mins[QK_K/16];
    float scales[QK_K/16];
    float sw[QK_K/16];
    uint8_t Ls[QK_K/16], Lm[QK_K/16];
    vf X[16], W[16], the_min;
    vi Lv[16];
    for (int64_t row = 0; row < nrow; ++row) {
        for (int64_t i = 0; i < nb; i++, x += QK_K, y++) {
            float sigma2 = 0;
            if (quant_weights) {
                float sumx2 = 0;
                for (int j = 0; j < QK_K; ++j) sumx2 += x[j]*x[j];
                sigma2 = sumx2/QK_K;
            }
            for (int g = 0; g < 2; ++g) {
                vload_cols(X, x + 128*g, 16, 16);
                vf scale;
                if (!quant_weights) {
                    for (int l = 0; l < 16; ++l) W[l] = vabs(X[l]);
                    scale = make_qkx2_quants_v(16, 3, X, W, Lv, &the_min, -0.5f, 0.1f, 15, true);
                } else {
                    vload_cols(W, quant_weights + QK_K*i + 128*g, 16, 16);
                    for (int l = 0; l < 16; ++l) W[l] = W[l] * vsqrt(vsplat(sigma2) + X[l] * X[l]);
                    vf sumw = vsplat(0);
                    for (int l = 0; l < 16; ++l) sumw += W[l];
                    vstore_lanes(sumw, sw + 8*g);
                    scale = make_qkx2_quants_v(16, 3, X, W, Lv, &the_min, -0.9f, 0.05f, 36, false);
                }
                vstore_lanes(scale, scales + 8*g);
                vstore_lanes(the_min, mins + 8*g);
                vstore_levels_u8(Lv, L + 128*g, 16);
            }
            if (!quant_weights) { /* quantize_row_q2_K_ref */
                float max_scale = 0;
                float max_min = 0;
                for (int j = 0; j < QK_K/16; ++j) {
                    if (scales[j] > max_scale) max_scale = scales[j];
                    if (mins[j] > max_min) max_min = mins[j];
                }
                if (max_scale > 0) {
                    float iscale = q4scale/max_scale;
                    for (int j = 0; j < QK_K/16; ++j) {
                        int l = nearest_int(iscale*scales[j]);
                        y->scales[j] = l;
                    }
                    y->d = GGML_FP32_TO_FP16(max_scale/q4scale);
                } else {
                    for (int j = 0; j < QK_K/16; ++j) y->scales[j] = 0;
                    y->d = GGML_FP32_TO_FP16(0.f);
                }
                if (max_min > 0) {
                    float iscale = q4scale/max_min;
                    for (int j = 0; j < QK_K/16; ++j) {
                        int l = nearest_int(iscale*mins[j]);
                        y->scales[j] |= (l << 4);
                    }
                    y->dmin = GGML_FP32_TO_FP16(max_min/q4scale);
                } else {
                    y->dmin = GGML_FP32_TO_FP16(0.f);
                }
            } else { /* quantize_row_q2_K_impl */
                float dm = make_qp_quants(QK_K/16, 15, scales, Ls, sw);
                float mm = make_qp_quants(QK_K/16, 15, mins,   Lm, sw);
                y->d    = GGML_FP32_TO_FP16(dm);
                y->dmin = GGML_FP32_TO_FP16(mm);
                for (int j = 0; j < QK_K/16; ++j) {
                    y->scales[j] = Ls[j] | (Lm[j] << 4);
                }
            }
            q2_pack(y, L, x);
        }
    }
}

/* ---- the legacy types with an imatrix (quantize_row_q{4,5}_{0,1}_impl): 8 blocks of 32 of a row
 * in the lanes, the blocks left over (fewer than 8) by the scalar search; then ggml's packing ---- */

static inline void legacy_pack(int type, void * vy, int64_t ib, float d, float min, const uint8_t * L) {
    uint32_t qh = 0;
    uint8_t * qs;
    switch (type) {
        case GGML_TYPE_Q4_0: {
            block_q4_0 * y = (block_q4_0 *)vy + ib;
            y->d = GGML_FP32_TO_FP16(d);
            for (int j = 0; j < 16; ++j) y->qs[j] = L[j] | (L[j+16] << 4);
            return;
        }
        case GGML_TYPE_Q4_1: {
            block_q4_1 * y = (block_q4_1 *)vy + ib;
            y->d = GGML_FP32_TO_FP16(d);
            y->m = GGML_FP32_TO_FP16(-min);
            for (int j = 0; j < 16; ++j) y->qs[j] = L[j] | (L[j+16] << 4);
            return;
        }
        case GGML_TYPE_Q5_0: {
            block_q5_0 * y = (block_q5_0 *)vy + ib;
            y->d = GGML_FP32_TO_FP16(d);
            qs = y->qs;
            for (int j = 0; j < 16; ++j) {
                const uint8_t xi0 = L[j];
                const uint8_t xi1 = L[j+16];
                qs[j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
                qh |= ((xi0 & 0x10u) >> 4) << (j + 0);
                qh |= ((xi1 & 0x10u) >> 4) << (j + QK5_0/2);
            }
            memcpy(&y->qh, &qh, sizeof(qh));
            return;
        }
        default: {
            block_q5_1 * y = (block_q5_1 *)vy + ib;
            y->d = GGML_FP32_TO_FP16(d);
            y->m = GGML_FP32_TO_FP16(-min);
            qs = y->qs;
            for (int j = 0; j < 16; ++j) {
                const uint8_t xi0 = L[j];
                const uint8_t xi1 = L[j+16];
                qs[j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
                qh |= ((xi0 & 0x10u) >> 4) << (j + 0);
                qh |= ((xi1 & 0x10u) >> 4) << (j + QK5_0/2);
            }
            memcpy(&y->qh, &qh, sizeof(qh));
            return;
        }
    }
}

MQ_CLONES static void quantize_legacy_impl_fast(int type, const float * GGML_RESTRICT x, void * GGML_RESTRICT vy,
                                                int64_t nrow, int64_t n_per_row, const float * quant_weights) {
    const bool affine = type == GGML_TYPE_Q4_1 || type == GGML_TYPE_Q5_1;
    const int nmax = type == GGML_TYPE_Q4_0 ? 8 : type == GGML_TYPE_Q5_0 ? 16 : type == GGML_TYPE_Q4_1 ? 15 : 31;
    const int64_t nb = n_per_row / 32;
    const size_t row_size = ggml_row_size(type, n_per_row);
    uint8_t * out = vy;
    vf X[32], W[32], the_min = vsplat(0);
    vi Lv[32];
    float weight[32], d[VL], mins[VL];
    uint8_t L[VL * 32], Laux[32];
    int8_t Ls[32];
    for (int64_t row = 0; row < nrow; ++row, x += n_per_row, out += row_size) {
        float sum_x2 = 0;
        for (int j = 0; j < n_per_row; ++j) sum_x2 += x[j]*x[j];
        float sigma2 = sum_x2/n_per_row;
        int64_t ib = 0;
        for (; ib + VL <= nb; ib += VL) {
            vload_cols(X, x + 32*ib, 32, 32);
            vload_cols(W, quant_weights + 32*ib, 32, 32);
            for (int j = 0; j < 32; ++j) W[j] = W[j] * vsqrt(vsplat(sigma2) + X[j] * X[j]);
            vf scale = affine ? make_qkx2_quants_v(32, nmax, X, W, Lv, &the_min, -0.9f, 0.05f, 36, false)
                              : make_qx_quants_v(32, nmax, X, Lv, W);
            vstore_lanes(scale, d);
            vstore_lanes(the_min, mins);
            vstore_levels_u8(Lv, L, 32);
            for (int k = 0; k < VL; ++k) legacy_pack(type, out, ib + k, d[k], mins[k], L + 32*k);
        }
        for (; ib < nb; ++ib) {  /* the scalar code for the blocks left over */
            const float * xb = x + 32 * ib;
            const float * qw = quant_weights + 32 * ib;
            for (int j = 0; j < 32; ++j) weight[j] = qw[j] * sqrtf(sigma2 + xb[j]*xb[j]);
            float min = 0;
            float db;
            if (affine) {
                db = make_qkx3_quants(32, nmax, xb, weight, L, &min, Laux, -0.9f, 0.05f, 36, false);
            } else {
                db = make_qx_quants(32, nmax, xb, Ls, 1, weight);
                memcpy(L, Ls, 32);
            }
            legacy_pack(type, out, ib, db, min, L);
        }
    }
}

/* ---- Q8_0 and the float16 cast: no sums, so the vectorised loops are the scalar code's results ---- */

/* roundf (half away from zero) lane by lane for |v| < 2^23: truncate, then the fraction v - trunc(v),
 * which is exact there */
static MQ_INLINE vi vround_away(vf v) {
    const vi i = __builtin_convertvector(v, vi);
    const vf f = v - vfloat(i);
    return i - (f >= vsplat(0.5f)) + (f <= vsplat(-0.5f)); /* a true comparison is -1 */
}

typedef int8_t vc8 __attribute__((vector_size(VL)));

/* -1 in each lane whose value is NaN or infinite (all exponent bits set) */
static MQ_INLINE vi vnonfinite(vf a) { return ((vi)a & visplat(0x7f800000)) == visplat(0x7f800000); }

/* the largest of 8 lanes: a tree of pairwise maxima (lane order does not matter to a maximum) */
static MQ_INLINE int32_t vimax_lanes(vi m) {
    m = visel(m > __builtin_shuffle(m, (vi){4, 5, 6, 7, 0, 1, 2, 3}), m, __builtin_shuffle(m, (vi){4, 5, 6, 7, 0, 1, 2, 3}));
    m = visel(m > __builtin_shuffle(m, (vi){2, 3, 0, 1, 6, 7, 4, 5}), m, __builtin_shuffle(m, (vi){2, 3, 0, 1, 6, 7, 4, 5}));
    m = visel(m > __builtin_shuffle(m, (vi){1, 0, 3, 2, 5, 4, 7, 6}), m, __builtin_shuffle(m, (vi){1, 0, 3, 2, 5, 4, 7, 6}));
    return m[0];
}

/* One Q8_0 block's scale, from the bits of its largest |x| (both Q8_0 paths below find those their
 * own way): d written, 1/d (0 for an all-zero block) into *id, 1 returned. A block holding a NaN or
 * an infinity takes ggml's scalar loop whole instead, and 0 is returned. */
static MQ_INLINE int q8_0_block_scale(int32_t amax_bits, const float * xb, block_q8_0 * yb, float * id) {
    if (amax_bits >= 0x7f800000) {
        quantize_row_q8_0_ref(xb, yb, QK8_0);
        return 0;
    }
    float amax;
    memcpy(&amax, &amax_bits, sizeof amax);
    const float d = amax / ((1 << 7) - 1);
    *id = d ? 1.0f/d : 0.0f;
    yb->d = GGML_FP32_TO_FP16(d);
    return 1;
}

/* quantize_row_q8_0_ref, 8 lanes at a time. |x| as the bits of a float >= +0 orders like the
 * float, and every NaN or infinity orders above every finite value: one integer maximum over the
 * block gives the scalar loop's amax (a maximum is the same whatever the order of comparisons) or
 * says the block holds a NaN/Inf, where the order would matter, and that block takes the scalar
 * code itself. |x*id| <= 127 (plus rounding), well inside vround_away's range. */
MQ_CLONES static void quantize_q8_0_fast(const float * GGML_RESTRICT x, block_q8_0 * GGML_RESTRICT y, int64_t k) {
    const int64_t nb = k / QK8_0;
    const vi abs_mask = visplat(0x7fffffff);
    for (int64_t i = 0; i < nb; i++) {
        vf v[QK8_0 / VL];
        for (int j = 0; j < QK8_0 / VL; ++j) {
            memcpy(&v[j], x + i*QK8_0 + j*VL, sizeof v[j]);
        }
        const vi a0 = (vi)v[0] & abs_mask, a1 = (vi)v[1] & abs_mask, a2 = (vi)v[2] & abs_mask, a3 = (vi)v[3] & abs_mask;
        const vi m01 = visel(a0 > a1, a0, a1), m23 = visel(a2 > a3, a2, a3);
        float id;
        if (!q8_0_block_scale(vimax_lanes(visel(m01 > m23, m01, m23)), x + i*QK8_0, y + i, &id)) {
            continue;
        }
        for (int j = 0; j < QK8_0 / VL; ++j) {
            const vc8 q = __builtin_convertvector(vround_away(v[j] * vsplat(id)), vc8);
            memcpy(y[i].qs + j*VL, &q, sizeof q);
        }
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
__attribute__((target("avx,f16c"))) static void f32_to_f16_f16c(const float * x, uint16_t * y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm_storeu_si128((__m128i *)(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    }
    for (; i < n; ++i) y[i] = ggml_compute_fp32_to_fp16(x[i]);
}
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(MQ_NO_CLONES)
#define MQ_Q8_0_AVX2 1
/* quantize_q8_0_fast in AVX2 intrinsics: the same operations (integer maximum of |x|'s bits, the
 * scalar amax, d and id, truncate-and-fraction rounding half away from zero), with the int8 levels
 * packed by vpackssdw/vpacksswb (exact: |level| <= 127) rather than lane by lane as GCC writes the
 * generic conversion */
__attribute__((target("avx2"))) static void quantize_q8_0_avx2(const float * x, block_q8_0 * y, int64_t k) {
    const int64_t nb = k / QK8_0;
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
    const __m256 half = _mm256_set1_ps(0.5f), minus_half = _mm256_set1_ps(-0.5f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t i = 0; i < nb; i++) {
        const float * xb = x + i*QK8_0;
        __m256 v[4];
        __m256i m = _mm256_setzero_si256();
        for (int j = 0; j < 4; ++j) {
            v[j] = _mm256_loadu_ps(xb + 8*j);
            m = _mm256_max_epi32(m, _mm256_and_si256(_mm256_castps_si256(v[j]), abs_mask));
        }
        __m128i h = _mm_max_epi32(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
        h = _mm_max_epi32(h, _mm_shuffle_epi32(h, 0x4e));
        h = _mm_max_epi32(h, _mm_shuffle_epi32(h, 0xb1));
        float id;
        if (!q8_0_block_scale(_mm_cvtsi128_si32(h), xb, y + i, &id)) {
            continue;
        }
        const __m256 vid = _mm256_set1_ps(id);
        __m256i q[4];
        for (int j = 0; j < 4; ++j) {
            const __m256 s = _mm256_mul_ps(v[j], vid);
            const __m256i t = _mm256_cvttps_epi32(s);
            const __m256 f = _mm256_sub_ps(s, _mm256_cvtepi32_ps(t));
            const __m256i up = _mm256_castps_si256(_mm256_cmp_ps(f, half, _CMP_GE_OQ));
            const __m256i down = _mm256_castps_si256(_mm256_cmp_ps(f, minus_half, _CMP_LE_OQ));
            q[j] = _mm256_add_epi32(_mm256_sub_epi32(t, up), down);
        }
        const __m256i q8 = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        _mm256_storeu_si256((__m256i *)y[i].qs, _mm256_permutevar8x32_epi32(q8, order));
    }
}
#endif

/* Q8_0 by the fastest version this CPU runs (every one gives quantize_row_q8_0_ref's bytes); the
 * baseline build for the tests (MQ_NO_CLONES) runs the generic lane code */
static void quantize_q8_0_best(const float * x, block_q8_0 * y, int64_t k) {
#ifdef MQ_Q8_0_AVX2
    if (__builtin_cpu_supports("avx2")) {
        quantize_q8_0_avx2(x, y, k);
        return;
    }
#endif
    quantize_q8_0_fast(x, y, k);
}

/* float32 -> IEEE float16, round to nearest even (numpy's and torch's cast, for finite values);
 * F16C where the CPU has it unless `portable` (ggml's bit arithmetic, for the tests) */
MQ_EXPORT void mq_f32_to_f16(const float * x, uint16_t * y, int64_t n, int portable) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (!portable && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx")) {
        f32_to_f16_f16c(x, y, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; ++i) y[i] = ggml_compute_fp32_to_fp16(x[i]);
}

/* 1 when no value is NaN or infinite (all exponent bits set): 32 values a step in vector lanes */
MQ_CLONES static int all_finite(const float * x, int64_t n) {
    vi bad = visplat(0);
    int64_t i = 0;
    for (; i + 4*VL <= n; i += 4*VL) {
        vi v[4]; /* one vector load each (a copy of the four at once goes through the stack) */
        for (int j = 0; j < 4; ++j) {
            memcpy(&v[j], x + i + j*VL, sizeof v[j]);
        }
        bad |= ((v[0] & visplat(0x7f800000)) == visplat(0x7f800000)) | ((v[1] & visplat(0x7f800000)) == visplat(0x7f800000))
             | ((v[2] & visplat(0x7f800000)) == visplat(0x7f800000)) | ((v[3] & visplat(0x7f800000)) == visplat(0x7f800000));
    }
    uint32_t tail = 0;
    for (; i < n; ++i) {
        uint32_t b;
        memcpy(&b, x + i, sizeof b);
        tail |= (b & UINT32_C(0x7f800000)) == UINT32_C(0x7f800000);
    }
    return !vany(bad) && !tail;
}

MQ_EXPORT int mq_all_finite(const float * x, int64_t n) { return all_finite(x, n); }

/* ggml-impl.h's ggml_compute_fp32_to_bf16 (round to nearest even, NaN kept quiet), as gguf-py does it */
static void f32_to_bf16(const float * GGML_RESTRICT x, uint16_t * GGML_RESTRICT y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        uint32_t u;
        memcpy(&u, x + i, sizeof u);
        const uint32_t rounded = (u + (0x7fff + ((u >> 16) & 1))) >> 16;
        y[i] = (u & 0x7fffffff) > 0x7f800000 ? (uint16_t)((u >> 16) | 64) : (uint16_t)rounded;
    }
}

/* ======== the entry points ======== */

MQ_EXPORT int mq_abi(void) { return MQ_ABI; }

/* `ggml_quantize_chunk` for one of the types above: nrow rows of n_per_row floats into dst;
 * quant_weights (n_per_row values, or NULL) is the importance matrix. The K-quants, Q8_0 and
 * the legacy types with an imatrix run the versions above unless `reference` (ggml's scalar
 * code, for the self-test). Returns the bytes
 * written, 0 for a type not compiled here. */
MQ_EXPORT size_t mq_quantize(int type, const float * src, void * dst, int64_t nrow, int64_t n_per_row,
                             const float * quant_weights, int reference) {
    const size_t size = nrow * ggml_row_size(type, n_per_row);
    if (!reference) {
        switch (type) {
            case GGML_TYPE_Q2_K: quantize_q2_K_fast(src, dst, nrow, n_per_row, quant_weights); return size;
            case GGML_TYPE_Q3_K: quantize_q3_K_fast(src, dst, nrow, n_per_row, quant_weights); return size;
            case GGML_TYPE_Q4_K: quantize_q45_K_fast(src, dst, nrow, n_per_row, quant_weights, 15); return size;
            case GGML_TYPE_Q5_K: quantize_q45_K_fast(src, dst, nrow, n_per_row, quant_weights, 31); return size;
            case GGML_TYPE_Q6_K: quantize_q6_K_fast(src, dst, nrow, n_per_row, quant_weights); return size;
            case GGML_TYPE_Q8_0: quantize_q8_0_best(src, dst, nrow * n_per_row); return size;
            case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_0: case GGML_TYPE_Q5_1:
                if (quant_weights) {
                    quantize_legacy_impl_fast(type, src, dst, nrow, n_per_row, quant_weights);
                    return size;
                }
                break;
        }
    }
    switch (type) {
        case GGML_TYPE_Q4_0: return quantize_q4_0(src, dst, nrow, n_per_row, quant_weights);
        case GGML_TYPE_Q4_1: return quantize_q4_1(src, dst, nrow, n_per_row, quant_weights);
        case GGML_TYPE_Q5_0: return quantize_q5_0(src, dst, nrow, n_per_row, quant_weights);
        case GGML_TYPE_Q5_1: return quantize_q5_1(src, dst, nrow, n_per_row, quant_weights);
        case GGML_TYPE_Q8_0: return quantize_q8_0(src, dst, nrow, n_per_row, quant_weights);
        case GGML_TYPE_Q2_K: return quantize_q2_K(src, dst, nrow, n_per_row, quant_weights);
        case GGML_TYPE_Q3_K: return quantize_q3_K(src, dst, nrow, n_per_row, quant_weights);
        case GGML_TYPE_Q4_K: return quantize_q4_K(src, dst, nrow, n_per_row, quant_weights);
        case GGML_TYPE_Q5_K: return quantize_q5_K(src, dst, nrow, n_per_row, quant_weights);
        case GGML_TYPE_Q6_K: return quantize_q6_K(src, dst, nrow, n_per_row, quant_weights);
        case GGML_TYPE_BF16: f32_to_bf16(src, dst, nrow * n_per_row); return size;
    }
    return 0;
}

#define MQ_NONFINITE ((size_t)-1)
#define MQ_CHECK_VALUES 16384 /* values checked, then encoded, a step: 64 KB, still in cache for the encoder */

/* mq_quantize (reference = 0), or for GGML_TYPE_F16 mq_f32_to_f16 (F16C where the CPU has it),
 * with the NaN/Inf check folded in: the values go in steps of about MQ_CHECK_VALUES (whole rows
 * for a quantized type), each checked and then encoded while it is still in cache, so the source
 * is read from memory once. Rows are independent in every type (and the cast value by value), so
 * the steps change no byte. Returns the bytes written, or MQ_NONFINITE at the first step holding
 * a NaN or an infinity (dst is then partly written). */
MQ_EXPORT size_t mq_encode_checked(int type, const float * src, void * dst, int64_t nrow, int64_t n_per_row,
                                   const float * quant_weights) {
    if (type == GGML_TYPE_F16) {
        const int64_t n = nrow * n_per_row;
        for (int64_t i = 0; i < n; i += MQ_CHECK_VALUES) {
            const int64_t m = MIN(MQ_CHECK_VALUES, n - i);
            if (!all_finite(src + i, m)) {
                return MQ_NONFINITE;
            }
            mq_f32_to_f16(src + i, (uint16_t *)dst + i, m, 0);
        }
        return (size_t)n * sizeof(uint16_t);
    }
    const size_t row_size = ggml_row_size(type, n_per_row);
    const int64_t step = n_per_row >= MQ_CHECK_VALUES ? 1 : MQ_CHECK_VALUES / (n_per_row > 0 ? n_per_row : 1);
    size_t total = 0;
    for (int64_t row = 0; row < nrow; row += step) {
        const int64_t n = MIN(step, nrow - row);
        const float * x = src + row * n_per_row;
        if (!all_finite(x, n * n_per_row)) {
            return MQ_NONFINITE;
        }
        total += mq_quantize(type, x, (uint8_t *)dst + row * row_size, n, n_per_row, quant_weights, 0);
    }
    return total;
}
