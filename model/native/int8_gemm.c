/* y = x W^T + b with W in int8 (one scale per output channel) and x quantized per row to uint8,
 * on AVX-512 VNNI (vpdpbusd: 64 u8 x s8 products summed into 16 int32 lanes per instruction).
 *
 * Why hand-written: a decoding step reads every weight once per token, so on one core it is as
 * fast as the weight reads; torch's int8 kernels (FBGEMM, oneDNN, _weight_int8pack_mm) read
 * 3.0-3.6 GB/s on a Sapphire Rapids core where fp32 reads 6.7 (bench/kernels.py).
 *
 * Layout (made by model/vnni.py): W padded to N_pad = 64 * blocks outputs and K4 = ceil(K / 4)
 * groups of four inputs, stored [block][k4][64 outputs][4 inputs], so a block's weights are one
 * sequential stream and one 64-byte load holds 16 outputs x 4 inputs for each of its four vectors.
 *
 * Every row is quantized on its own (asymmetric, range [min(x, 0), max(x, 0)] onto 0..255) and its
 * integer products are exact, so a row's output does not depend on the other rows of its call:
 * the same story gives the same numbers alone and in any batch. No FMA contraction in the
 * epilogue, so model/vnni.py's torch reference reproduces it bit for bit.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define BLOCK 64   /* outputs per block: four vectors of 16 */
/* Software prefetch into L2, 16 KB ahead of the weights being multiplied. Measured on a Sapphire
 * Rapids core (weights from memory; GB/s of weights read, 1 row / 8 rows): 768 x 2304 without
 * prefetch 9.2 / 5.4, at 4 KB into L1 8.2 / 6.4, at 16 KB into L2 8.2 / 7.2; the 50257 x 768 head
 * 9.7 / 6.6 without, 10.2 / 8.6 at 16 KB into L2. Non-temporal prefetch (NTA) halved the engine's
 * speed. Override with -DPF_DIST=... -DPF_HINT=... to measure again. */
#ifndef PF_DIST
#define PF_DIST 16384
#endif
#ifndef PF_HINT
#define PF_HINT _MM_HINT_T1
#endif
#if PF_DIST > 0
#define PREFETCH(p)                                                      \
    do {                                                                 \
        _mm_prefetch((const char *)(p) + PF_DIST, PF_HINT);              \
        _mm_prefetch((const char *)(p) + PF_DIST + 64, PF_HINT);         \
        _mm_prefetch((const char *)(p) + PF_DIST + 128, PF_HINT);        \
        _mm_prefetch((const char *)(p) + PF_DIST + 192, PF_HINT);        \
    } while (0)
#else
#define PREFETCH(p) ((void)0)
#endif
#define ROWS 6     /* rows per register tile: 6 x 4 accumulators + 4 weight vectors <= 32 zmm (4 did no better) */


/* One row of x onto uint8 with its scale and zero point. q must hold k4 * 4 bytes. */
static void quantize_row(const float *x, int64_t k, int64_t k4, uint8_t *q, float *scale_out, int32_t *zero_out) {
    __m512 lo = _mm512_setzero_ps(), hi = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= k; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        lo = _mm512_min_ps(lo, v);
        hi = _mm512_max_ps(hi, v);
    }
    float mn = _mm512_reduce_min_ps(lo), mx = _mm512_reduce_max_ps(hi);
    for (; i < k; ++i) {
        mn = x[i] < mn ? x[i] : mn;
        mx = x[i] > mx ? x[i] : mx;
    }
    float scale = (mx - mn) / 255.0f;
    if (!(scale > 0.0f)) scale = 1.0f; /* a row of zeros (or NaN): every q is the zero point */
    float inverse = 1.0f / scale;
    float zero_f = nearbyintf(-mn * inverse);
    int32_t zero = zero_f < 0.0f ? 0 : (zero_f > 255.0f ? 255 : (int32_t)zero_f);
    __m512 inv = _mm512_set1_ps(inverse);
    __m512i zp = _mm512_set1_epi32(zero), top = _mm512_set1_epi32(255), bottom = _mm512_setzero_si512();
    for (i = 0; i + 16 <= k; i += 16) {
        __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + i), inv)); /* round to nearest even */
        v = _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(v, zp), bottom), top);
        _mm_storeu_si128((__m128i *)(q + i), _mm512_cvtepi32_epi8(v));
    }
    for (; i < k; ++i) {
        int32_t v = (int32_t)nearbyintf(x[i] * inverse) + zero;
        q[i] = (uint8_t)(v < 0 ? 0 : (v > 255 ? 255 : v));
    }
    for (; i < k4 * 4; ++i) q[i] = 0; /* padded inputs meet zero weights */
    *scale_out = scale;
    *zero_out = zero;
}

