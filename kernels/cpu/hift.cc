#include <cmath>
#include <vector>

#include "minmo_kernels/hift.h"

namespace {

bool istft_args_ok(const float* spec, const float* out, int64_t frames, int32_t n_fft, int32_t hop) {
  return spec && out && frames >= 2 && n_fft >= 2 && n_fft % 2 == 0 && n_fft <= MINMO_HIFT_MAX_NFFT && hop >= 1 &&
         hop <= n_fft / 2;
}

}  // namespace

extern "C" int minmo_hift_istft_f32_cpu(const float* spec, float* out, int64_t frames, int32_t n_fft, int32_t hop,
                                        float audio_limit) {
  if (!istft_args_ok(spec, out, frames, n_fft, hop)) return MINMO_KERNEL_INVALID_ARGUMENT;
  const int bins = n_fft / 2 + 1;
  const double pi = 3.14159265358979323846;
  std::vector<double> win(n_fft), cs(n_fft), sn(n_fft);
  for (int n = 0; n < n_fft; ++n) {
    win[n] = 0.5 - 0.5 * std::cos(2.0 * pi * n / n_fft);  // periodic hann
    cs[n] = std::cos(2.0 * pi * n / n_fft);
    sn[n] = std::sin(2.0 * pi * n / n_fft);
  }
  // Inverse real DFT of every frame, windowed, overlap-added; then divided by the window envelope.
  const int64_t full = static_cast<int64_t>(n_fft) + hop * (frames - 1);
  std::vector<double> acc(static_cast<size_t>(full), 0.0), env(static_cast<size_t>(full), 0.0);
  std::vector<double> re(bins), im(bins);
  for (int64_t f = 0; f < frames; ++f) {
    for (int k = 0; k < bins; ++k) {
      const double mag = std::fmin(std::exp(static_cast<double>(spec[k * frames + f])), 100.0);
      const double ph = std::sin(static_cast<double>(spec[(bins + k) * frames + f]));
      re[k] = mag * std::cos(ph);
      im[k] = mag * std::sin(ph);
    }
    for (int n = 0; n < n_fft; ++n) {
      double s = re[0] + ((n & 1) ? -re[bins - 1] : re[bins - 1]);
      for (int k = 1; k < bins - 1; ++k) {
        const int idx = (k * n) % n_fft;
        s += 2.0 * (re[k] * cs[idx] - im[k] * sn[idx]);
      }
      acc[f * hop + n] += s / n_fft * win[n];
      env[f * hop + n] += win[n] * win[n];
    }
  }
  const int64_t len = hop * (frames - 1), off = n_fft / 2;
  for (int64_t i = 0; i < len; ++i) {
    double y = acc[off + i] / env[off + i];
    if (audio_limit > 0) y = std::fmax(-audio_limit, std::fmin(static_cast<double>(audio_limit), y));
    out[i] = static_cast<float>(y);
  }
  return MINMO_KERNEL_OK;
}

extern "C" int minmo_hamming_crossfade_f32_cpu(float* chunk, const float* prev_tail, int64_t overlap) {
  if (!chunk || !prev_tail || overlap < 1 || (chunk < prev_tail + overlap && prev_tail < chunk + overlap))
    return MINMO_KERNEL_INVALID_ARGUMENT;
  const double pi = 3.14159265358979323846, m = static_cast<double>(2 * overlap - 1);
  for (int64_t i = 0; i < overlap; ++i) {
    const double w_in = 0.54 - 0.46 * std::cos(2.0 * pi * i / m);
    const double w_out = 0.54 - 0.46 * std::cos(2.0 * pi * (overlap + i) / m);
    chunk[i] = static_cast<float>(chunk[i] * w_in + prev_tail[i] * w_out);
  }
  return MINMO_KERNEL_OK;
}
