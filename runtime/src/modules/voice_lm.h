// Voice decoder modules (export/reference/voice_decoder.py): the output projector (semantic
// vectors), the CosyVoice2 voice token LM on a Qwen2 body, repetition-aware sampling with a
// portable seeded generator, and VoiceTokenStream, the 5:15 interleave state machine. The rules
// (forced fill, turn of speech, eos masking, length limits) are documented in the reference
// module's docstring; this file implements the same machine step for step.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/safetensors.h"
#include "core/tensor.h"
#include "modules/audio_common.h"
#include "backends/backend.h"
#include "modules/qwen2.h"

namespace minmo {
namespace cuda {
class CudaQwen2;
}

// Python OutputProjectorConfig.
struct OutputProjectorConfig {
  int64_t embed_dim = 3584;
  int64_t llm_hidden = 3584;
  int64_t output_dim = 896;
  static OutputProjectorConfig from_json(const nlohmann::json& config);
};

// semantic = linear([token embedding ; LLM hidden]); tensor "linear.{weight,bias}".
class OutputProjector {
 public:
  OutputProjector(const OutputProjectorConfig& cfg, const WeightStore& weights);
  static std::shared_ptr<const OutputProjector> load(const WeightStore& weights, const nlohmann::json& config);
  const OutputProjectorConfig& config() const { return cfg_; }
  // token_embeds [T, embed_dim], hidden [T, llm_hidden] -> [T, output_dim]. InvalidArgument on
  // other shapes.
  Tensor run(const Tensor& token_embeds, const Tensor& hidden) const;
  // One row: out[output_dim] from embed[embed_dim] and hidden[llm_hidden] (no allocation besides
  // a thread-local concat buffer).
  void run_row(const float* embed, const float* hidden, float* out) const;

 private:
  OutputProjectorConfig cfg_;
  WeightStore weights_;
  PanelLinear linear_;
};

// Python VoiceLMConfig.
struct VoiceLMConfig {
  Qwen2Config body;  // tie_word_embeddings = true: the body has no text head
  int64_t speech_token_size = 6561;
  int64_t text_ratio = 5;
  int64_t speech_ratio = 15;
  double top_p = 0.8;
  int64_t top_k = 25;
  int64_t win_size = 10;
  double tau_r = 0.1;
  double min_token_text_ratio = 2.0;
  double max_token_text_ratio = 20.0;
  int64_t eos() const { return speech_token_size; }
  int64_t fill() const { return speech_token_size + 2; }
  static VoiceLMConfig from_json(const nlohmann::json& config);
};

// SplitMix64 (the reference's SplitMix64): next() and uniform() in [0, 1) from the top 53 bits.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next();
  // The generator's state (a device sampler advances a copy: cuda::CudaQwen2::run_sample_loop).
  uint64_t& state() { return state_; }
  uint64_t state() const { return state_; }
  double uniform() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }

 private:
  uint64_t state_;
};

// Repetition-aware sampling over ids [0, n_allowed) of logits (reference ras_sample): nucleus
// (top_p, top_k) draw; if the draw occurs >= win_size * tau_r times in the last win_size entries
// of history, a second draw from the whole allowed distribution. Internal error on non-finite
// logits.
int64_t ras_sample(const float* logits, int64_t n_allowed, const std::vector<int64_t>& history,
                   const VoiceLMConfig& cfg, SplitMix64& rng);

class VoiceLM {
 public:
  // Tensors: the Qwen2 body (model.*), llm_embedding.weight [2, H], speech_embedding.weight
  // [S + 3, H], llm_decoder.{weight,bias} [S + 3, H] / [S + 3].
  // The body and head run on `device` (null: the CPU; backends/backend.h), the embeddings and
  // sampling on the CPU; on a device the interleave blocks also run as one device loop each
  // (sample_block), unless the sampler's kernel lacks the config (top_k > 64) or the environment
  // sets MINMO_VOICE_LOOP=0. cpu_fallback: as load_qwen2_decoder's.
  VoiceLM(const VoiceLMConfig& cfg, const WeightStore& weights, const std::shared_ptr<cuda::Device>& device = nullptr,
          std::string* cpu_fallback = nullptr);
  static std::shared_ptr<const VoiceLM> load(const WeightStore& weights, const nlohmann::json& config,
                                             const std::shared_ptr<cuda::Device>& device = nullptr,
                                             std::string* cpu_fallback = nullptr);

