// The output projector (modules/voice_lm.h OutputProjector: semantic = linear([token embedding ;
// LLM hidden]) + bias) on the CUDA backend: one weight-only product (any format of weights.h) and
// its bias per LLM token, the row uploaded from and the semantic vector returned to the host
// through pinned buffers of a per-caller state (a session's), in one captured graph per row.
#pragma once

#include <cstdint>
#include <memory>

#include "backends/cuda/device.h"
#include "backends/cuda/weights.h"
#include "core/safetensors.h"
#include "core/tensor.h"

namespace minmo {

struct OutputProjectorConfig;

namespace cuda {

class CudaOutputProjectorState;

class CudaOutputProjector {
 public:
  // Uploads linear.{weight,bias} (NotFound / BundleError for missing or misshapen tensors). Reads
  // the weights as stored: load it before OutputProjector, whose CPU layout repacks them in place.
  static std::shared_ptr<const CudaOutputProjector> load(const WeightStore& w, const OutputProjectorConfig& cfg,
                                                         std::shared_ptr<Device> device);
  std::unique_ptr<CudaOutputProjectorState> new_state() const;
  // One row: out[output_dim] from embed[embed_dim] and hidden[llm_hidden] (host fp32).
  void run_row(CudaOutputProjectorState& s, const float* embed, const float* hidden, float* out) const;
  // token_embeds [T, embed_dim], hidden [T, llm_hidden] -> [T, output_dim]; InvalidArgument on other shapes.
  Tensor run(const Tensor& token_embeds, const Tensor& hidden) const;
  std::string device() const { return device_->name(); }

  CudaOutputProjector(int64_t embed_dim, int64_t hidden, int64_t out_dim, std::shared_ptr<Device> device);

 private:
  friend class CudaOutputProjectorState;
  void enqueue_row(const CudaOutputProjectorState& s) const;
  int64_t embed_dim_, hidden_, out_dim_;
  std::shared_ptr<Device> device_;
  Arena weights_;
  DeviceLinear linear_;
  size_t bias_ = 0;
};

// A caller's stream, buffers and captured graph (used by one thread at a time).
class CudaOutputProjectorState {
 public:
  explicit CudaOutputProjectorState(const CudaOutputProjector* owner);

 private:
  friend class CudaOutputProjector;
  const CudaOutputProjector* owner_;
  Stream stream_;
  Arena arena_;
  minmo_bf16 *x_ = nullptr, *y_ = nullptr;  // [embed ; hidden], the product
  float* out_ = nullptr;                    // fp32 product + bias
  Allocation in_, result_;                  // pinned: bf16 row in, fp32 row out
  Graph graph_;
};

}  // namespace cuda
}  // namespace minmo
