// The Qwen2 text decoder on the CUDA backend (device "cuda", or "cuda-sim": the same code with
// the CPU twins of the kernels, backends/cuda/device.h).
//
// Weights live in one device allocation, in the formats of kernels/include/minmo_kernels/gemv.h:
// fp32 bundle weights become bf16; weight-only quantized bundles (export --quant) keep their
// int8 / fp8 bytes and fp32 per-channel scales, int4 its packed nibbles and zero points with the
// group scales rounded to bf16. q|k|v and gate|up are concatenated into one product each. The
// token embedding table stays on the host (fp32): sessions embed on the CPU, as their audio
// tokens come from the CPU encoder.
//
// A state holds its own stream, one device allocation (KV cache [layers][Hkv, capacity, D] bf16,
// the activation buffers, the split-K workspace) and pinned host staging buffers, all made when
// the state is created: states run concurrently, and nothing is allocated after. forward() runs
// the positions in chunks of up to 64 rows (prefill attention for a chunk, split-K decode attention
// for one row), with the residual stream in fp32 and activations in bf16; a chunk's bf16 products
// of 16 rows or more go through cuBLAS (backends/cuda/gemm.h) when it loads, the others through
// the gemv products (8 rows per pass over the weights). A decode step (T = 1) is one CUDA graph, captured when
// the state is made (a session's start, not its first token): copy the embedding in, 8 launches
// per layer (5 fused), final norm, the head, copy the hidden state and logits out; the position is
// read on the device, so the graph replays at any position. The head is the LM head or a module's
// own (Qwen2Head: the voice LM's llm_decoder, with its bias).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/cuda/device.h"
#include "backends/cuda/weights.h"
#include "core/safetensors.h"
#include "modules/qwen2_decoder.h"

namespace minmo {
namespace cuda {

class CudaQwen2 final : public Qwen2Decoder {
 public:
  // Uploads the weights of `weights` (tensor names as modules/qwen2.h) to `device`. Throws
  // NotFound / BundleError like the CPU model, BundleError for a shape the kernels do not run
  // (head_dim, GQA group, int4 group size) and DeviceError when the device lacks memory or fp8.
  static std::shared_ptr<const CudaQwen2> load(const WeightStore& weights, const nlohmann::json& config,
                                               std::shared_ptr<Device> device, const Qwen2Head& head = {});

  // Why the kernels cannot run this shape ("" when they can): head_dim, GQA group.
  static std::string unsupported(const Qwen2Config& c);

  const Qwen2Config& config() const override { return cfg_; }
  int64_t logits_width() const override { return head_.n; }
  std::string device() const override { return device_->name(); }
  std::unique_ptr<DecoderState> new_state(int capacity_tokens) const override;
  void embed_into(const int64_t* ids, size_t n, float* out) const override;
  using Qwen2Decoder::forward;
  void forward(DecoderState& state, const float* embeds, int64_t T, Tensor* hidden_out, Tensor* logits_out,
               bool last_only = false) const override;

  // The decoder layers' product formats: "bf16", "int8", "int4", "fp8", or several joined by "+"
  // (e.g. "bf16+int4" when the export left some linears unquantized).
  const std::string& weight_format() const { return format_; }
  // What runs prefill products of many rows: "cuBLAS <version>", the sim's twin, or the gemv
  // products with the reason cuBLAS is not used.
  const std::string& prefill_products() const { return prefill_products_; }
  // Device bytes of the weights (all layers, final norm, lm_head).
  size_t weight_bytes() const { return weights_.bytes(); }
  // Whether decode steps use the fused kernels (5 launches per layer: q|k|v+RoPE+append, one-launch
  // attention, o+residual+norm, gate|up+SiLU, down+residual+next norm) instead of 8. Default: fused
  // for hidden sizes up to 1024, where a step is bound by launches (CosyVoice2-0.5B's voice LM:
  // 10.5 vs 11.2 ms per 15 steps on an H200), unfused above (Qwen2.5-7B: 3.92 vs 4.21 ms per step);
  // MINMO_CUDA_FUSED=0 / 1 overrides.
  bool fused_step() const { return fused_step_; }

  struct Layer {
    size_t in_norm = 0, post_norm = 0, qkv_bias = 0;
    DeviceLinear qkv, o, gate_up, down;
  };

  CudaQwen2(const Qwen2Config& cfg, std::shared_ptr<Device> device);

 private:
  friend class CudaQwen2State;
  // Enqueues the positions of one chunk (rows <= kMaxRows) of state s at the device position
  // *s.pos: the embeddings are in s's pinned input buffer; afterwards its pinned outputs hold the
  // hidden states (all rows) and the logits of the last `logit_rows` rows.
  void enqueue_chunk(class CudaQwen2State& s, int64_t rows, int64_t logit_rows) const;
  // The state's decode-step graph with (1) or without (0) the logits, captured on first use; the
  // one with logits is captured when the state is made.
  const Graph& step_graph(class CudaQwen2State& s, int64_t logit_rows) const;
  // Enqueues the fused decode step (one row; fused_step_), same inputs and outputs.
  void enqueue_fused_step(class CudaQwen2State& s, int64_t logit_rows) const;
  // The copies around a chunk: the pinned embeddings and position in; the final-norm hidden
  // states out, and the head's logits of the last logit_rows rows.
  void enqueue_inputs(class CudaQwen2State& s, int64_t rows) const;
  void enqueue_outputs(class CudaQwen2State& s, int64_t rows, int64_t logit_rows) const;
  const minmo_bf16* bf16(size_t offset) const { return weights_.at<minmo_bf16>(offset); }
  // Device pointers of a product's weight arguments (the ones its format uses).
  struct Weights {
    const uint8_t* q;
    const float* scale;
    const minmo_bf16* scale_bf16;
    const uint8_t* zero;
  };
  Weights weights_of(const DeviceLinear& l) const;
  // y[rows] = x W^T (gated: silu(x Wg^T) * (x Wu^T)) in l's format, on s's stream (and GEMM).
  void product(const class CudaQwen2State& s, const DeviceLinear& l, const minmo_bf16* x, minmo_bf16* y, int64_t rows,
               bool gated) const;
  // residual += x W^T; out = RMSNorm(residual) * gamma (one row).
  void product_norm(const Stream& st, const DeviceLinear& l, const minmo_bf16* x, float* residual,
                    const minmo_bf16* gamma, minmo_bf16* out, uint32_t* counter) const;
  // The layer's q|k|v product + bias + RoPE + KV append at *pos (one row).
  void product_qkv_rope(const Stream& st, const Layer& L, const minmo_bf16* x, const int32_t* pos, minmo_bf16* q,
                        minmo_bf16* kc, minmo_bf16* vc, int64_t capacity) const;

  Qwen2Config cfg_;
  std::shared_ptr<Device> device_;
  WeightStore host_;                     // keeps the host embedding table alive
  const float* embed_tokens_ = nullptr;  // host [V, H]
  std::string format_ = "bf16";
  bool fused_step_ = false;
  bool prefill_gemm_ = false;  // states open a Gemm for their prefill chunks
  std::string prefill_products_;
  int64_t attn_splits_ = 1;  // max_splits of the one-launch decode attention
  Arena weights_;
  std::vector<Layer> layers_;
  size_t final_norm_ = 0;
  DeviceLinear head_;
  std::optional<size_t> head_bias_;  // bf16 [head_.n] in the weight arena, when the head has a bias
};

}  // namespace cuda
}  // namespace minmo
