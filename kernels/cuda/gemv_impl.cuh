// Weight formats and per-row dot products shared by the weight-only products (gemv.cu) and the
// fused decode products (gemv_fused.cu). Internal header.
#ifndef MINMO_KERNELS_CUDA_GEMV_IMPL_CUH_
#define MINMO_KERNELS_CUDA_GEMV_IMPL_CUH_

#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "cuda_util.cuh"

namespace minmo_gemv {

using namespace minmo_cuda;

constexpr int kWarps = 4;

// Weight formats. Each describes a row-major [N, K] weight as 16-byte chunks of kElems values:
//   decode(raw, out, row, c) : chunk c's values as fp32 (zero point removed); returns the
//                              multiplier of the chunk's partial dot product (group scale),
//   row_scale(row)           : multiplier of the row's total,
//   at(row, k)               : one value w(row, k) / row_scale(row) for the scalar path.
struct Bf16Fmt {
  static constexpr int kElems = 8;
  const uint16_t* w;
  __device__ __forceinline__ float decode(uint4 raw, float* o, int /*row*/, int /*c*/) const {
    const uint32_t v[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      o[2 * i] = bf16_lo(v[i]);
      o[2 * i + 1] = bf16_hi(v[i]);
    }
    return 1.f;
  }
  __device__ __forceinline__ float row_scale(int) const { return 1.f; }
  __device__ __forceinline__ float at(int row, int64_t k, int64_t kk) const { return bf16_bits_to_f32(w[row * kk + k]); }
};

struct Int8Fmt {
  static constexpr int kElems = 16;
  const int8_t* w;
  const float* scale;
  __device__ __forceinline__ float decode(uint4 raw, float* o, int, int) const {
    const uint32_t v[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) o[4 * i + j] = static_cast<float>(static_cast<int8_t>(v[i] >> (8 * j)));
    return 1.f;
  }
  __device__ __forceinline__ float row_scale(int row) const { return scale[row]; }
  __device__ __forceinline__ float at(int row, int64_t k, int64_t kk) const { return w[row * kk + k]; }
};

struct Int4Fmt {
  static constexpr int kElems = 32;
  const uint8_t* w;
  const uint16_t* scale;
  const uint8_t* zero;
  int64_t groups, group_size;
  int chunks_per_group, cpg_shift;  // cpg_shift = log2(chunks_per_group), or -1 if not a power of 2
  // Nibble e of a 32-bit word is element e. Pairs (e, e + 4) are turned into fp16 1024 + q with
  // one mask-or, then the zero point is subtracted exactly in fp16.
  __device__ __forceinline__ float decode(uint4 raw, float* o, int row, int c) const {
    const int64_t gi = static_cast<int64_t>(row) * groups + (cpg_shift >= 0 ? c >> cpg_shift : c / chunks_per_group);
    const int z = zero ? zero[gi] : 8;
    const __half2 bias = __half2half2(__ushort_as_half(static_cast<unsigned short>(0x6400 + z)));
    const uint32_t v[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const uint32_t h = ((v[i] >> (4 * j)) & 0x000f000fu) | 0x64006400u;
        const float2 f = __half22float2(__hsub2(*reinterpret_cast<const __half2*>(&h), bias));
        o[8 * i + j] = f.x;
        o[8 * i + j + 4] = f.y;
      }
    return bf16_bits_to_f32(scale[gi]);
  }
  __device__ __forceinline__ float row_scale(int) const { return 1.f; }
  __device__ __forceinline__ float at(int row, int64_t k, int64_t kk) const {
    const uint8_t byte = w[row * (kk / 2) + k / 2];
    const int q = (k & 1) ? (byte >> 4) : (byte & 15);
    const int64_t g = row * groups + k / group_size;
    return static_cast<float>(q - (zero ? zero[g] : 8)) * bf16_bits_to_f32(scale[g]);
  }
};

// Unused in sm_87 device passes (the FP8 kernel body is compiled out there).
#pragma nv_diag_suppress 177
struct Fp8Fmt {
  static constexpr int kElems = 16;
  const uint8_t* w;
  const float* scale;
  __device__ __forceinline__ float2 pair(uint32_t two) const {
    const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(two), __NV_E4M3);
    return __half22float2(*reinterpret_cast<const __half2*>(&h));
  }
  __device__ __forceinline__ float decode(uint4 raw, float* o, int, int) const {
    const uint32_t v[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 a = pair(v[i] & 0xffffu), b = pair(v[i] >> 16);
      o[4 * i] = a.x;
      o[4 * i + 1] = a.y;
      o[4 * i + 2] = b.x;
      o[4 * i + 3] = b.y;
    }
    return 1.f;
  }
  __device__ __forceinline__ float row_scale(int row) const { return scale[row]; }
  __device__ __forceinline__ float at(int row, int64_t k, int64_t kk) const {
    const __half_raw h = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(w[row * kk + k]), __NV_E4M3);
    return __half2float(h);
  }
};
#pragma nv_diag_default 177

