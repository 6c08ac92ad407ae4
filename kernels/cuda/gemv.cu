// Weight-only matrix products for decode (minmo_kernels/gemv.h). One warp per output row; each
// lane streams 16-byte chunks of the row with ld.global.nc.L1::no_allocate, four chunks in
// flight, decodes them to fp32 and accumulates against the activations (read through L1, they
// are shared by every row). 4 warps per block, so N = 3584 rows already give 896 blocks (all
// resident at once on 132 SMs). A scalar path serves shapes or pointers that do not allow
// 128-bit loads.
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <atomic>
#include <type_traits>

#include "../common/args.h"
#include "cuda_util.cuh"

namespace {

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
  for (; c < chunks; c += 32) {
    float vals[E];
    const float cs = fmt.decode(ld_stream(wrow + c), vals, row, c);
    chunk_dot<B, E>(vals, cs, x4, k8, c, acc);
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

// One warp per output: y[b, r] = dot(r) or, gated (W holds 2 n rows), silu(dot(r)) * dot(n + r).
template <int B, bool kVec, bool kGated, typename F>
__device__ __forceinline__ void gemv_body(const __nv_bfloat16* __restrict__ x, const F& fmt,
                                          __nv_bfloat16* __restrict__ y, int64_t n, int64_t k) {
  const int row = blockIdx.x * kWarps + threadIdx.x / 32;
  if (row >= n) return;
  float acc[B];
  if constexpr (kVec)
    row_dot_vec<B>(x, fmt, row, k, acc);
  else
    row_dot_scalar<B>(x, fmt, row, k, acc);
  if constexpr (kGated) {
    float up[B];
    if constexpr (kVec)
      row_dot_vec<B>(x, fmt, static_cast<int>(n + row), k, up);
    else
      row_dot_scalar<B>(x, fmt, static_cast<int>(n + row), k, up);
#pragma unroll
    for (int b = 0; b < B; ++b) acc[b] = acc[b] / (1.f + __expf(-acc[b])) * up[b];
  }
  if ((threadIdx.x & 31) == 0) {
#pragma unroll
    for (int b = 0; b < B; ++b) y[b * n + row] = __float2bfloat16_rn(acc[b]);
  }
}

template <int B, bool kVec, bool kGated, typename F>
__global__ void __launch_bounds__(kWarps * 32) gemv_kernel(const __nv_bfloat16* __restrict__ x, F fmt,
                                                           __nv_bfloat16* __restrict__ y, int64_t n, int64_t k) {
  gemv_body<B, kVec, kGated>(x, fmt, y, n, k);
}

// FP8 conversions are native from sm_89; older targets get a trapping body (never launched:
// minmo_gemv_fp8 checks the device first).
template <int B, bool kVec, bool kGated>
__global__ void __launch_bounds__(kWarps * 32) gemv_fp8_kernel(const __nv_bfloat16* __restrict__ x, Fp8Fmt fmt,
                                                               __nv_bfloat16* __restrict__ y, int64_t n, int64_t k) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 890
  gemv_body<B, kVec, kGated>(x, fmt, y, n, k);
#else
  __trap();
#endif
}

template <bool kVec, bool kGated, typename F>
struct Launcher {
  template <int B>
  static void go(const __nv_bfloat16* x, const F& fmt, __nv_bfloat16* y, int64_t n, int64_t k, cudaStream_t s) {
    const unsigned blocks = static_cast<unsigned>((n + kWarps - 1) / kWarps);
    if constexpr (std::is_same<F, Fp8Fmt>::value)
      gemv_fp8_kernel<B, kVec, kGated><<<blocks, kWarps * 32, 0, s>>>(x, fmt, y, n, k);
    else
      gemv_kernel<B, kVec, kGated, F><<<blocks, kWarps * 32, 0, s>>>(x, fmt, y, n, k);
  }
};

template <bool kVec, bool kGated, typename F>
int dispatch_batch(const minmo_bf16* xb, const F& fmt, minmo_bf16* yb, int64_t batch, int64_t n, int64_t k,
                   cudaStream_t s) {
  const auto* x = reinterpret_cast<const __nv_bfloat16*>(xb);
  auto* y = reinterpret_cast<__nv_bfloat16*>(yb);
  using L = Launcher<kVec, kGated, F>;
  switch (batch) {
    case 1: L::template go<1>(x, fmt, y, n, k, s); break;
    case 2: L::template go<2>(x, fmt, y, n, k, s); break;
    case 3: L::template go<3>(x, fmt, y, n, k, s); break;
    case 4: L::template go<4>(x, fmt, y, n, k, s); break;
    case 5: L::template go<5>(x, fmt, y, n, k, s); break;
    case 6: L::template go<6>(x, fmt, y, n, k, s); break;
    case 7: L::template go<7>(x, fmt, y, n, k, s); break;
    default: L::template go<8>(x, fmt, y, n, k, s); break;
  }
  return launch_status();
}

// n: outputs per batch row (the gated form reads 2 n weight rows).
template <typename F>
int run_gemv(const minmo_bf16* x, const F& fmt, minmo_bf16* y, int64_t batch, int64_t n, int64_t k, bool gated,
             cudaStream_t s) {
  const bool vec = k % F::kElems == 0 && aligned16(x) && aligned16(fmt.w);
  if (gated)
    return vec ? dispatch_batch<true, true>(x, fmt, y, batch, n, k, s) : dispatch_batch<false, true>(x, fmt, y, batch, n, k, s);
  return vec ? dispatch_batch<true, false>(x, fmt, y, batch, n, k, s) : dispatch_batch<false, false>(x, fmt, y, batch, n, k, s);
}

// FP8 kernels run when the device is sm_89+ and the image loaded for it was compiled for sm_89+
// (its ptxVersion is the __CUDA_ARCH__ the body saw). Cached per device, so that calls made while
// a CUDA graph is being captured query nothing.
bool fp8_query(int dev) {
  int major = 0, minor = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess)
    return false;
  if (major * 10 + minor < 89) return false;
  cudaFuncAttributes attr{};
  if (cudaFuncGetAttributes(&attr, gemv_fp8_kernel<1, true, false>) != cudaSuccess) {
    cudaGetLastError();  // not sticky: clear it so the next launch check does not report it
    return false;
  }
  return attr.ptxVersion >= 89;
}

