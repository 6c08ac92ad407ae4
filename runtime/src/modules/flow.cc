#include "modules/flow.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backends/cpu/blas.h"
#include "backends/cpu/ops.h"
#include "backends/cuda/flow_cuda.h"
#include "backends/cuda/flow_encoder_cuda.h"
#include "minmo/status.h"
#include "minmo_kernels/hift.h"

namespace minmo {

namespace {

void mish_inplace(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float sp = v > 20.f ? v : std::log1p(std::exp(v));
    x[i] = v * std::tanh(sp);
  }
}

// ESPnet relative position encoding of distance r (query pos - key pos): sin at even, cos at odd.
void rel_pe(int64_t r, int64_t d, float* out) {
  for (int64_t i = 0; i < d / 2; ++i) {
    const double div = std::exp(static_cast<double>(2 * i) * -(std::log(10000.0) / static_cast<double>(d)));
    const double a = static_cast<double>(r) * div;
    out[2 * i] = static_cast<float>(std::sin(a));
    out[2 * i + 1] = static_cast<float>(std::cos(a));
  }
}

void add_rows(float* y, const float* x, int64_t n) { cpu::add_inplace(y, x, n); }

}  // namespace

void counter_normal(uint64_t seed, uint64_t stream, uint64_t start, int64_t count, float* out) {
  const uint64_t key = minmo_counter_key(seed, stream);  // shared with the device (minmo_kernels/hift.h)
  for (int64_t i = 0; i < count; ++i) out[i] = minmo_counter_normal_at(key, start + static_cast<uint64_t>(i));
}

FlowConfig FlowConfig::from_json(const nlohmann::json& config) {
  ConfigReader r(config, "flow");
  FlowConfig c;
  c.vocab_size = r.get_int("vocab_size", c.vocab_size);
  c.d_model = r.get_int("d_model", c.d_model);
  c.n_heads = r.get_int("n_heads", c.n_heads);
  c.ffn_dim = r.get_int("ffn_dim", c.ffn_dim);
  c.n_blocks = r.get_int("n_blocks", c.n_blocks);
  c.n_up_blocks = r.get_int("n_up_blocks", c.n_up_blocks);
  c.pre_lookahead = r.get_int("pre_lookahead", c.pre_lookahead);
  c.mel_dim = r.get_int("mel_dim", c.mel_dim);
  c.spk_dim = r.get_int("spk_dim", c.spk_dim);
  c.token_mel_ratio = r.get_int("token_mel_ratio", c.token_mel_ratio);
  c.est_channels = r.get_int("est_channels", c.est_channels);
  c.est_heads = r.get_int("est_heads", c.est_heads);
  c.est_head_dim = r.get_int("est_head_dim", c.est_head_dim);
  c.n_transformer = r.get_int("n_transformer", c.n_transformer);
  c.n_mid_blocks = r.get_int("n_mid_blocks", c.n_mid_blocks);
  c.n_timesteps = r.get_int("n_timesteps", c.n_timesteps);
  c.cfg_rate = r.get_float("cfg_rate", c.cfg_rate);
  r.finish();
  MINMO_CHECK(c.vocab_size > 0 && c.d_model > 0 && c.n_heads > 0 && c.d_model % c.n_heads == 0 &&
                  (c.d_model / c.n_heads) % 2 == 0 && c.ffn_dim > 0 && c.n_blocks >= 0 && c.n_up_blocks >= 0 &&
                  c.pre_lookahead >= 1 && c.mel_dim > 0 && c.spk_dim > 0 && c.est_channels > 0 && c.est_heads > 0 &&
                  c.est_head_dim > 0 && c.n_transformer >= 0 && c.n_mid_blocks >= 0 && c.n_timesteps >= 1,
              ErrorCode::BundleError, "flow: invalid config " << config.dump());
  MINMO_CHECK(c.token_mel_ratio == 2, ErrorCode::BundleError, "flow: token_mel_ratio must be 2");
  return c;
}

std::pair<int64_t, int64_t> flow_prune_range(const std::vector<int64_t>& seg, int64_t min_seg, bool keep_prompt) {
  const int64_t n = static_cast<int64_t>(seg.size());
  int64_t first = 0;  // first row to drop
  if (keep_prompt)
    while (first < n && seg[first] == 0) ++first;
  int64_t last = first;  // one past the last row to drop
  while (last < n && seg[last] < min_seg && !(keep_prompt && seg[last] == 0)) ++last;
  return {first, last};
}

