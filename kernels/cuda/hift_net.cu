// HiFT filter-network kernels (minmo_kernels/hift_net.h). All are memory-bound gathers or
// elementwise passes next to the products (cuBLAS): one thread per output value.
//   im2col: grid (column blocks over ld, row slices); consecutive threads write consecutive
//     columns c * k + j of one row, reading k rows of x through L1.
//   col2im: one thread per output (row, channel), summing the <= ceil(k / s) products that land
//     there (no atomics, deterministic).
//   stft: one thread per (frame, bin), n_fft windowed taps.
#include <algorithm>

#include "../common/args.h"
#include "cuda_util.cuh"

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float activate(float v, int act, float slope, const float* alpha, int64_t c) {
  if (act == MINMO_CONV_ACT_LEAKY_RELU) return v > 0.f ? v : slope * v;
  if (act == MINMO_CONV_ACT_ELU) return v > 0.f ? v : expm1f(v);
  if (act == MINMO_CONV_ACT_SNAKE) {
    const float a = __ldg(alpha + c), s = sinf(v * a);
    return v + (1.f / (a + 1e-9f)) * s * s;
  }
  return v;
}

__global__ void im2col_kernel(const float* __restrict__ x, const float* __restrict__ alpha, float* __restrict__ out,
                              int64_t t_in, int64_t channels, int64_t t_out, int64_t ld, int kernel, int stride,
                              int pad, int dilation, int act, float slope) {
  const int64_t col = blockIdx.x * int64_t(blockDim.x) + threadIdx.x, width = channels * kernel;
  if (col >= ld) return;
  const int64_t c = col / kernel, j = col - c * kernel;
  for (int64_t t = blockIdx.y; t < t_out; t += gridDim.y) {
    float v;
    if (col < width) {
      const int64_t r = t * stride - pad + j * dilation;
      v = (r >= 0 && r < t_in) ? activate(__ldg(x + r * channels + c), act, slope, alpha, c) : 0.f;
    } else {
      v = col == width ? 1.f : 0.f;
    }
    out[t * ld + col] = v;
  }
}

__global__ void col2im_kernel(const float* __restrict__ z, const float* __restrict__ bias, float* __restrict__ y,
                              int64_t t_in, int64_t channels, int kernel, int stride, int pad, int reflect,
                              int64_t rows) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= rows * channels) return;
  const int64_t r = i / channels, c = i - r * channels;
  const int64_t q = r >= reflect ? r - reflect : reflect - r;
  const int64_t hi = min(t_in - 1, (q + pad) / stride);
  float acc = bias ? __ldg(bias + c) : 0.f;
  for (int64_t t = hi; t >= 0; --t) {
    const int64_t j = q + pad - t * stride;
    if (j >= kernel) break;
    acc += __ldg(z + (t * channels + c) * kernel + j);
  }
  y[i] = acc;
}

__global__ void stft_kernel(const float* __restrict__ x, float* __restrict__ spec, int64_t n, int n_fft, int hop,
                            int64_t frames) {
  const int bins = n_fft / 2 + 1, half = n_fft / 2;
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= frames * bins) return;
  const int64_t f = i / bins;
  const int b = static_cast<int>(i - f * bins);
  float re = 0.f, im = 0.f;
  for (int m = 0; m < n_fft; ++m) {
    int64_t j = f * hop + m - half;
    if (j < 0) j = -j;
    if (j >= n) j = 2 * (n - 1) - j;
    const float v = (0.5f - 0.5f * cospif(2.f * m / n_fft)) * __ldg(x + j);
    float s, c;
    sincospif(2.f * static_cast<float>((b * m) % n_fft) / n_fft, &s, &c);
    re += v * c;
    im -= v * s;
  }
  spec[f * 2 * bins + b] = re;
  spec[f * 2 * bins + bins + b] = im;
}

__global__ void axpby_kernel(const float* x, float* y, int64_t n, float a, float b) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  y[i] = b == 0.f ? a * x[i] : a * x[i] + b * y[i];
}

bool grid_1d(int64_t n, unsigned* blocks) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  if (b > 0x7fffffff) return false;
  *blocks = static_cast<unsigned>(b);
  return true;
}

}  // namespace

extern "C" int minmo_conv1d_im2col_f32(const float* x, const float* alpha, float* out, int64_t t_in, int64_t channels,
                                       int64_t t_out, int64_t ld, int32_t kernel, int32_t stride, int32_t pad,
                                       int32_t dilation, int32_t act, float slope, cudaStream_t stream) {
  if (!minmo_args::conv1d_im2col_ok(x, out, t_in, channels, t_out, ld, kernel, stride, pad, dilation, act) ||
      (act == MINMO_CONV_ACT_SNAKE && !alpha))
    return MINMO_KERNEL_INVALID_ARGUMENT;
  const int64_t cols = (ld + kThreads - 1) / kThreads;
  if (cols > 0x7fffffff) return MINMO_KERNEL_INVALID_ARGUMENT;
  const int64_t slices = std::max<int64_t>(1, std::min<int64_t>({t_out, 65535, std::max<int64_t>(1, 262144 / cols)}));
  im2col_kernel<<<dim3(static_cast<unsigned>(cols), static_cast<unsigned>(slices)), kThreads, 0, stream>>>(
      x, alpha, out, t_in, channels, t_out, ld, kernel, stride, pad, dilation, act, slope);
  return minmo_cuda::launch_status();
}

extern "C" int minmo_conv_transpose1d_col2im_f32(const float* z, const float* bias, float* y, int64_t t_in,
                                                 int64_t channels, int32_t kernel, int32_t stride, int32_t pad,
                                                 int32_t reflect, cudaStream_t stream) {
  if (!minmo_args::col2im_ok(z, y, t_in, channels, kernel, stride, pad, reflect)) return MINMO_KERNEL_INVALID_ARGUMENT;
  const int64_t rows = minmo_args::conv_transpose1d_len(t_in, kernel, stride, pad) + reflect;
  unsigned blocks = 0;
  if (!grid_1d(rows * channels, &blocks)) return MINMO_KERNEL_INVALID_ARGUMENT;
  col2im_kernel<<<blocks, kThreads, 0, stream>>>(z, bias, y, t_in, channels, kernel, stride, pad, reflect, rows);
  return minmo_cuda::launch_status();
}

extern "C" int minmo_hift_stft_f32(const float* x, float* spec, int64_t n, int32_t n_fft, int32_t hop,
                                   cudaStream_t stream) {
  if (!minmo_args::hift_stft_ok(x, spec, n, n_fft, hop)) return MINMO_KERNEL_INVALID_ARGUMENT;
  const int64_t frames = n / hop + 1;
  unsigned blocks = 0;
  if (!grid_1d(frames * (n_fft / 2 + 1), &blocks)) return MINMO_KERNEL_INVALID_ARGUMENT;
  stft_kernel<<<blocks, kThreads, 0, stream>>>(x, spec, n, n_fft, hop, frames);
  return minmo_cuda::launch_status();
}

extern "C" int minmo_axpby_f32(const float* x, float* y, int64_t n, float a, float b, cudaStream_t stream) {
  if (!minmo_args::axpby_ok(x, y, n)) return MINMO_KERNEL_INVALID_ARGUMENT;
  unsigned blocks = 0;
  if (!grid_1d(n, &blocks)) return MINMO_KERNEL_INVALID_ARGUMENT;
  axpby_kernel<<<blocks, kThreads, 0, stream>>>(x, y, n, a, b);
  return minmo_cuda::launch_status();
}
