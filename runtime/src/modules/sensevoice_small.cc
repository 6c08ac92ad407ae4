#include "modules/sensevoice_small.h"

#include "backends/cpu/parallel.h"

#include <cmath>
#include <cstring>
#include <string>

#include "backends/cpu/ops.h"
#include "minmo/status.h"

namespace minmo {

SenseVoiceSmallConfig SenseVoiceSmallConfig::from_json(const nlohmann::json& config) {
  ConfigReader r(config, "sensevoice_small encoder");
  SenseVoiceSmallConfig c;
  c.input_dim = r.get_int("input_dim", c.input_dim);
  c.d_model = r.get_int("d_model", c.d_model);
  c.n_heads = r.get_int("n_heads", c.n_heads);
  c.ffn_dim = r.get_int("ffn_dim", c.ffn_dim);
  c.n_blocks = r.get_int("n_blocks", c.n_blocks);
  c.n_tp_blocks = r.get_int("n_tp_blocks", c.n_tp_blocks);
  c.fsmn_kernel = r.get_int("fsmn_kernel", c.fsmn_kernel);
  c.sanm_shift = r.get_int("sanm_shift", c.sanm_shift);
  c.norm_eps = r.get_float("norm_eps", c.norm_eps);
  c.vocab_size = r.get_int("vocab_size", c.vocab_size);
  c.n_query_embed = r.get_int("n_query_embed", c.n_query_embed);
  r.finish();
  MINMO_CHECK(c.input_dim >= 4 && c.input_dim % 2 == 0 && c.d_model > 0 && c.n_heads > 0 &&
                  c.d_model % c.n_heads == 0 && c.ffn_dim > 0 && c.n_blocks >= 1 && c.n_tp_blocks >= 0 &&
                  c.fsmn_kernel >= 1 && c.vocab_size > 0 && c.n_query_embed > 0,
              ErrorCode::BundleError,
              "sensevoice_small encoder: invalid config (input_dim even >= 4, d_model divisible by n_heads, "
              "n_blocks >= 1, positive sizes)");
  const int64_t left_pad = (c.fsmn_kernel - 1) / 2 + c.sanm_shift;
  MINMO_CHECK(left_pad >= 0 && left_pad < c.fsmn_kernel, ErrorCode::BundleError,
              "sensevoice_small encoder: sanm_shift " << c.sanm_shift << " out of range for fsmn_kernel "
                                                      << c.fsmn_kernel);
  return c;
}

SenseVoiceSmallEncoder::SenseVoiceSmallEncoder(const SenseVoiceSmallConfig& config, const ChunkSpec& chunk,
                                               const WeightStore& weights)
    : cfg_(config), chunk_(chunk), weights_(weights) {
  const int64_t d = cfg_.d_model;
  embed_ = load_tensor(weights_, "embed.weight", {cfg_.n_query_embed, cfg_.input_dim});
  auto block = [&](const std::string& p, int64_t in) {
    Block b;
    b.in_dim = in;
    b.norm1 = load_norm(weights_, p + "norm1", in);
    b.qkv = load_linear(weights_, p + "self_attn.linear_q_k_v", in, 3 * d);
    b.out = load_linear(weights_, p + "self_attn.linear_out", d, d);
    b.fsmn_t = transpose_fsmn(load_tensor(weights_, p + "self_attn.fsmn_block.weight", {d, 1, cfg_.fsmn_kernel}), d,
                              cfg_.fsmn_kernel);
    b.norm2 = load_norm(weights_, p + "norm2", d);
    b.w1 = load_linear(weights_, p + "feed_forward.w_1", d, cfg_.ffn_dim);
    b.w2 = load_linear(weights_, p + "feed_forward.w_2", cfg_.ffn_dim, d);
    return b;
  };
  blocks_.push_back(block("encoder.encoders0.0.", cfg_.input_dim));
  for (int64_t i = 0; i + 1 < cfg_.n_blocks; ++i) blocks_.push_back(block("encoder.encoders." + std::to_string(i) + ".", d));
  after_norm_ = load_norm(weights_, "encoder.after_norm", d);
  for (int64_t i = 0; i < cfg_.n_tp_blocks; ++i)
    tp_blocks_.push_back(block("encoder.tp_encoders." + std::to_string(i) + ".", d));
  tp_norm_ = load_norm(weights_, "encoder.tp_norm", d);
  ctc_ = load_linear(weights_, "ctc.ctc_lo", d, cfg_.vocab_size);
}

std::shared_ptr<const SenseVoiceSmallEncoder> SenseVoiceSmallEncoder::load(const WeightStore& weights,
                                                                          const nlohmann::json& config,
                                                                          const nlohmann::json& streaming) {
  return std::make_shared<const SenseVoiceSmallEncoder>(SenseVoiceSmallConfig::from_json(config),
                                                        ChunkSpec::from_json(streaming), weights);
}

void SenseVoiceSmallEncoder::run_block(const Block& b, Tensor& x, int64_t n) const {
  const int64_t d = cfg_.d_model, H = cfg_.n_heads, dh = d / H, in = b.in_dim, K = cfg_.fsmn_kernel;
  const float eps = static_cast<float>(cfg_.norm_eps);
  Tensor h({n, in});
  cpu::layer_norm(x.ptr(), b.norm1.g, b.norm1.b, h.ptr(), n, in, eps);
  Tensor qkv({n, 3 * d});
  b.qkv(h.ptr(), qkv.ptr(), n);
  Tensor q({n, d}), k({n, d}), v({n, d});
  copy_columns(qkv.ptr(), n, 3 * d, 0, d, q.ptr());
  copy_columns(qkv.ptr(), n, 3 * d, d, d, k.ptr());
  copy_columns(qkv.ptr(), n, 3 * d, 2 * d, d, v.ptr());
  Tensor mem({n, d});
  fsmn_memory(nullptr, 0, v.ptr(), n, d, b.fsmn_t.data(), K, (K - 1) / 2 + cfg_.sanm_shift, 0, n, chunk_, mem.ptr());
  std::vector<int64_t> lo, hi;
  cpu::AttnMask mask;
  if (chunk_.chunked) {
    chunk_key_ranges(chunk_, 0, n, 0, n, n, lo, hi);
    mask = cpu::AttnMask::ranges(lo.data(), hi.data());
  }
  Tensor ctx({n, d});
  cpu::attention(q.ptr(), k.ptr(), v.ptr(), ctx.ptr(), n, n, H, H, dh, 1.0f / std::sqrt(static_cast<float>(dh)), mask);
  Tensor att({n, d});
  b.out(ctx.ptr(), att.ptr(), n);
  cpu::add_inplace(att.ptr(), mem.ptr(), n * d);
  if (in == d) {
    cpu::add_inplace(x.ptr(), att.ptr(), n * d);
  } else {
    x = std::move(att);
  }
  cpu::layer_norm(x.ptr(), b.norm2.g, b.norm2.b, h.ptr(), n, d, eps);
  Tensor f({n, cfg_.ffn_dim});
  b.w1(h.ptr(), f.ptr(), n);
  cpu::relu(f.ptr(), n * cfg_.ffn_dim);
  Tensor y({n, d});
  b.w2(f.ptr(), y.ptr(), n);
  cpu::add_inplace(x.ptr(), y.ptr(), n * d);
}

SenseVoiceSmallEncoder::Output SenseVoiceSmallEncoder::run(const Tensor& features,
                                                           const std::vector<int64_t>& query_ids) const {
  MINMO_CHECK(features.ndim() == 2, ErrorCode::InvalidArgument,
              "sensevoice_small encoder: features must be [T, " << cfg_.input_dim << "], got shape "
                                                                << features.shape_str());
  return run(features.ptr(), features.shape[0], features.shape[1], query_ids.data(),
             static_cast<int64_t>(query_ids.size()));
}

SenseVoiceSmallEncoder::Output SenseVoiceSmallEncoder::run(const float* features, int64_t T, int64_t width,
                                                           const int64_t* query_ids, int64_t n_ids) const {
  const int64_t in = cfg_.input_dim, d = cfg_.d_model;
  MINMO_CHECK(width == in, ErrorCode::InvalidArgument,
              "sensevoice_small encoder: features must have " << in << " columns (the frontend's LFR output), got "
                                                              << width);
  MINMO_CHECK(T >= 1, ErrorCode::InvalidArgument, "sensevoice_small encoder: no feature frames (empty input)");
  MINMO_CHECK(features != nullptr, ErrorCode::InvalidArgument, "sensevoice_small encoder: null features");
  MINMO_CHECK(n_ids == kNumQueries, ErrorCode::InvalidArgument,
              "sensevoice_small encoder: expected " << kNumQueries << " query ids [language, event, emotion, itn], got "
                                                    << n_ids);
  for (int64_t i = 0; i < n_ids; ++i)
    MINMO_CHECK(query_ids[i] >= 0 && query_ids[i] < cfg_.n_query_embed, ErrorCode::InvalidArgument,
                "sensevoice_small encoder: query id " << query_ids[i] << " outside [0, " << cfg_.n_query_embed << ")");
  const int64_t n = T + kNumQueries;
  Tensor x({n, in});
  cpu::embedding(embed_, query_ids, x.ptr(), kNumQueries, cfg_.n_query_embed, in);
  std::memcpy(x.row(kNumQueries), features, static_cast<size_t>(T * in) * sizeof(float));
  // x * sqrt(d_model) + [sin | cos](pos * 10000^(-i / (half - 1))), positions from 1.
  const float scale = static_cast<float>(std::sqrt(static_cast<double>(d)));
  const int64_t half = in / 2;
  const double step = std::log(10000.0) / static_cast<double>(half - 1);
#pragma omp parallel for schedule(static) if (cpu::parallel_elements(n * in))
  for (int64_t t = 0; t < n; ++t) {
    float* r = x.ptr() + t * in;
    const double pos = static_cast<double>(t + 1);
    for (int64_t i = 0; i < half; ++i) {
      const double a = pos * std::exp(static_cast<double>(i) * -step);
      r[i] = r[i] * scale + static_cast<float>(std::sin(a));
      r[i + half] = r[i + half] * scale + static_cast<float>(std::cos(a));
    }
  }
  for (const Block& b : blocks_) run_block(b, x, n);
  const float eps = static_cast<float>(cfg_.norm_eps);
  cpu::layer_norm(x.ptr(), after_norm_.g, after_norm_.b, x.ptr(), n, d, eps);
  for (const Block& b : tp_blocks_) run_block(b, x, n);
  cpu::layer_norm(x.ptr(), tp_norm_.g, tp_norm_.b, x.ptr(), n, d, eps);
  Output out;
  out.ctc_logits = Tensor({n, cfg_.vocab_size});
  ctc_(x.ptr(), out.ctc_logits.ptr(), n);
  out.encoder_out = std::move(x);
  return out;
}

std::vector<int64_t> SenseVoiceSmallEncoder::ctc_greedy(const Tensor& logits, int64_t blank) {
  MINMO_CHECK(logits.ndim() == 2, ErrorCode::InvalidArgument,
              "ctc_greedy: logits must be [T, V], got shape " << logits.shape_str());
  return ctc_greedy(logits.ptr(), logits.shape[0], logits.shape[1], blank);
}

std::vector<int64_t> SenseVoiceSmallEncoder::ctc_greedy(const float* logits, int64_t T, int64_t V, int64_t blank) {
  MINMO_CHECK(T == 0 || V > 0, ErrorCode::InvalidArgument, "ctc_greedy: empty vocabulary");
  std::vector<int64_t> ids;
  int64_t prev = -1;
  for (int64_t t = 0; t < T; ++t) {
    const float* r = logits + t * V;
    int64_t best = 0;
    for (int64_t j = 1; j < V; ++j)
      if (r[j] > r[best]) best = j;
    if (best != prev && best != blank) ids.push_back(best);
    prev = best;
  }
  return ids;
}

}  // namespace minmo