void FlowKV::prune(int64_t min_seg, bool keep_prompt, int64_t width) {
  const auto [first, last] = flow_prune_range(seg, min_seg, keep_prompt);
  if (last == first) return;
  k.erase(k.begin() + first * width, k.begin() + last * width);
  v.erase(v.begin() + first * width, v.begin() + last * width);
  pos.erase(pos.begin() + first, pos.begin() + last);
  seg.erase(seg.begin() + first, seg.begin() + last);
}

// ------------------------------------------------------------------------------------------ load

FlowModel::FlowModel(const FlowConfig& config, const WeightStore& weights) : cfg_(config), weights_(weights) {
  const int64_t d = cfg_.d_model, mel = cfg_.mel_dim, ch = cfg_.est_channels, tdim = 4 * ch;
  const int64_t cin = 4 * mel, inner = cfg_.est_heads * cfg_.est_head_dim;
  const WeightStore& w = weights_;
  auto conv = [&](const std::string& name, int64_t ci, int64_t co, int64_t k) { return load_conv(w, name, ci, co, k); };
  embedding_ = load_tensor(w, "input_embedding.weight", {cfg_.vocab_size, d});
  spk_affine_ = load_linear(w, "spk_embed_affine_layer", cfg_.spk_dim, mel);
  embed_lin_ = load_linear(w, "encoder.embed.out.0", d, d);
  embed_ln_ = load_norm(w, "encoder.embed.out.1", d);
  pre_conv1_ = conv("encoder.pre_lookahead_layer.conv1", d, d, cfg_.pre_lookahead + 1);
  pre_conv2_ = conv("encoder.pre_lookahead_layer.conv2", d, d, 3);
  auto conformer = [&](const std::string& p) {
    Conformer b;
    b.norm_mha = load_norm(w, p + ".norm_mha", d);
    b.norm_ff = load_norm(w, p + ".norm_ff", d);
    b.attn.q = load_linear(w, p + ".self_attn.linear_q", d, d);
    b.attn.k = load_linear(w, p + ".self_attn.linear_k", d, d);
    b.attn.v = load_linear(w, p + ".self_attn.linear_v", d, d);
    b.attn.out = load_linear(w, p + ".self_attn.linear_out", d, d);
    b.attn.pos = load_linear(w, p + ".self_attn.linear_pos", d, d, false);
    b.attn.u = load_tensor(w, p + ".self_attn.pos_bias_u", {cfg_.n_heads, d / cfg_.n_heads});
    b.attn.vb = load_tensor(w, p + ".self_attn.pos_bias_v", {cfg_.n_heads, d / cfg_.n_heads});
    b.w1 = load_linear(w, p + ".feed_forward.w_1", d, cfg_.ffn_dim);
    b.w2 = load_linear(w, p + ".feed_forward.w_2", cfg_.ffn_dim, d);
    return b;
  };
  for (int64_t i = 0; i < cfg_.n_blocks; ++i) enc_.push_back(conformer("encoder.encoders." + std::to_string(i)));
  up_conv_ = conv("encoder.up_layer.conv", d, d, 5);
  up_embed_lin_ = load_linear(w, "encoder.up_embed.out.0", d, d);
  up_embed_ln_ = load_norm(w, "encoder.up_embed.out.1", d);
  for (int64_t i = 0; i < cfg_.n_up_blocks; ++i) up_.push_back(conformer("encoder.up_encoders." + std::to_string(i)));
  after_norm_ = load_norm(w, "encoder.after_norm", d);
  proj_ = load_linear(w, "encoder_proj", d, mel);

  const std::string e = "decoder.estimator.";
  auto resnet = [&](const std::string& p, int64_t ci) {
    Resnet r;
    r.conv1 = conv(p + ".block1.block.0", ci, ch, 3);
    r.ln1 = load_norm(w, p + ".block1.block.2", ch);
    r.conv2 = conv(p + ".block2.block.0", ch, ch, 3);
    r.ln2 = load_norm(w, p + ".block2.block.2", ch);
    r.res = conv(p + ".res_conv", ci, ch, 1);
    r.mlp = load_linear(w, p + ".mlp.1", tdim, ch);
    r.conv_slot = n_conv_slots_;
    n_conv_slots_ += 2;
    return r;
  };
  auto blocks = [&](const std::string& p) {
    std::vector<TBlock> out;
    for (int64_t i = 0; i < cfg_.n_transformer; ++i) {
      const std::string q = p + "." + std::to_string(i);
      TBlock b;
      b.norm1 = load_norm(w, q + ".norm1", ch);
      b.norm3 = load_norm(w, q + ".norm3", ch);
      b.q = load_linear(w, q + ".attn1.to_q", ch, inner, false);
      b.k = load_linear(w, q + ".attn1.to_k", ch, inner, false);
      b.v = load_linear(w, q + ".attn1.to_v", ch, inner, false);
      b.out = load_linear(w, q + ".attn1.to_out.0", inner, ch);
      b.ff1 = load_linear(w, q + ".ff.net.0.proj", ch, 4 * ch);
      b.ff2 = load_linear(w, q + ".ff.net.2", 4 * ch, ch);
      b.kv_slot = n_kv_slots_++;
      out.push_back(b);
    }
    return out;
  };
  stages_.push_back({resnet(e + "down_blocks.0.0", cin), blocks(e + "down_blocks.0.1")});
  down_conv_ = conv(e + "down_blocks.0.2", ch, ch, 3);
  for (int64_t i = 0; i < cfg_.n_mid_blocks; ++i) {
    const std::string p = e + "mid_blocks." + std::to_string(i);
    stages_.push_back({resnet(p + ".0", ch), blocks(p + ".1")});
  }
  stages_.push_back({resnet(e + "up_blocks.0.0", 2 * ch), blocks(e + "up_blocks.0.1")});
  up_conv2_ = conv(e + "up_blocks.0.2", ch, ch, 3);
  final_conv_ = conv(e + "final_block.block.0", ch, ch, 3);
  final_ln_ = load_norm(w, e + "final_block.block.2", ch);
  final_proj_ = conv(e + "final_proj", ch, mel, 1);
  n_conv_slots_ += 3;  // down, up, final

  // time schedule and embeddings (the same for every segment)
  const int64_t n = cfg_.n_timesteps;
  for (int64_t k = 0; k <= n; ++k)
    t_span_.push_back(static_cast<float>(1.0 - std::cos(static_cast<double>(k) / n * 0.5 * M_PI)));
  LinearW l1 = load_linear(w, e + "time_mlp.linear_1", cin, tdim);
  LinearW l2 = load_linear(w, e + "time_mlp.linear_2", tdim, tdim);
  const int64_t half = cin / 2;
  for (int64_t k = 0; k < n; ++k) {
    std::vector<float> sinus(cin), h(tdim), out(tdim);
    for (int64_t i = 0; i < half; ++i) {
      const double f = std::exp(static_cast<double>(i) * -(std::log(10000.0) / static_cast<double>(half - 1)));
      const double a = 1000.0 * static_cast<double>(t_span_[k]) * f;
      sinus[i] = static_cast<float>(std::sin(a));
      sinus[half + i] = static_cast<float>(std::cos(a));
    }
    l1(sinus.data(), h.data(), 1);
    cpu::silu(h.data(), tdim);
    l2(h.data(), out.data(), 1);
    temb_.push_back(out);
  }
}

