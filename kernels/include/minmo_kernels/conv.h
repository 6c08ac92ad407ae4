/* Convolution helpers of the speech encoder's front end (two Conv1d(k=3, stride 2, pad 1) run as
 * products). See minmo_kernels.h for the conventions shared by every kernel. */
#ifndef MINMO_KERNELS_CONV_H_
#define MINMO_KERNELS_CONV_H_

#include "../minmo_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* im2col for Conv1d(kernel 3, stride 2, padding 1) over an input of total_in rows of C channels,
 * so that conv1d(x) = out @ W.view(C_out, C * 3)^T (+ bias) with the Conv1d weight W [C_out, C, 3]:
 *   out[i, c * 3 + k] = x_abs[2 t - 1 + k, c],  t = t_out0 + i,  i < n_out, k < 3
 * x_abs[r] is x[r - t_in0, :] (x: bf16 [n_in, C], input rows t_in0 .. t_in0 + n_in - 1) and zero
 * for r < 0 or r >= total_in (the zero padding at both ends). out: bf16 [n_out, 3 C]. Chunked use:
 * x need only hold the rows the requested outputs read. INVALID_ARGUMENT when a row inside
 * [0, total_in) that an output reads is not in x, when [t_in0, t_in0 + n_in) is not inside
 * [0, total_in), when an output is past the (total_in + 1) / 2 outputs of the convolution, or when
 * out overlaps x. n_out = 0 does nothing. */
int minmo_im2col_k3s2_bf16(const minmo_bf16* x, minmo_bf16* out, int64_t t_out0, int64_t n_out, int64_t t_in0,
                           int64_t n_in, int64_t channels, int64_t total_in, cudaStream_t stream);
int minmo_im2col_k3s2_bf16_cpu(const minmo_bf16* x, minmo_bf16* out, int64_t t_out0, int64_t n_out, int64_t t_in0,
                               int64_t n_in, int64_t channels, int64_t total_in);

#ifdef __cplusplus
}
#endif

#endif /* MINMO_KERNELS_CONV_H_ */
