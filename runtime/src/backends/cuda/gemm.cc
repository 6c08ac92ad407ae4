#include "backends/cuda/gemm.h"

#include "backends/cpu/blas.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

namespace minmo {
namespace cuda {

namespace {

// The cuBLAS API subset used here (cublas_api.h; values fixed since cuBLAS 11).
using cublasHandle = void*;
using cublasStatus = int;  // CUBLAS_STATUS_SUCCESS = 0
constexpr int kOpN = 0, kOpT = 1;           // cublasOperation_t
constexpr int kR16BF = 14;                  // cudaDataType CUDA_R_16BF
constexpr int kR32F = 0;                    // cudaDataType CUDA_R_32F
constexpr int kCompute32F = 68;             // cublasComputeType_t CUBLAS_COMPUTE_32F
constexpr int kGemmDefault = -1;            // cublasGemmAlgo_t CUBLAS_GEMM_DEFAULT
constexpr size_t kWorkspaceBytes = 32 << 20;  // cuBLAS' recommendation for sm_90

struct Cublas {
  cublasStatus (*create)(cublasHandle*) = nullptr;
  cublasStatus (*destroy)(cublasHandle) = nullptr;
  cublasStatus (*set_stream)(cublasHandle, cudaStream_t) = nullptr;
  cublasStatus (*set_workspace)(cublasHandle, void*, size_t) = nullptr;
  cublasStatus (*gemm_ex)(cublasHandle, int, int, int, int, int, const void*, const void*, int, int, const void*, int,
                          int, const void*, void*, int, int, int, int) = nullptr;
  std::string error;  // why it is not usable ("" when it is)
  std::string name;   // the library file loaded
};

// Loaded once per process; the handle is never closed (cuBLAS keeps global state).
const Cublas& cublas() {
  static Cublas lib;
  static std::once_flag once;
  std::call_once(once, [] {
    const char* env = std::getenv("MINMO_CUBLAS");
    const std::vector<std::string> names = env && *env ? std::vector<std::string>{env}
                                                       : std::vector<std::string>{"libcublas.so.13", "libcublas.so.12",
                                                                                  "libcublas.so"};
    void* so = nullptr;
    std::string tried;
    for (const std::string& n : names) {
      so = dlopen(n.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (so) {
        lib.name = n;
        break;
      }
      const char* e = dlerror();
      tried += (tried.empty() ? "" : "; ") + std::string(e ? e : n);
    }
    if (!so) {
      lib.error = "cuBLAS not found (" + tried + "; set MINMO_CUBLAS to its path)";
      return;
    }
    auto sym = [&](const char* name, auto& fn) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(so, name));
      if (!fn && lib.error.empty()) lib.error = std::string("cuBLAS lacks ") + name;
    };
    sym("cublasCreate_v2", lib.create);
    sym("cublasDestroy_v2", lib.destroy);
    sym("cublasSetStream_v2", lib.set_stream);
    sym("cublasSetWorkspace_v2", lib.set_workspace);
    sym("cublasGemmEx", lib.gemm_ex);
  });
  return lib;
}

// cuda-sim twin of Gemm::f32 (queued on the stream like a kernel twin).
int sgemm_twin(const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb,
               int64_t ldc, int b_transposed, float alpha, float beta) {
  blas::ensure_single_threaded();
  blas::sgemm_parallel(b_transposed ? CblasTrans : CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
                       static_cast<int>(k), alpha, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta, c,
                       static_cast<int>(ldc));
  return MINMO_KERNEL_OK;
}

}  // namespace

bool Gemm::available(const Device& device, std::string* about) {
  const bool ok = device.simulated() || cublas().error.empty();
  if (about)
    *about = device.simulated() ? "gemv twin (cuda-sim)" : ok ? "cuBLAS (" + cublas().name + ")" : cublas().error;
  return ok;
}

std::unique_ptr<Gemm> Gemm::open(const Stream& stream, std::string* why) {
  std::string about;
  if (!available(stream.device(), &about)) {
    if (why) *why = about;
    return nullptr;
  }
  std::unique_ptr<Gemm> g(new Gemm(stream));
  if (stream.simulated()) return g;
  const Cublas& lib = cublas();
  auto fail = [why](const std::string& reason) {
    if (why) *why = reason;
    return std::unique_ptr<Gemm>();
  };
  cublasHandle h = nullptr;
  if (lib.create(&h) != 0 || h == nullptr) return fail("cublasCreate failed");
  g->handle_ = h;  // destroyed by ~Gemm from here on
  std::shared_ptr<Device> dev = std::const_pointer_cast<Device>(stream.device().shared_from_this());
  g->workspace_ = Allocation(dev, kWorkspaceBytes, MemoryKind::Device);
  if (lib.set_stream(h, stream.get()) != 0 || lib.set_workspace(h, g->workspace_.data(), kWorkspaceBytes) != 0)
    return fail("cublasSetStream / cublasSetWorkspace failed");
  return g;
}

Gemm::~Gemm() {
  if (handle_) cublas().destroy(handle_);
}

void Gemm::bf16(const minmo_bf16* x, const minmo_bf16* w, minmo_bf16* y, int64_t rows, int64_t n, int64_t k) const {
  if (rows <= 0) return;
  if (stream_.simulated()) {
    for (int64_t r = 0; r < rows; r += MINMO_GEMV_MAX_BATCH) {
      const int64_t m = std::min<int64_t>(MINMO_GEMV_MAX_BATCH, rows - r);
      MINMO_DEVICE_CALL(stream_, gemv_bf16, x + r * k, w, y + r * n, m, n, k);
    }
    return;
  }
  MINMO_CHECK(rows < (int64_t{1} << 31) && n < (int64_t{1} << 31) && k < (int64_t{1} << 31), ErrorCode::Internal,
              "cuBLAS product too large: " << rows << " x " << n << " x " << k);
  // Row-major y[rows, n] = x[rows, k] W^T is column-major y^T[n, rows] = W[k, n]^T x^T[k, rows].
  const float alpha = 1.0f, beta = 0.0f;
  const int N = static_cast<int>(n), M = static_cast<int>(rows), K = static_cast<int>(k);
  const cublasStatus rc = cublas().gemm_ex(handle_, kOpT, kOpN, N, M, K, &alpha, w, kR16BF, K, x, kR16BF, K, &beta, y,
                                           kR16BF, N, kCompute32F, kGemmDefault);
  MINMO_CHECK(rc == 0, ErrorCode::DeviceError,
              "cuda: cublasGemmEx (" << rows << " x " << n << " x " << k << ") failed with status " << rc);
}

void Gemm::f32(const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb,
               int64_t ldc, bool b_transposed, float alpha, float beta) const {
  if (m <= 0 || n <= 0) return;
  MINMO_CHECK(k >= 1 && lda >= k && ldb >= (b_transposed ? k : n) && ldc >= n && m < (int64_t{1} << 31) &&
                  n < (int64_t{1} << 31) && k < (int64_t{1} << 31) && lda < (int64_t{1} << 31) &&
                  ldb < (int64_t{1} << 31) && ldc < (int64_t{1} << 31),
              ErrorCode::Internal,
              "fp32 product with bad shape: " << m << " x " << n << " x " << k << " (ld " << lda << ", " << ldb << ", "
                                              << ldc << ")");
  if (stream_.simulated()) {
    stream_.enqueue_twin("gemm_f32", &sgemm_twin, a, b, c, m, n, k, lda, ldb, ldc, b_transposed ? 1 : 0, alpha, beta);
    return;
  }
  // Row-major C[m, n] = A op(B) is column-major C^T[n, m] = op(B)^T A^T.
  const cublasStatus rc =
      cublas().gemm_ex(handle_, b_transposed ? kOpT : kOpN, kOpN, static_cast<int>(n), static_cast<int>(m),
                       static_cast<int>(k), &alpha, b, kR32F, static_cast<int>(ldb), a, kR32F, static_cast<int>(lda),
                       &beta, c, kR32F, static_cast<int>(ldc), kCompute32F, kGemmDefault);
  MINMO_CHECK(rc == 0, ErrorCode::DeviceError,
              "cuda: cublasGemmEx fp32 (" << m << " x " << n << " x " << k << ") failed with status " << rc);
}

}  // namespace cuda
}  // namespace minmo
