// One Qwen2 decoder layer (export/reference/layers.py Qwen2Layer), shared by the Qwen2 decoder
// (modules/qwen2.h) and the full-duplex predictor (modules/duplex.h):
//   x += o_proj(attn(RoPE(q_proj(n1)), RoPE(k_proj(n1)), v_proj(n1)))   n1 = RMSNorm_in(x)
//   x += down_proj(silu(gate_proj(n2)) * up_proj(n2))                    n2 = RMSNorm_post(x)
// Causal GQA attention over a preallocated KV cache; bias on q/k/v only. Also the KV cache and
// the per-session scratch buffers both users keep in their state objects.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/safetensors.h"
#include "modules/audio_common.h"

namespace minmo {

struct Qwen2LayerConfig {
  int64_t hidden = 0;        // hidden_size
  int64_t intermediate = 0;  // intermediate_size
  int64_t heads = 0;         // num_attention_heads
  int64_t kv_heads = 0;      // num_key_value_heads (divides heads)
  int64_t head_dim = 0;      // even
  double rope_theta = 10000.0;
  double eps = 1e-6;         // rms_norm_eps
  int64_t q_dim() const { return heads * head_dim; }
  int64_t kv_dim() const { return kv_heads * head_dim; }
};

// The layer config of a module config that uses Hugging Face Qwen2 field names (hidden_size,
// intermediate_size, num_attention_heads, num_key_value_heads, head_dim, rope_theta, rms_norm_eps).
template <class HfStyleConfig>
Qwen2LayerConfig qwen2_layer_config(const HfStyleConfig& c) {
  Qwen2LayerConfig l;
  l.hidden = c.hidden_size;
  l.intermediate = c.intermediate_size;
  l.heads = c.num_attention_heads;
  l.kv_heads = c.num_key_value_heads;
  l.head_dim = c.head_dim;
  l.rope_theta = c.rope_theta;
  l.eps = c.rms_norm_eps;
  return l;
}

// Preallocated K/V of `layers` layers: per layer [capacity, kv_heads, head_dim] for K and V
// (K after RoPE). Positions 0 .. length()-1 are valid. Never reallocates.
class KVCache {
 public:
  KVCache(int64_t layers, int64_t capacity, int64_t kv_heads, int64_t head_dim);
  int64_t layers() const { return layers_; }
  int64_t capacity() const { return capacity_; }
  int64_t length() const { return length_; }
  int64_t row_size() const { return row_; }  // kv_heads * head_dim
  float* k(int64_t layer) { return k_.get() + layer * capacity_ * row_; }
  float* v(int64_t layer) { return v_.get() + layer * capacity_ * row_; }
  const float* k(int64_t layer) const { return k_.get() + layer * capacity_ * row_; }
  const float* v(int64_t layer) const { return v_.get() + layer * capacity_ * row_; }
  // Throws CacheFull ("<what>: KV cache full: N of M positions used, cannot append T more") if
  // n more positions do not fit. Changes nothing.
  void check_room(int64_t n, const char* what) const;
  // Marks n more positions valid (after their K/V were written).
  void advance(int64_t n) { length_ += n; }
  // Keeps the first n positions (0 <= n <= length(), else InvalidArgument).
  void truncate(int64_t n);
  void reset() { length_ = 0; }

 private:
  int64_t layers_, capacity_, row_, length_ = 0;
  std::unique_ptr<float[]> k_, v_;  // uninitialised: pages are touched only when written
};

// Activation buffers of one forward pass, grown on demand (to the largest T seen) and then reused:
// a decode step (T = 1) allocates nothing once the state exists.
struct Qwen2Scratch {
  std::vector<float> x, xn, q, attn, tmp, gate, up, rope_cos, rope_sin;
  int64_t rows = 0;
  // Makes room for T rows of a layer of config c.
  void reserve(const Qwen2LayerConfig& c, int64_t T);
};

// A linear layer whose weight was repacked in place, at load, into the panel layout of
// cpu::linear_panels (the module owns the only user of that tensor); the bias is borrowed as stored.
struct PanelLinear {
  const float* w = nullptr;  // panel layout of [out, in]; null when the weight is quantized (qw)
  const float* b = nullptr;  // [out] or null
  int64_t in = 0, out = 0;
  cpu::QuantWeight qw;       // kind != None: weight-only quantized at export (cpu::linear_quant)
  // y[M, out] = x[M, in] @ W^T + b.
  void operator()(const float* x, float* y, int64_t M) const;
};
// Loads `<name>.weight` [out, in] (and `<name>.bias` [out] when bias) like load_linear: a
// quantized weight as is, an fp32 one repacked in place in the store (WeightStore::repack).
PanelLinear load_panel_linear(const WeightStore& w, const std::string& name, int64_t in, int64_t out,
                              bool bias = true);

class Qwen2Layer {
 public:
  // Borrows `<prefix>input_layernorm.weight`, `<prefix>self_attn.{q,k,v}_proj.{weight,bias}`,
  // `<prefix>self_attn.o_proj.weight`, `<prefix>mlp.{gate,up,down}_proj.weight`,
  // `<prefix>post_attention_layernorm.weight` from `w` (which must outlive the layer). Throws
  // NotFound naming a missing tensor, BundleError naming a tensor of the wrong shape.
  Qwen2Layer(const Qwen2LayerConfig& cfg, const WeightStore& w, const std::string& prefix);

  // x [T, hidden]: the residual stream of positions pos0 .. pos0+T-1, updated in place.
  // k_cache / v_cache: this layer's cache [capacity, kv_heads * head_dim] with rows < pos0 valid;
  // the new K (after RoPE) and V are written at rows pos0 .. pos0+T-1 (the caller checked room).
  // rope_cos / rope_sin: tables [T, head_dim/2] of those positions (cpu::rope_table). s must be
  // reserved for T rows.
  void forward(float* x, int64_t T, int64_t pos0, float* k_cache, float* v_cache, const float* rope_cos,
               const float* rope_sin, Qwen2Scratch& s) const;

  const Qwen2LayerConfig& config() const { return cfg_; }

 private:
  Qwen2LayerConfig cfg_;
  const float* in_norm_ = nullptr;
  const float* post_norm_ = nullptr;
  PanelLinear q_, k_, v_, o_, gate_, up_, down_;
};


// Checks a layer config (positive sizes, heads % kv_heads == 0, even head_dim); BundleError
// naming `what` otherwise.
void validate_layer_config(const Qwen2LayerConfig& c, const char* what);

}  // namespace minmo
