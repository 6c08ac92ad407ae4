// Checks: weight-only products (bf16, int8, int4, fp8; plain and SiLU-gated) against their CPU
// twins, on vector-path and scalar-path shapes (K not a multiple of the chunk, misaligned
// activations), batch 1..8.
#include "harness.h"

using harness::DevBuf;

namespace {

const double kTol = 8e-3;  // bf16 output rounding (2^-9) plus fp32-vs-fp64 accumulation

struct Shape {
  int64_t batch, n, k;
};

std::string shape_of(const Shape& s, int64_t misalign, int64_t group = 0, bool sym = false) {
  std::string r = harness::shape_str({{"B", s.batch}, {"N", s.n}, {"K", s.k}});
  if (group) r += " g=" + std::to_string(group) + (sym ? " sym" : " asym");
  if (misalign) r += " x+1";
  return r;
}

// Runs the CUDA product `gpu` and its twin `cpu` on fresh x; both get (x, y) pointers.
template <typename Gpu, typename Cpu>
void run_case(const char* name, const Shape& s, int64_t misalign, const std::string& shape, Gpu gpu, Cpu cpu,
              int expected = MINMO_KERNEL_OK) {
  auto x = harness::randn_bf16(size_t(s.batch * s.k));
  std::vector<uint16_t> y_cpu(size_t(s.batch * s.n));
  if (expected == MINMO_KERNEL_OK) cpu(x.data(), y_cpu.data());
  DevBuf<uint16_t> dx(x, size_t(misalign)), dy = DevBuf<uint16_t>::poisoned(size_t(s.batch * s.n));
  const int rc = gpu(dx.data(), dy.data());
  harness::sync();
  harness::record(name, shape, rc == MINMO_KERNEL_OK ? harness::rel_err(dy.host(), y_cpu) : 0.0, kTol, rc, expected);
}

std::vector<float> rand_scales(size_t n) {
  std::uniform_real_distribution<float> ud(0.002f, 0.02f);
  std::vector<float> v(n);
  for (auto& x : v) x = ud(harness::rng());
  return v;
}

// Gated forms read 2 n weight rows.
int64_t rows_of(const Shape& s, bool gated) { return gated ? 2 * s.n : s.n; }

void bf16_case(const Shape& s, int64_t misalign, bool gated) {
  auto w = harness::randn_bf16(size_t(rows_of(s, gated) * s.k), 0.05f);
  DevBuf<uint16_t> dw(w);
  auto gpu = gated ? minmo_gemv_silu_bf16 : minmo_gemv_bf16;
  auto cpu = gated ? minmo_gemv_silu_bf16_cpu : minmo_gemv_bf16_cpu;
  run_case(
      gated ? "gemv_silu_bf16" : "gemv_bf16", s, misalign, shape_of(s, misalign),
      [&](uint16_t* x, uint16_t* y) { return gpu(x, dw.data(), y, s.batch, s.n, s.k, nullptr); },
      [&](const uint16_t* x, uint16_t* y) { return cpu(x, w.data(), y, s.batch, s.n, s.k); });
}

void int8_case(const Shape& s, int64_t misalign, bool gated) {
  auto bytes = harness::rand_bytes(size_t(rows_of(s, gated) * s.k));
  std::vector<int8_t> w(bytes.size());
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<int8_t>(bytes[i] == 0x80 ? 0x81 : bytes[i]);  // [-127, 127]
  auto scale = rand_scales(size_t(rows_of(s, gated)));
  DevBuf<int8_t> dw(w);
  DevBuf<float> ds(scale);
  auto gpu = gated ? minmo_gemv_silu_int8 : minmo_gemv_int8;
  auto cpu = gated ? minmo_gemv_silu_int8_cpu : minmo_gemv_int8_cpu;
  run_case(
      gated ? "gemv_silu_int8" : "gemv_int8", s, misalign, shape_of(s, misalign),
      [&](uint16_t* x, uint16_t* y) { return gpu(x, dw.data(), ds.data(), y, s.batch, s.n, s.k, nullptr); },
      [&](const uint16_t* x, uint16_t* y) { return cpu(x, w.data(), scale.data(), y, s.batch, s.n, s.k); });
}

void int4_case(const Shape& s, int64_t group, bool symmetric, int64_t misalign, bool gated) {
  const int64_t groups = s.k / group, rows = rows_of(s, gated);
  auto w = harness::rand_bytes(size_t(rows * s.k / 2));
  auto scale = harness::to_bf16(rand_scales(size_t(rows * groups)));
  auto zero = harness::rand_bytes(size_t(rows * groups));
  for (auto& z : zero) z &= 15;
  DevBuf<uint8_t> dw(w), dz(zero);
  DevBuf<uint16_t> ds(scale);
  const uint8_t* zc = symmetric ? nullptr : zero.data();
  uint8_t* zg = symmetric ? nullptr : dz.data();
  auto gpu = gated ? minmo_gemv_silu_int4 : minmo_gemv_int4;
  auto cpu = gated ? minmo_gemv_silu_int4_cpu : minmo_gemv_int4_cpu;
  run_case(
      gated ? "gemv_silu_int4" : "gemv_int4", s, misalign, shape_of(s, misalign, group, symmetric),
      [&](uint16_t* x, uint16_t* y) { return gpu(x, dw.data(), ds.data(), zg, y, s.batch, s.n, s.k, group, nullptr); },
      [&](const uint16_t* x, uint16_t* y) { return cpu(x, w.data(), scale.data(), zc, y, s.batch, s.n, s.k, group); });
}

void fp8_case(const Shape& s, int64_t misalign, int expected, bool gated) {
  auto w = harness::rand_bytes(size_t(rows_of(s, gated) * s.k));
  for (auto& b : w)
    if ((b & 0x7f) == 0x7f) b = static_cast<uint8_t>(b - 1);  // no NaN encodings
  auto scale = rand_scales(size_t(rows_of(s, gated)));
  DevBuf<uint8_t> dw(w);
  DevBuf<float> ds(scale);
  auto gpu = gated ? minmo_gemv_silu_fp8 : minmo_gemv_fp8;
  auto cpu = gated ? minmo_gemv_silu_fp8_cpu : minmo_gemv_fp8_cpu;
  run_case(
      gated ? "gemv_silu_fp8" : "gemv_fp8", s, misalign, shape_of(s, misalign),
      [&](uint16_t* x, uint16_t* y) { return gpu(x, dw.data(), ds.data(), y, s.batch, s.n, s.k, nullptr); },
      [&](const uint16_t* x, uint16_t* y) { return cpu(x, w.data(), scale.data(), y, s.batch, s.n, s.k); },
      expected);
}

}  // namespace

