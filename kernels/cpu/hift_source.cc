// CPU twins of the HiFT NSF source kernels (minmo_kernels/hift.h): the same float64 operations in
// the same order as kernels/cuda/hift_source.cu (the scan simulates its MINMO_HIFT_SCAN_THREADS
// threads), the per-sample work through the shared minmo_hift_source_sample.
#include <cmath>
#include <limits>
#include <vector>

#include "../common/args.h"
#include "minmo_kernels.h"

extern "C" int minmo_hift_phase_f64_cpu(const float* f0_raw, const minmo_hift_window* window, float* f0_hist,
                                        double* q_hist, int64_t cap, float* f0, double* q, int64_t frames,
                                        minmo_hift_nsf nsf) {
  if (!minmo_args::hift_phase_ok(f0_raw, window, f0_hist, q_hist, cap, f0, q, frames, nsf))
    return MINMO_KERNEL_INVALID_ARGUMENT;
  const minmo_hift_window w = *window;
  const int64_t T = frames, H = nsf.harmonics, P = MINMO_HIFT_SCAN_THREADS;
  if (!minmo_hift_window_ok(&w, T)) {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    for (int64_t i = 0; i < T; ++i) f0[i] = static_cast<float>(nan);
    for (int64_t i = 0; i < (T + 1) * H; ++i) q[i] = nan;
    return MINMO_KERNEL_OK;
  }
  const int64_t nh = w.e0 - w.a0, m = T - nh, fin = w.e1 - w.a0;
  auto slot = [&](int64_t frame) { return frame % cap; };
  for (int64_t i = 0; i < T; ++i) f0[i] = i < nh ? f0_hist[slot(w.a0 + i)] : std::fabs(f0_raw[i]);
  for (int64_t i = nh; i < fin; ++i) f0_hist[slot(w.a0 + i)] = f0[i];
  const int64_t c = (m + P - 1) / P;
  std::vector<double> run(P), next(P);
  for (int64_t h = 0; h < H; ++h) {
    q[h] = w.a0 > 0 ? q_hist[slot(w.a0 - 1) * H + h] : 0.0;
    for (int64_t i = 0; i < nh; ++i) q[(1 + i) * H + h] = q_hist[slot(w.a0 + i) * H + h];
    const double base = w.e0 > 0 ? q_hist[slot(w.e0 - 1) * H + h] : 0.0;
    auto step = [&](int64_t j) {
      return minmo_dmul(static_cast<double>(nsf.samples_per_frame),
                        minmo_hift_phase_step(f0[nh + j], static_cast<int>(h), nsf.sample_rate));
    };
    for (int64_t t = 0; t < P; ++t) {  // each thread's run of frames, folded from 0
      double x = 0.0;
      for (int64_t j = t * c; j < std::min(t * c + c, m); ++j) x = minmo_frac_add(x, step(j));
      run[t] = x;
    }
    for (int64_t off = 1; off < P; off <<= 1) {  // inclusive scan of the runs (Hillis-Steele, mod 1)
      for (int64_t t = 0; t < P; ++t) next[t] = t >= off ? minmo_frac_add(run[t - off], run[t]) : run[t];
      run.swap(next);
    }
    for (int64_t t = 0; t < P; ++t) {
      double x = minmo_frac_add(base, t > 0 ? run[t - 1] : 0.0);
      for (int64_t j = t * c; j < std::min(t * c + c, m); ++j) {
        x = minmo_frac_add(x, step(j));
        q[(1 + nh + j) * H + h] = x;
        if (nh + j < fin) q_hist[slot(w.a0 + nh + j) * H + h] = x;
      }
    }
  }
  return MINMO_KERNEL_OK;
}

extern "C" int minmo_hift_source_f32_cpu(const float* f0, const double* q, const minmo_hift_window* window,
                                         const float* lin_w, const float* lin_b, float* out, int64_t frames,
                                         minmo_hift_nsf nsf) {
  if (!minmo_args::hift_source_ok(f0, q, window, lin_w, out, frames, nsf)) return MINMO_KERNEL_INVALID_ARGUMENT;
  const minmo_hift_window w = *window;
  const int64_t N = frames * nsf.samples_per_frame;
  const bool ok = minmo_hift_window_ok(&w, frames);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n)
    out[n] = ok ? minmo_hift_source_sample(f0, q, frames, n, &w, lin_w, lin_b, &nsf)
                : std::numeric_limits<float>::quiet_NaN();
  return MINMO_KERNEL_OK;
}

extern "C" int minmo_counter_normal_f32_cpu(uint64_t seed, uint64_t noise_stream, uint64_t start, int64_t count,
                                            float* out) {
  if (!out || count < 1) return MINMO_KERNEL_INVALID_ARGUMENT;
  const uint64_t key = minmo_counter_key(seed, noise_stream);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < count; ++i) out[i] = minmo_counter_normal_at(key, start + static_cast<uint64_t>(i));
  return MINMO_KERNEL_OK;
}
