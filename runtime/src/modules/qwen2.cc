#include "modules/qwen2.h"

#include <cstring>
#include <string>

#include "backends/cpu/ops.h"
#include "backends/cpu/ops_llm.h"
#include "minmo/status.h"

namespace minmo {

void ensure_shape(Tensor* t, std::vector<int64_t> shape) {
  if (t->shape != shape) *t = Tensor(std::move(shape));
}

Tensor Qwen2Decoder::embed(const int64_t* ids, size_t n) const {
  Tensor out({static_cast<int64_t>(n), hidden_size()});
  embed_into(ids, n, out.ptr());
  return out;
}

void Qwen2Decoder::forward(DecoderState& state, const Tensor& embeds, Tensor* hidden_out, Tensor* logits_out,
                           bool last_only) const {
  MINMO_CHECK(embeds.ndim() == 2 && embeds.dim(1) == hidden_size(), ErrorCode::InvalidArgument,
              "qwen2 decoder: embeddings must be [T, " << hidden_size() << "], got " << embeds.shape_str());
  forward(state, embeds.ptr(), embeds.dim(0), hidden_out, logits_out, last_only);
}

Qwen2Config Qwen2Config::from_json(const nlohmann::json& config) {
  ConfigReader r(config, "qwen2 decoder");
  Qwen2Config c;
  c.vocab_size = r.get_int("vocab_size", c.vocab_size);
  c.hidden_size = r.get_int("hidden_size", c.hidden_size);
  c.intermediate_size = r.get_int("intermediate_size", c.intermediate_size);
  c.num_hidden_layers = r.get_int("num_hidden_layers", c.num_hidden_layers);
  c.num_attention_heads = r.get_int("num_attention_heads", c.num_attention_heads);
  c.num_key_value_heads = r.get_int("num_key_value_heads", c.num_key_value_heads);
  c.head_dim = r.get_int("head_dim", c.head_dim);
  c.rope_theta = r.get_float("rope_theta", c.rope_theta);
  c.rms_norm_eps = r.get_float("rms_norm_eps", c.rms_norm_eps);
  c.tie_word_embeddings = r.get_bool("tie_word_embeddings", c.tie_word_embeddings);
  c.max_position_embeddings = r.get_int("max_position_embeddings", c.max_position_embeddings);
  r.finish();
  MINMO_CHECK(c.vocab_size > 0 && c.num_hidden_layers > 0 && c.max_position_embeddings > 0, ErrorCode::BundleError,
              "qwen2 decoder: vocab_size, num_hidden_layers and max_position_embeddings must be positive");
  validate_layer_config(c.layer(), "qwen2 decoder");
  return c;
}

nlohmann::json Qwen2Config::to_json() const {
  return nlohmann::json{{"vocab_size", vocab_size},
                        {"hidden_size", hidden_size},
                        {"intermediate_size", intermediate_size},
                        {"num_hidden_layers", num_hidden_layers},
                        {"num_attention_heads", num_attention_heads},
                        {"num_key_value_heads", num_key_value_heads},
                        {"head_dim", head_dim},
                        {"rope_theta", rope_theta},
                        {"rms_norm_eps", rms_norm_eps},
                        {"tie_word_embeddings", tie_word_embeddings},
                        {"max_position_embeddings", max_position_embeddings}};
}

Qwen2LayerConfig Qwen2Config::layer() const { return qwen2_layer_config(*this); }

Qwen2State::Qwen2State(const Qwen2Model* owner, const Qwen2Config& c, int64_t capacity)
    : owner_(owner), cache_(c.num_hidden_layers, capacity, c.num_key_value_heads, c.head_dim) {
  scratch_.reserve(c.layer(), 1);  // decode steps allocate nothing
}

Qwen2Model::Qwen2Model(const Qwen2Config& config, const WeightStore& weights, const Qwen2Head& head)
    : cfg_(config), weights_(weights) {
  const int64_t V = cfg_.vocab_size, H = cfg_.hidden_size;
  head_out_ = head.out > 0 ? head.out : V;
  embed_tokens_ = load_tensor(weights_, "model.embed_tokens.weight", {V, H});
  final_norm_ = load_tensor(weights_, "model.norm.weight", {H});
  if (head.is_lm_head() && cfg_.tie_word_embeddings) {
    lm_head_ = embed_tokens_;  // shared with the embedding lookup: stays in row layout
  } else {
    lm_head_panels_ = load_panel_linear(weights_, head.name, H, head_out_, head.bias);
  }
  layers_.reserve(static_cast<size_t>(cfg_.num_hidden_layers));
  const Qwen2LayerConfig lc = cfg_.layer();
  for (int64_t i = 0; i < cfg_.num_hidden_layers; ++i)
    layers_.emplace_back(lc, weights_, "model.layers." + std::to_string(i) + ".");
}

std::shared_ptr<const Qwen2Model> Qwen2Model::load(const WeightStore& weights, const nlohmann::json& config,
                                                   const Qwen2Head& head) {
  return std::make_shared<const Qwen2Model>(Qwen2Config::from_json(config), weights, head);
}

std::unique_ptr<DecoderState> Qwen2Model::new_state(int capacity_tokens) const {
  MINMO_CHECK(capacity_tokens >= 1, ErrorCode::InvalidArgument,
              "qwen2 decoder: state capacity must be >= 1 position, got " << capacity_tokens);
  return std::unique_ptr<Qwen2State>(new Qwen2State(this, cfg_, capacity_tokens));
}

void Qwen2Model::embed_into(const int64_t* ids, size_t n, float* out) const {
  if (n == 0) return;
  cpu::embedding(embed_tokens_, ids, out, static_cast<int64_t>(n), cfg_.vocab_size, cfg_.hidden_size);
}

void Qwen2Model::forward(DecoderState& base, const float* embeds, int64_t T, Tensor* hidden_out, Tensor* logits_out,
                         bool last_only) const {
  auto* own = dynamic_cast<Qwen2State*>(&base);
  MINMO_CHECK(own != nullptr && own->owner_ == this, ErrorCode::InvalidArgument,
              "qwen2 decoder: the state was created by another model");
  Qwen2State& state = *own;
  MINMO_CHECK(T >= 0, ErrorCode::InvalidArgument, "qwen2 decoder: negative number of positions " << T);
  const int64_t H = cfg_.hidden_size, V = head_out_;
  state.cache_.check_room(T, "qwen2 decoder");
  if (T == 0) {
    if (hidden_out) ensure_shape(hidden_out, {0, H});
    if (logits_out) ensure_shape(logits_out, {0, V});
    return;
  }
  MINMO_CHECK(embeds != nullptr, ErrorCode::InvalidArgument, "qwen2 decoder: embeddings are null");

  const Qwen2LayerConfig lc = cfg_.layer();
  Qwen2Scratch& s = state.scratch_;
  s.reserve(lc, T);
  KVCache& cache = state.cache_;
  const int64_t pos0 = cache.length();
  float* x = s.x.data();
  std::memcpy(x, embeds, sizeof(float) * static_cast<size_t>(T * H));
  cpu::rope_table(pos0, T, cfg_.head_dim, cfg_.rope_theta, s.rope_cos.data(), s.rope_sin.data());
  for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l)
    layers_[static_cast<size_t>(l)].forward(x, T, pos0, cache.k(l), cache.v(l), s.rope_cos.data(),
                                            s.rope_sin.data(), s);
  // Final norm in place: x becomes the hidden states.
  cpu::rms_norm_rows(x, final_norm_, x, T, H, static_cast<float>(cfg_.rms_norm_eps));
  if (hidden_out) {
    ensure_shape(hidden_out, {T, H});
    std::memcpy(hidden_out->ptr(), x, sizeof(float) * static_cast<size_t>(T * H));
  }
  if (logits_out) {
    const int64_t rows = last_only ? 1 : T;
    ensure_shape(logits_out, {rows, V});
    if (lm_head_panels_.w)
      lm_head_panels_(x + (T - rows) * H, logits_out->ptr(), rows);
    else
      cpu::linear_omp(x + (T - rows) * H, lm_head_, nullptr, logits_out->ptr(), rows, H, V);
  }
  cache.advance(T);
}

}  // namespace minmo