  const VoiceLMConfig& config() const { return cfg_; }
  // The Qwen2 body with llm_decoder as its head: forward() gives the speech logits.
  const Qwen2Decoder& body() const { return *body_; }
  int64_t hidden_size() const { return cfg_.body.hidden_size; }
  int64_t n_logits() const { return cfg_.speech_token_size + 3; }
  const float* sos() const { return llm_embedding_; }
  const float* task_id() const { return llm_embedding_ + hidden_size(); }
  // Speech-token embedding row (InvalidArgument outside [0, S + 3)).
  const float* speech_embedding(int64_t id) const;
  // Cascade mode: text-token embeddings [n, H] of the body (InvalidArgument on a bad id).
  Tensor text_embed(const int64_t* ids, size_t n) const { return body_->embed(ids, n); }
  // Appends embeds [T, H] to state; writes the speech logits [rows, S + 3] of the last row
  // (last_only) or of every row.
  void forward(DecoderState& state, const float* embeds, int64_t T, Tensor& logits, bool last_only) const;

  // Whether sample_block runs (a device body with its sample loop).
  bool block_on_device() const { return loop_body_ != nullptr; }
  // Why not, when a device body has no loop ("" otherwise).
  const std::string& block_loop_note() const { return loop_note_; }
  // An interleave block on the device, after forward() of its pending rows (last_only): speech_ratio
  // tokens drawn from ids [0, speech_token_size) by the reference ras_sample (history: the stream's
  // tokens so far; rng advanced as the host draws would), each but the last fed to the LM.
  void sample_block(DecoderState& state, SplitMix64& rng, const std::vector<int64_t>& history, int64_t* out) const;

 private:
  VoiceLMConfig cfg_;
  WeightStore weights_;
  std::shared_ptr<const Qwen2Decoder> body_;
  const float* llm_embedding_ = nullptr;
  const float* speech_embedding_ = nullptr;
  const cuda::CudaQwen2* loop_body_ = nullptr;  // body_ when it runs sample_block
  std::string loop_note_;
};

// The interleave state machine (reference VoiceTokenStream). On a device body with a sample loop
// (VoiceLM::block_on_device) each interleave block is drawn at its first step by one device loop and
// returned token by token; the final phase (eos allowed) and the CPU sample each step on the host.
// Both draw from the one SplitMix64 state (copied to the device and back per block). Not thread-safe.
class VoiceTokenStream {
 public:
  static constexpr int64_t kNeedText = -1;
  static constexpr int64_t kEnded = -2;

  // capacity: LM positions reserved (the sequence must fit: text + speech + 2). reuse: a state of
  // an earlier stream of this LM (release_state()); taken, reset and used when its capacity is the
  // same, so a session's responses do not each allocate a KV cache (device memory, a captured
  // graph on the CUDA backend).
  VoiceTokenStream(std::shared_ptr<const VoiceLM> lm, uint64_t seed, int capacity,
                   std::unique_ptr<DecoderState> reuse = nullptr);
  // Hands the LM state over for a later stream; this stream cannot step after it.
  std::unique_ptr<DecoderState> release_state() { return std::move(state_); }
  // Appends n text vectors [n, H] (semantic vectors or text embeddings). InvalidArgument after
  // end_text(); CacheFull when text + its maximum speech would not fit the capacity.
  void push_text(const float* rows, int64_t n);
  void end_text() { text_ended_ = true; }
  // One LM forward when possible: a speech token id, kNeedText (waiting for text) or kEnded.
  int64_t step();
  bool ended() const { return ended_; }
  bool text_ended() const { return text_ended_; }
  int64_t text_count() const { return n_text_; }
  const std::vector<int64_t>& tokens() const { return tokens_; }
  // Interleave blocks drawn by the device loop (VoiceLM::sample_block).
  int64_t device_blocks() const { return device_blocks_; }
  // The sampling generator's state (advanced by every draw, host or device).
  uint64_t rng_state() const { return rng_.state(); }

 private:
  int64_t sample(bool allow_eos);
  // Feeds the pending rows and draws the whole interleave block on the device into block_.
  void sample_block();
  void append_pending(const float* rows, int64_t n);

  std::shared_ptr<const VoiceLM> lm_;
  const VoiceLMConfig& cfg_;
  SplitMix64 rng_;
  std::unique_ptr<DecoderState> state_;
  std::vector<float> pending_;  // rows to feed before the next sample
  std::vector<float> text_;     // text vectors not fed yet
  int64_t n_text_ = 0;
  int64_t in_block_;
  bool text_ended_ = false, final_ = false, ended_ = false;
  std::vector<int64_t> tokens_;
  std::vector<int64_t> block_;  // tokens of the block drawn on the device; block_at_: next to return
  size_t block_at_ = 0;
  int64_t device_blocks_ = 0;
  Tensor logits_;
};

}  // namespace minmo
