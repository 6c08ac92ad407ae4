#include "modules/duplex.h"

#include <algorithm>
#include <cmath>

#include "backends/cpu/ops.h"
#include "backends/cpu/ops_llm.h"
#include "minmo/status.h"

namespace minmo {

DuplexConfig DuplexConfig::from_json(const nlohmann::json& config) {
  ConfigReader r(config, "duplex predictor");
  DuplexConfig c;
  c.llm_hidden = r.get_int("llm_hidden", c.llm_hidden);
  c.hidden_size = r.get_int("hidden_size", c.hidden_size);
  c.intermediate_size = r.get_int("intermediate_size", c.intermediate_size);
  c.num_attention_heads = r.get_int("num_attention_heads", c.num_attention_heads);
  c.num_key_value_heads = r.get_int("num_key_value_heads", c.num_key_value_heads);
  c.head_dim = r.get_int("head_dim", c.head_dim);
  c.rope_theta = r.get_float("rope_theta", c.rope_theta);
  c.rms_norm_eps = r.get_float("rms_norm_eps", c.rms_norm_eps);
  r.finish();
  MINMO_CHECK(c.llm_hidden > 0, ErrorCode::BundleError, "duplex predictor: llm_hidden must be positive");
  validate_layer_config(c.layer(), "duplex predictor");
  return c;
}

Qwen2LayerConfig DuplexConfig::layer() const { return qwen2_layer_config(*this); }

DuplexPredictor::DuplexPredictor(const DuplexConfig& config, const WeightStore& weights)
    : cfg_(config),
      weights_(weights),
      proj_(load_panel_linear(weights_, "proj", cfg_.llm_hidden, cfg_.hidden_size, /*bias=*/false)),
      turn_head_(load_panel_linear(weights_, "turn_head", cfg_.hidden_size, 2)),
      barge_head_(load_panel_linear(weights_, "barge_head", cfg_.hidden_size, 2)),
      layer_(cfg_.layer(), weights_, "layer.") {}

std::shared_ptr<const DuplexPredictor> DuplexPredictor::load(const WeightStore& weights, const nlohmann::json& config) {
  return std::make_shared<const DuplexPredictor>(DuplexConfig::from_json(config), weights);
}

DuplexState::DuplexState(std::shared_ptr<const DuplexPredictor> predictor, int64_t capacity)
    : DuplexState(predictor.get(), predictor, capacity) {}

DuplexState::DuplexState(const DuplexPredictor* predictor, std::shared_ptr<const DuplexPredictor> keep,
                         int64_t capacity)
    : pred_(predictor),
      keep_(std::move(keep)),
      cache_(1, capacity, pred_ ? pred_->cfg_.num_key_value_heads : 1, pred_ ? pred_->cfg_.head_dim : 1) {
  MINMO_CHECK(pred_ != nullptr, ErrorCode::InvalidArgument, "DuplexState: null predictor");
  scratch_.reserve(pred_->cfg_.layer(), 1);
  logits_.resize(2);
}

std::unique_ptr<DuplexState> DuplexPredictor::new_state(int64_t capacity) const {
  return std::unique_ptr<DuplexState>(new DuplexState(this, nullptr, capacity));
}

void DuplexPredictor::push(DuplexState& state, const Tensor& hidden, std::vector<float>* p_turn,
                           std::vector<float>* p_barge) const {
  MINMO_CHECK(state.pred_ == this, ErrorCode::InvalidArgument,
              "duplex predictor: the state was created by another predictor");
  state.push(hidden, p_turn, p_barge);
}

void DuplexState::push(const Tensor& hidden, std::vector<float>* p_turn, std::vector<float>* p_barge) {
  MINMO_CHECK(hidden.ndim() == 2, ErrorCode::InvalidArgument,
              "duplex predictor: hidden must be [T, " << pred_->cfg_.llm_hidden << "], got " << hidden.shape_str());
  push(hidden.ptr(), hidden.dim(0), hidden.dim(1), p_turn, p_barge);
}

void DuplexState::push(const float* hidden, int64_t T, int64_t width, std::vector<float>* p_turn,
                       std::vector<float>* p_barge) {
  const DuplexConfig& c = pred_->cfg_;
  MINMO_CHECK(width == c.llm_hidden, ErrorCode::InvalidArgument,
              "duplex predictor: hidden must have " << c.llm_hidden << " columns, got " << width);
  MINMO_CHECK(T >= 0 && (T == 0 || hidden != nullptr), ErrorCode::InvalidArgument,
              "duplex predictor: bad hidden states");
  cache_.check_room(T, "duplex predictor");
  if (p_turn) p_turn->resize(static_cast<size_t>(T));
  if (p_barge) p_barge->resize(static_cast<size_t>(T));
  if (T == 0) return;
  const Qwen2LayerConfig lc = c.layer();
  scratch_.reserve(lc, T);
  if (static_cast<int64_t>(logits_.size()) < 2 * T) logits_.resize(static_cast<size_t>(2 * T));
  const int64_t pos0 = cache_.length();
  float* x = scratch_.x.data();
  pred_->proj_(hidden, x, T);
  cpu::rope_table(pos0, T, c.head_dim, c.rope_theta, scratch_.rope_cos.data(), scratch_.rope_sin.data());
  pred_->layer_.forward(x, T, pos0, cache_.k(0), cache_.v(0), scratch_.rope_cos.data(), scratch_.rope_sin.data(),
                        scratch_);
  // p = softmax(l)[1] = 1 / (1 + exp(l0 - l1)).
  auto head = [&](const PanelLinear& h, std::vector<float>* p) {
    if (!p) return;
    h(x, logits_.data(), T);
    for (int64_t t = 0; t < T; ++t) {
      const float l0 = logits_[static_cast<size_t>(2 * t)], l1 = logits_[static_cast<size_t>(2 * t + 1)];
      const float m = std::max(l0, l1);
      const float e0 = std::exp(l0 - m), e1 = std::exp(l1 - m);
      (*p)[static_cast<size_t>(t)] = e1 / (e0 + e1);
    }
  };
  head(pred_->turn_head_, p_turn);
  head(pred_->barge_head_, p_barge);
  cache_.advance(T);
}

}  // namespace minmo
