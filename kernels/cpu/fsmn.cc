#include "minmo_kernels/fsmn.h"

extern "C" int minmo_fsmn_attn_f32_cpu(const float* v, const float* attn, const float* weight, float* out,
                                       int64_t frames, int64_t dim, int64_t kernel, int64_t left_pad,
                                       int64_t chunk_frames) {
  if (!v || !weight || !out || out == v || frames < 0 || dim <= 0 || kernel <= 0 || left_pad < 0 ||
      left_pad >= kernel || chunk_frames < 0)
    return MINMO_KERNEL_INVALID_ARGUMENT;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < frames; ++t) {
    int64_t limit = frames;
    if (chunk_frames > 0 && (t / chunk_frames + 1) * chunk_frames < frames) limit = (t / chunk_frames + 1) * chunk_frames;
    const int64_t k_lo = left_pad - t > 0 ? left_pad - t : 0;
    const int64_t k_hi = limit - t + left_pad < kernel ? limit - t + left_pad : kernel;  // exclusive
    for (int64_t d = 0; d < dim; ++d) {
      double acc = static_cast<double>(v[t * dim + d]) + (attn ? static_cast<double>(attn[t * dim + d]) : 0.0);
      for (int64_t k = k_lo; k < k_hi; ++k)
        acc += static_cast<double>(weight[d * kernel + k]) * v[(t - left_pad + k) * dim + d];
      out[t * dim + d] = static_cast<float>(acc);
    }
  }
  return MINMO_KERNEL_OK;
}