std::shared_ptr<const FlowModel> FlowModel::load(const WeightStore& weights, const nlohmann::json& config,
                                                 const std::shared_ptr<cuda::Device>& device, std::string* cpu_fallback) {
  auto m = std::make_shared<FlowModel>(FlowConfig::from_json(config), weights);
  if (device) {
    const std::string why = cuda::CudaFlow::unsupported(*m);
    if (why.empty()) m->gpu_ = std::make_shared<const cuda::CudaFlow>(*m, device);
    else if (cpu_fallback) *cpu_fallback = why;
    else MINMO_THROW(ErrorCode::BundleError, "flow on " << device->name() << ": " << why);
    try {  // the encoder follows the estimator onto the device where its kernels run it
      if (m->gpu_) m->gpu_enc_ = std::make_shared<const cuda::CudaFlowEncoder>(*m, device);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::BundleError) throw;
      if (cpu_fallback) *cpu_fallback = std::string("flow encoder on the CPU: ") + e.what();
    }
  }
  return m;
}

FlowModel::~FlowModel() = default;

std::string FlowModel::device() const { return gpu_ ? gpu_->device() : "cpu"; }

FlowState FlowModel::new_state(const std::vector<float>& speaker, bool has_prompt, int64_t left_chunks) const {
  MINMO_CHECK(static_cast<int64_t>(speaker.size()) == cfg_.spk_dim, ErrorCode::InvalidArgument,
              "speaker embedding must have " << cfg_.spk_dim << " values, got " << speaker.size());
  double norm = 0.0;
  for (float v : speaker) {
    MINMO_CHECK(std::isfinite(v), ErrorCode::InvalidArgument, "speaker embedding has a NaN or Inf value");
    norm += static_cast<double>(v) * v;
  }
  const float scale = static_cast<float>(1.0 / std::max(std::sqrt(norm), 1e-12));
  std::vector<float> unit(speaker.size());
  for (size_t i = 0; i < speaker.size(); ++i) unit[i] = speaker[i] * scale;
  FlowState st;
  st.spk80.resize(cfg_.mel_dim);
  spk_affine_(unit.data(), st.spk80.data(), 1);
  st.has_prompt = has_prompt;
  st.left_chunks = left_chunks;
  st.pre_ctx.assign(2 * cfg_.d_model, 0.f);
  st.up_ctx.assign(2 * cfg_.d_model, 0.f);
  st.enc_kv.resize(enc_.size());
  st.up_kv.resize(up_.size());
  if (gpu_) {
    st.gpu = gpu_->acquire();
    return st;
  }
  st.est.resize(2 * cfg_.n_timesteps);
  for (auto& es : st.est) {
    es.kv.resize(n_kv_slots_);
    es.conv.resize(n_conv_slots_);
  }
  return st;
}