MINMO_CHECK(gemv) {
  // {B, N, K}: K % 16 == 0 takes the 128-bit path for every format; K % 8 == 0 only for bf16.
  std::vector<Shape> shapes = {{1, 1, 8}, {1, 37, 136}, {3, 29, 1000}, {8, 5, 64}, {2, 13, 77}};
  if (!harness::small())
    shapes.insert(shapes.end(), {{1, 3584, 3584}, {1, 4608, 3584}, {2, 333, 18944}, {5, 1027, 896},
                                 {8, 129, 2048}, {4, 250, 777}, {7, 64, 4864}, {6, 100, 4000}});
  const int fp8_expected = minmo_fp8_supported() ? MINMO_KERNEL_OK : MINMO_KERNEL_UNSUPPORTED;
  for (bool gated : {false, true}) {
    for (const auto& s : shapes) {
      bf16_case(s, 0, gated);
      int8_case(s, 0, gated);
      fp8_case(s, 0, fp8_expected, gated);
    }
    bf16_case({2, 19, 256}, 1, gated);
    int8_case({3, 19, 256}, 1, gated);
    fp8_case({1, 19, 256}, 1, fp8_expected, gated);
  }
  // {B, N, K} with K a multiple of the group.
  // Groups of 1, 2, 4 chunks (shift) and 3 chunks (division).
  std::vector<std::pair<Shape, int64_t>> q4 = {{{1, 37, 128}, 128}, {{3, 29, 384}, 128}, {{2, 31, 96}, 32},
                                               {{8, 9, 256}, 64}, {{3, 21, 288}, 96}};
  if (!harness::small())
    q4.insert(q4.end(), {{{1, 3584, 3584}, 128}, {{1, 1027, 18944}, 128}, {{5, 300, 4864}, 128},
                         {{4, 77, 896}, 128}});
  for (bool gated : {false, true}) {
    for (const auto& c : q4)
      for (bool sym : {false, true}) int4_case(c.first, c.second, sym, 0, gated);
    int4_case({2, 17, 256}, 128, false, 1, gated);
  }

  // Rejected before launch.
  uint16_t* p = reinterpret_cast<uint16_t*>(256);
  uint16_t* y = reinterpret_cast<uint16_t*>(1 << 20);
  harness::record("gemv_bf16", "batch=9", 0, 0, minmo_gemv_bf16(p, p, y, 9, 4, 8, nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
  harness::record("gemv_int8", "scale=null", 0, 0,
                  minmo_gemv_int8(p, reinterpret_cast<int8_t*>(p), nullptr, y, 1, 4, 16, nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
  harness::record("gemv_int4", "group=100", 0, 0,
                  minmo_gemv_int4(p, reinterpret_cast<uint8_t*>(p), p, nullptr, y, 1, 4, 200, 100, nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
  harness::record("gemv_int4", "K % group != 0", 0, 0,
                  minmo_gemv_int4(p, reinterpret_cast<uint8_t*>(p), p, nullptr, y, 1, 4, 160, 128, nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
  harness::record("gemv_bf16", "y overlaps x", 0, 0, minmo_gemv_bf16(p, p, p + 4, 1, 4, 8, nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
}
