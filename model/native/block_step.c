/* One GPT-2 block for one new token per row, in one call: layer norm, the int8 QKV product, the new
 * keys and values written into the cache, attention, the int8 output product and residual, layer
 * norm, the int8 MLP with GPT-2's tanh GELU, and its residual (AVX-512).
 *
 * Why: a step of a small model is about a hundred PyTorch calls of a few microseconds each (the
 * shipped 4 x 256 model: 1.3 ms a step, against 0.9 ms a token for CTranslate2's fused C++ step);
 * here a block is one call. Every row goes through the same operations on its own numbers, in the
 * same order whatever the batch (layer norm per row, products with per-row quantization and exact
 * integer sums, attention per row over its own positions), so a row's output is the same alone and
 * in any batch.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "vector_math.h"

typedef struct {
    const int8_t *packed; /* (blocks, k4, 64, 4) */
    int64_t blocks, in_features, out_features;
    const float *scales;  /* per padded output */
    const int32_t *sums;  /* per padded output */
    const float *bias;    /* out_features values or NULL */
} tw_linear;

typedef struct {
    const float *ln_1_weight, *ln_1_bias, *ln_2_weight, *ln_2_bias;
    float ln_1_eps, ln_2_eps;
    tw_linear c_attn, attn_proj, c_fc, mlp_proj;
} tw_block;

int tw_int8_gemm(const float *x, int64_t m, int64_t k, const int8_t *w, int64_t blocks, const float *scale_w,
                 const int32_t *sum_w, const float *bias, float *y, int64_t n);
int tw_decode_attention(const float *q, int64_t q_stride, const float *keys, const float *values, int64_t row_stride,
                        int64_t head_stride, int64_t rows, int64_t heads, int64_t dim, int64_t width,
                        const int64_t *pad, float scale, float *out, float *scratch);


static void layer_norm(const float *x, int64_t rows, int64_t e, const float *weight, const float *bias, float eps,
                       float *out) {
    for (int64_t r = 0; r < rows; ++r) {
        const float *xr = x + r * e;
        float *o = out + r * e;
        __m512 sum = _mm512_setzero_ps();
        int64_t i = 0;
        for (; i + 16 <= e; i += 16) sum = _mm512_add_ps(sum, _mm512_loadu_ps(xr + i));
        float total = _mm512_reduce_add_ps(sum);
        for (; i < e; ++i) total += xr[i];
        float mean = total / (float)e;
        __m512 mean_v = _mm512_set1_ps(mean), squares = _mm512_setzero_ps();
        for (i = 0; i + 16 <= e; i += 16) {
            __m512 d = _mm512_sub_ps(_mm512_loadu_ps(xr + i), mean_v);
            squares = _mm512_fmadd_ps(d, d, squares);
        }
        float variance = _mm512_reduce_add_ps(squares);
        for (; i < e; ++i) variance += (xr[i] - mean) * (xr[i] - mean);
        float inverse = 1.0f / sqrtf(variance / (float)e + eps);
        __m512 inv_v = _mm512_set1_ps(inverse);
        for (i = 0; i + 16 <= e; i += 16) {
            __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(xr + i), mean_v), inv_v);
            _mm512_storeu_ps(o + i, _mm512_fmadd_ps(d, _mm512_loadu_ps(weight + i), _mm512_loadu_ps(bias + i)));
        }
        for (; i < e; ++i) o[i] = (xr[i] - mean) * inverse * weight[i] + bias[i];
    }
}

/* GPT-2's gelu_new, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) = x / (1 + exp(-2 u)), in place. */
static void gelu_tanh(float *x, int64_t count) {
    const __m512 c = _mm512_set1_ps(-2.0f * 0.7978845608028654f), k = _mm512_set1_ps(0.044715f);
    const __m512 one = _mm512_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 16 <= count; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        __m512 u = _mm512_mul_ps(c, _mm512_fmadd_ps(_mm512_mul_ps(k, v), _mm512_mul_ps(v, v), v));
        _mm512_storeu_ps(x + i, _mm512_div_ps(v, _mm512_add_ps(one, tw_exp16(u))));
    }
    for (; i < count; ++i) {
        float v = x[i], u = -2.0f * 0.7978845608028654f * (v + 0.044715f * v * v * v);
        x[i] = v / (1.0f + expf(u));
    }
}