void FlowModel::reserve(FlowState& st, int64_t segment_tokens, int64_t cache_tokens) const {
  if (!gpu_ || !st.gpu) return;
  gpu_->reserve(*st.gpu, 2 * segment_tokens, 2 * cache_tokens);
  if (gpu_enc_ && !st.gpu_enc && st.tokens_done == 0 && st.left_chunks >= 0)
    st.gpu_enc = {new cuda::CudaFlowEncoderState(*gpu_enc_, st.gpu->stream(), st.gpu->gemm(), st.has_prompt,
                                                 st.left_chunks, segment_tokens, cache_tokens),
                  [](cuda::CudaFlowEncoderState* p) { delete p; }};
}

std::string FlowModel::encoder_device(const FlowState& st) const {
  return st.gpu_enc ? gpu_enc_->device()->name() : "cpu";
}

// ------------------------------------------------------------------------------------------ encoder

void FlowModel::causal_conv(const ConvW& c, const float* x, int64_t n, std::vector<float>& ctx, float* y) const {
  const int64_t keep = c.k - 1;
  if (keep == 0) {
    cpu::conv1d(x, c.w, c.b, y, n, c.cin, c.cout, 1, 1, 0, 0, 1);
    return;
  }
  if (static_cast<int64_t>(ctx.size()) != keep * c.cin) ctx.assign(keep * c.cin, 0.f);
  std::vector<float> ext(ctx);
  ext.insert(ext.end(), x, x + n * c.cin);
  cpu::conv1d(ext.data(), c.w, c.b, y, n + keep, c.cin, c.cout, c.k, 1, 0, 0, 1);
  ctx.assign(ext.end() - keep * c.cin, ext.end());
}

