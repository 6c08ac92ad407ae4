/* HiFT filter network (CosyVoice2, export/reference/hift.py) in fp32 around a GEMM: Conv1d as
 * im2col + product (activation of the input and the bias folded in), ConvTranspose1d as product +
 * col2im, the source STFT, and a scaled add. Tensors are time-major [frames, channels]. See
 * minmo_kernels.h for the shared conventions. */
#ifndef MINMO_KERNELS_HIFT_NET_H_
#define MINMO_KERNELS_HIFT_NET_H_

#include "../minmo_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Activations applied to a convolution's input by minmo_conv1d_im2col_f32 (v: one input value of
 * channel c):
 *   NONE: v;  LEAKY_RELU: v > 0 ? v : slope * v;  ELU: v > 0 ? v : expm1(v);
 *   SNAKE: v + 1 / (alpha[c] + 1e-9) * sin(alpha[c] * v)^2   (the reference Snake). */
enum {
  MINMO_CONV_ACT_NONE = 0,
  MINMO_CONV_ACT_LEAKY_RELU = 1,
  MINMO_CONV_ACT_SNAKE = 2,
  MINMO_CONV_ACT_ELU = 3
};

/* im2col of Conv1d(C -> *, kernel k, stride s, padding p (zeros, both ends), dilation d) over
 * act(x), x: [t_in, C], out: [t_out, ld] with ld >= C * k:
 *   out[t, c * k + j] = act(x[r, c]) for r = t * s - p + j * d inside [0, t_in), else 0
 *   out[t, C * k] = 1 and out[t, C * k + 1 .. ld - 1] = 0         (only when ld > C * k)
 * for t < t_out, c < C, j < k. So conv1d(act(x)) + b = out @ [W.view(C_out, C * k) | b | 0]^T
 * (the padding is applied after the activation, as in torch). alpha [C] is read for SNAKE only
 * (may be null otherwise). INVALID_ARGUMENT on a null x / out, non-positive sizes, ld < C * k,
 * an unknown act, out overlapping x, or an output row that reads no input row at all (t_out larger
 * than the convolution's output length (t_in + 2 p - d (k - 1) - 1) / s + 1). */
int minmo_conv1d_im2col_f32(const float* x, const float* alpha, float* out, int64_t t_in, int64_t channels,
                            int64_t t_out, int64_t ld, int32_t kernel, int32_t stride, int32_t pad, int32_t dilation,
                            int32_t act, float slope, cudaStream_t stream);
int minmo_conv1d_im2col_f32_cpu(const float* x, const float* alpha, float* out, int64_t t_in, int64_t channels,
                                int64_t t_out, int64_t ld, int32_t kernel, int32_t stride, int32_t pad,
                                int32_t dilation, int32_t act, float slope);

/* col2im of ConvTranspose1d(* -> C, kernel k, stride s, padding p) computed as the product
 * z = x @ W.view(C_in, C * k) (z: [t_in, C * k], z[t, c * k + j] = x[t, :] . W[:, c, j]), plus the
 * bias and a left reflection pad of `reflect` rows (CosyVoice2's F.pad(x, (1, 0), "reflect") after
 * the last upsampling: reflect = 1):
 *   u[q, c] = bias[c] + sum over (t, j) with t * s - p + j = q of z[t, c * k + j],
 *             0 <= q < L = (t_in - 1) * s + k - 2 p            (the ConvTranspose1d output)
 *   y[r, c] = u[r - reflect, c] for r >= reflect, u[reflect - r, c] for r < reflect
 * y: [L + reflect, C]. bias may be null (no bias). INVALID_ARGUMENT on null z / y, non-positive
 * sizes, k < s, L < 1, reflect < 0 or reflect >= L, or y overlapping z. */
int minmo_conv_transpose1d_col2im_f32(const float* z, const float* bias, float* y, int64_t t_in, int64_t channels,
                                      int32_t kernel, int32_t stride, int32_t pad, int32_t reflect,
                                      cudaStream_t stream);
int minmo_conv_transpose1d_col2im_f32_cpu(const float* z, const float* bias, float* y, int64_t t_in,
                                          int64_t channels, int32_t kernel, int32_t stride, int32_t pad,
                                          int32_t reflect);

/* STFT of the NSF source as HiFT takes it: torch.stft(x, n_fft, hop, window=periodic Hann,
 * center=True, pad_mode="reflect", onesided) as real | imaginary columns, B = n_fft / 2 + 1:
 *   xp[i] = x[|i - n_fft/2|] reflected at the end too (x[2 (n - 1) - j] for j >= n)
 *   w[m] = 0.5 - 0.5 cos(2 pi m / n_fft)
 *   spec[f, b]     =  sum_m w[m] xp[f hop + m] cos(2 pi b m / n_fft)
 *   spec[f, B + b] = -sum_m w[m] xp[f hop + m] sin(2 pi b m / n_fft)
 * x: [n], spec: [n / hop + 1, 2 B]. Requires n_fft even, 2 <= n_fft <= MINMO_HIFT_MAX_NFFT,
 * 1 <= hop, n > n_fft / 2 (one reflection suffices); INVALID_ARGUMENT otherwise or on overlap. */
int minmo_hift_stft_f32(const float* x, float* spec, int64_t n, int32_t n_fft, int32_t hop, cudaStream_t stream);
int minmo_hift_stft_f32_cpu(const float* x, float* spec, int64_t n, int32_t n_fft, int32_t hop);

/* y[i] = a * x[i] + b * y[i] for i < n (b == 0: y is not read, so it may hold NaN).
 * INVALID_ARGUMENT on null pointers, n < 1, or x and y overlapping without being equal. */
int minmo_axpby_f32(const float* x, float* y, int64_t n, float a, float b, cudaStream_t stream);
int minmo_axpby_f32_cpu(const float* x, float* y, int64_t n, float a, float b);

#ifdef __cplusplus
}
#endif

#endif /* MINMO_KERNELS_HIFT_NET_H_ */
