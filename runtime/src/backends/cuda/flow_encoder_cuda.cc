#include "backends/cuda/flow_encoder_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backends/cuda/weights.h"
#include "minmo/status.h"

namespace minmo {
namespace cuda {

namespace {

int64_t round_up4(int64_t v) { return (v + 3) / 4 * 4; }

// Rows of a product's weight: [rows, ld] = [W (rows x width) | b | 0] (b null: zeros).
void pack_rows(const float* w, const float* b, int64_t rows, int64_t width, int64_t ld, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(out + r * ld, w + r * width, sizeof(float) * width);
    std::fill(out + r * ld + width, out + (r + 1) * ld, 0.f);
    if (b) out[r * ld + width] = b[r];
  }
}

const float* dense(const LinearW& l, const char* what) {
  MINMO_CHECK(l.w != nullptr, ErrorCode::BundleError,
              "flow encoder on the CUDA backend: " << what << " is quantized (fp32 weights only)");
  return l.w;
}

// Distances in one stage's table: at most one run per contiguous range of kept positions; with
// pruning the kept segments are the prompt and a contiguous tail, so two runs.
constexpr int64_t kMaxRuns = 2;

}  // namespace

// ---- weights -------------------------------------------------------------------------------------

CudaFlowEncoder::CudaFlowEncoder(const FlowModel& m, std::shared_ptr<Device> device)
    : cfg_(m.config()), device_(std::move(device)) {
  const int64_t d = cfg_.d_model, L = cfg_.pre_lookahead, ffn = cfg_.ffn_dim;
  MINMO_CHECK(d / cfg_.n_heads <= MINMO_REL_ATTN_MAX_HEAD_DIM && cfg_.vocab_size < (int64_t{1} << 31),
              ErrorCode::BundleError,
              "flow encoder on " << device_->name() << ": head dim " << d / cfg_.n_heads << " above "
                                 << MINMO_REL_ATTN_MAX_HEAD_DIM << " or vocabulary too large");
  d_ = d;
  ld_ = round_up4(d + 1);
  ldf_ = round_up4(ffn + 1);
  ldc1_ = round_up4(d * (L + 1) + 1);
  ldc2_ = round_up4(d * 3 + 1);
  ldc5_ = round_up4(d * 5 + 1);
  Uploads up(weights_);
  auto vec = [&](const float* p, int64_t n) {
    return up.add(sizeof(float) * n, [=](uint8_t* dst) { std::memcpy(dst, p, sizeof(float) * n); });
  };
  auto linear = [&](std::vector<const LinearW*> parts, const char* what, int64_t ld) {
    int64_t rows = 0;
    for (const LinearW* l : parts) {
      dense(*l, what);
      rows += l->out;
    }
    return up.add(sizeof(float) * rows * ld, [=](uint8_t* dst) {
      auto* o = reinterpret_cast<float*>(dst);
      for (const LinearW* l : parts) {
        pack_rows(l->w, l->b, l->out, l->in, ld, o);
        o += l->out * ld;
      }
    });
  };
  auto conv = [&](const ConvW& c, int64_t ld) {
    return up.add(sizeof(float) * c.cout * ld, [=](uint8_t* dst) {
      pack_rows(c.w, c.b, c.cout, c.cin * c.k, ld, reinterpret_cast<float*>(dst));
    });
  };
  auto stage = [&](const std::vector<FlowModel::Conformer>& blocks) {
    Stage s;
    for (const auto& b : blocks) {
      Block o;
      o.ln1_g = vec(b.norm_mha.g, d);
      o.ln1_b = vec(b.norm_mha.b, d);
      o.ln2_g = vec(b.norm_ff.g, d);
      o.ln2_b = vec(b.norm_ff.b, d);
      o.u = vec(b.attn.u, d);
      o.vb = vec(b.attn.vb, d);
      o.qkv = linear({&b.attn.q, &b.attn.k, &b.attn.v}, "self_attn.linear_q/k/v", ld_);
      o.out = linear({&b.attn.out}, "self_attn.linear_out", ld_);
      o.w1 = linear({&b.w1}, "feed_forward.w_1", ld_);
      o.w2 = linear({&b.w2}, "feed_forward.w_2", ldf_);
      s.blocks.push_back(o);
    }
    std::vector<const LinearW*> pos;
    for (const auto& b : blocks) pos.push_back(&b.attn.pos);
    if (!pos.empty()) s.pos = linear(pos, "self_attn.linear_pos", d);  // no bias: [W] exactly
    return s;
  };
  embedding_ = vec(m.embedding_, cfg_.vocab_size * d);
  embed_ = linear({&m.embed_lin_}, "encoder.embed", ld_);
  embed_ln_g_ = vec(m.embed_ln_.g, d);
  embed_ln_b_ = vec(m.embed_ln_.b, d);
  conv1_ = conv(m.pre_conv1_, ldc1_);
  conv2_ = conv(m.pre_conv2_, ldc2_);
  enc_ = stage(m.enc_);
  up_conv_ = conv(m.up_conv_, ldc5_);
  up_embed_ = linear({&m.up_embed_lin_}, "encoder.up_embed", ld_);
  up_ln_g_ = vec(m.up_embed_ln_.g, d);
  up_ln_b_ = vec(m.up_embed_ln_.b, d);
  up_ = stage(m.up_);
  after_g_ = vec(m.after_norm_.g, d);
  after_b_ = vec(m.after_norm_.b, d);
  proj_ = linear({&m.proj_}, "encoder_proj", ld_);
  weights_.commit(device_);
  up.run(device_);
}

CudaFlowEncoder::~CudaFlowEncoder() = default;

// ---- state ---------------------------------------------------------------------------------------

namespace {

struct Sizes {
  int64_t rows_a, rows_x, rows_h, n_col, r_enc, r_up, ints, ids, enc_rows, enc_pe, enc_dist, up_rows, up_pe, up_dist;
};

Sizes sizes(const FlowConfig& c, int64_t S, int64_t T, int64_t ldc1, int64_t ldc2, int64_t ldc5) {
  Sizes z{};
  const int64_t L = c.pre_lookahead;
  z.rows_a = std::max(S + L, 2 * S);
  z.rows_x = z.rows_a;
  z.rows_h = 2 * (S + 2);
  z.n_col = std::max({S * ldc1, S * ldc2, 2 * S * ldc5});
  z.r_enc = T + kMaxRuns * S;
  z.r_up = 2 * T + kMaxRuns * 2 * S;
  z.ids = 0;
  z.enc_rows = z.ids + S + L;
  z.enc_pe = z.enc_rows + T;
  z.enc_dist = z.enc_pe + T;
  z.up_rows = z.enc_dist + z.r_enc;
  z.up_pe = z.up_rows + 2 * T;
  z.up_dist = z.up_pe + 2 * T;
  z.ints = z.up_dist + z.r_up;
  return z;
}

}  // namespace

CudaFlowEncoderState::CudaFlowEncoderState(const CudaFlowEncoder& enc, bool has_prompt, int64_t left_chunks,
                                           int64_t max_segment, int64_t max_tokens)
    : has_prompt_(has_prompt), left_chunks_(left_chunks), max_segment_(max_segment), max_tokens_(max_tokens) {
  own_stream_ = std::make_unique<Stream>(enc.device_);
  std::string why;
  own_gemm_ = Gemm::open(*own_stream_, &why);
  MINMO_CHECK(own_gemm_ != nullptr, ErrorCode::DeviceError, "flow encoder on " << enc.device_->name() << ": " << why);
  stream_ = own_stream_.get();
  gemm_ = own_gemm_.get();
  init(enc);
}

CudaFlowEncoderState::CudaFlowEncoderState(const CudaFlowEncoder& enc, const Stream& stream, const Gemm& gemm,
                                           bool has_prompt, int64_t left_chunks, int64_t max_segment,
                                           int64_t max_tokens)
    : stream_(&stream), gemm_(&gemm), has_prompt_(has_prompt), left_chunks_(left_chunks), max_segment_(max_segment),
      max_tokens_(max_tokens) {
  init(enc);
}

CudaFlowEncoderState::~CudaFlowEncoderState() = default;

void CudaFlowEncoderState::reset(bool has_prompt, int64_t left_chunks) {
  stream_->sync();
  has_prompt_ = has_prompt;
  left_chunks_ = left_chunks;
  tokens_done_ = segments_done_ = 0;
  live_.clear();
  stream_->memset(pre_ctx, 0, sizeof(float) * 2 * d_);
  stream_->memset(up_ctx, 0, sizeof(float) * 2 * d_);
}

void CudaFlowEncoderState::init(const CudaFlowEncoder& e) {
  const FlowConfig& c = e.cfg_;
  MINMO_CHECK(max_segment_ >= 1 && max_tokens_ >= max_segment_ && max_tokens_ < (int64_t{1} << 28),
              ErrorCode::InvalidArgument,
              "flow encoder state: need 1 <= max_segment (" << max_segment_ << ") <= max_tokens (" << max_tokens_
                                                            << ") < 2^28");
  const int64_t d = e.d_, S = max_segment_, T = max_tokens_;
  const Sizes z = sizes(c, S, T, e.ldc1_, e.ldc2_, e.ldc5_);
  arena_.place(&a, z.rows_a * e.ld_);
  arena_.place(&f, 2 * S * e.ldf_);
  arena_.place(&x, z.rows_x * d);
  arena_.place(&h, z.rows_h * d);
  arena_.place(&col, z.n_col);
  arena_.place(&pe, std::max(z.r_enc, z.r_up) * d);
  arena_.place(&p_enc, std::max<int64_t>(z.r_enc * c.n_blocks * d, 1));
  arena_.place(&p_up, std::max<int64_t>(z.r_up * c.n_up_blocks * d, 1));
  arena_.place(&pre_ctx, 2 * d);
  arena_.place(&up_ctx, 2 * d);
  arena_.place(&mu, 2 * S * c.mel_dim);
  arena_.place(&ints, z.ints);
  cache_enc.assign(c.n_blocks, nullptr);
  cache_up.assign(c.n_up_blocks, nullptr);
  for (auto& p : cache_enc) arena_.place(&p, T * 3 * d);
  for (auto& p : cache_up) arena_.place(&p, 2 * T * 3 * d);
  arena_.commit(e.device_);
  d_ = d;
  staging_ = Allocation(e.device_, sizeof(int32_t) * z.ints, MemoryKind::PinnedHost);
  out_ = Allocation(e.device_, sizeof(float) * 2 * S * c.mel_dim, MemoryKind::PinnedHost);
  // Everything zero (contexts, padding columns), then the ones columns of the product inputs.
  const Stream& st = *stream_;
  st.memset(arena_.at<void>(0), 0, arena_.bytes());
  std::vector<float> ones(std::max(z.rows_a * e.ld_, 2 * S * e.ldf_), 0.f);
  for (int64_t r = 0; r < z.rows_a; ++r) ones[r * e.ld_ + d] = 1.f;
  st.upload(a, ones.data(), sizeof(float) * z.rows_a * e.ld_);
  st.sync();
  std::fill(ones.begin(), ones.end(), 0.f);
  for (int64_t r = 0; r < 2 * S; ++r) ones[r * e.ldf_ + c.ffn_dim] = 1.f;
  st.upload(f, ones.data(), sizeof(float) * 2 * S * e.ldf_);
  st.sync();
}

// ---- segments ------------------------------------------------------------------------------------

namespace {

// Key rows, position-table rows (key_pe) and distances of one stage (ratio 1: tokens, 2: mel
// frames) for queries at positions q0 .. q0 + nq - 1 over the live segments (in position order):
// the table holds, per run of contiguous key positions [a, b], the distances q0 - b .. q0 + nq - 1 - a,
// and key j at position k reads row key_pe[j] + i for query i. Returns the number of distances.
template <typename Live>
int64_t key_lists(const std::vector<Live>& live, int64_t ratio, int64_t q0, int64_t nq, int32_t* rows, int32_t* pe,
                  int32_t* dist) {
  int64_t j = 0, R = 0;
  size_t a = 0;
  while (a < live.size()) {
    size_t b = a + 1;  // live[a, b): one run of contiguous positions
    while (b < live.size() && live[b].pos0 == live[b - 1].pos0 + live[b - 1].n) ++b;
    const int64_t first = ratio * live[a].pos0, last = ratio * (live[b - 1].pos0 + live[b - 1].n) - 1;
    const int64_t rmin = q0 - last, rmax = q0 + nq - 1 - first;
    for (size_t t = a; t < b; ++t)
      for (int64_t r = 0; r < ratio * live[t].n; ++r, ++j) {
        rows[j] = static_cast<int32_t>(ratio * live[t].row0 + r);
        pe[j] = static_cast<int32_t>(R + q0 - (ratio * live[t].pos0 + r) - rmin);
      }
    for (int64_t r = rmin; r <= rmax; ++r) dist[R++] = static_cast<int32_t>(r);
    a = b;
  }
  return R;
}

}  // namespace

void CudaFlowEncoder::conformer_stage(CudaFlowEncoderState& s, const Stage& stage, const std::vector<float*>& caches,
                                      int64_t rows, int64_t row0, int64_t keys, const int32_t* key_rows,
                                      const int32_t* key_pe, const float* p) const {
  const Stream& st = *s.stream_;
  const Gemm& g = *s.gemm_;
  const int64_t d = d_, nb = static_cast<int64_t>(stage.blocks.size()), ffn = cfg_.ffn_dim;
  const int32_t heads = static_cast<int32_t>(cfg_.n_heads), dk = static_cast<int32_t>(d / cfg_.n_heads);
  const float scale = 1.f / std::sqrt(static_cast<float>(dk));
  for (int64_t b = 0; b < nb; ++b) {
    const Block& w = stage.blocks[b];
    float* qkv = caches[b] + row0 * 3 * d;  // this segment's rows: [q | k | v]
    MINMO_DEVICE_CALL(st, layernorm_f32, static_cast<const float*>(s.x), d, at(w.ln1_g), at(w.ln1_b), s.a, ld_, rows, d,
                      1e-12f, 1.f);
    g.f32(s.a, at(w.qkv), qkv, rows, 3 * d, ld_, ld_, ld_, 3 * d, true);
    MINMO_DEVICE_CALL(st, rel_attention_f32, static_cast<const float*>(qkv), 3 * d,
                      static_cast<const float*>(caches[b] + d), static_cast<const float*>(caches[b] + 2 * d), 3 * d,
                      key_rows, key_pe, keys, p + b * d, nb * d, at(w.u), at(w.vb), s.a, ld_, rows, heads, dk, scale);
    g.f32(s.a, at(w.out), s.x, rows, d, ld_, ld_, ld_, d, true, 1.f, 1.f);
    MINMO_DEVICE_CALL(st, layernorm_f32, static_cast<const float*>(s.x), d, at(w.ln2_g), at(w.ln2_b), s.a, ld_, rows, d,
                      1e-12f, 1.f);
    g.f32(s.a, at(w.w1), s.f, rows, ffn, ld_, ld_, ld_, ldf_, true);
    MINMO_DEVICE_CALL(st, silu_rows_f32, s.f, rows, ffn, ldf_);
    g.f32(s.f, at(w.w2), s.x, rows, d, ldf_, ldf_, ldf_, d, true, 1.f, 1.f);
  }
}

void CudaFlowEncoder::encode_segment(CudaFlowEncoderState& s, const int64_t* tokens, int64_t n,
                                     const int64_t* lookahead, int64_t n_look, float* mu_device) const {
  const int64_t L = cfg_.pre_lookahead, m = n + n_look;
  MINMO_CHECK(n >= 1 && n_look >= 0 && n_look <= L, ErrorCode::InvalidArgument,
              "flow segment: need >= 1 token and at most " << L << " lookahead tokens");
  MINMO_CHECK(n <= s.max_segment_, ErrorCode::InvalidArgument,
              "flow segment of " << n << " tokens on a device state for segments of up to " << s.max_segment_);
  MINMO_CHECK(tokens != nullptr && (n_look == 0 || lookahead != nullptr) && mu_device != nullptr,
              ErrorCode::InvalidArgument, "flow segment: null tokens, lookahead or output");
  for (int64_t i = 0; i < m; ++i) {
    const int64_t id = i < n ? tokens[i] : lookahead[i - n];
    MINMO_CHECK(id >= 0 && id < cfg_.vocab_size, ErrorCode::InvalidArgument,
                "speech token id " << id << " is outside [0, " << cfg_.vocab_size << ")");
  }
  // Prune (FlowKV::prune) and place this segment's rows, on a copy until everything fits.
  const int64_t seg = s.segments_done_, pos0 = s.tokens_done_, T = s.max_tokens_;
  std::vector<CudaFlowEncoderState::Live> live;
  live.reserve(s.live_.size() + 1);
  for (const auto& l : s.live_)
    if (s.left_chunks_ < 0 || l.seg >= seg - s.left_chunks_ || (s.has_prompt_ && l.seg == 0)) live.push_back(l);
  std::vector<std::pair<int64_t, int64_t>> used;  // row ranges, sorted
  used.reserve(live.size());
  for (const auto& l : live) used.push_back({l.row0, l.row0 + l.n});
  std::sort(used.begin(), used.end());
  int64_t row0 = 0;
  for (const auto& u : used) {
    if (u.first - row0 >= n) break;
    row0 = std::max(row0, u.second);
  }
  int64_t kept = n;
  for (const auto& l : live) kept += l.n;
  MINMO_CHECK(row0 + n <= T, ErrorCode::InvalidArgument,
              "flow encoder device state holds " << T << " tokens in its caches; this segment needs " << kept
                                                 << " (raise max_tokens, or use left_chunks >= 0)");
  live.push_back({seg, pos0, n, row0});

  const Stream& st = *s.stream_;
  st.sync();  // the previous segment's upload has read the staging buffer
  const Sizes z = sizes(cfg_, s.max_segment_, T, ldc1_, ldc2_, ldc5_);
  int32_t* h = s.staging_.as<int32_t>();
  for (int64_t i = 0; i < m; ++i) h[z.ids + i] = static_cast<int32_t>(i < n ? tokens[i] : lookahead[i - n]);
  Shape sh;
  sh.n = n;
  sh.n_look = n_look;
  sh.row0 = row0;
  sh.keys = kept;
  sh.r_enc = key_lists(live, 1, pos0, n, h + z.enc_rows, h + z.enc_pe, h + z.enc_dist);
  sh.r_up = key_lists(live, 2, 2 * pos0, 2 * n, h + z.up_rows, h + z.up_pe, h + z.up_dist);
  sh.mu = mu_device;
  MINMO_CHECK(sh.r_enc <= z.r_enc && sh.r_up <= z.r_up, ErrorCode::Internal, "flow encoder: distance table overflow");
  st.upload(s.ints, h, sizeof(int32_t) * (z.up_dist + sh.r_up));
  s.live_ = std::move(live);
  s.tokens_done_ += n;
  s.segments_done_ += 1;
  // The device work depends on the shape only (token ids, key lists and distances are read from
  // device memory): a graph per shape seen twice.
  const auto key = std::make_tuple(sh.n, sh.n_look, sh.row0, sh.keys, sh.r_enc, sh.r_up,
                                   reinterpret_cast<uintptr_t>(sh.mu));
  if (s.seen_.size() > 1024) s.seen_.clear();  // shapes that never repeated (e.g. left_chunks < 0)
  auto gr = s.graphs_.find(key);
  if (gr == s.graphs_.end() && ++s.seen_[key] >= 2 && s.graphs_.size() < CudaFlowEncoderState::kMaxGraphs)
    gr = s.graphs_.emplace(key, st.capture([this, &s, sh] { enqueue(s, sh); })).first;
  if (gr != s.graphs_.end()) st.launch(gr->second);
  else enqueue(s, sh);
}

void CudaFlowEncoder::enqueue(CudaFlowEncoderState& s, const Shape& sh) const {
  const Stream& st = *s.stream_;
  const Gemm& g = *s.gemm_;
  const int64_t d = d_, L = cfg_.pre_lookahead, n = sh.n, m = sh.n + sh.n_look, row0 = sh.row0;
  const Sizes z = sizes(cfg_, s.max_segment_, s.max_tokens_, ldc1_, ldc2_, ldc5_);
  const float xs = std::sqrt(static_cast<float>(d));
  const float* none = nullptr;
  // embedding -> Linear -> LayerNorm * sqrt(d); rows m .. n + L - 1 are zeros (end of the utterance)
  MINMO_DEVICE_CALL(st, embedding_rows_f32, at(embedding_), static_cast<const int32_t*>(s.ints + z.ids), s.a, m,
                    cfg_.vocab_size, d, ld_);
  g.f32(s.a, at(embed_), s.x, m, d, ld_, ld_, ld_, d, true);
  if (m < n + L) st.memset(s.x + m * d, 0, sizeof(float) * (n + L - m) * d);
  MINMO_DEVICE_CALL(st, layernorm_f32, static_cast<const float*>(s.x), d, at(embed_ln_g_), at(embed_ln_b_), s.x, d, m,
                    d, 1e-5f, xs);
  // pre-lookahead layer: x += conv2(causal, leaky_relu(conv1(x | lookahead)))
  MINMO_DEVICE_CALL(st, conv1d_im2col_f32, static_cast<const float*>(s.x), none, s.col, n + L, d, n, ldc1_,
                    static_cast<int32_t>(L + 1), 1, 0, 1, MINMO_CONV_ACT_NONE, 0.f);
  g.f32(s.col, at(conv1_), s.h + 2 * d, n, d, ldc1_, ldc1_, ldc1_, d, true);
  st.copy_on_device(s.h, s.pre_ctx, sizeof(float) * 2 * d);
  MINMO_DEVICE_CALL(st, conv1d_im2col_f32, static_cast<const float*>(s.h), none, s.col, n + 2, d, n, ldc2_, 3, 1, 0, 1,
                    MINMO_CONV_ACT_LEAKY_RELU, 0.01f);
  st.copy_on_device(s.pre_ctx, s.h + n * d, sizeof(float) * 2 * d);
  g.f32(s.col, at(conv2_), s.x, n, d, ldc2_, ldc2_, ldc2_, d, true, 1.f, 1.f);
  // relative-position rows of both stages
  auto pos_rows = [&](const Stage& stage, int64_t off, int64_t R, float* p) {
    const int64_t nb = static_cast<int64_t>(stage.blocks.size());
    if (nb == 0) return;
    MINMO_DEVICE_CALL(st, rel_pos_enc_f32, static_cast<const int32_t*>(s.ints + off), R, d, s.pe);
    g.f32(s.pe, at(stage.pos), p, R, nb * d, d, d, d, nb * d, true);
  };
  pos_rows(enc_, z.enc_dist, sh.r_enc, s.p_enc);
  pos_rows(up_, z.up_dist, sh.r_up, s.p_up);
  conformer_stage(s, enc_, s.cache_enc, n, row0, sh.keys, s.ints + z.enc_rows, s.ints + z.enc_pe, s.p_enc);
  // 2x nearest upsampling of [context; x], causal conv (k 5), Linear -> LayerNorm * sqrt(d)
  MINMO_DEVICE_CALL(st, repeat_rows_f32, static_cast<const float*>(s.up_ctx), int64_t{2},
                    static_cast<const float*>(s.x), n, d, 2, s.h);
  MINMO_DEVICE_CALL(st, conv1d_im2col_f32, static_cast<const float*>(s.h), none, s.col, 2 * n + 4, d, 2 * n, ldc5_, 5,
                    1, 0, 1, MINMO_CONV_ACT_NONE, 0.f);
  st.copy_on_device(s.up_ctx, s.h + 2 * n * d, sizeof(float) * d);  // rows n, n + 1 of [context; x]
  st.copy_on_device(s.up_ctx + d, s.h + (2 * n + 2) * d, sizeof(float) * d);
  g.f32(s.col, at(up_conv_), s.a, 2 * n, d, ldc5_, ldc5_, ldc5_, ld_, true);
  g.f32(s.a, at(up_embed_), s.x, 2 * n, d, ld_, ld_, ld_, d, true);
  MINMO_DEVICE_CALL(st, layernorm_f32, static_cast<const float*>(s.x), d, at(up_ln_g_), at(up_ln_b_), s.x, d, 2 * n, d,
                    1e-5f, xs);
  conformer_stage(s, up_, s.cache_up, 2 * n, 2 * row0, 2 * sh.keys, s.ints + z.up_rows, s.ints + z.up_pe, s.p_up);
  MINMO_DEVICE_CALL(st, layernorm_f32, static_cast<const float*>(s.x), d, at(after_g_), at(after_b_), s.a, ld_, 2 * n, d,
                    1e-5f, 1.f);
  g.f32(s.a, at(proj_), sh.mu, 2 * n, cfg_.mel_dim, ld_, ld_, ld_, cfg_.mel_dim, true);
}

Tensor CudaFlowEncoder::encode_segment(CudaFlowEncoderState& s, const int64_t* tokens, int64_t n,
                                       const int64_t* lookahead, int64_t n_look) const {
  encode_segment(s, tokens, n, lookahead, n_look, s.mu);
  Tensor mu({2 * n, cfg_.mel_dim});
  const size_t bytes = sizeof(float) * mu.numel();
  s.stream_->download(s.out_.data(), s.mu, bytes);
  s.stream_->sync();
  std::memcpy(mu.ptr(), s.out_.data(), bytes);
  return mu;
}

}  // namespace cuda
}  // namespace minmo
