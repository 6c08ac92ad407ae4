/* Gated MLP epilogue (Qwen2 SwiGLU). See minmo_kernels.h for the conventions shared by every kernel. */
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

#ifdef __cplusplus
}
#endif

#endif /* MINMO_KERNELS_MLP_H_ */
