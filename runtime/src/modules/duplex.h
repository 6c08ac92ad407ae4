// Full-duplex predictor (export/reference/duplex.py DuplexPredictor):
//   LLM final-norm hidden [T, llm_hidden] -> proj (no bias) -> one causal Qwen2 layer
//   -> turn_head / barge_head Linear(hidden_size -> 2); p = softmax(head)[1] per position.
// Weight names: proj.weight, layer.<Qwen2 layer names> (layer.input_layernorm.weight,
// layer.self_attn.q_proj.weight, ...), turn_head.{weight,bias}, barge_head.{weight,bias}.
// The predictor (weights) is immutable and shareable; a DuplexState streams one conversation.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/safetensors.h"
#include "core/tensor.h"
#include "modules/qwen2_layer.h"

namespace minmo {

// Python DuplexConfig (same keys and defaults).
struct DuplexConfig {
  int64_t llm_hidden = 3584;
  int64_t hidden_size = 896;
  int64_t intermediate_size = 4736;
  int64_t num_attention_heads = 7;
  int64_t num_key_value_heads = 1;
  int64_t head_dim = 128;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-6;

  // Throws BundleError on unknown keys / wrong types / invalid values.
  static DuplexConfig from_json(const nlohmann::json& config);
  Qwen2LayerConfig layer() const;
};

class DuplexState;

class DuplexPredictor {
 public:
  // Borrows the tensors of `weights`. Throws NotFound naming a missing tensor, BundleError naming
  // a tensor of the wrong shape (expected and actual).
  DuplexPredictor(const DuplexConfig& config, const WeightStore& weights);
  static std::shared_ptr<const DuplexPredictor> load(const WeightStore& weights, const nlohmann::json& config);
  const DuplexConfig& config() const { return cfg_; }

  // A fresh state of `capacity` positions (>= 1) borrowing this predictor (which must outlive it;
  // the DuplexState constructor taking a shared_ptr keeps it alive instead).
  std::unique_ptr<DuplexState> new_state(int64_t capacity) const;
  // Same as state.push(hidden, p_turn, p_barge); InvalidArgument for a state of another predictor.
  void push(DuplexState& state, const Tensor& hidden, std::vector<float>* p_turn, std::vector<float>* p_barge) const;

 private:
  friend class DuplexState;
  DuplexConfig cfg_;
  WeightStore weights_;
  PanelLinear proj_, turn_head_, barge_head_;
  Qwen2Layer layer_;
};

// Streaming state of one conversation: the layer's KV cache (capacity positions, preallocated)
// and scratch. Not thread-safe; any number of states may share one predictor.
class DuplexState {
 public:
  // capacity: positions (audio tokens) the state can hold, >= 1.
  DuplexState(std::shared_ptr<const DuplexPredictor> predictor, int64_t capacity);

  // hidden [T, llm_hidden] (the next T positions, T may be 0) -> p_turn / p_barge (resized to T;
  // either may be null). Throws InvalidArgument on a wrong width and CacheFull when T more
  // positions do not fit; the state is then unchanged.
  void push(const Tensor& hidden, std::vector<float>* p_turn, std::vector<float>* p_barge);
  void push(const float* hidden, int64_t T, int64_t width, std::vector<float>* p_turn, std::vector<float>* p_barge);

  int64_t length() const { return cache_.length(); }
  int64_t capacity() const { return cache_.capacity(); }
  void truncate(int64_t n) { cache_.truncate(n); }
  void reset() { cache_.reset(); }
  const DuplexPredictor& predictor() const { return *pred_; }

 private:
  friend class DuplexPredictor;
  DuplexState(const DuplexPredictor* predictor, std::shared_ptr<const DuplexPredictor> keep, int64_t capacity);
  const DuplexPredictor* pred_;
  std::shared_ptr<const DuplexPredictor> keep_;  // null when created by DuplexPredictor::new_state
  KVCache cache_;
  Qwen2Scratch scratch_;
  std::vector<float> logits_;  // [T, 2]
};

}  // namespace minmo
