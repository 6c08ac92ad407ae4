// Spectral building blocks of the audio frontends, in double precision: the power spectrum of a
// real frame (mixed-radix FFT over precomputed twiddles) and a sparse mel projection.
// Each frame is computed by the same fixed sequence of operations whatever the batch, so a
// streamed frontend reproduces the offline one bit for bit.
#pragma once

#include <complex>
#include <cstdint>
#include <vector>

namespace minmo {
namespace audio {

// |rfft(x, n_fft)|^2 for frames of `n_in` <= n_fft samples (zero-padded to n_fft):
// n_fft / 2 + 1 bins.
class PowerSpectrum {
 public:
  PowerSpectrum(int64_t n_in, int64_t n_fft);
  int64_t n_in() const { return n_in_; }
  int64_t n_bins() const { return n_bins_; }
  // x[n_in] -> power[n_bins]. Thread-safe (const).
  void compute(const double* x, double* power) const;

 private:
  using cd = std::complex<double>;
  // Decimation in time: out[0, n) = DFT_n of in[0], in[stride], ..., using factors_[fi...].
  void transform(const cd* in, int64_t stride, cd* out, int64_t n, size_t fi) const;

  int64_t n_in_, n_fft_, n_bins_;
  std::vector<int64_t> factors_;  // n_fft = product; radix 4 first, then 2, 3, 5, other primes
  std::vector<cd> twiddle_;       // exp(-2 pi i k / n_fft), k in [0, n_fft)
};

// y[b] = sum_k power[k] * bank[b, k] over the non-zero span of each filter.
class MelProjection {
 public:
  MelProjection() = default;
  // bank: [n_mels, n_bins] (row-major, fp32 as stored).
  MelProjection(const float* bank, int64_t n_mels, int64_t n_bins);
  int64_t n_mels() const { return n_mels_; }
  void apply(const double* power, double* mel) const;

 private:
  int64_t n_mels_ = 0, n_bins_ = 0;
  std::vector<double> bank_;
  std::vector<int64_t> first_, last_;  // non-zero span [first, last) of each filter
};

}  // namespace audio
}  // namespace minmo
