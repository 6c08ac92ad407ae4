// Every CUDA kernel against its CPU twin on random inputs of odd sizes; error measured as
// ||gpu - cpu|| / ||cpu||. Exits 0 with "SKIP" when no CUDA device is present, 1 on failure.
// Build: cmake --build <dir> --target minmo_kernels_cuda_test
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "minmo_kernels.h"

namespace {

double rel_err(const std::vector<float>& a, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (double(a[i]) - ref[i]) * (double(a[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1));
}

#define CK(x)                                                                      \
  do {                                                                             \
    cudaError_t e_ = (x);                                                          \
    if (e_ != cudaSuccess) {                                                       \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
      return false;                                                                \
    }                                                                              \
  } while (0)

bool check_rmsnorm_residual(int64_t rows, int64_t dim, bool with_x, std::mt19937& rng) {
  std::normal_distribution<float> nd;
  const size_t n = size_t(rows * dim);
  std::vector<float> x(n), res(n), gamma(static_cast<size_t>(dim));
  for (auto& v : x) v = nd(rng);
  for (auto& v : res) v = nd(rng);
  for (auto& v : gamma) v = nd(rng);
  std::vector<float> res_cpu = res, out_cpu(n, NAN), res_gpu(n), out_gpu(n);
  minmo_rmsnorm_residual_f32_cpu(with_x ? x.data() : nullptr, res_cpu.data(), gamma.data(), out_cpu.data(), rows,
                                 dim, 1e-6f);
  float *dx, *dr, *dg, *dout;
  CK(cudaMalloc(&dx, n * 4 + 4));
  CK(cudaMalloc(&dr, n * 4 + 4));
  CK(cudaMalloc(&dg, size_t(dim) * 4));
  CK(cudaMalloc(&dout, n * 4 + 4));
  CK(cudaMemcpy(dx, x.data(), n * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dr, res.data(), n * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dg, gamma.data(), size_t(dim) * 4, cudaMemcpyHostToDevice));
  CK(cudaMemset(dout, 0xff, n * 4));  // NaN poison
  const int rc = minmo_rmsnorm_residual_f32(with_x ? dx : nullptr, dr, dg, dout, rows, dim, 1e-6f, nullptr);
  CK(cudaDeviceSynchronize());
  CK(cudaMemcpy(res_gpu.data(), dr, n * 4, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(out_gpu.data(), dout, n * 4, cudaMemcpyDeviceToHost));
  cudaFree(dx);
  cudaFree(dr);
  cudaFree(dg);
  cudaFree(dout);
  const double e1 = rel_err(res_gpu, res_cpu), e2 = rel_err(out_gpu, out_cpu);
  const bool ok = rc == MINMO_KERNEL_OK && e1 <= 1e-6 && e2 <= 1e-5;
  std::printf("%s rmsnorm_residual rows=%lld dim=%lld x=%d: residual err %.2e, out err %.2e\n", ok ? "ok  " : "FAIL",
              (long long)rows, (long long)dim, int(with_x), e1, e2);
  return ok;
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("SKIP: no CUDA device\n");
    return 0;
  }
  std::mt19937 rng(0);
  bool ok = true;
  const int64_t shapes[][2] = {{1, 1}, {3, 31}, {7, 896}, {5, 3584}, {2, 8193}, {300, 257}};
  for (const auto& s : shapes)
    for (bool with_x : {true, false}) ok = check_rmsnorm_residual(s[0], s[1], with_x, rng) && ok;
  if (minmo_rmsnorm_residual_f32(nullptr, nullptr, nullptr, nullptr, 1, 1, 1e-6f, nullptr) !=
      MINMO_KERNEL_INVALID_ARGUMENT) {
    std::printf("FAIL: null pointers accepted\n");
    ok = false;
  }
  return ok ? 0 : 1;
}
