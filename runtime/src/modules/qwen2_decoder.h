// The Qwen2 text decoder behind one interface for every backend: the CPU model (modules/qwen2.h,
// Qwen2Model) and the CUDA one (backends/cuda/qwen2_cuda.h). Sessions and run_module only see
// this interface. A decoder is immutable after loading and shared by any number of sessions and
// threads; each session owns a DecoderState (its KV cache and activation buffers, allocated once
// when the state is created, so a decode step allocates nothing).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

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

// The linear head that turns final-norm hidden states into logits: the LM head ("lm_head", or the
// embedding table when tie_word_embeddings), or a module's own (the voice LM's "llm_decoder"
// [S + 3, H] with bias).
struct Qwen2Head {
  std::string name = "lm_head";
  int64_t out = 0;  // logits width; 0: vocab_size
  bool bias = false;
  bool is_lm_head() const { return name == "lm_head"; }
};

// Per-session state of a decoder: positions 0 .. length()-1 are in its KV cache.
class DecoderState {
 public:
  virtual ~DecoderState() = default;
  virtual int64_t length() const = 0;    // positions held
  virtual int64_t capacity() const = 0;  // positions it can hold
  // Rolls back to the first n positions (0 <= n <= length(), else InvalidArgument).
  virtual void truncate(int64_t n) = 0;
  virtual void reset() = 0;
};

class Qwen2Decoder {
 public:
  virtual ~Qwen2Decoder() = default;

  virtual const Qwen2Config& config() const = 0;
  // "cpu", "cuda" or "cuda-sim" (backends/cuda/device.h).
  virtual std::string device() const = 0;
  int64_t hidden_size() const { return config().hidden_size; }
  int64_t vocab_size() const { return config().vocab_size; }
  // Width of the logits forward() returns (the head's outputs).
  virtual int64_t logits_width() const = 0;

  // A fresh state holding up to capacity_tokens positions (>= 1, else InvalidArgument).
  virtual std::unique_ptr<DecoderState> new_state(int capacity_tokens) const = 0;

  // Writes the fp32 embeddings of n ids into out[n, hidden] (InvalidArgument on an id outside
  // [0, vocab)); no allocation.
  virtual void embed_into(const int64_t* ids, size_t n, float* out) const = 0;
  Tensor embed(const int64_t* ids, size_t n) const;

  // Appends embeds [T, hidden] (fp32, host) at positions state.length() .. +T-1 and returns, when
  // the pointer is not null, the final-norm hidden states [T, hidden] and the logits
  // [T, logits_width()] (last_only: only the last position's, [1, logits_width()]). Output tensors already of the right shape
  // are reused. T == 0 leaves everything unchanged (outputs [0, ...]). Throws CacheFull if the
  // state cannot hold T more positions and InvalidArgument on a state of another decoder; the
  // state is then unchanged.
  virtual void forward(DecoderState& state, const float* embeds, int64_t T, Tensor* hidden_out, Tensor* logits_out,
                       bool last_only = false) const = 0;
  // The same with a shape check of embeds ([T, hidden], else InvalidArgument).
  void forward(DecoderState& state, const Tensor& embeds, Tensor* hidden_out, Tensor* logits_out,
               bool last_only = false) const;
};

// Reshapes *t to `shape` unless it already has it (outputs reused across decode steps).
void ensure_shape(Tensor* t, std::vector<int64_t> shape);

}  // namespace minmo