bool fp8_ok() {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> cache[kMaxDevices];  // 0 unknown, 1 no, 2 yes
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return false;
  if (dev < 0 || dev >= kMaxDevices) return fp8_query(dev);
  int v = cache[dev].load(std::memory_order_relaxed);
  if (v == 0) {
    v = fp8_query(dev) ? 2 : 1;
    cache[dev].store(v, std::memory_order_relaxed);
  }
  return v == 2;
}

Int4Fmt int4_fmt(const uint8_t* w, const minmo_bf16* scale, const uint8_t* zero, int64_t k, int64_t group_size) {
  const int cpg = static_cast<int>(group_size / Int4Fmt::kElems);
  int shift = -1;
  if ((cpg & (cpg - 1)) == 0)
    for (shift = 0; (1 << shift) < cpg; ++shift) {
    }
  return Int4Fmt{w, scale, zero, k / group_size, group_size, cpg, shift};
}

}  // namespace

// Plain (gated = false: n outputs from n rows) and gated (n outputs from 2 n rows) entry points.
#define MINMO_GEMV_ENTRY(NAME, GATED)                                                                         \
  extern "C" int minmo_gemv##NAME##_bf16(const minmo_bf16* x, const minmo_bf16* w, minmo_bf16* y, int64_t batch, \
                                         int64_t n, int64_t k, cudaStream_t stream) {                        \
    if (!minmo_args::gemv_ok(x, w, y, batch, n, k) || (GATED && n > (int64_t{1} << 30)))                     \
      return MINMO_KERNEL_INVALID_ARGUMENT;                                                                \
    return run_gemv(x, Bf16Fmt{w}, y, batch, n, k, GATED, stream);                                          \
  }                                                                                                        \
  extern "C" int minmo_gemv##NAME##_int8(const minmo_bf16* x, const int8_t* w, const float* scale, minmo_bf16* y, \
                                         int64_t batch, int64_t n, int64_t k, cudaStream_t stream) {         \
    if (!minmo_args::gemv_ok(x, w, y, batch, n, k) || !scale || (GATED && n > (int64_t{1} << 30)))           \
      return MINMO_KERNEL_INVALID_ARGUMENT;                                                                \
    return run_gemv(x, Int8Fmt{w, scale}, y, batch, n, k, GATED, stream);                                   \
  }                                                                                                        \
  extern "C" int minmo_gemv##NAME##_int4(const minmo_bf16* x, const uint8_t* w, const minmo_bf16* scale,      \
                                         const uint8_t* zero, minmo_bf16* y, int64_t batch, int64_t n, int64_t k, \
                                         int64_t group_size, cudaStream_t stream) {                          \
    if (!minmo_args::gemv_ok(x, w, y, batch, n, k) || !scale || !minmo_args::int4_ok(k, group_size) ||        \
        (GATED && n > (int64_t{1} << 30)))                                                                 \
      return MINMO_KERNEL_INVALID_ARGUMENT;                                                                \
    return run_gemv(x, int4_fmt(w, scale, zero, k, group_size), y, batch, n, k, GATED, stream);               \
  }                                                                                                        \
  extern "C" int minmo_gemv##NAME##_fp8(const minmo_bf16* x, const uint8_t* w, const float* scale, minmo_bf16* y, \
                                        int64_t batch, int64_t n, int64_t k, cudaStream_t stream) {          \
    if (!minmo_args::gemv_ok(x, w, y, batch, n, k) || !scale || (GATED && n > (int64_t{1} << 30)))           \
      return MINMO_KERNEL_INVALID_ARGUMENT;                                                                \
    if (!fp8_ok()) return MINMO_KERNEL_UNSUPPORTED;                                                        \
    return run_gemv(x, Fp8Fmt{w, scale}, y, batch, n, k, GATED, stream);                                    \
  }

MINMO_GEMV_ENTRY(, false)
MINMO_GEMV_ENTRY(_silu, true)

extern "C" int minmo_fp8_supported(void) { return fp8_ok() ? 1 : 0; }
