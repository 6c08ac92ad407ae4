#include "audio/spectral.h"

#include <cmath>

#include "minmo/status.h"

namespace minmo {
namespace audio {

PowerSpectrum::PowerSpectrum(int64_t n_in, int64_t n_fft) : n_in_(n_in), n_fft_(n_fft), n_bins_(n_fft / 2 + 1) {
  MINMO_CHECK(n_fft > 0 && n_in > 0 && n_in <= n_fft, ErrorCode::InvalidArgument,
              "power spectrum: frame of " << n_in << " samples does not fit an FFT of size " << n_fft);
  cos_.resize(static_cast<size_t>(n_in_ * n_bins_));
  sin_.resize(cos_.size());
  const double two_pi = 2.0 * std::acos(-1.0);
  for (int64_t j = 0; j < n_in_; ++j) {
    for (int64_t k = 0; k < n_bins_; ++k) {
      // Reduce j*k modulo n_fft first so the angle stays in [0, 2 pi) (exact tables).
      const double angle = two_pi * static_cast<double>((j * k) % n_fft_) / static_cast<double>(n_fft_);
      cos_[static_cast<size_t>(j * n_bins_ + k)] = std::cos(angle);
      sin_[static_cast<size_t>(j * n_bins_ + k)] = std::sin(angle);
    }
  }
}

void PowerSpectrum::compute(const double* x, double* power) const {
  // Accumulate over samples with the bin loop innermost (vectorisable, fixed order).
  thread_local std::vector<double> work;
  work.assign(static_cast<size_t>(2 * n_bins_), 0.0);
  double* r = work.data();
  double* m = r + n_bins_;
  for (int64_t j = 0; j < n_in_; ++j) {
    const double xj = x[j];
    if (xj == 0.0) continue;
    const double* c = cos_.data() + j * n_bins_;
    const double* s = sin_.data() + j * n_bins_;
    for (int64_t k = 0; k < n_bins_; ++k) {
      r[k] += xj * c[k];
      m[k] += xj * s[k];
    }
  }
  for (int64_t k = 0; k < n_bins_; ++k) power[k] = r[k] * r[k] + m[k] * m[k];
}

MelProjection::MelProjection(const float* bank, int64_t n_mels, int64_t n_bins)
    : n_mels_(n_mels), n_bins_(n_bins), bank_(static_cast<size_t>(n_mels * n_bins)) {
  first_.resize(static_cast<size_t>(n_mels));
  last_.resize(static_cast<size_t>(n_mels));
  for (int64_t b = 0; b < n_mels; ++b) {
    int64_t f = n_bins, l = 0;
    for (int64_t k = 0; k < n_bins; ++k) {
      const double w = bank[b * n_bins + k];
      bank_[static_cast<size_t>(b * n_bins + k)] = w;
      if (w != 0.0) {
        if (f == n_bins) f = k;
        l = k + 1;
      }
    }
    first_[static_cast<size_t>(b)] = f < l ? f : 0;
    last_[static_cast<size_t>(b)] = f < l ? l : 0;
  }
}

void MelProjection::apply(const double* power, double* mel) const {
  for (int64_t b = 0; b < n_mels_; ++b) {
    const double* w = bank_.data() + b * n_bins_;
    double acc = 0.0;
    for (int64_t k = first_[static_cast<size_t>(b)]; k < last_[static_cast<size_t>(b)]; ++k) acc += power[k] * w[k];
    mel[b] = acc;
  }
}

}  // namespace audio
}  // namespace minmo
