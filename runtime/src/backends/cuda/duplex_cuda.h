// The full-duplex predictor (modules/duplex.h) on the CUDA backend: proj (no bias) -> one causal
// Qwen2 layer (qwen2_layer_cuda.h, the decoder's layer code) -> turn|barge heads stacked into one
// Linear(hidden -> 4) with its bias; softmax(head)[1] of the two bf16 logit pairs on the host.
// Weights bf16 in one device allocation. A state holds its stream, the layer's KV cache and chunk
// buffers (64 rows), and pinned staging buffers, all made when it is created. It takes the LLM's
// final-norm hidden states either from the host (fp32, rounded to bf16 and uploaded) or where the
// CUDA decoder left them on the device (push_device: only the 4 logits per position come back).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backends/cuda/device.h"
#include "backends/cuda/qwen2_layer_cuda.h"
#include "backends/cuda/weights.h"
#include "core/safetensors.h"
#include "modules/duplex.h"

namespace minmo {
namespace cuda {

class CudaDuplexState;

class CudaDuplex {
 public:
  // Why the kernels cannot run this shape ("" when they can): head_dim, GQA group.
  static std::string unsupported(const DuplexConfig& c);
  // Uploads the weights (tensor names as modules/duplex.h; NotFound / BundleError like the CPU
  // predictor, BundleError for a shape in unsupported()). Call before the CPU predictor is built
  // from the same store (it repacks its fp32 weights in place).
  static std::shared_ptr<const CudaDuplex> load(const WeightStore& weights, const DuplexConfig& config,
                                                std::shared_ptr<Device> device);
  CudaDuplex(const DuplexConfig& config, std::shared_ptr<Device> device);

  const DuplexConfig& config() const { return cfg_; }
  std::string device() const { return device_->name(); }
  const std::shared_ptr<Device>& device_ptr() const { return device_; }
  // A fresh state of `capacity` positions (>= 1; InvalidArgument otherwise); borrows this model.
  std::unique_ptr<CudaDuplexState> new_state(int64_t capacity) const;

 private:
  friend class CudaDuplexState;
  DuplexConfig cfg_;
  std::shared_ptr<Device> device_;
  Arena weights_;
  DeviceLinear proj_, heads_;  // heads_: turn_head rows 0-1, barge_head rows 2-3
  size_t heads_bias_ = 0;      // bf16 [4]
  Qwen2DeviceLayer layer_;
  bool gemm_ = false;  // states open a Gemm (cuBLAS / its sim twin) for chunks of many rows
};

// Streaming state of one conversation on the device (DuplexState's contract). Not thread-safe.
class CudaDuplexState {
 public:
  CudaDuplexState(const CudaDuplex* owner, int64_t capacity);
  ~CudaDuplexState();

  // hidden [T, llm_hidden] fp32 on the host -> p_turn / p_barge (resized to T; either may be null).
  // InvalidArgument on a wrong width, CacheFull when T more positions do not fit (state unchanged).
  void push(const float* hidden, int64_t T, int64_t width, std::vector<float>* p_turn, std::vector<float>* p_barge);
  // hidden: bf16 [T, llm_hidden] in this device's memory, complete (its producer's stream
  // synchronised). Read before this returns (the state's stream is synchronised).
  void push_device(const minmo_bf16* hidden, int64_t T, std::vector<float>* p_turn, std::vector<float>* p_barge);

  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  void truncate(int64_t n);
  void reset() { length_ = 0; }

 private:
  // Positions [length_, length_ + T) from `hidden` (host fp32 when from_host, else device bf16).
  void run(const void* hidden, bool from_host, int64_t T, std::vector<float>* p_turn, std::vector<float>* p_barge);
  void enqueue_chunk(const minmo_bf16* x, int64_t rows);

  const CudaDuplex* owner_;
  int64_t capacity_, length_ = 0;
  Stream stream_;
  std::unique_ptr<Gemm> gemm_;
  Arena arena_;
  minmo_bf16 *k_ = nullptr, *v_ = nullptr, *x_ = nullptr, *logits_ = nullptr;
  int32_t* pos_ = nullptr;
  Qwen2LayerBuffers b_;
  Allocation in_, pos_host_, logits_host_;
};

}  // namespace cuda
}  // namespace minmo
