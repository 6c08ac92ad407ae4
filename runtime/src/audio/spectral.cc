#include "audio/spectral.h"

#include <cmath>

#include "minmo/status.h"

namespace minmo {
namespace audio {
namespace {

// Plain complex product (std::complex's operator* takes a slow NaN/Inf-recovery path).
inline std::complex<double> mul(std::complex<double> a, std::complex<double> b) {
  return {a.real() * b.real() - a.imag() * b.imag(), a.real() * b.imag() + a.imag() * b.real()};
}

}  // namespace

PowerSpectrum::PowerSpectrum(int64_t n_in, int64_t n_fft) : n_in_(n_in), n_fft_(n_fft), n_bins_(n_fft / 2 + 1) {
  MINMO_CHECK(n_fft > 0 && n_in > 0 && n_in <= n_fft, ErrorCode::InvalidArgument,
              "power spectrum: frame of " << n_in << " samples does not fit an FFT of size " << n_fft);
  int64_t rest = n_fft;
  for (int64_t p : {4, 2, 3, 5}) {
    while (rest % p == 0) {
      factors_.push_back(p);
      rest /= p;
    }
  }
  for (int64_t p = 7; rest > 1; p += 2) {
    while (rest % p == 0) {
      factors_.push_back(p);
      rest /= p;
    }
  }
  twiddle_.resize(static_cast<size_t>(n_fft));
  const double two_pi = 2.0 * std::acos(-1.0);
  for (int64_t k = 0; k < n_fft; ++k) {
    const double angle = two_pi * static_cast<double>(k) / static_cast<double>(n_fft);
    twiddle_[static_cast<size_t>(k)] = cd(std::cos(angle), -std::sin(angle));
  }
}

void PowerSpectrum::transform(const cd* in, int64_t stride, cd* out, int64_t n, size_t fi) const {
  const int64_t p = factors_[fi], m = n / p, step = n_fft_ / n;  // W_n^e = twiddle_[e * step]
  if (m == 1) {
    for (int64_t q = 0; q < p; ++q) out[q] = in[q * stride];
  } else {
    for (int64_t q = 0; q < p; ++q) transform(in + q * stride, stride * p, out + q * m, m, fi + 1);
  }
  // Combine: X[k + s m] = sum_q W_n^(q k) W_p^(q s) Y_q[k], with Y_q[k] = out[q m + k].
  thread_local std::vector<cd> scratch;
  if (scratch.size() < static_cast<size_t>(p)) scratch.resize(static_cast<size_t>(p));
  cd* t = scratch.data();
  const int64_t root = n_fft_ / p;  // W_p^e = twiddle_[e * root]
  for (int64_t k = 0; k < m; ++k) {
    t[0] = out[k];
    for (int64_t q = 1; q < p; ++q) t[q] = mul(out[q * m + k], twiddle_[static_cast<size_t>(q * k * step)]);  // q k < n
    if (p == 2) {
      out[k] = t[0] + t[1];
      out[k + m] = t[0] - t[1];
    } else if (p == 4) {
      const cd a = t[0] + t[2], b = t[0] - t[2], c = t[1] + t[3], e = t[1] - t[3];
      const cd d(e.imag(), -e.real());  // -i (t1 - t3)
      out[k] = a + c;
      out[k + m] = b + d;
      out[k + 2 * m] = a - c;
      out[k + 3 * m] = b - d;
    } else {
      for (int64_t s = 0; s < p; ++s) {
        cd acc = t[0];
        int64_t e = 0;  // (q s) mod p
        for (int64_t q = 1; q < p; ++q) {
          e += s;
          if (e >= p) e -= p;
          acc += mul(t[q], twiddle_[static_cast<size_t>(e * root)]);
        }
        out[k + s * m] = acc;
      }
    }
  }
}

void PowerSpectrum::compute(const double* x, double* power) const {
  thread_local std::vector<cd> in, out;
  in.assign(static_cast<size_t>(n_fft_), cd(0.0, 0.0));
  out.resize(static_cast<size_t>(n_fft_));
  for (int64_t j = 0; j < n_in_; ++j) in[static_cast<size_t>(j)] = cd(x[j], 0.0);
  transform(in.data(), 1, out.data(), n_fft_, 0);
  for (int64_t k = 0; k < n_bins_; ++k) power[k] = std::norm(out[static_cast<size_t>(k)]);
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