/* One vector of 16 outputs of one row from its exact sums: y = s_x s_w (sum - z_x sum(w)) + b, the
 * same operations in the same order on every path (so every path gives the same numbers). */
static inline __attribute__((always_inline)) void store16(const int32_t *sums16, int32_t zero, float scale_x,
                                                           const float *scale_w, const int32_t *sum_w,
                                                           const float *bias, float *y, int64_t col, int64_t n) {
    __mmask16 mask = n - col >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - col)) - 1u);
    __m512i exact = _mm512_sub_epi32(_mm512_load_si512((const void *)sums16),
                                     _mm512_mullo_epi32(_mm512_set1_epi32(zero), _mm512_loadu_si512(sum_w + col)));
    __m512 scale = _mm512_mul_ps(_mm512_set1_ps(scale_x), _mm512_loadu_ps(scale_w + col));
    __m512 out = _mm512_mul_ps(_mm512_cvtepi32_ps(exact), scale);
    if (bias) out = _mm512_add_ps(out, _mm512_maskz_loadu_ps(mask, bias + col));
    _mm512_mask_storeu_ps(y + col, mask, out);
}

/* R rows (R <= ROWS, a constant after inlining) times one block of 64 outputs. */
static inline __attribute__((always_inline)) void tile(
    int R, const uint8_t *q, int64_t q_stride, const float *scale_x, const int32_t *zero_x,
    const int8_t *w, int64_t k4, const float *scale_w, const int32_t *sum_w, const float *bias,
    float *y, int64_t y_stride, int64_t n0, int64_t n) {
    __m512i acc[ROWS][4];
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
        for (int b = 0; b < 4; ++b) acc[r][b] = _mm512_setzero_si512();
    for (int64_t g = 0; g < k4; ++g) {
        const int8_t *wg = w + g * 256;
        PREFETCH(wg);
        __m512i w0 = _mm512_load_si512((const void *)wg);
        __m512i w1 = _mm512_load_si512((const void *)(wg + 64));
        __m512i w2 = _mm512_load_si512((const void *)(wg + 128));
        __m512i w3 = _mm512_load_si512((const void *)(wg + 192));
#pragma GCC unroll 6
        for (int r = 0; r < R; ++r) {
            int32_t four;
            memcpy(&four, q + r * q_stride + g * 4, 4);
            __m512i a = _mm512_set1_epi32(four);
            acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], a, w0);
            acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], a, w1);
            acc[r][2] = _mm512_dpbusd_epi32(acc[r][2], a, w2);
            acc[r][3] = _mm512_dpbusd_epi32(acc[r][3], a, w3);
        }
    }
    int32_t sums[ROWS][4][16] __attribute__((aligned(64)));
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
        for (int b = 0; b < 4; ++b) _mm512_store_si512((void *)sums[r][b], acc[r][b]);
    for (int r = 0; r < R; ++r)
        for (int b = 0; b < 4 && n0 + b * 16 < n; ++b)
            store16(sums[r][b], zero_x[r], scale_x[r], scale_w, sum_w, bias, y + r * y_stride, n0 + b * 16, n);
}

/* One row times two blocks far apart in memory, at once: two sequential streams of weights. One
 * core read more that way (weights from memory, GB/s, against one stream: 768 x 2304 8.7 / 8.3,
 * 3072 x 768 9.4 / 8.7, the 50257 x 768 head 10.9 / 9.6; GPT-2 small's engine step 5 % faster).
 * No software prefetch here: the hardware's streams suffice for one row, and GPT-2 small's whole
 * step was 7 % faster without it (20.6 against 22.1 ms: the rest of the step found more of its
 * data in cache); with eight rows it was 23 % slower without, so the tiles of several rows keep it. */
