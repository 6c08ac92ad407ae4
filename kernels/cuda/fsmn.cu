// FSMN memory + attention output: one thread per (frame, channel) (frames grid-strided over
// gridDim.y); consecutive threads take consecutive channels so the v reads of each tap are
// coalesced.
#include <cuda_runtime.h>

#include "minmo_kernels/fsmn.h"

namespace {

__global__ void fsmn_attn_kernel(const float* __restrict__ v, const float* attn, const float* __restrict__ weight,
                                 float* out, int64_t frames, int64_t dim, int64_t kernel, int64_t left_pad,
                                 int64_t chunk_frames) {
  const int64_t d = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (d >= dim) return;
  const float* w = weight + d * kernel;
  for (int64_t t = blockIdx.y; t < frames; t += gridDim.y) {
    int64_t limit = frames;
    if (chunk_frames > 0 && (t / chunk_frames + 1) * chunk_frames < frames) limit = (t / chunk_frames + 1) * chunk_frames;
    const int64_t k_lo = left_pad - t > 0 ? left_pad - t : 0;
    const int64_t k_hi = limit - t + left_pad < kernel ? limit - t + left_pad : kernel;
    float acc = v[t * dim + d] + (attn ? attn[t * dim + d] : 0.f);
    for (int64_t k = k_lo; k < k_hi; ++k) acc = fmaf(__ldg(w + k), v[(t - left_pad + k) * dim + d], acc);
    out[t * dim + d] = acc;
  }
}

}  // namespace

extern "C" int minmo_fsmn_attn_f32(const float* v, const float* attn, const float* weight, float* out, int64_t frames,
                                   int64_t dim, int64_t kernel, int64_t left_pad, int64_t chunk_frames,
                                   cudaStream_t stream) {
  if (!v || !weight || !out || out == v || frames < 0 || dim <= 0 || kernel <= 0 || left_pad < 0 ||
      left_pad >= kernel || chunk_frames < 0)
    return MINMO_KERNEL_INVALID_ARGUMENT;
  if (frames == 0) return MINMO_KERNEL_OK;
  constexpr int kThreads = 128;
  const int64_t col_blocks = (dim + kThreads - 1) / kThreads;
  if (col_blocks > 0x7fffffff) return MINMO_KERNEL_INVALID_ARGUMENT;
  const dim3 grid(static_cast<unsigned int>(col_blocks), static_cast<unsigned int>(frames < 65535 ? frames : 65535));
  fsmn_attn_kernel<<<grid, kThreads, 0, stream>>>(v, attn, weight, out, frames, dim, kernel, left_pad, chunk_frames);
  return cudaGetLastError() == cudaSuccess ? MINMO_KERNEL_OK : MINMO_KERNEL_LAUNCH_FAILED;
}
