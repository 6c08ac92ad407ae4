#include "modules/projector.h"

#include <cmath>
#include <cstring>
#include <string>

#include "backends/cpu/ops.h"
#include "backends/cuda/projector_cuda.h"
#include "modules/qwen2_layer.h"
#include "minmo/status.h"

namespace minmo {

ProjectorConfig ProjectorConfig::from_json(const nlohmann::json& config) {
  ConfigReader r(config, "input projector");
  ProjectorConfig c;
  c.encoder_dim = r.get_int("encoder_dim", c.encoder_dim);
  c.hidden_dim = r.get_int("hidden_dim", c.hidden_dim);
  c.output_dim = r.get_int("output_dim", c.output_dim);
  c.n_layers = r.get_int("n_layers", c.n_layers);
  c.n_heads = r.get_int("n_heads", c.n_heads);
  c.ffn_dim = r.get_int("ffn_dim", c.ffn_dim);
  c.norm_eps = r.get_float("norm_eps", c.norm_eps);
  r.finish();
  MINMO_CHECK(c.encoder_dim > 0 && c.hidden_dim > 0 && c.output_dim > 0 && c.n_layers >= 0 && c.n_heads > 0 &&
                  c.ffn_dim > 0 && c.norm_eps >= 0,
              ErrorCode::BundleError, "input projector: invalid config (sizes must be positive)");
  MINMO_CHECK(c.output_dim % c.n_heads == 0, ErrorCode::BundleError,
              "input projector: output_dim (" << c.output_dim << ") must be divisible by n_heads (" << c.n_heads
                                              << ")");
  return c;
}

InputProjector::InputProjector(const ProjectorConfig& config, const ChunkSpec& chunk, const WeightStore& weights,
                               std::shared_ptr<const cuda::CudaProjector> device)
    : cfg_(config), chunk_(chunk), weights_(weights), device_(std::move(device)) {
  if (device_) return;
  const int64_t d = cfg_.output_dim;
  linear1_ = load_panel_linear(weights_, "linear1", 2 * cfg_.encoder_dim, cfg_.hidden_dim);
  linear2_ = load_panel_linear(weights_, "linear2", cfg_.hidden_dim, d);
  for (int64_t i = 0; i < cfg_.n_layers; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    Layer L;
    L.norm1 = load_norm(weights_, p + "norm1", d);
    L.q = load_panel_linear(weights_, p + "self_attn.linear_q", d, d);
    L.k = load_panel_linear(weights_, p + "self_attn.linear_k", d, d);
    L.v = load_panel_linear(weights_, p + "self_attn.linear_v", d, d);
    L.out = load_panel_linear(weights_, p + "self_attn.linear_out", d, d);
    L.norm2 = load_norm(weights_, p + "norm2", d);
    L.w1 = load_panel_linear(weights_, p + "feed_forward.w_1", d, cfg_.ffn_dim);
    L.w2 = load_panel_linear(weights_, p + "feed_forward.w_2", cfg_.ffn_dim, d);
    layers_.push_back(L);
  }
}

std::shared_ptr<const InputProjector> InputProjector::load(const WeightStore& weights, const nlohmann::json& config,
                                                           const nlohmann::json& streaming,
                                                           const std::shared_ptr<cuda::Device>& device,
                                                           std::string* cpu_fallback) {
  const ProjectorConfig cfg = ProjectorConfig::from_json(config);
  const ChunkSpec chunk = ChunkSpec::from_json(streaming);
  std::shared_ptr<const cuda::CudaProjector> on_device;
  if (device) {
    const std::string why = cuda::CudaProjector::unsupported(cfg, chunk);
    if (!why.empty() && cpu_fallback) *cpu_fallback = why;
    else on_device = cuda::CudaProjector::load(weights, cfg, chunk, device);
  }
  return std::make_shared<const InputProjector>(cfg, chunk, weights, on_device);
}

std::string InputProjector::device() const { return device_ ? device_->device() : "cpu"; }

void InputProjector::embed_pairs(const float* pairs, int64_t n, float* x) const {
  if (n == 0) return;
  std::vector<float> h(static_cast<size_t>(n * cfg_.hidden_dim));
  linear1_(pairs, h.data(), n);
  cpu::relu(h.data(), n * cfg_.hidden_dim);
  linear2_(h.data(), x, n);
}

void InputProjector::layer_forward(const Layer& L, float* x, int64_t n, std::vector<float>& kbuf,
                                   std::vector<float>& vbuf, const std::vector<int64_t>* lo,
                                   const std::vector<int64_t>* hi) const {
  if (n == 0) return;
  const int64_t d = cfg_.output_dim, heads = cfg_.n_heads, dh = d / heads;
  const float eps = static_cast<float>(cfg_.norm_eps);
  const int64_t nk = static_cast<int64_t>(kbuf.size()) / d;
  std::vector<float> xn(static_cast<size_t>(n * d)), q(static_cast<size_t>(n * d)), ctx(static_cast<size_t>(n * d));
  cpu::layer_norm(x, L.norm1.g, L.norm1.b, xn.data(), n, d, eps);
  L.q(xn.data(), q.data(), n);
  kbuf.resize(static_cast<size_t>((nk + n) * d));
  vbuf.resize(static_cast<size_t>((nk + n) * d));
  L.k(xn.data(), kbuf.data() + nk * d, n);
  L.v(xn.data(), vbuf.data() + nk * d, n);
  const cpu::AttnMask mask = lo ? cpu::AttnMask::ranges(lo->data(), hi->data()) : cpu::AttnMask::none();
  cpu::attention(q.data(), kbuf.data(), vbuf.data(), ctx.data(), n, nk + n, heads, heads, dh,
                 static_cast<float>(1.0 / std::sqrt(static_cast<double>(dh))), mask);
  L.out(ctx.data(), q.data(), n);
  cpu::add_inplace(x, q.data(), n * d);
  cpu::layer_norm(x, L.norm2.g, L.norm2.b, xn.data(), n, d, eps);
  std::vector<float> h(static_cast<size_t>(n * cfg_.ffn_dim));
  L.w1(xn.data(), h.data(), n);
  cpu::relu(h.data(), n * cfg_.ffn_dim);
  L.w2(h.data(), q.data(), n);
  cpu::add_inplace(x, q.data(), n * d);
}

Tensor InputProjector::run(const Tensor& frames) const {
  MINMO_CHECK(frames.ndim() == 2, ErrorCode::InvalidArgument,
              "input projector: frames must be [T, " << cfg_.encoder_dim << "], got " << frames.shape_str());
  return run(frames.ptr(), frames.dim(0), frames.dim(1));
}

Tensor InputProjector::run(const float* frames, int64_t T, int64_t width) const {
  const int64_t E = cfg_.encoder_dim, d = cfg_.output_dim;
  MINMO_CHECK(width == E, ErrorCode::InvalidArgument,
              "input projector: frames must have " << E << " columns, got " << width);
  MINMO_CHECK(T >= 0, ErrorCode::InvalidArgument, "input projector: negative frame count " << T);
  const int64_t n = output_tokens(T);
  if (device_ && n > 0) {  // chunked: the same as streaming every chunk
    auto state = device_->new_state(n);
    return device_->push(*state, frames, T, true);
  }
  Tensor x({n, d});
  if (n == 0) return x;
  // Pairs of frames; an odd last frame is paired with zeros.
  std::vector<float> pairs(static_cast<size_t>(n * 2 * E), 0.f);
  std::memcpy(pairs.data(), frames, sizeof(float) * static_cast<size_t>(T * E));
  embed_pairs(pairs.data(), n, x.ptr());
  std::vector<int64_t> lo, hi;
  const bool masked = chunk_.chunked;
  if (masked) {
    ChunkSpec tok = chunk_;
    tok.chunk_frames = chunk_tokens();
    chunk_key_ranges(tok, 0, n, 0, n, n, lo, hi);
  }
  std::vector<float> kbuf, vbuf;
  for (const Layer& L : layers_) {
    kbuf.clear();
    vbuf.clear();
    layer_forward(L, x.ptr(), n, kbuf, vbuf, masked ? &lo : nullptr, masked ? &hi : nullptr);
  }
  return x;
}

// ---- streaming ----------------------------------------------------------------------------

ProjectorStream::ProjectorStream(std::shared_ptr<const InputProjector> projector) : proj_(std::move(projector)) {
  MINMO_CHECK(proj_ != nullptr, ErrorCode::InvalidArgument, "ProjectorStream: null projector");
  MINMO_CHECK(proj_->chunk().chunked, ErrorCode::InvalidArgument,
              "ProjectorStream needs chunked encoder attention (manifest streaming.encoder_attention = 'chunked'); "
              "with full attention run the projector offline over the turn");
  reset();
}

ProjectorStream::~ProjectorStream() = default;

void ProjectorStream::reset() {
  if (device_state_) proj_->device_->reset(*device_state_);
  odd_frame_.clear();
  pending_.clear();
  kcache_.assign(proj_->layers_.size(), {});
  vcache_.assign(proj_->layers_.size(), {});
  tokens_done_ = 0;
  finished_ = false;
}

Tensor ProjectorStream::push(const Tensor& frames) {
  MINMO_CHECK(frames.ndim() == 2, ErrorCode::InvalidArgument,
              "ProjectorStream: frames must be [n, " << proj_->cfg_.encoder_dim << "], got " << frames.shape_str());
  return push(frames.ptr(), frames.dim(0), frames.dim(1));
}

Tensor ProjectorStream::run_chunk(int64_t n) {
  const int64_t d = proj_->cfg_.output_dim;
  Tensor x({n, d});
  std::memcpy(x.ptr(), pending_.data(), sizeof(float) * static_cast<size_t>(n * d));
  pending_.erase(pending_.begin(), pending_.begin() + n * d);
  const int64_t keep = proj_->chunk_.left_chunks * proj_->chunk_tokens();
  for (size_t l = 0; l < proj_->layers_.size(); ++l) {
    // The cache holds exactly the left_chunks chunks before this one: every key is visible.
    proj_->layer_forward(proj_->layers_[l], x.ptr(), n, kcache_[l], vcache_[l], nullptr, nullptr);
    keep_last_rows(kcache_[l], d, keep);
    keep_last_rows(vcache_[l], d, keep);
  }
  tokens_done_ += n;
  return x;
}

namespace {
Tensor concat(std::vector<Tensor>& parts, int64_t d) {
  if (parts.size() == 1) return std::move(parts[0]);
  int64_t rows = 0;
  for (const auto& p : parts) rows += p.rows();
  Tensor out({rows, d});
  int64_t r = 0;
  for (const auto& p : parts) {
    if (p.rows()) std::memcpy(out.row(r), p.ptr(), sizeof(float) * p.data.size());
    r += p.rows();
  }
  return out;
}
}  // namespace

Tensor ProjectorStream::push(const float* frames, int64_t n, int64_t width) {
  const int64_t E = proj_->cfg_.encoder_dim, d = proj_->cfg_.output_dim, C = proj_->chunk_tokens();
  MINMO_CHECK(!finished_, ErrorCode::InvalidArgument, "ProjectorStream: push() after finish() (call reset())");
  MINMO_CHECK(width == E, ErrorCode::InvalidArgument,
              "ProjectorStream: frames must have " << E << " columns, got " << width);
  MINMO_CHECK(n >= 0 && (n == 0 || frames != nullptr), ErrorCode::InvalidArgument, "ProjectorStream: bad frames");
  if (proj_->device_) return device_push(frames, n, false);
  // Complete frame pairs: [odd frame, frames...].
  const int64_t have = static_cast<int64_t>(odd_frame_.size()) / E + n;
  const int64_t npairs = have / 2;
  if (npairs > 0) {
    std::vector<float> pairs(static_cast<size_t>(npairs * 2 * E));
    const int64_t from_odd = static_cast<int64_t>(odd_frame_.size()) / E;
    if (from_odd) std::memcpy(pairs.data(), odd_frame_.data(), sizeof(float) * static_cast<size_t>(E));
    std::memcpy(pairs.data() + from_odd * E, frames, sizeof(float) * static_cast<size_t>((2 * npairs - from_odd) * E));
    const int64_t used = 2 * npairs - from_odd;
    odd_frame_.assign(frames + used * E, frames + n * E);
    const size_t at = pending_.size();
    pending_.resize(at + static_cast<size_t>(npairs * d));
    proj_->embed_pairs(pairs.data(), npairs, pending_.data() + at);
  } else if (n > 0) {
    odd_frame_.assign(frames, frames + n * E);
  }
  std::vector<Tensor> parts;
  while (static_cast<int64_t>(pending_.size()) / d >= C) parts.push_back(run_chunk(C));
  if (parts.empty()) return Tensor({0, d});
  return concat(parts, d);
}

Tensor ProjectorStream::finish() {
  const int64_t E = proj_->cfg_.encoder_dim, d = proj_->cfg_.output_dim;
  MINMO_CHECK(!finished_, ErrorCode::InvalidArgument, "ProjectorStream: finish() called twice (call reset())");
  if (proj_->device_) {
    Tensor out = device_push(nullptr, 0, true);
    finished_ = true;
    return out;
  }
  if (!odd_frame_.empty()) {
    std::vector<float> pair(static_cast<size_t>(2 * E), 0.f);
    std::memcpy(pair.data(), odd_frame_.data(), sizeof(float) * static_cast<size_t>(E));
    odd_frame_.clear();
    const size_t at = pending_.size();
    pending_.resize(at + static_cast<size_t>(d));
    proj_->embed_pairs(pair.data(), 1, pending_.data() + at);
  }
  const int64_t np = static_cast<int64_t>(pending_.size()) / d;
  Tensor out = np > 0 ? run_chunk(np) : Tensor({0, d});
  finished_ = true;
  return out;
}

Tensor ProjectorStream::device_push(const float* frames, int64_t n, bool final) {
  if (!device_state_) device_state_ = proj_->device_->new_state(kDeviceTokens);
  Tensor out = proj_->device_->push(*device_state_, frames, n, final);
  tokens_done_ += out.rows();
  return out;
}

}  // namespace minmo
