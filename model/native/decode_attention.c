/* Attention for one new token per row, over that row's own cached positions (AVX-512F).
 *
 * Why hand-written: torch's SDPA for a query of one position cost 60-120 us a call on GPT-2 small
 * (12 heads, ~100 positions) and the lean step called it once per run of equally padded rows, so
 * eight stories of eight lengths made 96 calls a step (bench/kernels.py has the numbers). Here
 * one call attends every row and head, each row over positions [pad[r], width) of its cache, in a
 * fixed order that does not depend on the other rows: a row's output is the same alone and in any
 * batch.
 *
 * q: (rows, heads * dim) fp32, row stride q_stride; keys/values: fp32 at base pointers with
 * strides (row, head) in floats, positions contiguous rows of `dim` floats; out: (rows, heads * dim).
 * dim must be a multiple of 16 (at most 256). scratch: at least width floats.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#include "vector_math.h"


/* One row's head: scores over its positions, softmax, weighted sum of values. V: dim / 16, a
 * constant after inlining for the usual head sizes, so the vectors stay in registers. */
static inline __attribute__((always_inline)) void attend_head(int64_t V, const float *qh, const float *kh,
                                                              const float *vh, int64_t dim, int64_t first,
                                                              int64_t count, float scale, float *o, float *scratch) {
    __m512 qv[16];
    for (int64_t i = 0; i < V; ++i) qv[i] = _mm512_mul_ps(_mm512_loadu_ps(qh + 16 * i), _mm512_set1_ps(scale));
    float top = -INFINITY;
    for (int64_t j = 0; j < count; ++j) {
        const float *k = kh + (first + j) * dim;
        __m512 sum = _mm512_mul_ps(qv[0], _mm512_loadu_ps(k));
        for (int64_t i = 1; i < V; ++i) sum = _mm512_fmadd_ps(qv[i], _mm512_loadu_ps(k + 16 * i), sum);
        float s = _mm512_reduce_add_ps(sum);
        scratch[j] = s;
        top = s > top ? s : top;
    }
    __m512 top_v = _mm512_set1_ps(top), total_v = _mm512_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= count; j += 16) {
        __m512 e = tw_exp16(_mm512_sub_ps(_mm512_loadu_ps(scratch + j), top_v));
        _mm512_storeu_ps(scratch + j, e);
        total_v = _mm512_add_ps(total_v, e);
    }
    if (j < count) {
        __mmask16 mask = (__mmask16)((1u << (count - j)) - 1u);
        __m512 e = _mm512_maskz_mov_ps(mask, tw_exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, scratch + j), top_v)));
        _mm512_mask_storeu_ps(scratch + j, mask, e);
        total_v = _mm512_add_ps(total_v, e);
    }
    float total = _mm512_reduce_add_ps(total_v);
    __m512 acc[16];
    for (int64_t i = 0; i < V; ++i) acc[i] = _mm512_setzero_ps();
    for (j = 0; j < count; ++j) {
        const float *v = vh + (first + j) * dim;
        __m512 p = _mm512_set1_ps(scratch[j]);
        for (int64_t i = 0; i < V; ++i) acc[i] = _mm512_fmadd_ps(p, _mm512_loadu_ps(v + 16 * i), acc[i]);
    }
    __m512 inverse = _mm512_set1_ps(1.0f / total);
    for (int64_t i = 0; i < V; ++i) _mm512_storeu_ps(o + 16 * i, _mm512_mul_ps(acc[i], inverse));
}

/* Returns 0; -1 for a head size it does not take, -2 for a row whose padding leaves no position. */
int tw_decode_attention(const float *q, int64_t q_stride, const float *keys, const float *values, int64_t row_stride,
                        int64_t head_stride, int64_t rows, int64_t heads, int64_t dim, int64_t width,
                        const int64_t *pad, float scale, float *out, float *scratch) {
    if (dim % 16 || dim > 256 || dim <= 0) return -1;
    for (int64_t r = 0; r < rows; ++r)
        if (pad[r] < 0 || pad[r] >= width) return -2;
    for (int64_t r = 0; r < rows; ++r) {
        int64_t first = pad[r], count = width - first;
        for (int64_t h = 0; h < heads; ++h) {
            const float *qh = q + r * q_stride + h * dim;
            const float *kh = keys + r * row_stride + h * head_stride;
            const float *vh = values + r * row_stride + h * head_stride;
            float *o = out + r * heads * dim + h * dim;
            switch (dim / 16) {
            case 2: attend_head(2, qh, kh, vh, dim, first, count, scale, o, scratch); break;
            case 4: attend_head(4, qh, kh, vh, dim, first, count, scale, o, scratch); break;
            case 8: attend_head(8, qh, kh, vh, dim, first, count, scale, o, scratch); break;
            default: attend_head(dim / 16, qh, kh, vh, dim, first, count, scale, o, scratch); break;
            }
        }
    }
    return 0;
}
