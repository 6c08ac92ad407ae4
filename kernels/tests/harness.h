// Small harness for the GPU-vs-CPU-twin checks (kernels/tests). Each kernel family registers its
// checks with MINMO_CHECK(name) in its own check_<family>.cu; test_kernels_cuda.cu runs them and
// prints one PASS/FAIL row per case. Helpers: random host data, device buffers that start
// poisoned (NaN bytes), relative error ||gpu - cpu|| / ||cpu||.
#ifndef MINMO_KERNELS_TESTS_HARNESS_H_
#define MINMO_KERNELS_TESTS_HARNESS_H_

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "cpu/cpu_util.h"
#include "minmo_kernels.h"

namespace harness {

// Registers a check (returns a dummy for static initialisation).
int add_check(const char* name, void (*fn)());

// True under --small (compute-sanitizer runs): checks should use small shapes only.
bool small();

// Records one case: PASS when status == expected_status and err <= tol (err is ignored when the
// expected status is not OK).
void record(const std::string& kernel, const std::string& shape, double err, double tol, int status,
            int expected_status = MINMO_KERNEL_OK);

std::mt19937& rng();

inline std::vector<float> randn(size_t n, float scale = 1.f) {
  std::normal_distribution<float> nd(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng());
  return v;
}

inline std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = minmo_cpu::f32_to_bf16(v[i]);
  return o;
}

inline std::vector<uint16_t> randn_bf16(size_t n, float scale = 1.f) { return to_bf16(randn(n, scale)); }

inline std::vector<uint8_t> rand_bytes(size_t n) {
  std::uniform_int_distribution<int> ud(0, 255);
  std::vector<uint8_t> v(n);
  for (auto& x : v) x = static_cast<uint8_t>(ud(rng()));
  return v;
}

inline float as_float(float v) { return v; }
inline float as_float(uint16_t v) { return minmo_cpu::bf16_to_f32(v); }

// ||a - ref|| / ||ref||; infinity if a has a non-finite value where ref is finite.
template <typename T>
double rel_err(const std::vector<T>& a, const std::vector<T>& ref) {
  if (a.size() != ref.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double x = as_float(a[i]), r = as_float(ref[i]);
    if (!std::isfinite(x) || !std::isfinite(r)) return INFINITY;
    num += (x - r) * (x - r);
    den += r * r;
  }
  return std::sqrt(num / (den > 0 ? den : 1));
}

// Device copy of a host vector (or `count` poisoned elements): freed on destruction. `offset`
// elements of slack in front let a check pass a misaligned pointer (data() + offset).
template <typename T>
class DevBuf {
 public:
  explicit DevBuf(const std::vector<T>& host, size_t offset = 0) : n_(host.size()), off_(offset) {
    alloc();
    check(cudaMemcpy(data(), host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  static DevBuf poisoned(size_t count) { return DevBuf(count); }
  DevBuf(const DevBuf&) = delete;
  DevBuf(DevBuf&& o) noexcept : p_(o.p_), n_(o.n_), off_(o.off_) { o.p_ = nullptr; }
  ~DevBuf() {
    if (p_) cudaFree(p_);
  }
  T* data() { return p_ + off_; }
  std::vector<T> host() const {
    std::vector<T> h(n_);
    check(cudaMemcpy(h.data(), p_ + off_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }

 private:
  explicit DevBuf(size_t count) : n_(count) {
    alloc();
    check(cudaMemset(p_, 0xff, (n_ + off_) * sizeof(T) + 16));  // all-ones bytes: NaN in fp32 / bf16
  }
  void alloc() { check(cudaMalloc(&p_, (n_ + off_) * sizeof(T) + 16)); }
  static void check(cudaError_t e) {
    if (e != cudaSuccess) {
      std::fprintf(stderr, "CUDA error: %s\n", cudaGetErrorString(e));
      std::exit(2);
    }
  }
  T* p_ = nullptr;
  size_t n_ = 0, off_ = 0;
};

// Waits for the device and fails the process on an asynchronous error.
void sync();

std::string shape_str(std::initializer_list<std::pair<const char*, long long>> dims);

// bf16 quiet NaN: poison for cache slots and outputs that no kernel may read.
constexpr uint16_t kNaN = 0x7fc0;

// Attention problem size: query heads, KV heads, head dim, cache slots per KV head.
struct Attn {
  int64_t hq, hkv, d, max_seq;
};

// Random bf16 KV cache [hkv, max_seq, d] whose positions >= valid are NaN (no kernel may read them).
inline std::vector<uint16_t> cache_with_tail_poison(const Attn& a, int64_t valid) {
  auto c = randn_bf16(size_t(a.hkv * a.max_seq * a.d));
  for (int64_t h = 0; h < a.hkv; ++h)
    for (int64_t p = valid > 0 ? valid : 0; p < a.max_seq; ++p)
      for (int64_t i = 0; i < a.d; ++i) c[size_t((h * a.max_seq + p) * a.d + i)] = kNaN;
  return c;
}

}  // namespace harness

#define MINMO_CHECK(name)                                                  \
  static void name();                                                      \
  static const int name##_registered = harness::add_check(#name, name);    \
  static void name()

#endif  // MINMO_KERNELS_TESTS_HARNESS_H_
