// CPU twins of the HiFT filter-network kernels (minmo_kernels/hift_net.h).
#include <cmath>
#include <vector>

#include "../common/args.h"
#include "minmo_kernels.h"

namespace {

inline float activate(float v, int32_t act, float slope, const float* alpha, int64_t c) {
  switch (act) {
    case MINMO_CONV_ACT_LEAKY_RELU:
      return v > 0.f ? v : slope * v;
    case MINMO_CONV_ACT_ELU:
      return v > 0.f ? v : std::expm1(v);
    case MINMO_CONV_ACT_SNAKE: {
      const float s = std::sin(v * alpha[c]);
      return v + (1.f / (alpha[c] + 1e-9f)) * s * s;
    }
    default:
      return v;
  }
}

}  // namespace

extern "C" int minmo_conv1d_im2col_f32_cpu(const float* x, const float* alpha, float* out, int64_t t_in,
                                           int64_t channels, int64_t t_out, int64_t ld, int32_t kernel, int32_t stride,
                                           int32_t pad, int32_t dilation, int32_t act, float slope) {
  if (!minmo_args::conv1d_im2col_ok(x, out, t_in, channels, t_out, ld, kernel, stride, pad, dilation, act) ||
      (act == MINMO_CONV_ACT_SNAKE && !alpha))
    return MINMO_KERNEL_INVALID_ARGUMENT;
  const int64_t C = channels, K = kernel, width = C * K;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < t_out; ++t) {
    float* o = out + t * ld;
    for (int64_t j = 0; j < K; ++j) {
      const int64_t r = t * stride - pad + j * dilation;
      const bool in = r >= 0 && r < t_in;
      for (int64_t c = 0; c < C; ++c) o[c * K + j] = in ? activate(x[r * C + c], act, slope, alpha, c) : 0.f;
    }
    for (int64_t i = width; i < ld; ++i) o[i] = i == width ? 1.f : 0.f;
  }
  return MINMO_KERNEL_OK;
}

extern "C" int minmo_conv_transpose1d_col2im_f32_cpu(const float* z, const float* bias, float* y, int64_t t_in,
                                                     int64_t channels, int32_t kernel, int32_t stride, int32_t pad,
                                                     int32_t reflect) {
  if (!minmo_args::col2im_ok(z, y, t_in, channels, kernel, stride, pad, reflect)) return MINMO_KERNEL_INVALID_ARGUMENT;
  const int64_t C = channels, K = kernel, L = minmo_args::conv_transpose1d_len(t_in, kernel, stride, pad);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < L + reflect; ++r) {
    const int64_t q = r >= reflect ? r - reflect : reflect - r;
    // inputs t with 0 <= q + p - t s < k
    const int64_t hi = std::min<int64_t>(t_in - 1, (q + pad) / stride);
    for (int64_t c = 0; c < C; ++c) {
      double acc = bias ? bias[c] : 0.0;
      for (int64_t t = hi; t >= 0; --t) {
        const int64_t j = q + pad - t * stride;
        if (j >= K) break;
        acc += z[t * C * K + c * K + j];
      }
      y[r * C + c] = static_cast<float>(acc);
    }
  }
  return MINMO_KERNEL_OK;
}

extern "C" int minmo_hift_stft_f32_cpu(const float* x, float* spec, int64_t n, int32_t n_fft, int32_t hop) {
  if (!minmo_args::hift_stft_ok(x, spec, n, n_fft, hop)) return MINMO_KERNEL_INVALID_ARGUMENT;
  const int64_t half = n_fft / 2, bins = half + 1, frames = n / hop + 1;
  const double pi = 3.14159265358979323846;
  std::vector<double> win(n_fft), cs(n_fft), sn(n_fft);
  for (int m = 0; m < n_fft; ++m) {
    win[m] = 0.5 - 0.5 * std::cos(2.0 * pi * m / n_fft);
    cs[m] = std::cos(2.0 * pi * m / n_fft);
    sn[m] = std::sin(2.0 * pi * m / n_fft);
  }
#pragma omp parallel for schedule(static)
  for (int64_t f = 0; f < frames; ++f) {
    double v[MINMO_HIFT_MAX_NFFT];
    for (int m = 0; m < n_fft; ++m) {
      int64_t j = f * hop + m - half;
      if (j < 0) j = -j;
      if (j >= n) j = 2 * (n - 1) - j;
      v[m] = win[m] * x[j];
    }
    for (int64_t b = 0; b < bins; ++b) {
      double re = 0.0, im = 0.0;
      for (int m = 0; m < n_fft; ++m) {
        const int idx = static_cast<int>((b * m) % n_fft);
        re += v[m] * cs[idx];
        im -= v[m] * sn[idx];
      }
      spec[f * 2 * bins + b] = static_cast<float>(re);
      spec[f * 2 * bins + bins + b] = static_cast<float>(im);
    }
  }
  return MINMO_KERNEL_OK;
}

extern "C" int minmo_axpby_f32_cpu(const float* x, float* y, int64_t n, float a, float b) {
  if (!minmo_args::axpby_ok(x, y, n)) return MINMO_KERNEL_INVALID_ARGUMENT;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = b == 0.f ? a * x[i] : a * x[i] + b * y[i];
  return MINMO_KERNEL_OK;
}
