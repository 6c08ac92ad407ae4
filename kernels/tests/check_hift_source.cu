// HiFT NSF source kernels (minmo_kernels/hift.h) against their CPU twins: the float64 phase scan
// (runs of several frames per thread above MINMO_HIFT_SCAN_THREADS frames), a stream of windows
// through the history ring, the source samples (sin / log / cos in float64 on the device), the
// counter-based normals, and the NaN answer to an inconsistent window. Outputs start poisoned.
#include "harness.h"

using harness::DevBuf;

namespace {

minmo_hift_nsf nsf_of(int harmonics) {
  minmo_hift_nsf n{};
  n.harmonics = harmonics;
  n.samples_per_frame = 480;
  n.sample_rate = 24000.0;
  n.alpha = 0.1;
  n.sigma = 0.003;
  n.voiced_threshold = 10.0;
  n.noise_stream = 1;
  return n;
}

std::vector<float> random_f0(int64_t n) {
  std::uniform_real_distribution<float> hz(-400.f, 400.f), coin(0.f, 1.f);
  std::vector<float> f(static_cast<size_t>(n));
  for (auto& v : f) v = coin(harness::rng()) < 0.3f ? 3.f * coin(harness::rng()) : hz(harness::rng());
  return f;
}

// Largest circular distance (turns) between two phase arrays; infinity on NaN.
double phase_err(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) return INFINITY;
    double d = std::fabs(a[i] - b[i]);
    d -= std::floor(d);
    m = std::max(m, std::min(d, 1.0 - d));
  }
  return m;
}

// A stream of windows (e1 values) over `total` frames, left / right context, on the device and
// through the twins, each with its own history ring; checks f0, q, the ring and the source.
void stream_case(int64_t total, int64_t left, int64_t right, std::vector<int64_t> ends, int harmonics) {
  const minmo_hift_nsf nsf = nsf_of(harmonics);
  const int64_t H = harmonics, S = nsf.samples_per_frame;
  int64_t max_t = 0, e0 = 0;
  for (int64_t e1 : ends) {
    max_t = std::max(max_t, std::min(total, e1 + right) - std::max<int64_t>(0, e0 - left));
    e0 = e1;
  }
  const int64_t cap = max_t + 1;
  auto f0_all = random_f0(total);
  auto lin_w = harness::randn(size_t(H)), lin_b = harness::randn(1, 0.1f);
  std::vector<float> c_f0h(size_t(cap), NAN);
  std::vector<double> c_qh(size_t(cap * H), NAN);
  DevBuf<float> d_f0h = DevBuf<float>::poisoned(size_t(cap)), d_w(lin_w), d_b(lin_b);
  DevBuf<double> d_qh = DevBuf<double>::poisoned(size_t(cap * H));
  DevBuf<minmo_hift_window> d_win = DevBuf<minmo_hift_window>::poisoned(1);
  double err_q = 0, err_f0 = 0, err_src = 0;
  int rc = MINMO_KERNEL_OK;
  e0 = 0;
  for (int64_t e1 : ends) {
    const int64_t a0 = std::max<int64_t>(0, e0 - left), T = std::min(total, e1 + right) - a0;
    std::vector<float> raw(f0_all.begin() + a0, f0_all.begin() + a0 + T);
    for (int64_t i = 0; i < e0 - a0; ++i) raw[size_t(i)] = 1e4f;  // history frames: must come from the ring
    const minmo_hift_window w{a0, e0, e1, 0x1234567890abcdefull};
    std::vector<float> c_f0(size_t(T), NAN), c_src(size_t(T * S), NAN);
    std::vector<double> c_q(size_t((T + 1) * H), NAN);
    minmo_hift_phase_f64_cpu(raw.data(), &w, c_f0h.data(), c_qh.data(), cap, c_f0.data(), c_q.data(), T, nsf);
    minmo_hift_source_f32_cpu(c_f0.data(), c_q.data(), &w, lin_w.data(), lin_b.data(), c_src.data(), T, nsf);
    DevBuf<float> d_raw(raw), d_f0 = DevBuf<float>::poisoned(size_t(T)), d_src = DevBuf<float>::poisoned(size_t(T * S));
    DevBuf<double> d_q = DevBuf<double>::poisoned(size_t((T + 1) * H));
    cudaMemcpy(d_win.data(), &w, sizeof(w), cudaMemcpyHostToDevice);
    int r = minmo_hift_phase_f64(d_raw.data(), d_win.data(), d_f0h.data(), d_qh.data(), cap, d_f0.data(), d_q.data(),
                                 T, nsf, nullptr);
    if (r == MINMO_KERNEL_OK)
      r = minmo_hift_source_f32(d_f0.data(), d_q.data(), d_win.data(), d_w.data(), d_b.data(), d_src.data(), T, nsf,
                                nullptr);
    harness::sync();
    if (r != MINMO_KERNEL_OK) rc = r;
    err_q = std::max(err_q, phase_err(d_q.host(), c_q));
    err_f0 = std::max(err_f0, harness::rel_err(d_f0.host(), c_f0));
    err_src = std::max(err_src, harness::rel_err(d_src.host(), c_src));
    e0 = e1;
  }
  // the ring's final frames (slots never written stay NaN on both sides: compared where finite)
  std::vector<double> g_qh = d_qh.host();
  for (size_t i = 0; i < g_qh.size(); ++i)
    if (!std::isfinite(c_qh[i]) && !std::isfinite(g_qh[i])) g_qh[i] = c_qh[i] = 0;
  err_q = std::max(err_q, phase_err(g_qh, c_qh));
  const std::string shape = harness::shape_str({{"frames", total}, {"windows", int64_t(ends.size())}, {"H", H}});
  harness::record("hift_phase_f64", shape + " q (turns)", err_q, 1e-12, rc);
  harness::record("hift_phase_f64", shape + " f0", err_f0, 0, rc);
  // float64 sin / log / cos of the device vs libm, then fp32 harmonics, l_linear and tanhf
  harness::record("hift_source_f32", shape, err_src, 2e-6, rc);
}

