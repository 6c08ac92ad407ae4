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
#include "modules/qwen2_layer.h"

namespace minmo {

// Python Qwen2Config (export/reference/configs.py): same keys and defaults.
struct Qwen2Config {
  int64_t vocab_size = 152064;
  int64_t hidden_size = 3584;
  int64_t intermediate_size = 18944;
  int64_t num_hidden_layers = 28;
  int64_t num_attention_heads = 28;
  int64_t num_key_value_heads = 4;
  int64_t head_dim = 128;
  double rope_theta = 1000000.0;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  int64_t max_position_embeddings = 32768;

  // Throws BundleError on unknown keys, wrong types or invalid values.
  static Qwen2Config from_json(const nlohmann::json& config);
  nlohmann::json to_json() const;
  Qwen2LayerConfig layer() const;
};

class Qwen2Model;

// Per-session state of a Qwen2Model: the KV cache of every layer ([layers][capacity][kv_heads]
// [head_dim], allocated once) and the activation scratch. Not thread-safe: one forward at a time.
class Qwen2State {
 public:
  int64_t length() const { return cache_.length(); }      // positions held
  int64_t capacity() const { return cache_.capacity(); }  // positions it can hold
  // Rolls back to the first n positions (0 <= n <= length(), else InvalidArgument).
  void truncate(int64_t n) { cache_.truncate(n); }
  void reset() { cache_.reset(); }

 private:
  friend class Qwen2Model;
  Qwen2State(const Qwen2Model* owner, const Qwen2Config& c, int64_t capacity);
  const Qwen2Model* owner_;
  KVCache cache_;
  Qwen2Scratch scratch_;
};

class Qwen2Model {
 public:
  // Borrows the tensors of `weights` (kept alive by the model). Throws NotFound naming a missing
  // tensor, BundleError naming a tensor of the wrong shape (expected and actual).
  Qwen2Model(const Qwen2Config& config, const WeightStore& weights);
  // config: the module's config object (keys of the Python Qwen2Config).
  static std::shared_ptr<const Qwen2Model> load(const WeightStore& weights, const nlohmann::json& config);

  const Qwen2Config& config() const { return cfg_; }
  int64_t hidden_size() const { return cfg_.hidden_size; }
  int64_t vocab_size() const { return cfg_.vocab_size; }

  // A fresh state holding up to capacity_tokens positions (>= 1, else InvalidArgument).
  std::unique_ptr<Qwen2State> new_state(int capacity_tokens) const;

  // Token embeddings [n, hidden] (InvalidArgument on an id outside [0, vocab)).
  Tensor embed(const int64_t* ids, size_t n) const;
  // Writes the embeddings of n ids into out[n, hidden] (no allocation).
  void embed_into(const int64_t* ids, size_t n, float* out) const;

  // Appends embeds [T, hidden] at positions state.length() .. +T-1 and returns, when the pointer
  // is not null, the final-norm hidden states [T, hidden] and the logits [T, vocab] (last_only:
  // only the last position's, [1, vocab]). Output tensors already of the right shape are reused
  // (a decode loop allocates nothing). T == 0 leaves everything unchanged (outputs [0, ...]).
  // Throws CacheFull if the state cannot hold T more positions and InvalidArgument on a wrong
  // width or a state of another model; the state is then unchanged.
  void forward(Qwen2State& state, const Tensor& embeds, Tensor* hidden_out, Tensor* logits_out,
               bool last_only = false) const;
  void forward(Qwen2State& state, const float* embeds, int64_t T, Tensor* hidden_out, Tensor* logits_out,
               bool last_only = false) const;

 private:
  Qwen2Config cfg_;
  WeightStore weights_;
  const float* embed_tokens_ = nullptr;  // [V, H]
  const float* final_norm_ = nullptr;    // [H]
  const float* lm_head_ = nullptr;       // [V, H] row layout when tied (= embed_tokens_)
  PanelLinear lm_head_panels_;           // untied head, panel layout
  std::vector<Qwen2Layer> layers_;
};

}  // namespace minmo