void FlowModel::rel_attention(const RelAttn& a, const float* x, int64_t n, int64_t pos0, int64_t seg, FlowKV& kv,
                              const FlowState& st, float* out) const {
  const int64_t d = cfg_.d_model, h = cfg_.n_heads, dk = d / h;
  std::vector<float> q(n * d), knew(n * d), vnew(n * d);
  a.q(x, q.data(), n);
  a.k(x, knew.data(), n);
  a.v(x, vnew.data(), n);
  if (st.left_chunks >= 0) kv.prune(seg - st.left_chunks, st.has_prompt, d);
  kv.k.insert(kv.k.end(), knew.begin(), knew.end());
  kv.v.insert(kv.v.end(), vnew.begin(), vnew.end());
  for (int64_t i = 0; i < n; ++i) {
    kv.pos.push_back(pos0 + i);
    kv.seg.push_back(seg);
  }
  const int64_t m = kv.rows();
  std::vector<float> qu(n * d), qv(n * d);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j) {
      qu[i * d + j] = q[i * d + j] + a.u[j];
      qv[i * d + j] = q[i * d + j] + a.vb[j];
    }
  std::vector<float> scores(h * n * m);
  for (int64_t hh = 0; hh < h; ++hh)
    blas::sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, m, dk, 1.f, qu.data() + hh * dk, d, kv.k.data() + hh * dk,
                d, 0.f, scores.data() + hh * n * m, m);
  // position term, per contiguous run of key positions
  int64_t j0 = 0;
  while (j0 < m) {
    int64_t j1 = j0 + 1;
    while (j1 < m && kv.pos[j1] == kv.pos[j1 - 1] + 1) ++j1;
    const int64_t rmin = pos0 - kv.pos[j1 - 1], rmax = pos0 + n - 1 - kv.pos[j0], R = rmax - rmin + 1;
    std::vector<float> pe(R * d), p(R * d), bd(n * R);
    for (int64_t r = 0; r < R; ++r) rel_pe(rmin + r, d, pe.data() + r * d);
    a.pos(pe.data(), p.data(), R);
    for (int64_t hh = 0; hh < h; ++hh) {
      blas::sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, R, dk, 1.f, qv.data() + hh * dk, d, p.data() + hh * dk,
                  d, 0.f, bd.data(), R);
      float* sc = scores.data() + hh * n * m;
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = j0; j < j1; ++j) sc[i * m + j] += bd[i * R + (pos0 + i - kv.pos[j]) - rmin];
    }
    j0 = j1;
  }
  const float scale = 1.f / std::sqrt(static_cast<float>(dk));
  for (auto& s : scores) s *= scale;
  cpu::softmax(scores.data(), h * n, m);
  std::vector<float> ctx(n * d);
  for (int64_t hh = 0; hh < h; ++hh)
    blas::sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, dk, m, 1.f, scores.data() + hh * n * m, m,
                kv.v.data() + hh * dk, d, 0.f, ctx.data() + hh * dk, d);
  a.out(ctx.data(), out, n);
}

void FlowModel::conformer(const Conformer& b, Tensor& x, int64_t pos0, int64_t seg, FlowKV& kv,
                          const FlowState& st) const {
  const int64_t n = x.rows(), d = cfg_.d_model;
  Tensor y({n, d}), o({n, d});
  cpu::layer_norm(x.ptr(), b.norm_mha.g, b.norm_mha.b, y.ptr(), n, d, 1e-12f);
  rel_attention(b.attn, y.ptr(), n, pos0, seg, kv, st, o.ptr());
  add_rows(x.ptr(), o.ptr(), n * d);
  cpu::layer_norm(x.ptr(), b.norm_ff.g, b.norm_ff.b, y.ptr(), n, d, 1e-12f);
  Tensor hid({n, cfg_.ffn_dim});
  b.w1(y.ptr(), hid.ptr(), n);
  cpu::silu(hid.ptr(), hid.numel());
  b.w2(hid.ptr(), o.ptr(), n);
  add_rows(x.ptr(), o.ptr(), n * d);
}