// acc[b] += scale * sum_e vals[e] * x[b, k0 + e] for one chunk; x rows are read as 16-byte vectors.
template <int B, int E>
__device__ __forceinline__ void chunk_dot(const float* vals, float scale, const uint4* __restrict__ x, int64_t k8,
                                          int c, float* acc) {
#pragma unroll
  for (int b = 0; b < B; ++b) {
    float part = 0.f;
#pragma unroll
    for (int q = 0; q < E / 8; ++q) {
      const uint4 xv = __ldg(x + b * k8 + c * (E / 8) + q);
      const uint32_t xs[4] = {xv.x, xv.y, xv.z, xv.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        part = fmaf(vals[8 * q + 2 * i], bf16_lo(xs[i]), part);
        part = fmaf(vals[8 * q + 2 * i + 1], bf16_hi(xs[i]), part);
      }
    }
    acc[b] = fmaf(part, scale, acc[b]);
  }
}

// Sum over the warp of x[b, :] . w(row, :) for b < B (every lane gets the totals), 128-bit path.
template <int B, typename F>
__device__ __forceinline__ void row_dot_vec(const __nv_bfloat16* __restrict__ x, const F& fmt, int row, int64_t k,
                                            float* acc) {
  constexpr int E = F::kElems;
  const int lane = threadIdx.x & 31;
  const int chunks = static_cast<int>(k / E);
  const int64_t k8 = k / 8;
  const uint4* wrow = reinterpret_cast<const uint4*>(fmt.w) + static_cast<int64_t>(row) * chunks;
  const uint4* x4 = reinterpret_cast<const uint4*>(x);
#pragma unroll
  for (int b = 0; b < B; ++b) acc[b] = 0.f;
  int c = lane;
  for (; c + 96 < chunks; c += 128) {
    uint4 raw[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) raw[u] = ld_stream(wrow + c + 32 * u);
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      float vals[E];
      const float cs = fmt.decode(raw[u], vals, row, c + 32 * u);
      chunk_dot<B, E>(vals, cs, x4, k8, c + 32 * u, acc);
    }
  }
  if (c < chunks) {  // the last 1..3 chunks of this lane, loaded together (one round trip)
    uint4 raw[3];
#pragma unroll
    for (int u = 0; u < 3; ++u)
      if (c + 32 * u < chunks) raw[u] = ld_stream(wrow + c + 32 * u);
#pragma unroll
    for (int u = 0; u < 3; ++u)
      if (c + 32 * u < chunks) {
        float vals[E];
        const float cs = fmt.decode(raw[u], vals, row, c + 32 * u);
        chunk_dot<B, E>(vals, cs, x4, k8, c + 32 * u, acc);
      }
  }
#pragma unroll
  for (int b = 0; b < B; ++b) acc[b] = warp_sum(acc[b]) * fmt.row_scale(row);
}

