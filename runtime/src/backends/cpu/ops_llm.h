// fp32 CPU operators for the decoder-only LLM path (Qwen2 decoder, duplex predictor): RoPE from a
// per-forward cos/sin table (computed once, shared by every layer) and causal attention of new
// queries over a preallocated KV cache. Same conventions as backends/cpu/ops.h.
#pragma once

#include <cstdint>

namespace minmo {
namespace cpu {

// y[M, N] = x[M, K] @ W[N, K]^T + bias[N] (bias may be null), like cpu::linear, tuned for the
// decoder: M == 1 runs a vectorised matrix-vector product and a few rows (M <= 8) against a
// large W a 4x4 register-tiled product (both split over output rows in the OpenMP team,
// AVX-512 / AVX2 / baseline chosen at load time); everything else is cpu::linear (BLAS in column
// slices over the same team). A row's result depends only on M's regime, not on the other rows.
void linear_omp(const float* x, const float* W, const float* bias, float* y, int64_t M, int64_t K, int64_t N);

// ---- panel-layout products (weights repacked once at load) --------------------------------
//
// Panel layout of an nn.Linear weight W[N, K]: ceil(N / 16) panels, panel p holding rows
// n = 16 p .. 16 p + w - 1 (w = 16, or N % 16 for the last panel) as [K][w], so the kernels
// stream the weights of 16 outputs contiguously and broadcast x. Same number of floats as W.
constexpr int64_t kPanelWidth = 16;

// packed[...] = W[N, K] in panel layout (packed must not alias W).
void pack_panels(const float* W, float* packed, int64_t N, int64_t K);

// y[M, N] = x[M, K] @ W^T + bias[N] (bias may be null) with W in panel layout (pack_panels).
// Split over the OpenMP team by panels and blocks of rows; vectorised register-blocked kernels
// (AVX-512 / AVX2 / baseline chosen at load time). Every output element is one chain of fused
// multiply-adds over k = 0 .. K-1 whatever M and the thread count, so a row's result is the same
// whether it is computed alone (decode) or with others (prefill): segmented == one-shot, bit for bit.
void linear_panels(const float* x, const float* Wp, const float* bias, float* y, int64_t M, int64_t K, int64_t N);

// RMSNorm of x[M, D] rows: y = x * rsqrt(mean(x^2) + eps) * gamma (y may alias x). Parallel only
// for large inputs.
void rms_norm_rows(const float* x, const float* gamma, float* y, int64_t M, int64_t D, float eps);
// residual[M, D] += x; y = rms_norm_rows(residual). y must not alias residual.
void add_rms_norm_rows(const float* x, float* residual, const float* gamma, float* y, int64_t M, int64_t D, float eps);

// cos/sin tables [T, Dh/2] of the rotate-half RoPE for positions pos0 .. pos0+T-1:
//   angle(t, i) = (pos0 + t) * inv_freq[i],  inv_freq[i] = 1 / theta^(2i / Dh),
// evaluated in double and rounded to float (as export/reference/layers.py rope_cos_sin).
void rope_table(int64_t pos0, int64_t T, int64_t Dh, double theta, float* cos_out, float* sin_out);

// Applies the table to x[T, H, Dh] in place: for i < Dh/2 the pair (x[i], x[i + Dh/2]) becomes
// (x[i] c - x[i + Dh/2] s, x[i + Dh/2] c + x[i] s).
void rope_apply(float* x, const float* cos_t, const float* sin_t, int64_t T, int64_t H, int64_t Dh);

// Causal attention of T new queries over a KV cache with grouped KV heads:
//   q, out: [T, Hq, Dh]; k, v: [pos0 + T, Hkv, Dh] (rows 0 .. pos0+T-1 of the cache, the new
//   positions included). Query t sits at position pos0 + t and sees keys 0 .. pos0 + t.
// (query, head) pairs in parallel (OpenMP), vectorised dot products, no heap allocation once warm.
void cached_causal_attention(const float* q, const float* k, const float* v, float* out, int64_t T, int64_t pos0,
                             int64_t Hq, int64_t Hkv, int64_t Dh, float scale);

}  // namespace cpu
}  // namespace minmo
