#include "modules/voice_lm.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "backends/cpu/ops_llm.h"
#include "backends/cuda/qwen2_cuda.h"
#include "minmo/status.h"

namespace minmo {

OutputProjectorConfig OutputProjectorConfig::from_json(const nlohmann::json& config) {
  ConfigReader r(config, "output projector");
  OutputProjectorConfig c;
  c.embed_dim = r.get_int("embed_dim", c.embed_dim);
  c.llm_hidden = r.get_int("llm_hidden", c.llm_hidden);
  c.output_dim = r.get_int("output_dim", c.output_dim);
  const std::string src = r.get_string("hidden_source", "predicting");
  r.finish();
  MINMO_CHECK(src == "predicting", ErrorCode::BundleError,
              "output projector: hidden_source '" << src << "' is not supported (only 'predicting')");
  MINMO_CHECK(c.embed_dim > 0 && c.llm_hidden > 0 && c.output_dim > 0, ErrorCode::BundleError,
              "output projector: sizes must be positive");
  return c;
}

OutputProjector::OutputProjector(const OutputProjectorConfig& cfg, const WeightStore& weights)
    : cfg_(cfg), weights_(weights) {
  linear_ = load_panel_linear(weights_, "linear", cfg_.embed_dim + cfg_.llm_hidden, cfg_.output_dim);
}

std::shared_ptr<const OutputProjector> OutputProjector::load(const WeightStore& weights, const nlohmann::json& config) {
  return std::make_shared<const OutputProjector>(OutputProjectorConfig::from_json(config), weights);
}

Tensor OutputProjector::run(const Tensor& token_embeds, const Tensor& hidden) const {
  MINMO_CHECK(token_embeds.ndim() == 2 && token_embeds.dim(1) == cfg_.embed_dim, ErrorCode::InvalidArgument,
              "output projector: token_embeds must be [T, " << cfg_.embed_dim << "], got " << token_embeds.shape_str());
  MINMO_CHECK(hidden.ndim() == 2 && hidden.dim(1) == cfg_.llm_hidden && hidden.rows() == token_embeds.rows(),
              ErrorCode::InvalidArgument,
              "output projector: hidden must be [" << token_embeds.rows() << ", " << cfg_.llm_hidden << "], got "
                                                   << hidden.shape_str());
  const int64_t T = token_embeds.rows(), E = cfg_.embed_dim, H = cfg_.llm_hidden;
  Tensor cat({T, E + H});
  for (int64_t t = 0; t < T; ++t) {
    std::memcpy(cat.ptr() + t * (E + H), token_embeds.row(t), sizeof(float) * E);
    std::memcpy(cat.ptr() + t * (E + H) + E, hidden.row(t), sizeof(float) * H);
  }
  Tensor out({T, cfg_.output_dim});
  if (T) linear_(cat.ptr(), out.ptr(), T);
  return out;
}

void OutputProjector::run_row(const float* embed, const float* hidden, float* out) const {
  thread_local std::vector<float> cat;
  const int64_t E = cfg_.embed_dim, H = cfg_.llm_hidden;
  cat.resize(static_cast<size_t>(E + H));
  std::memcpy(cat.data(), embed, sizeof(float) * E);
  std::memcpy(cat.data() + E, hidden, sizeof(float) * H);
  linear_(cat.data(), out, 1);
}

VoiceLMConfig VoiceLMConfig::from_json(const nlohmann::json& config) {
  ConfigReader r(config, "voice LM");
  VoiceLMConfig c;
  Qwen2Config& b = c.body;
  b.vocab_size = r.get_int("vocab_size", 151936);
  b.hidden_size = r.get_int("hidden_size", 896);
  b.intermediate_size = r.get_int("intermediate_size", 4864);
  b.num_hidden_layers = r.get_int("num_hidden_layers", 24);
  b.num_attention_heads = r.get_int("num_attention_heads", 14);
  b.num_key_value_heads = r.get_int("num_key_value_heads", 2);
  b.head_dim = r.get_int("head_dim", 64);
  b.rope_theta = r.get_float("rope_theta", 1000000.0);
  b.rms_norm_eps = r.get_float("rms_norm_eps", 1e-6);
  b.max_position_embeddings = r.get_int("max_position_embeddings", 32768);
  b.tie_word_embeddings = true;
  c.speech_token_size = r.get_int("speech_token_size", c.speech_token_size);
  c.text_ratio = r.get_int("text_ratio", c.text_ratio);
  c.speech_ratio = r.get_int("speech_ratio", c.speech_ratio);
  c.top_p = r.get_float("top_p", c.top_p);
  c.top_k = r.get_int("top_k", c.top_k);
  c.win_size = r.get_int("win_size", c.win_size);
  c.tau_r = r.get_float("tau_r", c.tau_r);
  c.min_token_text_ratio = r.get_float("min_token_text_ratio", c.min_token_text_ratio);
  c.max_token_text_ratio = r.get_float("max_token_text_ratio", c.max_token_text_ratio);
  r.finish();
  MINMO_CHECK(c.speech_token_size >= 1 && c.text_ratio >= 1 && c.speech_ratio >= 1, ErrorCode::BundleError,
              "voice LM: speech_token_size, text_ratio and speech_ratio must be >= 1");
  MINMO_CHECK(c.top_p > 0 && c.top_p <= 1 && c.top_k >= 1 && c.win_size >= 1 && c.tau_r >= 0, ErrorCode::BundleError,
              "voice LM: need 0 < top_p <= 1, top_k >= 1, win_size >= 1, tau_r >= 0");
  MINMO_CHECK(c.min_token_text_ratio >= 0 && c.min_token_text_ratio <= c.max_token_text_ratio &&
                  c.max_token_text_ratio > 0,
              ErrorCode::BundleError, "voice LM: need 0 <= min_token_text_ratio <= max_token_text_ratio, max > 0");
  MINMO_CHECK(b.vocab_size > 0 && b.num_hidden_layers > 0, ErrorCode::BundleError,
              "voice LM: vocab_size and num_hidden_layers must be positive");
  validate_layer_config(b.layer(), "voice LM");
  return c;
}

uint64_t SplitMix64::next() {
  state_ += 0x9E3779B97F4A7C15ULL;
  uint64_t z = state_;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

int64_t ras_sample(const float* logits, int64_t n, const std::vector<int64_t>& history, const VoiceLMConfig& cfg,
                   SplitMix64& rng) {
  MINMO_CHECK(n >= 1, ErrorCode::InvalidArgument, "voice LM sampling: no allowed ids");
  thread_local std::vector<double> p;
  thread_local std::vector<int64_t> order;
  p.resize(static_cast<size_t>(n));
  double mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) {
    MINMO_CHECK(std::isfinite(logits[i]), ErrorCode::Internal,
                "voice LM sampling: logit " << i << " is " << logits[i] << " (non-finite model output)");
    mx = std::max(mx, static_cast<double>(logits[i]));
  }
  double z = 0.0;
  for (int64_t i = 0; i < n; ++i) z += (p[i] = std::exp(static_cast<double>(logits[i]) - mx));
  for (int64_t i = 0; i < n; ++i) p[i] /= z;
  // Nucleus candidates: at most top_k of the largest logits, in descending order (ties: lower id).
  const int64_t k = std::min<int64_t>(cfg.top_k, n);
  order.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [logits](int64_t a, int64_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  double cum = 0.0;
  int64_t kept = 0;
  while (kept < k && cum < cfg.top_p) cum += p[order[kept++]];
  auto draw = [&](const int64_t* ids, int64_t count, double total) {
    const double u = rng.uniform() * total;
    double acc = 0.0;
    for (int64_t i = 0; i < count; ++i) {
      const int64_t id = ids ? ids[i] : i;
      acc += p[id];
      if (u < acc) return id;
    }
    return ids ? ids[count - 1] : count - 1;
  };
  int64_t tok = draw(order.data(), kept, cum);
  const size_t start = history.size() > static_cast<size_t>(cfg.win_size) ? history.size() - cfg.win_size : 0;
  const int64_t reps = std::count(history.begin() + static_cast<std::ptrdiff_t>(start), history.end(), tok);
  if (static_cast<double>(reps) >= static_cast<double>(cfg.win_size) * cfg.tau_r) tok = draw(nullptr, n, 1.0);
  return tok;
}

VoiceLM::VoiceLM(const VoiceLMConfig& cfg, const WeightStore& weights, const std::shared_ptr<cuda::Device>& device,
                 std::string* cpu_fallback)
    : cfg_(cfg), weights_(weights) {
  const int64_t H = cfg_.body.hidden_size, N = n_logits();
  Qwen2Head head;
  head.name = "llm_decoder";
  head.out = N;
  head.bias = true;
  llm_embedding_ = load_tensor(weights_, "llm_embedding.weight", {2, H});
  speech_embedding_ = load_tensor(weights_, "speech_embedding.weight", {N, H});
  cuda::SampleLoop loop;
  loop.embedding = speech_embedding_;
  loop.rows = N;
  loop.n_allowed = cfg_.speech_token_size;
  loop.steps = cfg_.speech_ratio;
  loop.params.top_k = static_cast<int32_t>(std::min<int64_t>(cfg_.top_k, INT32_MAX));
  loop.params.win_size = static_cast<int32_t>(std::min<int64_t>(cfg_.win_size, INT32_MAX));
  loop.params.top_p = cfg_.top_p;
  loop.params.tau_r = cfg_.tau_r;
  const char* env = std::getenv("MINMO_VOICE_LOOP");
  if (device) loop_note_ = env && std::string(env) == "0" ? "MINMO_VOICE_LOOP=0" : loop.unsupported(N);
  const bool with_loop = device && loop_note_.empty();
  body_ = load_qwen2_decoder(weights_, cfg_.body.to_json(), device, head, cpu_fallback, with_loop ? &loop : nullptr);
  loop_body_ = dynamic_cast<const cuda::CudaQwen2*>(body_.get());
  if (loop_body_ && !loop_body_->has_sample_loop()) loop_body_ = nullptr;
}

void VoiceLM::sample_block(DecoderState& state, SplitMix64& rng, const std::vector<int64_t>& history,
                           int64_t* out) const {
  MINMO_CHECK(loop_body_ != nullptr, ErrorCode::InvalidArgument,
              "voice LM: blocks are sampled on the device only (a device body with its sample loop)");
  loop_body_->run_sample_loop(state, rng.state(), history.data(), static_cast<int64_t>(history.size()), out);
}

std::shared_ptr<const VoiceLM> VoiceLM::load(const WeightStore& weights, const nlohmann::json& config,
                                             const std::shared_ptr<cuda::Device>& device, std::string* cpu_fallback) {
  return std::make_shared<const VoiceLM>(VoiceLMConfig::from_json(config), weights, device, cpu_fallback);
}

const float* VoiceLM::speech_embedding(int64_t id) const {
  MINMO_CHECK(id >= 0 && id < n_logits(), ErrorCode::InvalidArgument,
              "voice LM: speech token " << id << " outside [0, " << n_logits() << ")");
  return speech_embedding_ + id * hidden_size();
}

void VoiceLM::forward(DecoderState& state, const float* embeds, int64_t T, Tensor& logits, bool last_only) const {
  body_->forward(state, embeds, T, nullptr, &logits, last_only);
}

VoiceTokenStream::VoiceTokenStream(std::shared_ptr<const VoiceLM> lm, uint64_t seed, int capacity,
                                   std::unique_ptr<DecoderState> reuse)
    : lm_(std::move(lm)), cfg_(lm_->config()), rng_(seed), in_block_(cfg_.speech_ratio) {
  if (reuse && reuse->capacity() == capacity) {
    state_ = std::move(reuse);
    state_->reset();
  } else {
    state_ = lm_->body().new_state(capacity);
  }
  append_pending(lm_->sos(), 1);
}

void VoiceTokenStream::append_pending(const float* rows, int64_t n) {
  pending_.insert(pending_.end(), rows, rows + n * lm_->hidden_size());
}

void VoiceTokenStream::push_text(const float* rows, int64_t n) {
  MINMO_CHECK(!text_ended_, ErrorCode::InvalidArgument, "voice LM: text pushed after the end of the text");
  if (n <= 0) return;
  const int64_t total = n_text_ + n;
  const double need = 2.0 + static_cast<double>(total) + std::ceil(cfg_.max_token_text_ratio * total);
  MINMO_CHECK(need <= static_cast<double>(state_->capacity()), ErrorCode::CacheFull,
              "text too long to speak: " << total << " text tokens may need " << need
                                         << " voice LM positions but the cache holds " << state_->capacity()
                                         << " (max_token_text_ratio " << cfg_.max_token_text_ratio << ")");
  text_.insert(text_.end(), rows, rows + n * lm_->hidden_size());
  n_text_ = total;
}

int64_t VoiceTokenStream::sample(bool allow_eos) {
  const int64_t H = lm_->hidden_size();
  lm_->forward(*state_, pending_.data(), static_cast<int64_t>(pending_.size()) / H, logits_, true);
  pending_.clear();
  return ras_sample(logits_.ptr(), cfg_.speech_token_size + (allow_eos ? 1 : 0), tokens_, cfg_, rng_);
}

void VoiceTokenStream::sample_block() {
  const int64_t H = lm_->hidden_size();
  lm_->forward(*state_, pending_.data(), static_cast<int64_t>(pending_.size()) / H, logits_, true);
  pending_.clear();
  block_.resize(static_cast<size_t>(cfg_.speech_ratio));
  lm_->sample_block(*state_, rng_, tokens_, block_.data());
  block_at_ = 0;
  ++device_blocks_;
}

int64_t VoiceTokenStream::step() {
  if (ended_) return kEnded;
  const int64_t H = lm_->hidden_size();
  if (!final_ && in_block_ >= cfg_.speech_ratio) {
    const int64_t buffered = static_cast<int64_t>(text_.size()) / H;
    if (buffered >= cfg_.text_ratio) {
      append_pending(text_.data(), cfg_.text_ratio);
      text_.erase(text_.begin(), text_.begin() + cfg_.text_ratio * H);
      in_block_ = 0;
    } else if (text_ended_) {
      if (n_text_ == 0) {
        ended_ = true;
        return kEnded;
      }
      append_pending(text_.data(), buffered);
      text_.clear();
      append_pending(lm_->task_id(), 1);
      final_ = true;
    } else {
      return kNeedText;
    }
  }
  int64_t tok;
  bool fed = false;  // its embedding is in the LM state already (a device block's token but the last)
  if (final_) {
    tok = sample(static_cast<double>(tokens_.size()) >= cfg_.min_token_text_ratio * static_cast<double>(n_text_));
    if (tok == cfg_.eos()) {
      ended_ = true;
      return kEnded;
    }
  } else {
    if (in_block_ == 0 && lm_->block_on_device()) sample_block();
    if (block_at_ < block_.size()) {
      tok = block_[block_at_++];
      fed = block_at_ < block_.size();
    } else {
      tok = sample(false);
    }
    ++in_block_;
  }
  tokens_.push_back(tok);
  if (!fed) append_pending(lm_->speech_embedding(tok), 1);
  if (final_ && static_cast<double>(tokens_.size()) >= cfg_.max_token_text_ratio * static_cast<double>(n_text_))
    ended_ = true;
  return tok;
}

}  // namespace minmo