// The same, one element per lane step (any K, any alignment).
template <int B, typename F>
__device__ __forceinline__ void row_dot_scalar(const __nv_bfloat16* __restrict__ x, const F& fmt, int row, int64_t k,
                                               float* acc) {
#pragma unroll
  for (int b = 0; b < B; ++b) acc[b] = 0.f;
  for (int64_t i = threadIdx.x & 31; i < k; i += 32) {
    const float wv = fmt.at(row, i, k);
#pragma unroll
    for (int b = 0; b < B; ++b) acc[b] = fmaf(wv, __bfloat162float(x[b * k + i]), acc[b]);
  }
#pragma unroll
  for (int b = 0; b < B; ++b) acc[b] = warp_sum(acc[b]) * fmt.row_scale(row);
}

// Lane-partial dot products of x (batch 1) with R weight rows over chunks [c0, c1) of the rows
// (128-bit path; chunk c holds values [c * kElems, (c + 1) * kElems)): acc[r] += this lane's share,
// row_scale not applied, not reduced over the warp. Every lane keeps 4 chunks of each row in
// flight, and a lane's last batch is loaded in one go however short it is.
template <int R, typename F>
__device__ __forceinline__ void rows_dot_vec_part(const __nv_bfloat16* __restrict__ x, const F& fmt, const int* rows,
                                                  int64_t k, int c0, int c1, float* acc) {
  constexpr int E = F::kElems, U = 4;
  const int chunks = static_cast<int>(k / E);
  const int64_t k8 = k / 8;
  const uint4* x4 = reinterpret_cast<const uint4*>(x);
  const uint4* wrow[R];
#pragma unroll
  for (int r = 0; r < R; ++r) wrow[r] = reinterpret_cast<const uint4*>(fmt.w) + static_cast<int64_t>(rows[r]) * chunks;
  for (int c = c0 + (threadIdx.x & 31); c < c1; c += 32 * U) {
    uint4 raw[R][U];
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int r = 0; r < R; ++r)
        if (c + 32 * u < c1) raw[r][u] = ld_stream(wrow[r] + c + 32 * u);
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int r = 0; r < R; ++r)
        if (c + 32 * u < c1) {
          float vals[E];
          const float cs = fmt.decode(raw[r][u], vals, rows[r], c + 32 * u);
          chunk_dot<1, E>(vals, cs, x4, k8, c + 32 * u, &acc[r]);
        }
  }
}

// The same over elements [e0, e1), one element per lane step (any K, any alignment).
template <int R, typename F>
__device__ __forceinline__ void rows_dot_scalar_part(const __nv_bfloat16* __restrict__ x, const F& fmt,
                                                     const int* rows, int64_t k, int64_t e0, int64_t e1, float* acc) {
  for (int64_t i = e0 + (threadIdx.x & 31); i < e1; i += 32) {
    const float xv = __bfloat162float(x[i]);
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = fmaf(fmt.at(rows[r], i, k), xv, acc[r]);
  }
}

inline Int4Fmt int4_fmt(const uint8_t* w, const minmo_bf16* scale, const uint8_t* zero, int64_t k,
                        int64_t group_size) {
  const int cpg = static_cast<int>(group_size / Int4Fmt::kElems);
  int shift = -1;
  if ((cpg & (cpg - 1)) == 0)
    for (shift = 0; (1 << shift) < cpg; ++shift) {
    }
  return Int4Fmt{w, scale, zero, k / group_size, group_size, cpg, shift};
}

// True when the current device runs the FP8 kernels (sm_89+ device and an sm_89+ image); cached
// per device so that nothing is queried while a CUDA graph is captured. Defined in gemv.cu.
bool fp8_ok();

// Warps the current device keeps resident at once (SMs x max threads per SM / 32), cached per
// device. Defined in gemv.cu.
int64_t resident_warps();

}  // namespace minmo_gemv

#endif  // MINMO_KERNELS_CUDA_GEMV_IMPL_CUH_
