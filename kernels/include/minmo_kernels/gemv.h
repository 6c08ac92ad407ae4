/* Weight-only matrix products for decode at batch 1..MINMO_GEMV_MAX_BATCH, bf16 activations,
 * fp32 accumulation, bf16 output. See minmo_kernels.h for the conventions shared by every kernel.
 *
 * All compute, for b < batch and n < N (W laid out like an nn.Linear weight, [N, K]):
 *   y[b, n] = bf16( sum_k float(x[b, k]) * w(n, k) )
 * with x: bf16 [batch, K], y: bf16 [batch, N] (y must not overlap x), and w(n, k) per format:
 *   bf16  w = W[n, k]                                   W: bf16 [N, K]
 *   int8  w = scale[n] * W[n, k]                        W: int8 [N, K], scale: fp32 [N]
 *   int4  w = scale[n, g] * (q(n, k) - zero[n, g])      g = k / group_size
 *         W: uint8 [N, K / 2], two 4-bit values per byte: q(n, k) = low nibble of W[n, k / 2]
 *         for even k, high nibble for odd k (0..15); scale: bf16 [N, K / group_size];
 *         zero: uint8 [N, K / group_size] (0..15), or null for symmetric (zero = 8).
 *         Requires group_size % 32 == 0 and K % group_size == 0 (128 is the usual group).
 *   fp8   w = scale[n] * e4m3(W[n, k])                  W: uint8 [N, K] (float8 e4m3fn bits),
 *         scale: fp32 [N]. The CUDA kernel needs sm_89 or newer: it returns
 *         MINMO_KERNEL_UNSUPPORTED on older devices (e.g. Jetson Orin, sm_87).
 * The CUDA kernels read W with 128-bit loads when K and the pointers allow it (K % 8 for bf16,
 * K % 16 for int8/fp8, always for int4; x and W 16-byte aligned), one warp per output row, and are
 * bound by memory bandwidth; other shapes take a slower scalar path. */
#ifndef MINMO_KERNELS_GEMV_H_
#define MINMO_KERNELS_GEMV_H_

#include "../minmo_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MINMO_GEMV_MAX_BATCH 8

int minmo_gemv_bf16(const minmo_bf16* x, const minmo_bf16* w, minmo_bf16* y, int64_t batch, int64_t n, int64_t k,
                    cudaStream_t stream);
int minmo_gemv_bf16_cpu(const minmo_bf16* x, const minmo_bf16* w, minmo_bf16* y, int64_t batch, int64_t n,
                        int64_t k);

int minmo_gemv_int8(const minmo_bf16* x, const int8_t* w, const float* scale, minmo_bf16* y, int64_t batch,
                    int64_t n, int64_t k, cudaStream_t stream);
int minmo_gemv_int8_cpu(const minmo_bf16* x, const int8_t* w, const float* scale, minmo_bf16* y, int64_t batch,
                        int64_t n, int64_t k);

int minmo_gemv_int4(const minmo_bf16* x, const uint8_t* w, const minmo_bf16* scale, const uint8_t* zero,
                    minmo_bf16* y, int64_t batch, int64_t n, int64_t k, int64_t group_size, cudaStream_t stream);
int minmo_gemv_int4_cpu(const minmo_bf16* x, const uint8_t* w, const minmo_bf16* scale, const uint8_t* zero,
                        minmo_bf16* y, int64_t batch, int64_t n, int64_t k, int64_t group_size);

int minmo_gemv_fp8(const minmo_bf16* x, const uint8_t* w, const float* scale, minmo_bf16* y, int64_t batch,
                   int64_t n, int64_t k, cudaStream_t stream);
int minmo_gemv_fp8_cpu(const minmo_bf16* x, const uint8_t* w, const float* scale, minmo_bf16* y, int64_t batch,
                       int64_t n, int64_t k);

/* Gated forms for the SwiGLU MLP, one kernel for gate/up projection and activation: W holds
 * 2 n rows (gate rows [0, n), up rows [n, 2 n); the fused gate|up weight), same formats and
 * layouts as above with 2 n rows, and for b < batch, f < n (y: bf16 [batch, n]):
 *   g = sum_k x[b, k] w(f, k),  u = sum_k x[b, k] w(n + f, k),  y[b, f] = bf16(silu(g) * u)
 * with g and u kept in fp32 (fp64 in the twins). */
int minmo_gemv_silu_bf16(const minmo_bf16* x, const minmo_bf16* w, minmo_bf16* y, int64_t batch, int64_t n,
                         int64_t k, cudaStream_t stream);
int minmo_gemv_silu_bf16_cpu(const minmo_bf16* x, const minmo_bf16* w, minmo_bf16* y, int64_t batch, int64_t n,
                             int64_t k);
int minmo_gemv_silu_int8(const minmo_bf16* x, const int8_t* w, const float* scale, minmo_bf16* y, int64_t batch,
                         int64_t n, int64_t k, cudaStream_t stream);
int minmo_gemv_silu_int8_cpu(const minmo_bf16* x, const int8_t* w, const float* scale, minmo_bf16* y, int64_t batch,
                             int64_t n, int64_t k);
int minmo_gemv_silu_int4(const minmo_bf16* x, const uint8_t* w, const minmo_bf16* scale, const uint8_t* zero,
                         minmo_bf16* y, int64_t batch, int64_t n, int64_t k, int64_t group_size, cudaStream_t stream);
int minmo_gemv_silu_int4_cpu(const minmo_bf16* x, const uint8_t* w, const minmo_bf16* scale, const uint8_t* zero,
                             minmo_bf16* y, int64_t batch, int64_t n, int64_t k, int64_t group_size);
int minmo_gemv_silu_fp8(const minmo_bf16* x, const uint8_t* w, const float* scale, minmo_bf16* y, int64_t batch,
                        int64_t n, int64_t k, cudaStream_t stream);
int minmo_gemv_silu_fp8_cpu(const minmo_bf16* x, const uint8_t* w, const float* scale, minmo_bf16* y, int64_t batch,
                            int64_t n, int64_t k);

/* 1 when the current CUDA device runs minmo_gemv_fp8 (compute capability >= 8.9 and the library
 * was built with an sm_89+ target), else 0. */
int minmo_fp8_supported(void);

#ifdef __cplusplus
}
#endif

#endif /* MINMO_KERNELS_GEMV_H_ */
