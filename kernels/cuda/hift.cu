// HiFT iSTFT: each block owns kThreads consecutive output samples. It first turns the frames
// those samples need into (re, im) spectra in shared memory (one exp + sin + sincos per bin and
// frame), then each thread sums the <= n_fft / hop windowed inverse-DFT terms of its sample and
// divides by the window envelope.
#include <cuda_runtime.h>

#include "minmo_kernels/hift.h"

namespace {

constexpr int kThreads = 128;
constexpr int kBins = MINMO_HIFT_MAX_NFFT / 2 + 1;
constexpr int kMaxFrames = (kThreads + MINMO_HIFT_MAX_NFFT - 1) + 2;  // hop >= 1

__global__ void hift_istft_kernel(const float* __restrict__ spec, float* __restrict__ out, int64_t frames, int n_fft,
                                  int hop, float audio_limit) {
  __shared__ float re[kMaxFrames * kBins], im[kMaxFrames * kBins];
  __shared__ float cs[MINMO_HIFT_MAX_NFFT], sn[MINMO_HIFT_MAX_NFFT], win[MINMO_HIFT_MAX_NFFT];
  const int bins = n_fft / 2 + 1, off = n_fft / 2;
  const int64_t len = static_cast<int64_t>(hop) * (frames - 1);
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kThreads;
  const int64_t t_first = i0 + off, t_last = (i0 + kThreads - 1 < len ? i0 + kThreads - 1 : len - 1) + off;
  const int64_t f_lo = t_first - n_fft + 1 > 0 ? (t_first - n_fft + 1 + hop - 1) / hop : 0;
  const int64_t f_hi = t_last / hop < frames - 1 ? t_last / hop : frames - 1;
  const int nf = static_cast<int>(f_hi - f_lo + 1);

  for (int n = threadIdx.x; n < n_fft; n += blockDim.x) {
    float s, c;
    sincospif(2.f * n / n_fft, &s, &c);
    cs[n] = c;
    sn[n] = s;
    win[n] = 0.5f - 0.5f * c;  // periodic hann
  }
  for (int j = threadIdx.x; j < nf * bins; j += blockDim.x) {
    const int fl = j / bins, k = j % bins;
    const int64_t f = f_lo + fl;
    const float mag = fminf(expf(spec[k * frames + f]), 100.f);
    const float ph = sinf(spec[(bins + k) * frames + f]);
    float s, c;
    sincosf(ph, &s, &c);
    re[fl * bins + k] = mag * c;
    im[fl * bins + k] = mag * s;
  }
  __syncthreads();

  const int64_t i = i0 + threadIdx.x;
  if (i >= len) return;
  const int64_t t = i + off;
  const int64_t fa = t - n_fft + 1 > 0 ? (t - n_fft + 1 + hop - 1) / hop : 0;
  const int64_t fb = t / hop < frames - 1 ? t / hop : frames - 1;
  float acc = 0.f, env = 0.f;
  for (int64_t f = fa; f <= fb; ++f) {
    const int n = static_cast<int>(t - f * hop);
    const float* r = re + (f - f_lo) * bins;
    const float* m = im + (f - f_lo) * bins;
    float s = r[0] + ((n & 1) ? -r[bins - 1] : r[bins - 1]);
    for (int k = 1; k < bins - 1; ++k) {
      const int idx = (k * n) % n_fft;
      s += 2.f * (r[k] * cs[idx] - m[k] * sn[idx]);
    }
    acc += s / n_fft * win[n];
    env += win[n] * win[n];
  }
  float y = acc / env;
  if (audio_limit > 0.f) y = fmaxf(-audio_limit, fminf(audio_limit, y));
  out[i] = y;
}

__global__ void hamming_crossfade_kernel(float* chunk, const float* __restrict__ prev_tail, int64_t overlap) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= overlap) return;
  const double m = static_cast<double>(2 * overlap - 1);
  const float w_in = static_cast<float>(0.54 - 0.46 * cospi(2.0 * i / m));
  const float w_out = static_cast<float>(0.54 - 0.46 * cospi(2.0 * (overlap + i) / m));
  chunk[i] = chunk[i] * w_in + prev_tail[i] * w_out;
}

}  // namespace

extern "C" int minmo_hift_istft_f32(const float* spec, float* out, int64_t frames, int32_t n_fft, int32_t hop,
                                    float audio_limit, cudaStream_t stream) {
  if (!spec || !out || frames < 2 || n_fft < 2 || n_fft % 2 || n_fft > MINMO_HIFT_MAX_NFFT || hop < 1 ||
      hop > n_fft / 2)
    return MINMO_KERNEL_INVALID_ARGUMENT;
  const int64_t len = static_cast<int64_t>(hop) * (frames - 1);
  const int64_t blocks = (len + kThreads - 1) / kThreads;
  if (blocks > 0x7fffffff) return MINMO_KERNEL_INVALID_ARGUMENT;
  hift_istft_kernel<<<static_cast<unsigned int>(blocks), kThreads, 0, stream>>>(spec, out, frames, n_fft, hop,
                                                                                audio_limit);
  return cudaGetLastError() == cudaSuccess ? MINMO_KERNEL_OK : MINMO_KERNEL_LAUNCH_FAILED;
}

extern "C" int minmo_hamming_crossfade_f32(float* chunk, const float* prev_tail, int64_t overlap, cudaStream_t stream) {
  if (!chunk || !prev_tail || overlap < 1 || (chunk < prev_tail + overlap && prev_tail < chunk + overlap))
    return MINMO_KERNEL_INVALID_ARGUMENT;
  constexpr int kT = 256;
  const int64_t blocks = (overlap + kT - 1) / kT;
  if (blocks > 0x7fffffff) return MINMO_KERNEL_INVALID_ARGUMENT;
  hamming_crossfade_kernel<<<static_cast<unsigned int>(blocks), kT, 0, stream>>>(chunk, prev_tail, overlap);
  return cudaGetLastError() == cudaSuccess ? MINMO_KERNEL_OK : MINMO_KERNEL_LAUNCH_FAILED;
}