static void tile1_two(const uint8_t *q, const float *scale_x, const int32_t *zero_x, const int8_t *wa,
                      const int8_t *wb, int64_t k4, const float *scale_w, const int32_t *sum_w, const float *bias,
                      float *y, int64_t na, int64_t nb, int64_t n) {
    __m512i acc[2][4];
#pragma GCC unroll 2
    for (int s = 0; s < 2; ++s)
#pragma GCC unroll 4
        for (int b = 0; b < 4; ++b) acc[s][b] = _mm512_setzero_si512();
    for (int64_t g = 0; g < k4; ++g) {
        const int8_t *ga = wa + g * 256, *gb = wb + g * 256;
        int32_t four;
        memcpy(&four, q + g * 4, 4);
        __m512i a = _mm512_set1_epi32(four);
#pragma GCC unroll 4
        for (int b = 0; b < 4; ++b) {
            acc[0][b] = _mm512_dpbusd_epi32(acc[0][b], a, _mm512_load_si512((const void *)(ga + 64 * b)));
            acc[1][b] = _mm512_dpbusd_epi32(acc[1][b], a, _mm512_load_si512((const void *)(gb + 64 * b)));
        }
    }
    int32_t sums[2][4][16] __attribute__((aligned(64)));
#pragma GCC unroll 2
    for (int s = 0; s < 2; ++s)
#pragma GCC unroll 4
        for (int b = 0; b < 4; ++b) _mm512_store_si512((void *)sums[s][b], acc[s][b]);
    for (int s = 0; s < 2; ++s) {
        int64_t n0 = s ? nb : na;
        for (int b = 0; b < 4 && n0 + b * 16 < n; ++b)
            store16(sums[s][b], zero_x[0], scale_x[0], scale_w, sum_w, bias, y, n0 + b * 16, n);
    }
}

/* AMX (Sapphire Rapids and later): with several rows the VNNI tiles are bound by their multiply-adds
 * (GPT-2 small, eight rows: 19-20 ms of products a step against 13.5 for one row), while one AMX
 * TDPBUSD multiplies 16 rows x 64 inputs by 64 inputs x 16 outputs. The packed layout is already
 * AMX's: a B tile is 16 groups of four inputs for 16 outputs, rows 256 bytes apart. The sums are
 * the same exact int32 sums, and the epilogue the same, so a row's output is the same whichever
 * path computed it. Linux lends AMX's register state only on request (ARCH_REQ_XCOMP_PERM). */
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
#define AMX_ROWS 16
#define AMX_PREFETCH 8192 /* bytes ahead, into L2: eight rows through the 50257 x 768 head 4.2 ms against 4.8 without */
static int amx_granted = 0, amx_on = 0;

/* Asks Linux for AMX's state for this process and uses AMX from now on if granted; returns 1 then
 * (the caller checked the CPU's flags). */
int tw_amx_enable(void) {
    if (!amx_granted) amx_granted = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 ? 1 : -1;
    amx_on = amx_granted == 1;
    return amx_on;
}

/* Back to the VNNI tiles (to compare the two). */
void tw_amx_disable(void) { amx_on = 0; }

typedef struct {
    uint8_t palette_id;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((packed)) tile_config;

__attribute__((target("amx-tile,amx-int8"))) static void amx_rows(
    int64_t R, const uint8_t *q, int64_t q_stride, const float *scale_x, const int32_t *zero_x, const int8_t *w,
    int64_t blocks, int64_t k4, const float *scale_w, const int32_t *sum_w, const float *bias, float *y,
    int64_t n) {
    tile_config config __attribute__((aligned(64)));
    memset(&config, 0, sizeof config);
    config.palette_id = 1;
    for (int t = 0; t < 4; ++t) config.rows[t] = (uint8_t)R, config.colsb[t] = 64; /* C: R rows x 16 int32 */
    config.rows[4] = (uint8_t)R, config.colsb[4] = 64;                              /* A: R rows x 64 inputs */
    config.rows[5] = config.rows[6] = 16, config.colsb[5] = config.colsb[6] = 64;  /* B: 16 groups x 16 outputs */
    _tile_loadconfig(&config);
    int32_t sums[4][AMX_ROWS][16] __attribute__((aligned(64)));
    for (int64_t blk = 0; blk < blocks; ++blk) {
        const int8_t *wb = w + blk * k4 * 256;
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int64_t g = 0; g < k4; g += 16) {
            const int8_t *wg = wb + g * 256;
            for (int line = 0; line < 64; ++line) _mm_prefetch((const char *)wg + AMX_PREFETCH + 64 * line, _MM_HINT_T1);
            _tile_loadd(4, q + g * 4, q_stride);
            _tile_loadd(5, wg, 256);
            _tile_dpbusd(0, 4, 5);
            _tile_loadd(6, wg + 64, 256);
            _tile_dpbusd(1, 4, 6);
            _tile_loadd(5, wg + 128, 256);
            _tile_dpbusd(2, 4, 5);
            _tile_loadd(6, wg + 192, 256);
            _tile_dpbusd(3, 4, 6);
        }
        _tile_stored(0, sums[0], 64);
        _tile_stored(1, sums[1], 64);
        _tile_stored(2, sums[2], 64);
        _tile_stored(3, sums[3], 64);
        for (int64_t r = 0; r < R; ++r)
            for (int b = 0; b < 4 && blk * BLOCK + b * 16 < n; ++b)
                store16(sums[b][r], zero_x[r], scale_x[r], scale_w, sum_w, bias, y + r * n, blk * BLOCK + b * 16, n);
    }
    _tile_release();
}

