// Weight-only matrix products for decode (minmo_kernels/gemv.h). One warp per output row; each
// lane streams 16-byte chunks of the row with ld.global.nc.L1::no_allocate, four chunks in
// flight, decodes them to fp32 and accumulates against the activations (read through L1, they
// are shared by every row). 4 warps per block, so N = 3584 rows already give 896 blocks (all
// resident at once on 132 SMs). A scalar path serves shapes or pointers that do not allow
// 128-bit loads.
#include <atomic>
#include <type_traits>

#include "../common/args.h"
#include "gemv_impl.cuh"

namespace {

using namespace minmo_gemv;

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

// Per-device cache of a positive value computed by query(dev) (0: not known yet).
template <typename Query>
int64_t per_device(std::atomic<int64_t>* cache, int max_devices, Query query) {
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return query(-1);
  if (dev < 0 || dev >= max_devices) return query(dev);
  int64_t v = cache[dev].load(std::memory_order_relaxed);
  if (v == 0) {
    v = query(dev);
    cache[dev].store(v, std::memory_order_relaxed);
  }
  return v;
}

constexpr int kMaxDevices = 64;

}  // namespace

bool minmo_gemv::fp8_ok() {
  static std::atomic<int64_t> cache[kMaxDevices];
  return per_device(cache, kMaxDevices, [](int dev) -> int64_t { return dev >= 0 && fp8_query(dev) ? 2 : 1; }) == 2;
}

int64_t minmo_gemv::resident_warps() {
  static std::atomic<int64_t> cache[kMaxDevices];
  return per_device(cache, kMaxDevices, [](int dev) -> int64_t {
    int sms = 0, threads = 0;
    if (dev < 0 || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&threads, cudaDevAttrMaxThreadsPerMultiProcessor, dev) != cudaSuccess) {
      cudaGetLastError();
      return 132 * 64;  // H100-sized guess; only tunes the split of the fused products
    }
    return std::max<int64_t>(1, int64_t(sms) * threads / 32);
  });
}

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
