/* Gated MLP epilogue (Qwen2 SwiGLU) and the bias / activation / residual epilogues of the speech
 * encoder's products (the weight-only products of gemv.h have no bias). See minmo_kernels.h for
 * the conventions shared by every kernel. */
#ifndef MINMO_KERNELS_MLP_H_
#define MINMO_KERNELS_MLP_H_

#include "../minmo_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* For rows = M and ffn = F, with gate_up: [M, 2F] (the fused gate/up projection output, gate in
 * columns [0, F), up in [F, 2F)) and out: [M, F]:
 *   out[m, f] = silu(gate_up[m, f]) * gate_up[m, F + f],  silu(g) = g / (1 + exp(-g))
 * computed in fp32. out must not overlap gate_up. */
int minmo_silu_mul_bf16(const minmo_bf16* gate_up, minmo_bf16* out, int64_t rows, int64_t ffn, cudaStream_t stream);
int minmo_silu_mul_bf16_cpu(const minmo_bf16* gate_up, minmo_bf16* out, int64_t rows, int64_t ffn);
int minmo_silu_mul_f32(const float* gate_up, float* out, int64_t rows, int64_t ffn, cudaStream_t stream);
int minmo_silu_mul_f32_cpu(const float* gate_up, float* out, int64_t rows, int64_t ffn);

/* Activations of minmo_bias_act_bf16. */
enum { MINMO_ACT_NONE = 0, MINMO_ACT_GELU = 1, MINMO_ACT_RELU = 2 };

/* Bias + activation, in place, for rows = M and n = N: y: bf16 [M, N], bias: bf16 [N] or null:
 *   y[m, i] = bf16(act(float(y[m, i]) + float(bias[i])))
 * act: MINMO_ACT_NONE, MINMO_ACT_GELU (exact erf form, torch nn.GELU(): x/2 (1 + erf(x / sqrt 2)))
 * or MINMO_ACT_RELU; computed in fp32 (fp64 in the twin). bias must not overlap y. */
int minmo_bias_act_bf16(minmo_bf16* y, const minmo_bf16* bias, int64_t rows, int64_t n, int act,
                        cudaStream_t stream);
int minmo_bias_act_bf16_cpu(minmo_bf16* y, const minmo_bf16* bias, int64_t rows, int64_t n, int act);

/* Bias + residual add (the encoder's attention out-proj and fc2): y: bf16 [M, N], bias: bf16 [N]
 * or null, residual: fp32 [M, N]:
 *   residual[m, i] += float(y[m, i]) + float(bias[i])
 * y and bias must not overlap residual. */
int minmo_bias_residual_bf16(const minmo_bf16* y, const minmo_bf16* bias, float* residual, int64_t rows, int64_t n,
                             cudaStream_t stream);
int minmo_bias_residual_bf16_cpu(const minmo_bf16* y, const minmo_bf16* bias, float* residual, int64_t rows,
                                 int64_t n);

/* fp32 -> bf16, round to nearest even: y[i] = bf16(x[i]) for i < n (the duplex predictor's heads
 * read its fp32 residual stream). x and y must not overlap. */
int minmo_f32_to_bf16(const float* x, minmo_bf16* y, int64_t n, cudaStream_t stream);
int minmo_f32_to_bf16_cpu(const float* x, minmo_bf16* y, int64_t n);

#ifdef __cplusplus
}
#endif

#endif /* MINMO_KERNELS_MLP_H_ */