Tensor FlowModel::encode_segment(FlowState& st, const int64_t* tokens, int64_t n, const int64_t* lookahead,
                                 int64_t n_look) const {
  const int64_t d = cfg_.d_model, L = cfg_.pre_lookahead;
  MINMO_CHECK(n >= 1 && n_look >= 0 && n_look <= L, ErrorCode::InvalidArgument,
              "flow segment: need >= 1 token and at most " << L << " lookahead tokens");
  const int64_t m = n + n_look;
  std::vector<int64_t> ids(tokens, tokens + n);
  ids.insert(ids.end(), lookahead, lookahead + n_look);
  for (int64_t id : ids)
    MINMO_CHECK(id >= 0 && id < cfg_.vocab_size, ErrorCode::InvalidArgument,
                "speech token id " << id << " is outside [0, " << cfg_.vocab_size << ")");
  Tensor emb({m, d}), e({n + L, d});
  cpu::embedding(embedding_, ids.data(), emb.ptr(), m, cfg_.vocab_size, d);
  embed_lin_(emb.ptr(), e.ptr(), m);  // rows >= m stay zero (the end of the utterance)
  cpu::layer_norm(e.ptr(), embed_ln_.g, embed_ln_.b, e.ptr(), m, d, 1e-5f);
  const float xs = std::sqrt(static_cast<float>(d));
  for (int64_t i = 0; i < m * d; ++i) e.data[i] *= xs;
  // pre-lookahead layer
  Tensor h1({n, d}), x({n, d});
  cpu::conv1d(e.ptr(), pre_conv1_.w, pre_conv1_.b, h1.ptr(), n + L, d, d, L + 1, 1, 0, 0, 1);
  for (auto& v : h1.data) v = v > 0.f ? v : 0.01f * v;
  causal_conv(pre_conv2_, h1.ptr(), n, st.pre_ctx, x.ptr());
  add_rows(x.ptr(), e.ptr(), n * d);
  const int64_t pos0 = st.tokens_done, seg = st.segments_done;
  for (size_t i = 0; i < enc_.size(); ++i) conformer(enc_[i], x, pos0, seg, st.enc_kv[i], st);
  // 2x nearest upsample + causal conv (kernel 5) with the last 2 token rows as context
  std::vector<float> up((2 + n) * 2 * d);
  for (int64_t r = 0; r < 2 + n; ++r) {
    const float* src = r < 2 ? st.up_ctx.data() + r * d : x.row(r - 2);
    std::memcpy(up.data() + (2 * r) * d, src, sizeof(float) * d);
    std::memcpy(up.data() + (2 * r + 1) * d, src, sizeof(float) * d);
  }
  std::vector<float> last(2 * d);
  for (int64_t r = 0; r < 2; ++r) {
    const int64_t src = n + r;  // rows n, n+1 of [ctx; x] = the last two
    std::memcpy(last.data() + r * d, src < 2 ? st.up_ctx.data() + src * d : x.row(src - 2), sizeof(float) * d);
  }
  st.up_ctx = last;
  Tensor u({2 * n, d}), hm({2 * n, d});
  cpu::conv1d(up.data(), up_conv_.w, up_conv_.b, u.ptr(), 2 * n + 4, d, d, 5, 1, 0, 0, 1);
  up_embed_lin_(u.ptr(), hm.ptr(), 2 * n);
  cpu::layer_norm(hm.ptr(), up_embed_ln_.g, up_embed_ln_.b, hm.ptr(), 2 * n, d, 1e-5f);
  for (auto& v : hm.data) v *= xs;
  for (size_t i = 0; i < up_.size(); ++i) conformer(up_[i], hm, 2 * pos0, seg, st.up_kv[i], st);
  cpu::layer_norm(hm.ptr(), after_norm_.g, after_norm_.b, hm.ptr(), 2 * n, d, 1e-5f);
  Tensor mu({2 * n, cfg_.mel_dim});
  proj_(hm.ptr(), mu.ptr(), 2 * n);
  return mu;
}

// ------------------------------------------------------------------------------------------ estimator

void FlowModel::resnet(const Resnet& r, const Tensor& x, const float* tproj, FlowState::Est& es, Tensor& out) const {
  const int64_t n = x.rows(), ch = cfg_.est_channels;
  Tensor h({n, ch}), h2({n, ch});
  causal_conv(r.conv1, x.ptr(), n, es.conv[r.conv_slot], h.ptr());
  cpu::layer_norm(h.ptr(), r.ln1.g, r.ln1.b, h.ptr(), n, ch, 1e-5f);
  mish_inplace(h.ptr(), h.numel());
  for (int64_t i = 0; i < n; ++i) add_rows(h.row(i), tproj, ch);
  causal_conv(r.conv2, h.ptr(), n, es.conv[r.conv_slot + 1], h2.ptr());
  cpu::layer_norm(h2.ptr(), r.ln2.g, r.ln2.b, h2.ptr(), n, ch, 1e-5f);
  mish_inplace(h2.ptr(), h2.numel());
  out = Tensor({n, ch});
  cpu::linear(x.ptr(), r.res.w, r.res.b, out.ptr(), n, r.res.cin, ch);
  add_rows(out.ptr(), h2.ptr(), n * ch);
}

void FlowModel::tblock(const TBlock& b, Tensor& x, int64_t pos0, int64_t seg, FlowState::Est& es,
                       const FlowState& st) const {
  const int64_t n = x.rows(), ch = cfg_.est_channels, hd = cfg_.est_head_dim, inner = cfg_.est_heads * hd;
  Tensor y({n, ch}), q({n, inner}), kn({n, inner}), vn({n, inner}), att({n, inner}), o({n, ch});
  cpu::layer_norm(x.ptr(), b.norm1.g, b.norm1.b, y.ptr(), n, ch, 1e-5f);
  b.q(y.ptr(), q.ptr(), n);
  b.k(y.ptr(), kn.ptr(), n);
  b.v(y.ptr(), vn.ptr(), n);
  FlowKV& kv = es.kv[b.kv_slot];
  if (st.left_chunks >= 0) kv.prune(seg - st.left_chunks, st.has_prompt, inner);
  kv.k.insert(kv.k.end(), kn.data.begin(), kn.data.end());
  kv.v.insert(kv.v.end(), vn.data.begin(), vn.data.end());
  for (int64_t i = 0; i < n; ++i) {
    kv.pos.push_back(pos0 + i);
    kv.seg.push_back(seg);
  }
  cpu::attention(q.ptr(), kv.k.data(), kv.v.data(), att.ptr(), n, kv.rows(), cfg_.est_heads, cfg_.est_heads, hd,
                 1.f / std::sqrt(static_cast<float>(hd)), cpu::AttnMask::none());
  b.out(att.ptr(), o.ptr(), n);
  add_rows(x.ptr(), o.ptr(), n * ch);
  cpu::layer_norm(x.ptr(), b.norm3.g, b.norm3.b, y.ptr(), n, ch, 1e-5f);
  Tensor f({n, 4 * ch});
  b.ff1(y.ptr(), f.ptr(), n);
  cpu::gelu(f.ptr(), f.numel());
  b.ff2(f.ptr(), o.ptr(), n);
  add_rows(x.ptr(), o.ptr(), n * ch);
}

