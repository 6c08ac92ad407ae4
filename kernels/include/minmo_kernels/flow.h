/* Flow-matching Euler step with classifier-free guidance (CosyVoice2 flow decoder).
 * See minmo_kernels.h for the conventions shared by every kernel. */
#ifndef MINMO_KERNELS_FLOW_H_
#define MINMO_KERNELS_FLOW_H_

#include "../minmo_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One Euler step of dx/dt = v with the guidance combine, fused, in place, over n elements:
 *   v = (1 + cfg) * est[0, i] - cfg * est[1, i]      (est[0]: conditional, est[1]: unconditional)
 *   x[i] += dt * v
 * est: [2, n] (the estimator's batch-2 output); x: [n]. If next_in is not null, the updated x is
 * also written to both halves of next_in [2, n] (the next estimator call's batch-2 input).
 * est and next_in may be the same buffer; neither may overlap x. */
int minmo_flow_euler_cfg_f32(float* x, const float* est, float* next_in, int64_t n, float cfg, float dt,
                             cudaStream_t stream);
int minmo_flow_euler_cfg_f32_cpu(float* x, const float* est, float* next_in, int64_t n, float cfg, float dt);

#ifdef __cplusplus
}
#endif

#endif /* MINMO_KERNELS_FLOW_H_ */
