/* minmo kernels: plain launch functions over raw device (or host, for the *_cpu twins) pointers.
 *
 * Conventions for every kernel:
 *   - tensors are contiguous, row-major, fp32 unless the name says otherwise; bf16 tensors are
 *     passed as minmo_bf16 (the raw 16 bits of a bfloat16, i.e. the top half of an fp32);
 *   - the CUDA launch function enqueues on `stream` and returns without synchronising;
 *   - the return value is a minmo_kernel_status (0 = success); invalid arguments are reported
 *     before anything is launched;
 *   - each CUDA kernel `minmo_X` has a CPU twin `minmo_X_cpu` with the same arguments (minus the
 *     stream) that computes the same result; it is the oracle in tests. The twins accumulate in
 *     fp64 or fp32 and round to the output dtype once, like the kernels;
 *   - values the host should not need to know while a CUDA graph replays (positions in the KV
 *     cache) are read through device pointers.
 * This header does not require the CUDA toolkit. Kernel families live in minmo_kernels/<family>.h,
 * all included below; each family header includes this one for the shared definitions. */
#ifndef MINMO_KERNELS_H_
#define MINMO_KERNELS_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef __CUDACC__
typedef struct CUstream_st* cudaStream_t;
#endif

/* Raw bits of a bfloat16 value. */
typedef uint16_t minmo_bf16;

typedef enum minmo_kernel_status {
  MINMO_KERNEL_OK = 0,
  MINMO_KERNEL_INVALID_ARGUMENT = 1, /* null pointer, non-positive size, aliasing not allowed */
  MINMO_KERNEL_LAUNCH_FAILED = 2,    /* the CUDA launch reported an error */
  MINMO_KERNEL_UNSUPPORTED = 3       /* the current device lacks the feature (e.g. FP8 before sm_89) */
} minmo_kernel_status;

/* Human-readable name of a status code. */
const char* minmo_kernel_status_string(int status);

#ifdef __cplusplus
}
#endif

/* Helpers defined in the family headers and shared by a CUDA kernel and its CPU twin. */
#ifdef __CUDACC__
#define MINMO_HD __host__ __device__ __forceinline__
#else
#define MINMO_HD static inline
#endif

/* Kernel families (one include line each). */
#include "minmo_kernels/norm.h"
#include "minmo_kernels/gemv.h"
#include "minmo_kernels/attention.h"
#include "minmo_kernels/mlp.h"
#include "minmo_kernels/fused.h"
#include "minmo_kernels/fsmn.h"
#include "minmo_kernels/sampling.h"
#include "minmo_kernels/flow.h"
#include "minmo_kernels/flow_est.h"
#include "minmo_kernels/hift.h"
#include "minmo_kernels/hift_net.h"
#include "minmo_kernels/conv.h"
#include "minmo_kernels/rel_attention.h"

#endif /* MINMO_KERNELS_H_ */