Tensor FlowModel::estimator(FlowState::Est& es, int step, const float* x, const float* mu, const float* spk,
                            const float* cond, int64_t n, int64_t pos0, int64_t seg, const FlowState& st) const {
  const int64_t mel = cfg_.mel_dim, ch = cfg_.est_channels, tdim = 4 * ch;
  Tensor in({n, 4 * mel});
  for (int64_t i = 0; i < n; ++i) {
    float* r = in.row(i);
    std::memcpy(r, x + i * mel, sizeof(float) * mel);
    std::memcpy(r + mel, mu + i * mel, sizeof(float) * mel);
    std::memcpy(r + 2 * mel, spk, sizeof(float) * mel);
    std::memcpy(r + 3 * mel, cond + i * mel, sizeof(float) * mel);
  }
  std::vector<float> mt(temb_[step]), tproj(ch);
  mish_inplace(mt.data(), tdim);
  Tensor h, skip;
  for (size_t s = 0; s < stages_.size(); ++s) {
    const Stage& stg = stages_[s];
    const bool first = s == 0, last = s + 1 == stages_.size();
    Tensor src;
    if (first) {
      src = std::move(in);
    } else if (last) {
      src = Tensor({n, 2 * ch});
      for (int64_t i = 0; i < n; ++i) {
        std::memcpy(src.row(i), h.row(i), sizeof(float) * ch);
        std::memcpy(src.row(i) + ch, skip.row(i), sizeof(float) * ch);
      }
    } else {
      src = std::move(h);
    }
    stg.resnet.mlp(mt.data(), tproj.data(), 1);
    resnet(stg.resnet, src, tproj.data(), es, h);
    for (const auto& b : stg.blocks) tblock(b, h, pos0, seg, es, st);
    const ConvW* after = first ? &down_conv_ : last ? &up_conv2_ : nullptr;
    if (first) skip = h;
    if (after) {
      Tensor c({n, ch});
      causal_conv(*after, h.ptr(), n, es.conv[n_conv_slots_ - (first ? 3 : 2)], c.ptr());
      h = std::move(c);
    }
  }
  Tensor f({n, ch}), out({n, mel});
  causal_conv(final_conv_, h.ptr(), n, es.conv[n_conv_slots_ - 1], f.ptr());
  cpu::layer_norm(f.ptr(), final_ln_.g, final_ln_.b, f.ptr(), n, ch, 1e-5f);
  mish_inplace(f.ptr(), f.numel());
  cpu::linear(f.ptr(), final_proj_.w, final_proj_.b, out.ptr(), n, ch, mel);
  return out;
}

// ------------------------------------------------------------------------------------------ segments

