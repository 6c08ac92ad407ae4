#include "backends/cuda/flow_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

#include "backends/cuda/weights.h"
#include "modules/flow.h"

namespace minmo {
namespace cuda {

namespace {

int64_t round_up4(int64_t v) { return (v + 3) / 4 * 4; }

void mish(std::vector<float>& x) {  // as the CPU module's (float)
  for (float& v : x) v = v * std::tanh(v > 20.f ? v : std::log1p(std::exp(v)));
}

}  // namespace

std::string CudaFlow::unsupported(const FlowModel& m) {
  const FlowConfig& c = m.config();
  std::ostringstream os;
  if (c.est_head_dim > MINMO_FLOW_MAX_HEAD_DIM)
    os << "estimator head dim " << c.est_head_dim << " > " << MINMO_FLOW_MAX_HEAD_DIM
       << " (minmo_flow_attention_f32; kernels/include/minmo_kernels/flow_est.h)";
  bool quantized = false;
  for (const auto& s : m.stages_)
    for (const auto& b : s.blocks)
      for (const LinearW* l : {&b.q, &b.k, &b.v, &b.out, &b.ff1, &b.ff2}) quantized = quantized || !l->w;
  if (quantized) os << (os.tellp() > 0 ? "; " : "") << "quantized estimator weights are not run on the device";
  return os.str();
}

CudaFlow::CudaFlow(const FlowModel& m, std::shared_ptr<Device> device) : device_(std::move(device)) {
  const std::string why = unsupported(m);
  MINMO_CHECK(why.empty(), ErrorCode::BundleError, "flow on " << device_->name() << ": " << why);
  const FlowConfig& c = m.config();
  mel_ = c.mel_dim;
  ch_ = c.est_channels;
  heads_ = c.est_heads;
  hd_ = c.est_head_dim;
  inner_ = heads_ * hd_;
  ldc_ = round_up4(ch_ + 1);
  steps_ = c.n_timesteps;
  cfg_rate_ = static_cast<float>(c.cfg_rate);
  for (int64_t k = 0; k < steps_; ++k) dt_.push_back(m.t_span_[k + 1] - m.t_span_[k]);
  n_slots_ = m.n_conv_slots_;
  ctx_off_.assign(n_slots_, -1);

  Uploads up(weights_);
  auto copy = [&](const float* p, int64_t n) {
    return up.add(sizeof(float) * n, [=](uint8_t* dst) { std::memcpy(dst, p, sizeof(float) * n); });
  };
  // [rows, ld] = [w (rows x width) | bias | 0]; bias may be null (a zero column).
  auto with_bias = [&](const float* w, const float* b, int64_t rows, int64_t width, int64_t ld) {
    return up.add(sizeof(float) * rows * ld, [=](uint8_t* dst) {
      auto* o = reinterpret_cast<float*>(dst);
      for (int64_t r = 0; r < rows; ++r) {
        std::memcpy(o + r * ld, w + r * width, sizeof(float) * width);
        std::fill(o + r * ld + width, o + (r + 1) * ld, 0.f);
        if (ld > width) o[r * ld + width] = b ? b[r] : 0.f;
      }
    });
  };
  auto conv = [&](const ConvW& w, int slot) {
    Conv d;
    d.cin = w.cin;
    d.cout = w.cout;
    d.k = w.k;
    d.ld = round_up4(w.cin * w.k + 1);
    d.w = with_bias(w.w, w.b, w.cout, w.cin * w.k, d.ld);
    d.slot = w.k > 1 ? slot : -1;
    if (w.k > 1) {
      ctx_off_[slot] = ctx_floats_;
      ctx_floats_ += steps_ * 2 * (w.k - 1) * w.cin;  // per step: 2 branches x (k - 1) rows
    }
    ld_col_ = std::max(ld_col_, d.ld);
    return d;
  };
  auto norm = [&](const NormW& n) { return Norm{copy(n.g, n.dim), copy(n.b, n.dim)}; };

  // The time projection of every (step, stage): mlp(mish(temb[step])), as the CPU module computes it.
  const int64_t n_stages = static_cast<int64_t>(m.stages_.size());
  std::vector<float> tproj(steps_ * n_stages * ch_);
  for (int64_t k = 0; k < steps_; ++k) {
    std::vector<float> mt(m.temb_[k]);
    mish(mt);
    for (int64_t s = 0; s < n_stages; ++s) m.stages_[s].resnet.mlp(mt.data(), tproj.data() + (k * n_stages + s) * ch_, 1);
  }
  tproj_ = up.add(sizeof(float) * tproj.size(),
                  [tproj](uint8_t* dst) { std::memcpy(dst, tproj.data(), sizeof(float) * tproj.size()); });

  for (const auto& s : m.stages_) {
    Stage d;
    const auto& r = s.resnet;
    d.r.cin = r.conv1.cin;
    d.r.c1 = conv(r.conv1, r.conv_slot);
    d.r.c2 = conv(r.conv2, r.conv_slot + 1);
    d.r.ln1 = norm(r.ln1);
    d.r.ln2 = norm(r.ln2);
    d.r.res_w = copy(r.res.w, r.res.cout * r.res.cin);  // 1x1: [ch, cin]
    d.r.res_b = copy(r.res.b, r.res.cout);
    for (const auto& b : s.blocks) {
      Block e;
      e.n1 = norm(b.norm1);
      e.n3 = norm(b.norm3);
      const int64_t ch = ch_, inner = inner_;
      const float *q = b.q.w, *k = b.k.w, *v = b.v.w;
      e.qkv = up.add(sizeof(float) * 3 * inner * ch, [=](uint8_t* dst) {
        auto* o = reinterpret_cast<float*>(dst);
        std::memcpy(o, q, sizeof(float) * inner * ch);
        std::memcpy(o + inner * ch, k, sizeof(float) * inner * ch);
        std::memcpy(o + 2 * inner * ch, v, sizeof(float) * inner * ch);
      });
      e.out_w = copy(b.out.w, ch * inner);
      e.out_b = copy(b.out.b, ch);
      e.ff1 = with_bias(b.ff1.w, b.ff1.b, 4 * ch, ch, ldc_);
      e.ff2_w = copy(b.ff2.w, ch * 4 * ch);
      e.ff2_b = copy(b.ff2.b, ch);
      e.kv = b.kv_slot;
      d.blocks.push_back(e);
      ++n_blocks_;
    }
    stages_.push_back(std::move(d));
  }
  down_ = conv(m.down_conv_, n_slots_ - 3);
  up_ = conv(m.up_conv2_, n_slots_ - 2);
  final_ = conv(m.final_conv_, n_slots_ - 1);
  final_ln_ = norm(m.final_ln_);
  final_proj_ = with_bias(m.final_proj_.w, m.final_proj_.b, mel_, ch_, ldc_);
  weights_.commit(device_);
  up.run(device_);
}

CudaFlow::~CudaFlow() = default;

CudaFlow::StatePtr CudaFlow::acquire() const {
  {
    std::lock_guard<std::mutex> lock(pool_mutex_);
    if (!pool_.empty()) {
      CudaFlowState* s = pool_.back().release();
      pool_.pop_back();
      s->reset();
      return StatePtr(s, &CudaFlow::release);
    }
  }
  return StatePtr(new CudaFlowState(*this), &CudaFlow::release);
}

void CudaFlow::release(CudaFlowState* s) noexcept {
  if (s == nullptr) return;
  std::unique_ptr<CudaFlowState> own(s);
  try {
    const CudaFlow& o = s->o_;
    std::lock_guard<std::mutex> lock(o.pool_mutex_);
    if (o.pool_.size() < kMaxPooled) o.pool_.push_back(std::move(own));
  } catch (...) {  // not pooled: freed here
  }
}

void CudaFlow::reserve(CudaFlowState& s, int64_t frames, int64_t rows) const {
  MINMO_CHECK(frames >= 1 && frames < (int64_t{1} << 24) && rows >= 0 && rows < (int64_t{1} << 30),
              ErrorCode::InvalidArgument, "flow: cannot reserve " << frames << " frames / " << rows << " cache rows");
  s.reserve(frames, rows);
}

// ---- state -------------------------------------------------------------------------------------

CudaFlowState::CudaFlowState(const CudaFlow& o) : o_(o), stream_(o.device_) {
  std::string why;
  gemm_ = Gemm::open(stream_, &why);
  MINMO_CHECK(gemm_ != nullptr, ErrorCode::DeviceError, "flow on " << o.device() << ": " << why);
  const size_t ctx_bytes = sizeof(float) * std::max<int64_t>(o.ctx_floats_, 1);
  ctx_ = Allocation(o.device_, ctx_bytes, MemoryKind::Device);
  ctx_next_ = Allocation(o.device_, ctx_bytes, MemoryKind::Device);
  rows_ = Allocation(o.device_, sizeof(int32_t), MemoryKind::Device);
  host_rows_ = Allocation(o.device_, sizeof(int32_t), MemoryKind::PinnedHost);
  stream_.memset(ctx_.data(), 0, ctx_bytes);
}

void CudaFlowState::reset() {
  seg_.clear();
  stream_.memset(ctx_.data(), 0, ctx_.bytes());
}

void CudaFlowState::reserve(int64_t F, int64_t rows) {
  const CudaFlow& o = o_;
  if (F > max_frames_) {
    const int64_t R = 2 * F, ch = o.ch_;
    stream_.sync();  // nothing queued may still use the old buffers
    act_ = Arena();
    act_.place(&in, R * 4 * o.mel_);
    act_.place(&cat, R * 2 * ch);
    act_.place(&a, R * ch);
    act_.place(&b, R * ch);
    act_.place(&t1, R * ch);
    act_.place(&col, R * o.ld_col_);
    act_.place(&y, R * o.ldc_);
    act_.place(&qkv, R * 3 * o.inner_);
    act_.place(&att, R * o.inner_);
    act_.place(&f, R * 4 * ch);
    act_.place(&dphi, R * o.mel_);
    act_.place(&x, F * o.mel_);
    act_.place(&mu, F * o.mel_);
    act_.commit(o.device_);
    host_in_ = Allocation(o.device_, sizeof(float) * (R * 4 * o.mel_ + F * o.mel_), MemoryKind::PinnedHost);
    host_out_ = Allocation(o.device_, sizeof(float) * F * o.mel_, MemoryKind::PinnedHost);
    max_frames_ = F;
    graphs_.clear();
    seen_.clear();
  }
  if (rows > cap_) {
    const int64_t cap = std::max(rows, 2 * cap_);
    const int64_t count = o.n_blocks_ * o.steps_ * 2 * 2;  // caches: [block, step, k|v, branch] x [cap, inner]
    Allocation kv(o.device_, sizeof(float) * std::max<int64_t>(count * cap * o.inner_, 1), MemoryKind::Device);
    const int64_t used = cache_rows();
    if (used > 0 && count > 0)
      MINMO_DEVICE_CALL(stream_, flow_copy_rows_f32, static_cast<const float*>(kv_.as<float>()), cap_ * o.inner_, count,
                        kv.as<float>(), cap * o.inner_, count, used * o.inner_);
    stream_.sync();  // the old caches are freed below
    kv_ = std::move(kv);
    cap_ = cap;
    graphs_.clear();
    seen_.clear();
  }
}

// ---- one segment -------------------------------------------------------------------------------

void CudaFlow::conv(CudaFlowState& s, const Conv& c, int step, const float* x, int64_t F, float* y, float beta) const {
  const Stream& st = s.stream_;
  const float *ctx = nullptr;
  float* next = nullptr;
  if (c.slot >= 0) {
    const int64_t off = ctx_off_[c.slot] + step * 2 * (c.k - 1) * c.cin;
    ctx = s.ctx_.as<float>() + off;
    next = s.ctx_next_.as<float>() + off;
  }
  MINMO_DEVICE_CALL(st, flow_causal_im2col_f32, x, ctx, next, s.col, int64_t{2}, F, c.cin, static_cast<int32_t>(c.k),
                    c.ld);
  s.gemm_->f32(s.col, at(c.w), y, 2 * F, c.cout, c.ld, c.ld, c.ld, c.cout, true, 1.f, beta);
  s.launches_ += 2;
}

void CudaFlow::resnet(CudaFlowState& s, const Resnet& r, int step, size_t stage, const float* x, float* out,
                      int64_t F) const {
  const Stream& st = s.stream_;
  const float* none = nullptr;
  const float* tp = at(tproj_) + (step * static_cast<int64_t>(stages_.size()) + static_cast<int64_t>(stage)) * ch_;
  conv(s, r.c1, step, x, F, s.t1, 0.f);
  MINMO_DEVICE_CALL(st, flow_norm_act_f32, s.t1, at(r.ln1.g), at(r.ln1.b), none, tp, s.t1, 2 * F, ch_, ch_, 1e-5f,
                    static_cast<int32_t>(MINMO_FLOW_ACT_MISH));
  conv(s, r.c2, step, s.t1, F, out, 0.f);
  MINMO_DEVICE_CALL(st, flow_norm_act_f32, out, at(r.ln2.g), at(r.ln2.b), none, at(r.res_b), out, 2 * F, ch_, ch_,
                    1e-5f, static_cast<int32_t>(MINMO_FLOW_ACT_MISH));
  s.gemm_->f32(x, at(r.res_w), out, 2 * F, ch_, r.cin, r.cin, r.cin, ch_, true, 1.f, 1.f);
  s.launches_ += 3;
}

void CudaFlow::block(CudaFlowState& s, const Block& b, int step, float* x, int64_t F) const {
  const Stream& st = s.stream_;
  const float* none = nullptr;
  const int64_t R = 2 * F;
  MINMO_DEVICE_CALL(st, flow_norm_act_f32, x, at(b.n1.g), at(b.n1.b), at(b.out_b), none, s.y, R, ch_, ldc_, 1e-5f,
                    static_cast<int32_t>(MINMO_FLOW_ACT_NONE));
  s.gemm_->f32(s.y, at(b.qkv), s.qkv, R, 3 * inner_, ch_, ldc_, ch_, 3 * inner_, true);
  // caches of this (block, step): k then v, each [2 branches, cap, inner]
  float* kc = s.kv_.as<float>() + ((static_cast<int64_t>(b.kv) * steps_ + step) * 2) * 2 * s.cap_ * inner_;
  float* vc = kc + 2 * s.cap_ * inner_;
  MINMO_DEVICE_CALL(st, flow_attention_f32, static_cast<const float*>(s.qkv), kc, vc, s.att,
                    static_cast<const int32_t*>(s.rows_.as<int32_t>()), int64_t{2}, F, heads_, hd_, s.cap_,
                    1.f / std::sqrt(static_cast<float>(hd_)));
  s.gemm_->f32(s.att, at(b.out_w), x, R, ch_, inner_, inner_, inner_, ch_, true, 1.f, 1.f);
  MINMO_DEVICE_CALL(st, flow_norm_act_f32, x, at(b.n3.g), at(b.n3.b), at(b.ff2_b), none, s.y, R, ch_, ldc_, 1e-5f,
                    static_cast<int32_t>(MINMO_FLOW_ACT_NONE));
  s.gemm_->f32(s.y, at(b.ff1), s.f, R, 4 * ch_, ldc_, ldc_, ldc_, 4 * ch_, true);
  MINMO_DEVICE_CALL(st, flow_gelu_f32, s.f, R * 4 * ch_);
  s.gemm_->f32(s.f, at(b.ff2_w), x, R, ch_, 4 * ch_, 4 * ch_, 4 * ch_, ch_, true, 1.f, 1.f);
  s.launches_ += 8;
}

void CudaFlow::estimator(CudaFlowState& s, int step, int64_t F) const {
  const Stream& st = s.stream_;
  const float* none = nullptr;
  const int64_t R = 2 * F;
  // a stage writes to whichever of a / b its input is not; the down stage's output (before its
  // conv) is the skip, kept in cat[:, ch:], the up stage reads cat = [last mid output | skip]
  const float* src = s.in;
  auto other = [&](const float* p) { return p == s.a ? s.b : s.a; };
  for (size_t i = 0; i < stages_.size(); ++i) {
    const Stage& stg = stages_[i];
    const bool first = i == 0, last = i + 1 == stages_.size();
    if (last) {
      MINMO_DEVICE_CALL(st, flow_copy_rows_f32, src, ch_, R, s.cat, 2 * ch_, R, ch_);
      src = s.cat;
      s.launches_ += 1;
    }
    float* h = other(src);
    resnet(s, stg.r, step, i, src, h, F);
    for (const Block& b : stg.blocks) block(s, b, step, h, F);
    src = h;
    if (first) {
      MINMO_DEVICE_CALL(st, flow_copy_rows_f32, src, ch_, R, s.cat + ch_, 2 * ch_, R, ch_);
      s.launches_ += 1;
    }
    if (first || last) {
      float* o = other(h);
      conv(s, first ? down_ : up_, step, h, F, o, 0.f);
      src = o;
    }
  }
  // src: the up stage's output after up_conv2
  conv(s, final_, step, src, F, s.t1, 0.f);
  MINMO_DEVICE_CALL(st, flow_norm_act_f32, s.t1, at(final_ln_.g), at(final_ln_.b), none, none, s.y, R, ch_, ldc_,
                    1e-5f, static_cast<int32_t>(MINMO_FLOW_ACT_MISH));
  s.gemm_->f32(s.y, at(final_proj_), s.dphi, R, mel_, ldc_, ldc_, ldc_, mel_, true);
  s.launches_ += 2;
}

void CudaFlow::enqueue(CudaFlowState& s, int64_t F) const {
  const Stream& st = s.stream_;
  s.launches_ = 0;
  for (int k = 0; k < steps_; ++k) {
    estimator(s, k, F);
    MINMO_DEVICE_CALL(st, flow_euler_cfg_f32, s.x, static_cast<const float*>(s.dphi), static_cast<float*>(nullptr),
                      F * mel_, cfg_rate_, dt_[k]);
    s.launches_ += 1;
    if (k + 1 < steps_) {
      MINMO_DEVICE_CALL(st, flow_copy_rows_f32, static_cast<const float*>(s.x), mel_, F, s.in, 4 * mel_, 2 * F, mel_);
      s.launches_ += 1;
    }
  }
  st.copy_on_device(s.ctx_.data(), s.ctx_next_.data(), sizeof(float) * std::max<int64_t>(ctx_floats_, 1));
  s.launches_ += 1;
}

float* CudaFlowState::mu_buffer(int64_t F) {
  reserve(F, cache_rows());
  return mu;
}

Tensor CudaFlow::solve(CudaFlowState& s, const float* x0, const float* mu, const float* spk, const float* cond,
                       int64_t F, int64_t seg, int64_t left_chunks, bool has_prompt, const float* mu_device) const {
  MINMO_CHECK(mu_device == nullptr || mu_device == s.mu, ErrorCode::InvalidArgument,
              "flow: a device mu that is not the state's mu_buffer");
  MINMO_CHECK(F >= 1 && F < (int64_t{1} << 24), ErrorCode::InvalidArgument, "flow: a segment of " << F << " frames");
  const Stream& st = s.stream_;
  // drop the rows this segment may not see (the same rows in every cache)
  if (left_chunks >= 0) {
    const auto [first, last] = flow_prune_range(s.seg_, seg - left_chunks, has_prompt);
    if (last > first) {
      MINMO_DEVICE_CALL(st, flow_kv_compact_f32, s.kv_.as<float>(), n_blocks_ * steps_ * 4, s.cap_ * inner_, inner_, first,
                        last, s.cache_rows());
      s.seg_.erase(s.seg_.begin() + first, s.seg_.begin() + last);
    }
  }
  const int64_t m0 = s.cache_rows();
  MINMO_CHECK(m0 + F < (int64_t{1} << 30), ErrorCode::InvalidArgument, "flow: the estimator caches would exceed 2^30 rows");
  s.reserve(F, m0 + F);
  // inputs: both branches' rows of the first estimator call, and x
  const int64_t W = 4 * mel_;
  float* hin = s.host_in_.as<float>();
  std::memset(hin, 0, sizeof(float) * 2 * F * W);
  for (int64_t i = 0; i < F; ++i) {
    float* r0 = hin + i * W;
    float* r1 = hin + (F + i) * W;
    std::memcpy(r0, x0 + i * mel_, sizeof(float) * mel_);
    if (!mu_device) std::memcpy(r0 + mel_, mu + i * mel_, sizeof(float) * mel_);
    std::memcpy(r0 + 2 * mel_, spk, sizeof(float) * mel_);
    std::memcpy(r0 + 3 * mel_, cond + i * mel_, sizeof(float) * mel_);
    std::memcpy(r1, x0 + i * mel_, sizeof(float) * mel_);
  }
  float* hx = hin + 2 * s.max_frames_ * W;
  std::memcpy(hx, x0, sizeof(float) * F * mel_);
  *s.host_rows_.as<int32_t>() = static_cast<int32_t>(m0);
  st.upload(s.in, hin, sizeof(float) * 2 * F * W);
  st.upload(s.x, hx, sizeof(float) * F * mel_);
  st.upload(s.rows_.data(), s.host_rows_.data(), sizeof(int32_t));
  if (mu_device)  // branch 0's mu columns of the first estimator call
    MINMO_DEVICE_CALL(st, flow_copy_rows_f32, mu_device, mel_, F, s.in + mel_, 4 * mel_, F, mel_);
  auto g = s.graphs_.find(F);
  if (g == s.graphs_.end() && ++s.seen_[F] >= 2 && s.graphs_.size() < kMaxGraphs)
    g = s.graphs_.emplace(F, st.capture([this, &s, F] { enqueue(s, F); })).first;
  if (g != s.graphs_.end()) st.launch(g->second);
  else enqueue(s, F);
  st.download(s.host_out_.data(), s.x, sizeof(float) * F * mel_);
  st.sync();
  for (int64_t i = 0; i < F; ++i) s.seg_.push_back(seg);
  const float* out = s.host_out_.as<float>();
  return Tensor({F, mel_}, std::vector<float>(out, out + F * mel_));
}

}  // namespace cuda
}  // namespace minmo