/* x: (m, k) fp32 rows; w: packed (blocks, k4, 64, 4) int8, 64-byte aligned; scale_w, sum_w: per
 * padded output; bias: n values or NULL; y: (m, n) fp32. Returns 0, or -1 when memory ran out. */
int tw_int8_gemm(const float *x, int64_t m, int64_t k, const int8_t *w, int64_t blocks, const float *scale_w,
                 const int32_t *sum_w, const float *bias, float *y, int64_t n) {
    int64_t k4 = (k + 3) / 4, q_stride = k4 * 4;
    uint8_t *q = (uint8_t *)malloc((size_t)(m * q_stride) + 64);
    float *scale_x = (float *)malloc(sizeof(float) * (size_t)m);
    int32_t *zero_x = (int32_t *)malloc(sizeof(int32_t) * (size_t)m);
    if (!q || !scale_x || !zero_x) {
        free(q); free(scale_x); free(zero_x);
        return -1;
    }
    for (int64_t r = 0; r < m; ++r) quantize_row(x + r * k, k, k4, q + r * q_stride, scale_x + r, zero_x + r);
    if (m > 1 && amx_on && k4 % 16 == 0) {
        for (int64_t r0 = 0; r0 < m; r0 += AMX_ROWS)
            amx_rows(m - r0 < AMX_ROWS ? m - r0 : AMX_ROWS, q + r0 * q_stride, q_stride, scale_x + r0, zero_x + r0, w,
                     blocks, k4, scale_w, sum_w, bias, y + r0 * n, n);
        free(q); free(scale_x); free(zero_x);
        return 0;
    }
    if (m == 1 && blocks >= 2) {
        int64_t half = blocks / 2;
        for (int64_t blk = 0; blk < half; ++blk)
            tile1_two(q, scale_x, zero_x, w + blk * k4 * 256, w + (blk + half) * k4 * 256, k4, scale_w, sum_w, bias,
                      y, blk * BLOCK, (blk + half) * BLOCK, n);
        if (blocks % 2)
            tile(1, q, q_stride, scale_x, zero_x, w + (blocks - 1) * k4 * 256, k4, scale_w, sum_w, bias, y, n,
                 (blocks - 1) * BLOCK, n);
        free(q); free(scale_x); free(zero_x);
        return 0;
    }
    for (int64_t blk = 0; blk < blocks; ++blk) {
        const int8_t *wb = w + blk * k4 * 256;
        int64_t n0 = blk * BLOCK;
        for (int64_t r0 = 0; r0 < m; r0 += ROWS) {
            int64_t rows = m - r0 < ROWS ? m - r0 : ROWS;
            const uint8_t *qr = q + r0 * q_stride;
            float *yr = y + r0 * n;
            switch (rows) {
            case 1: tile(1, qr, q_stride, scale_x + r0, zero_x + r0, wb, k4, scale_w, sum_w, bias, yr, n, n0, n); break;
            case 2: tile(2, qr, q_stride, scale_x + r0, zero_x + r0, wb, k4, scale_w, sum_w, bias, yr, n, n0, n); break;
            case 3: tile(3, qr, q_stride, scale_x + r0, zero_x + r0, wb, k4, scale_w, sum_w, bias, yr, n, n0, n); break;
            case 4: tile(4, qr, q_stride, scale_x + r0, zero_x + r0, wb, k4, scale_w, sum_w, bias, yr, n, n0, n); break;
            case 5: tile(5, qr, q_stride, scale_x + r0, zero_x + r0, wb, k4, scale_w, sum_w, bias, yr, n, n0, n); break;
            default: tile(ROWS, qr, q_stride, scale_x + r0, zero_x + r0, wb, k4, scale_w, sum_w, bias, yr, n, n0, n); break;
            }
        }
    }
    free(q); free(scale_x); free(zero_x);
    return 0;
}