void invalid_window_case() {
  const minmo_hift_nsf nsf = nsf_of(9);
  const int64_t T = 12, S = nsf.samples_per_frame;
  const minmo_hift_window w{5, 3, 7, 0};  // e0 < a0
  DevBuf<float> raw(random_f0(T)), f0h(std::vector<float>(T + 1, 1.f)), wt(harness::randn(9));
  DevBuf<double> qh = DevBuf<double>::poisoned(size_t((T + 1) * 9)), q(std::vector<double>(size_t((T + 1) * 9), 0.0));
  DevBuf<float> f0 = DevBuf<float>::poisoned(size_t(T)), src(std::vector<float>(size_t(T * S), 0.f));
  DevBuf<minmo_hift_window> dw(std::vector<minmo_hift_window>{w});
  int rc = minmo_hift_phase_f64(raw.data(), dw.data(), f0h.data(), qh.data(), T + 1, f0.data(), q.data(), T, nsf, nullptr);
  if (rc == MINMO_KERNEL_OK)
    rc = minmo_hift_source_f32(f0.data(), q.data(), dw.data(), wt.data(), nullptr, src.data(), T, nsf, nullptr);
  harness::sync();
  bool all_nan = true;
  for (double v : q.host()) all_nan = all_nan && std::isnan(v);
  for (float v : src.host()) all_nan = all_nan && std::isnan(v);
  for (float v : f0h.host()) all_nan = all_nan && v == 1.f;  // ring untouched
  harness::record("hift_source_f32", "inconsistent window -> NaN", all_nan ? 0.0 : 1.0, 0, rc);
  const int bad = minmo_hift_phase_f64(raw.data(), dw.data(), f0h.data(), qh.data(), T, f0.data(), q.data(), T, nsf,
                                       nullptr);  // cap < T + 1
  harness::record("hift_phase_f64", "cap < T + 1", 0, 0, bad, MINMO_KERNEL_INVALID_ARGUMENT);
}

void counter_normal_case(uint64_t seed, uint64_t start, int64_t count) {
  std::vector<float> cpu(size_t(count), NAN);
  minmo_counter_normal_f32_cpu(seed, 1, start, count, cpu.data());
  DevBuf<float> d = DevBuf<float>::poisoned(size_t(count));
  const int rc = minmo_counter_normal_f32(seed, 1, start, count, d.data(), nullptr);
  harness::sync();
  harness::record("counter_normal_f32", harness::shape_str({{"count", count}}), harness::rel_err(d.host(), cpu), 1e-7,
                  rc);
}

}  // namespace

MINMO_CHECK(hift_source) {
  stream_case(37, 0, 0, {37}, 9);                       // offline, one window
  stream_case(700, 0, 0, {700}, 3);                     // offline, 3 frames per scan thread
  stream_case(150, 11, 9, {20, 27, 60, 99, 100, 150}, 9);  // a stream of windows of several lengths
  if (!harness::small()) stream_case(400, 30, 27, {36, 100, 164, 228, 292, 356, 400}, 9);  // CosyVoice2-like
  invalid_window_case();
  counter_normal_case(0, 0, 1001);
  counter_normal_case(0xdeadbeefcafef00dull, (1ull << 40) + 7, 333);
}
