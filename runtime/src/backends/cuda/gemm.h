// Products over many rows (prefill) on the CUDA backend: cuBLAS, loaded at run time with dlopen, so
// that the library imports and runs where cuBLAS is absent (the weight-only gemv products then
// serve every row count, MINMO_GEMV_MAX_BATCH rows per pass over the weights).
//
// Library search: $MINMO_CUBLAS (a path) if set, else libcublas.so.13, .so.12, .so on the loader
// path. Only cublasCreate_v2 / Destroy_v2 / SetStream_v2 / SetWorkspace_v2 / GemmEx are used; their
// types and enum values are declared in gemm.cc (stable ABI since cuBLAS 11), so no cuBLAS headers
// are needed to build.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "backends/cuda/device.h"

namespace minmo {
namespace cuda {

// One cuBLAS handle bound to one stream (a handle is used by one thread at a time, like its stream).
class Gemm {
 public:
  // Rows from which a bf16 product goes to the GEMM: up to MINMO_GEMV_MAX_BATCH rows the gemv
  // kernels read the weights once and need no library; beyond, they read them once per batch of
  // rows (on the H100, 9 rows of Qwen2.5-7B took 13.9 ms through two gemv passes, a decode step 5.4).
  static constexpr int64_t kMinRows = MINMO_GEMV_MAX_BATCH + 1;

  // A handle on `stream` with its own workspace (so that calls can be captured in a graph), or
  // null with the reason in *why: cuBLAS not found or not usable. On "cuda-sim" always a handle,
  // whose bf16 products run the bf16 gemv twin slice by slice (the same arithmetic: fp32 sums of
  // bf16 products, rounded to bf16) and fp32 products OpenBLAS.
  static std::unique_ptr<Gemm> open(const Stream& stream, std::string* why);
  // Whether open() can give a handle on `device` (cuBLAS loads; always on "cuda-sim"), without
  // making one. *about: what runs the products ("cuBLAS (libcublas.so.13)", "gemv twin (cuda-sim)"),
  // or why cuBLAS is not usable.
  static bool available(const Device& device, std::string* about);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // y[rows, n] = bf16(x[rows, k] W^T) with W: bf16 [n, k] row-major (an nn.Linear weight), fp32
  // accumulation; device pointers, enqueued on the stream. Throws DeviceError on a cuBLAS failure.
  void bf16(const minmo_bf16* x, const minmo_bf16* w, minmo_bf16* y, int64_t rows, int64_t n, int64_t k) const;

  // Row-major fp32 C[m, n] = alpha * A[m, k] op(B) + beta * C with op(B) = B[k, n] (ldb >= n) or,
  // b_transposed, B[n, k]^T (ldb >= k); lda >= k, ldc >= n. cublasGemmEx with CUDA_R_32F and
  // CUBLAS_COMPUTE_32F (no TF32); on "cuda-sim" OpenBLAS sgemm queued like a kernel. Device
  // pointers, enqueued on the stream. Throws DeviceError on a cuBLAS failure.
  void f32(const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb,
           int64_t ldc, bool b_transposed, float alpha = 1.f, float beta = 0.f) const;


 private:
  explicit Gemm(const Stream& stream) : stream_(stream) {}
  const Stream& stream_;
  void* handle_ = nullptr;  // cublasHandle_t
  Allocation workspace_;
};

}  // namespace cuda
}  // namespace minmo
