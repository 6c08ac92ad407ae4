// Qwen2 / Qwen2.5 decoder (export/reference/qwen2.py Qwen2Decoder) with Hugging Face tensor names:
//   model.embed_tokens.weight [V, H]; model.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj,
//   post_attention_layernorm, mlp.{gate,up,down}_proj}...; model.norm.weight; lm_head.weight
//   (absent and unused when tie_word_embeddings: the head is embed_tokens).
// The model (weights) is immutable and shared by any number of sessions and threads; each session
// owns a Qwen2State (preallocated KV cache + scratch). forward() appends positions to a state:
// prefill (T > 1) runs matrix products (BLAS GEMM), a decode step (T = 1) matrix-vector products;
// attention is causal over the cache with grouped KV heads, RoPE at the cache positions.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/safetensors.h"
#include "core/tensor.h"
#include "modules/qwen2_decoder.h"
#include "modules/qwen2_layer.h"

namespace minmo {

class Qwen2Model;

// Per-session state of a Qwen2Model: the KV cache of every layer ([layers][capacity][kv_heads]
// [head_dim], allocated once) and the activation scratch. Not thread-safe: one forward at a time.
class Qwen2State final : public DecoderState {
 public:
  int64_t length() const override { return cache_.length(); }
  int64_t capacity() const override { return cache_.capacity(); }
  void truncate(int64_t n) override { cache_.truncate(n); }
  void reset() override { cache_.reset(); }

 private:
  friend class Qwen2Model;
  Qwen2State(const Qwen2Model* owner, const Qwen2Config& c, int64_t capacity);
  const Qwen2Model* owner_;
  KVCache cache_;
  Qwen2Scratch scratch_;
};

// The CPU backend's decoder (fp32 weights, or weight-only int8 / int4 / fp8 linears).
class Qwen2Model final : public Qwen2Decoder {
 public:
  // Borrows the tensors of `weights` (kept alive by the model). Throws NotFound naming a missing
  // tensor, BundleError naming a tensor of the wrong shape (expected and actual).
  Qwen2Model(const Qwen2Config& config, const WeightStore& weights, const Qwen2Head& head = {});
  // config: the module's config object (keys of the Python Qwen2Config).
  static std::shared_ptr<const Qwen2Model> load(const WeightStore& weights, const nlohmann::json& config,
                                                const Qwen2Head& head = {});

  const Qwen2Config& config() const override { return cfg_; }
  int64_t logits_width() const override { return head_out_; }
  std::string device() const override { return "cpu"; }
  std::unique_ptr<DecoderState> new_state(int capacity_tokens) const override;
  void embed_into(const int64_t* ids, size_t n, float* out) const override;
  using Qwen2Decoder::forward;
  // Prefill (T > 1) runs matrix products (BLAS GEMM), a decode step (T = 1) matrix-vector products.
  void forward(DecoderState& state, const float* embeds, int64_t T, Tensor* hidden_out, Tensor* logits_out,
               bool last_only = false) const override;


 private:
  Qwen2Config cfg_;
  WeightStore weights_;
  const float* embed_tokens_ = nullptr;  // [V, H]
  const float* final_norm_ = nullptr;    // [H]
  const float* lm_head_ = nullptr;       // [V, H] row layout when tied (= embed_tokens_)
  PanelLinear lm_head_panels_;           // an untied or module's own head, panel layout
  int64_t head_out_ = 0;
  std::vector<Qwen2Layer> layers_;
};

}  // namespace minmo
