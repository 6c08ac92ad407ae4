// HiFT NSF source on the device (minmo_kernels/hift.h). minmo_hift_phase_f64: one block per
// harmonic, MINMO_HIFT_SCAN_THREADS threads; thread t folds the phase steps of a run of frames
// (frac(x + S r) from 0), the runs' totals are scanned mod 1 in shared memory (Hillis-Steele), and
// each run is folded again from the window's carried phase plus its offset, writing q and the
// history ring. minmo_hift_source_f32: one thread per sample (harmonics, noise, l_linear, tanh in
// minmo_hift_source_sample, shared with the twin).
#include <cuda_runtime.h>

#include "../common/args.h"
#include "minmo_kernels.h"

namespace {

constexpr int kScan = MINMO_HIFT_SCAN_THREADS;
constexpr int kSourceThreads = 256;

__global__ void __launch_bounds__(kScan)
    hift_phase_kernel(const float* __restrict__ f0_raw, const minmo_hift_window* __restrict__ window, float* f0_hist,
                      double* q_hist, int64_t cap, float* __restrict__ f0, double* __restrict__ q, int64_t T,
                      minmo_hift_nsf nsf) {
  __shared__ double run[kScan];
  const int h = blockIdx.x, tid = threadIdx.x, H = nsf.harmonics;
  const minmo_hift_window w = *window;
  if (!minmo_hift_window_ok(&w, T)) {
    for (int64_t i = tid; i < T + 1; i += kScan) {
      q[i * H + h] = __longlong_as_double(0x7ff8000000000000ll);
      if (h == 0 && i < T) f0[i] = __int_as_float(0x7fc00000);
    }
    return;
  }
  const int64_t nh = w.e0 - w.a0, m = T - nh, fin = w.e1 - w.a0;
  // f0 of the window (history, else the predictor's); each block reads what it needs itself
  if (h == 0)
    for (int64_t i = tid; i < T; i += kScan) {
      const float v = i < nh ? f0_hist[(w.a0 + i) % cap] : fabsf(f0_raw[i]);
      f0[i] = v;
      if (i >= nh && i < fin) f0_hist[(w.a0 + i) % cap] = v;
    }
  if (tid == 0) q[h] = w.a0 > 0 ? q_hist[((w.a0 - 1) % cap) * H + h] : 0.0;
  for (int64_t i = tid; i < nh; i += kScan) q[(1 + i) * H + h] = q_hist[((w.a0 + i) % cap) * H + h];
  const double base = w.e0 > 0 ? q_hist[((w.e0 - 1) % cap) * H + h] : 0.0;
  const double S = static_cast<double>(nsf.samples_per_frame);
  const int64_t c = (m + kScan - 1) / kScan, lo = tid * c, hi = lo + c < m ? lo + c : m;
  double x = 0.0;
  for (int64_t j = lo; j < hi; ++j)
    x = minmo_frac_add(x, minmo_dmul(S, minmo_hift_phase_step(fabsf(f0_raw[nh + j]), h, nsf.sample_rate)));
  run[tid] = x;
  __syncthreads();
  for (int off = 1; off < kScan; off <<= 1) {
    const double v = tid >= off ? minmo_frac_add(run[tid - off], run[tid]) : run[tid];
    __syncthreads();
    run[tid] = v;
    __syncthreads();
  }
  x = minmo_frac_add(base, tid > 0 ? run[tid - 1] : 0.0);
  for (int64_t j = lo; j < hi; ++j) {
    x = minmo_frac_add(x, minmo_dmul(S, minmo_hift_phase_step(fabsf(f0_raw[nh + j]), h, nsf.sample_rate)));
    q[(1 + nh + j) * H + h] = x;
    if (nh + j < fin) q_hist[((w.a0 + nh + j) % cap) * H + h] = x;
  }
}

__global__ void hift_source_kernel(const float* __restrict__ f0, const double* __restrict__ q,
                                   const minmo_hift_window* __restrict__ window, const float* __restrict__ lin_w,
                                   const float* __restrict__ lin_b, float* __restrict__ out, int64_t T,
                                   minmo_hift_nsf nsf) {
  const int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (n >= T * nsf.samples_per_frame) return;
  const minmo_hift_window w = *window;
  out[n] = minmo_hift_window_ok(&w, T) ? minmo_hift_source_sample(f0, q, T, n, &w, lin_w, lin_b, &nsf)
                                       : __int_as_float(0x7fc00000);
}

__global__ void counter_normal_kernel(uint64_t key, uint64_t start, int64_t count, float* __restrict__ out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < count) out[i] = minmo_counter_normal_at(key, start + static_cast<uint64_t>(i));
}

int launched() { return cudaGetLastError() == cudaSuccess ? MINMO_KERNEL_OK : MINMO_KERNEL_LAUNCH_FAILED; }

}  // namespace

extern "C" int minmo_hift_phase_f64(const float* f0_raw, const minmo_hift_window* window, float* f0_hist,
                                    double* q_hist, int64_t cap, float* f0, double* q, int64_t frames,
                                    minmo_hift_nsf nsf, cudaStream_t stream) {
  if (!minmo_args::hift_phase_ok(f0_raw, window, f0_hist, q_hist, cap, f0, q, frames, nsf))
    return MINMO_KERNEL_INVALID_ARGUMENT;
  hift_phase_kernel<<<nsf.harmonics, kScan, 0, stream>>>(f0_raw, window, f0_hist, q_hist, cap, f0, q, frames, nsf);
  return launched();
}

extern "C" int minmo_hift_source_f32(const float* f0, const double* q, const minmo_hift_window* window,
                                     const float* lin_w, const float* lin_b, float* out, int64_t frames,
                                     minmo_hift_nsf nsf, cudaStream_t stream) {
  if (!minmo_args::hift_source_ok(f0, q, window, lin_w, out, frames, nsf)) return MINMO_KERNEL_INVALID_ARGUMENT;
  const int64_t n = frames * nsf.samples_per_frame, blocks = (n + kSourceThreads - 1) / kSourceThreads;
  if (blocks > 0x7fffffff) return MINMO_KERNEL_INVALID_ARGUMENT;
  hift_source_kernel<<<static_cast<unsigned>(blocks), kSourceThreads, 0, stream>>>(f0, q, window, lin_w, lin_b, out,
                                                                                   frames, nsf);
  return launched();
}

extern "C" int minmo_counter_normal_f32(uint64_t seed, uint64_t noise_stream, uint64_t start, int64_t count,
                                        float* out, cudaStream_t stream) {
  if (!out || count < 1) return MINMO_KERNEL_INVALID_ARGUMENT;
  const int64_t blocks = (count + kSourceThreads - 1) / kSourceThreads;
  if (blocks > 0x7fffffff) return MINMO_KERNEL_INVALID_ARGUMENT;
  counter_normal_kernel<<<static_cast<unsigned>(blocks), kSourceThreads, 0, stream>>>(
      minmo_counter_key(seed, noise_stream), start, count, out);
  return launched();
}
