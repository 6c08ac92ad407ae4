// SenseVoice-Small encoder with its CTC head (reference: export/reference/encoder_small.py).
//   x = [embed(query_ids) ; features]            [T + 4, input_dim]
//   x = x * sqrt(d_model) + sinusoid(positions 1 .. T + 4)
//   encoders0.0 (input_dim -> d, no attention residual), encoders.0 .. n_blocks-2, after_norm,
//   tp_encoders.0 .. n_tp_blocks-1, tp_norm -> encoder_out [T + 4, d]; ctc.ctc_lo -> logits.
// SAN-M block: x' = (x +) linear_out(MHA(q, k, v)) + fsmn(v) with pre-LayerNorm, then
// x' += w_2(relu(w_1(LN x'))). Weights use FunASR's names (embed.weight, encoder.encoders0.0.
// self_attn.linear_q_k_v.weight, ..., ctc.ctc_lo.weight).
// In chunked mode (ChunkSpec) attention and FSMN memory follow layers.py's chunk mask / limits
// over the whole [T + 4] sequence. Offline only (the session re-encodes or encodes per turn).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/safetensors.h"
#include "core/tensor.h"
#include "modules/audio_common.h"

namespace minmo {

// Python SenseVoiceSmallConfig (same keys and defaults).
struct SenseVoiceSmallConfig {
  int64_t input_dim = 560;
  int64_t d_model = 512;
  int64_t n_heads = 4;
  int64_t ffn_dim = 2048;
  int64_t n_blocks = 50;
  int64_t n_tp_blocks = 20;
  int64_t fsmn_kernel = 11;
  int64_t sanm_shift = 0;
  double norm_eps = 1e-5;
  int64_t vocab_size = 25055;
  int64_t n_query_embed = 16;

  // Throws BundleError on unknown keys / wrong types / invalid values.
  static SenseVoiceSmallConfig from_json(const nlohmann::json& config);
};

class SenseVoiceSmallEncoder {
 public:
  static constexpr int64_t kNumQueries = 4;  // [language, event, emotion, itn]

  struct Output {
    Tensor encoder_out;  // [T + 4, d_model]
    Tensor ctc_logits;   // [T + 4, vocab_size]
  };

  // Borrows the tensors of `weights` (kept alive by this object). Throws NotFound naming a
  // missing tensor, BundleError naming a tensor of the wrong shape (expected and actual).
  SenseVoiceSmallEncoder(const SenseVoiceSmallConfig& config, const ChunkSpec& chunk, const WeightStore& weights);
  // config: the module's config object; streaming: manifest["streaming"].
  static std::shared_ptr<const SenseVoiceSmallEncoder> load(const WeightStore& weights, const nlohmann::json& config,
                                                           const nlohmann::json& streaming);

  const SenseVoiceSmallConfig& config() const { return cfg_; }
  const ChunkSpec& chunk() const { return chunk_; }

  // features [T, input_dim] (T >= 1), query_ids: 4 ids in [0, n_query_embed).
  // Throws InvalidArgument on a wrong feature width, no frames, or a bad id. Thread-safe.
  Output run(const Tensor& features, const std::vector<int64_t>& query_ids) const;
  Output run(const float* features, int64_t T, int64_t width, const int64_t* query_ids, int64_t n_ids) const;

  // Greedy CTC decoding of logits [T, V]: per-frame argmax (first maximum on ties), repeats
  // collapsed, `blank` dropped.
  static std::vector<int64_t> ctc_greedy(const Tensor& logits, int64_t blank = 0);
  static std::vector<int64_t> ctc_greedy(const float* logits, int64_t T, int64_t V, int64_t blank = 0);

 private:
  struct Block {
    int64_t in_dim;
    NormW norm1, norm2;
    LinearW qkv, out, w1, w2;
    std::vector<float> fsmn_t;  // FSMN weight as [K, d]
  };
  void run_block(const Block& b, Tensor& x, int64_t n) const;

  SenseVoiceSmallConfig cfg_;
  ChunkSpec chunk_;
  WeightStore weights_;  // keeps the borrowed tensors alive
  const float* embed_;   // [n_query_embed, input_dim]
  std::vector<Block> blocks_, tp_blocks_;
  NormW after_norm_, tp_norm_;
  LinearW ctc_;
};

}  // namespace minmo
