// Weights of the CUDA backend's models in one device allocation, in the formats of
// kernels/include/minmo_kernels/gemv.h, and the products over them (shared by the Qwen2 decoder and
// the speech encoder).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backends/cpu/quant_linear.h"
#include "backends/cuda/device.h"
#include "backends/cuda/gemm.h"
#include "modules/audio_common.h"

namespace minmo {
namespace cuda {

// A weight-only product's weight on the device (offsets into the weight arena).
struct DeviceLinear {
  cpu::WeightQuant kind = cpu::WeightQuant::None;  // None: bf16
  const char* format() const;                     // "bf16", "int8", "int4", "fp8"
  int64_t n = 0, k = 0, group = 0;
  size_t w = 0, scale = 0, zero = 0;
};

// fp32 -> bf16 (round to nearest even) of n values into dst (2 n bytes).
void to_bf16(const float* src, int64_t n, uint8_t* dst);

// Weight tensors to upload once the weight arena is allocated: each job writes its bytes into a
// host staging buffer, which is then copied to the job's offset.
class Uploads {
 public:
  explicit Uploads(Arena& arena) : arena_(arena) {}
  // Reserves `bytes` in the arena; fill(dst) writes them at upload time. Returns the offset.
  size_t add(size_t bytes, std::function<void(uint8_t*)> fill);
  // An fp32 vector as bf16.
  size_t add_bf16(const float* src, int64_t n);
  // Fills and copies every job (after the arena was committed).
  void run(const std::shared_ptr<Device>& device);

 private:
  struct Job {
    size_t offset, bytes;
    std::function<void(uint8_t*)> fill;
  };
  Arena& arena_;
  std::vector<Job> jobs_;
};

// One product over the rows of several nn.Linear weights stacked (q|k|v, gate|up) with the same
// input width. Parts in different formats (the int4 export leaves a linear whose width the group
// does not divide in fp32) are all stored bf16, the quantized ones dequantized.
DeviceLinear stack_linears(Uploads& up, const std::vector<LinearW>& parts, const std::string& what);

// y[rows, n] = x[rows, k] W^T (gated: silu(x Wg^T) * (x Wu^T), n = l.n / 2) in l's format, any
// number of rows (slices of MINMO_GEMV_MAX_BATCH). With a GEMM, a bf16 weight and at least
// Gemm::kMinRows rows go through it instead (gated: into gated_scratch [rows, l.n], then the SiLU
// product), reading the weights once rather than once per slice.
void linear_product(const Stream& st, const Arena& weights, const DeviceLinear& l, const minmo_bf16* x, minmo_bf16* y,
                    int64_t rows, bool gated, const Gemm* gemm = nullptr, minmo_bf16* gated_scratch = nullptr);

}  // namespace cuda
}  // namespace minmo