static void add_into(float *hidden, const float *y, int64_t count) {
    int64_t i = 0;
    for (; i + 16 <= count; i += 16)
        _mm512_storeu_ps(hidden + i, _mm512_add_ps(_mm512_loadu_ps(hidden + i), _mm512_loadu_ps(y + i)));
    for (; i < count; ++i) hidden[i] += y[i];
}

static int product(const tw_linear *layer, const float *x, int64_t rows, float *y) {
    return tw_int8_gemm(x, rows, layer->in_features, layer->packed, layer->blocks, layer->scales, layer->sums,
                        layer->bias, y, layer->out_features);
}

/* hidden: (rows, e) fp32, updated in place. keys/values: the cache views' first position (rows,
 * heads, width, dim, strides row_stride, head_stride, dim, 1), position width - 1 being this step's,
 * written here. scratch: at least rows * 9 * e + width floats. Returns 0, or a negative code. */
static int block_step(const tw_block *block, float *hidden, int64_t rows, int64_t e, float *keys, float *values,
                      int64_t row_stride, int64_t head_stride, int64_t heads, int64_t width, const int64_t *pad,
                      float scale, float *scratch) {
    int64_t dim = e / heads;
    if (dim * heads != e || block->c_attn.out_features != 3 * e || block->c_fc.in_features != e) return -3;
    int64_t inner = block->c_fc.out_features;
    float *normed = scratch, *qkv = normed + rows * e, *attended = qkv + rows * 3 * e;
    float *mlp = attended + rows * e, *attention_scratch = mlp + rows * inner;
    int status;
    layer_norm(hidden, rows, e, block->ln_1_weight, block->ln_1_bias, block->ln_1_eps, normed);
    if ((status = product(&block->c_attn, normed, rows, qkv))) return status;
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t h = 0; h < heads; ++h) {
            int64_t at = r * row_stride + h * head_stride + (width - 1) * dim;
            memcpy(keys + at, qkv + r * 3 * e + e + h * dim, sizeof(float) * (size_t)dim);
            memcpy(values + at, qkv + r * 3 * e + 2 * e + h * dim, sizeof(float) * (size_t)dim);
        }
    if ((status = tw_decode_attention(qkv, 3 * e, keys, values, row_stride, head_stride, rows, heads, dim, width, pad,
                                      scale, attended, attention_scratch)))
        return status;
    if ((status = product(&block->attn_proj, attended, rows, normed))) return status;
    add_into(hidden, normed, rows * e);
    layer_norm(hidden, rows, e, block->ln_2_weight, block->ln_2_bias, block->ln_2_eps, normed);
    if ((status = product(&block->c_fc, normed, rows, mlp))) return status;
    gelu_tanh(mlp, rows * inner);
    if ((status = product(&block->mlp_proj, mlp, rows, normed))) return status;
    add_into(hidden, normed, rows * e);
    return 0;
}

/* Every block in turn, in one call: between two blocks the C code runs straight on, where Python in
 * between (a loop over the blocks, each cache layer's bookkeeping) found its own data evicted by
 * the block's weights every time (GPT-2 small: 50 us a layer for two slices of the cache). keys[i],
 * values[i], row_strides[i], head_strides[i]: block i's cache views as in block_step. */
int tw_model_step(const tw_block *blocks, int64_t count, float *hidden, int64_t rows, int64_t e, float *const *keys,
                  float *const *values, const int64_t *row_strides, const int64_t *head_strides, int64_t heads,
                  int64_t width, const int64_t *pad, const float *scales, float *scratch) {
    for (int64_t i = 0; i < count; ++i) {
        int status = block_step(blocks + i, hidden, rows, e, keys[i], values[i], row_strides[i], head_strides[i],
                                   heads, width, pad, scales[i], scratch);
        if (status) return status;
    }
    return 0;
}
