/* minmo kernels: plain launch functions over raw device (or host, for the *_cpu twins) pointers.
 *
 * Conventions for every kernel:
 *   - tensors are contiguous, row-major, fp32 unless the name says otherwise;
 *   - the CUDA launch function enqueues on `stream` and returns without synchronising;
 *   - the return value is a minmo_kernel_status (0 = success); invalid arguments are reported
 *     before anything is launched;
 *   - each CUDA kernel `minmo_X` has a CPU twin `minmo_X_cpu` with the same arguments (minus the
 *     stream) that computes the same result; it is the oracle in tests.
 * This header does not require the CUDA toolkit. */
#ifndef MINMO_KERNELS_H_
#define MINMO_KERNELS_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef __CUDACC__
typedef struct CUstream_st* cudaStream_t;
#endif

typedef enum minmo_kernel_status {
  MINMO_KERNEL_OK = 0,
  MINMO_KERNEL_INVALID_ARGUMENT = 1, /* null pointer, non-positive size, aliasing not allowed */
  MINMO_KERNEL_LAUNCH_FAILED = 2     /* the CUDA launch reported an error */
} minmo_kernel_status;

/* Human-readable name of a status code. */
const char* minmo_kernel_status_string(int status);

/* Fused residual add + RMSNorm (Qwen2 decoder layer boundary), for rows = M, dim = D:
 *   residual[m, :] += x[m, :]                                   (in place)
 *   out[m, :] = residual[m, :] * rsqrt(mean(residual[m, :]^2) + eps) * gamma[:]
 * x, residual, out: [M, D]; gamma: [D]. x may be null (then residual is only normalised).
 * out may alias x but not residual. Mean accumulated in fp32 (CUDA) / fp64 (CPU twin). */
int minmo_rmsnorm_residual_f32(const float* x, float* residual, const float* gamma, float* out, int64_t rows,
                               int64_t dim, float eps, cudaStream_t stream);
int minmo_rmsnorm_residual_f32_cpu(const float* x, float* residual, const float* gamma, float* out, int64_t rows,
                                   int64_t dim, float eps);

#ifdef __cplusplus
}
#endif

/* Kernel families (each header documents its kernels). */
#include "minmo_kernels/fsmn.h"
#include "minmo_kernels/sampling.h"
#include "minmo_kernels/flow.h"
#include "minmo_kernels/hift.h"

#endif /* MINMO_KERNELS_H_ */