Tensor FlowModel::segment(FlowState& st, const int64_t* tokens, int64_t n, const int64_t* lookahead, int64_t n_look,
                          const float* cond, uint64_t seed) const {
  const int64_t mel = cfg_.mel_dim, F = 2 * n, pos0 = 2 * st.tokens_done, seg = st.segments_done;
  const float* mu_device = nullptr;
  Tensor mu;
  if (st.gpu_enc) {
    MINMO_CHECK(st.gpu && gpu_enc_, ErrorCode::InvalidArgument, "flow: a device encoder state on a CPU flow model");
    float* m = st.gpu->mu_buffer(F);
    gpu_enc_->encode_segment(*st.gpu_enc, tokens, n, lookahead, n_look, m);  // checks the ids
    mu_device = m;
  } else {
    mu = encode_segment(st, tokens, n, lookahead, n_look);
  }
  Tensor x({F, mel});
  counter_normal(seed, kFlowNoiseStream, static_cast<uint64_t>(pos0 * mel), F * mel, x.ptr());
  std::vector<float> zeros(F * mel, 0.f), zspk(mel, 0.f);
  const float* c = cond ? cond : zeros.data();
  if (st.gpu) {
    MINMO_CHECK(gpu_ != nullptr, ErrorCode::InvalidArgument, "flow: a device state passed to a CPU flow model");
    x = gpu_->solve(*st.gpu, x.ptr(), mu_device ? nullptr : mu.ptr(), st.spk80.data(), c, F, seg, st.left_chunks,
                    st.has_prompt, mu_device);
    st.tokens_done += n;
    st.segments_done += 1;
    return x;
  }
  MINMO_CHECK(!st.est.empty(), ErrorCode::InvalidArgument, "flow: a state without estimator caches");
  const float w = static_cast<float>(cfg_.cfg_rate), a = static_cast<float>(1.0 + cfg_.cfg_rate);
  for (int k = 0; k < cfg_.n_timesteps; ++k) {
    const float dt = t_span_[k + 1] - t_span_[k];
    Tensor d0 = estimator(st.est[2 * k], k, x.ptr(), mu.ptr(), st.spk80.data(), c, F, pos0, seg, st);
    Tensor d1 = estimator(st.est[2 * k + 1], k, x.ptr(), zeros.data(), zspk.data(), zeros.data(), F, pos0, seg, st);
    for (int64_t i = 0; i < F * mel; ++i) x.data[i] = x.data[i] + dt * (a * d0.data[i] - w * d1.data[i]);
  }
  st.tokens_done += n;
  st.segments_done += 1;
  return x;
}

Tensor FlowModel::offline(const std::vector<int64_t>& tokens, const std::vector<float>& speaker,
                          const std::vector<int64_t>& prompt_tokens, const std::vector<float>& prompt_mel,
                          uint64_t seed, int64_t chunk_tokens, int64_t left_chunks) const {
  const int64_t N = static_cast<int64_t>(tokens.size()), P = static_cast<int64_t>(prompt_tokens.size());
  const int64_t mel = cfg_.mel_dim;
  MINMO_CHECK(N > 0, ErrorCode::InvalidArgument, "no speech tokens to synthesise");
  MINMO_CHECK(prompt_mel.empty() || static_cast<int64_t>(prompt_mel.size()) == 2 * P * mel, ErrorCode::InvalidArgument,
              "prompt mel has " << prompt_mel.size() / std::max<int64_t>(mel, 1) << " frames of " << mel
                                << "; 2 per prompt token (" << 2 * P << ") are required");
  FlowState st = new_state(speaker, P > 0, left_chunks);
  std::vector<int64_t> all(prompt_tokens);
  all.insert(all.end(), tokens.begin(), tokens.end());
  std::vector<std::pair<int64_t, int64_t>> segs;
  if (chunk_tokens <= 0) {
    segs.push_back({0, P + N});
  } else {
    if (P > 0) segs.push_back({0, P});
    for (int64_t a = P; a < P + N; a += chunk_tokens) segs.push_back({a, std::min(a + chunk_tokens, P + N)});
  }
  {  // device buffers (and the device encoder, with bounded attention) for the longest segment
    int64_t longest = 0;
    for (auto [a, b] : segs) longest = std::max(longest, b - a);
    const bool bounded = left_chunks >= 0 && chunk_tokens > 0;
    reserve(st, longest, bounded ? std::min(P + N, P + (left_chunks + 1) * chunk_tokens) : P + N);
  }
  Tensor out({2 * N, mel});
  for (auto [a, b] : segs) {
    const int64_t n_look = std::min(cfg_.pre_lookahead, P + N - b);
    std::vector<float> cond(2 * (b - a) * mel, 0.f);
    for (int64_t f = 2 * a; f < std::min(2 * b, 2 * P); ++f)
      if (!prompt_mel.empty()) std::memcpy(cond.data() + (f - 2 * a) * mel, prompt_mel.data() + f * mel, sizeof(float) * mel);
    Tensor m = segment(st, all.data() + a, b - a, all.data() + b, n_look, cond.data(), seed);
    for (int64_t f = 2 * a; f < 2 * b; ++f)
      if (f >= 2 * P) std::memcpy(out.row(f - 2 * P), m.row(f - 2 * a), sizeof(float) * mel);
  }
  return out;
}

}  // namespace minmo
