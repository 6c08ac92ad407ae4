/* Fused residual add + RMSNorm (Qwen2 decoder layer boundary) and residual add + LayerNorm (speech
 * encoder). See minmo_kernels.h for the conventions shared by every kernel. */
#ifndef MINMO_KERNELS_NORM_H_
#define MINMO_KERNELS_NORM_H_

#include "../minmo_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* For rows = M, dim = D:
 *   residual[m, :] += x[m, :]                                   (in place)
 *   out[m, :] = residual[m, :] * rsqrt(mean(residual[m, :]^2) + eps) * gamma[:]
 * x, residual, out: [M, D]; gamma: [D]. x may be null (then residual is only normalised).
 * out may alias x but not residual. Mean accumulated in fp32 (CUDA) / fp64 (CPU twin). */
int minmo_rmsnorm_residual_f32(const float* x, float* residual, const float* gamma, float* out, int64_t rows,
                               int64_t dim, float eps, cudaStream_t stream);
int minmo_rmsnorm_residual_f32_cpu(const float* x, float* residual, const float* gamma, float* out, int64_t rows,
                                   int64_t dim, float eps);

/* The same with bf16 activations around an fp32 residual stream (GPU decode):
 *   residual[m, :] += float(x[m, :]);  out[m, :] = bf16(residual[m, :] * rsqrt(...) * float(gamma[:]))
 * x (nullable), out: bf16 [M, D]; residual: fp32 [M, D]; gamma: bf16 [D]. out may alias x. */
int minmo_rmsnorm_residual_bf16(const minmo_bf16* x, float* residual, const minmo_bf16* gamma, minmo_bf16* out,
                                int64_t rows, int64_t dim, float eps, cudaStream_t stream);
int minmo_rmsnorm_residual_bf16_cpu(const minmo_bf16* x, float* residual, const minmo_bf16* gamma, minmo_bf16* out,
                                    int64_t rows, int64_t dim, float eps);

/* Residual add + LayerNorm with bias (nn.LayerNorm: biased variance), bf16 activations around an
 * fp32 residual stream (the speech encoder's attn_ln / mlp_ln / ln_post):
 *   residual[m, :] += float(x[m, :])                                          (x not null)
 *   out[m, :] = bf16((residual[m, :] - mean) * rsqrt(var + eps) * float(gamma[:]) + float(beta[:]))
 * with mean and var = mean((residual - mean)^2) over the row (two passes over the row: fp32 on the
 * GPU, fp64 in the twin). x (nullable), out: bf16 [M, D]; residual: fp32 [M, D]; gamma, beta
 * (nullable: no bias): bf16 [D]. out may alias x; neither may overlap residual. One block per row. */
int minmo_layernorm_residual_bf16(const minmo_bf16* x, float* residual, const minmo_bf16* gamma,
                                  const minmo_bf16* beta, minmo_bf16* out, int64_t rows, int64_t dim, float eps,
                                  cudaStream_t stream);
int minmo_layernorm_residual_bf16_cpu(const minmo_bf16* x, float* residual, const minmo_bf16* gamma,
                                      const minmo_bf16* beta, minmo_bf16* out, int64_t rows, int64_t dim, float eps);

#ifdef __cplusplus
}
#endif

#endif /* MINMO_KERNELS_NORM_H_ */
