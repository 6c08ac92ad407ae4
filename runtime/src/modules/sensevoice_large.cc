#include "modules/sensevoice_large.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "backends/cpu/ops.h"
#include "backends/cuda/encoder_cuda.h"
#include "backends/cuda/projector_cuda.h"
#include "minmo/status.h"

namespace minmo {

SenseVoiceLargeConfig SenseVoiceLargeConfig::from_json(const nlohmann::json& config) {
  ConfigReader r(config, "sensevoice_large encoder");
  SenseVoiceLargeConfig c;
  c.n_mels = r.get_int("n_mels", c.n_mels);
  c.d_model = r.get_int("d_model", c.d_model);
  c.n_heads = r.get_int("n_heads", c.n_heads);
  c.n_blocks = r.get_int("n_blocks", c.n_blocks);
  c.fsmn_kernel = r.get_int("fsmn_kernel", c.fsmn_kernel);
  c.rope_theta = r.get_float("rope_theta", c.rope_theta);
  c.norm_eps = r.get_float("norm_eps", c.norm_eps);
  r.finish();
  MINMO_CHECK(c.n_mels > 0 && c.d_model > 0 && c.n_heads > 0 && c.d_model % c.n_heads == 0 &&
                  (c.d_model / c.n_heads) % 2 == 0 && c.n_blocks >= 0 && c.fsmn_kernel >= 1 && c.rope_theta > 0,
              ErrorCode::BundleError,
              "sensevoice_large encoder: invalid config (d_model divisible by n_heads with an even head size, "
              "positive sizes)");
  return c;
}

SenseVoiceLargeEncoder::SenseVoiceLargeEncoder(const SenseVoiceLargeConfig& config, const ChunkSpec& chunk,
                                               const WeightStore& weights)
    : cfg_(config), chunk_(chunk), weights_(weights) {
  const int64_t d = cfg_.d_model;
  auto conv = [&](const std::string& name, int64_t cin) {
    LinearW c;
    c.in = cin;
    c.out = d;
    c.w = load_tensor(weights_, name + ".weight", {d, cin, 3});
    c.b = load_tensor(weights_, name + ".bias", {d});
    return c;
  };
  conv1_ = conv("conv1", cfg_.n_mels);
  conv2_ = conv("conv2", d);
  for (int64_t i = 0; i < cfg_.n_blocks; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    Block b;
    b.attn_ln = load_norm(weights_, p + "attn_ln", d);
    b.query = load_linear(weights_, p + "attn.query", d, d);
    b.key = load_linear(weights_, p + "attn.key", d, d, /*bias=*/false);
    b.value = load_linear(weights_, p + "attn.value", d, d);
    b.out = load_linear(weights_, p + "attn.out", d, d);
    b.fsmn_t = transpose_fsmn(load_tensor(weights_, p + "attn.fsmn.weight", {d, 1, cfg_.fsmn_kernel}), d,
                              cfg_.fsmn_kernel);
    b.mlp_ln = load_norm(weights_, p + "mlp_ln", d);
    b.fc1 = load_linear(weights_, p + "mlp.0", d, 4 * d);
    b.fc2 = load_linear(weights_, p + "mlp.2", 4 * d, d);
    blocks_.push_back(b);
  }
  ln_post_ = load_norm(weights_, "ln_post", d);
}

std::shared_ptr<const SenseVoiceLargeEncoder> SenseVoiceLargeEncoder::load(
    const WeightStore& weights, const nlohmann::json& config, const nlohmann::json& streaming,
    const std::shared_ptr<cuda::Device>& device, std::string* cpu_fallback) {
  auto e = std::make_shared<SenseVoiceLargeEncoder>(SenseVoiceLargeConfig::from_json(config),
                                                    ChunkSpec::from_json(streaming), weights);
  if (device) {
    const std::string why = cuda::CudaEncoderBlocks::unsupported(e->cfg_, e->chunk_);
    if (!why.empty() && cpu_fallback) *cpu_fallback = why;
    else e->device_blocks_ = cuda::CudaEncoderBlocks::load(weights, e->cfg_, e->chunk_, device);
  }
  return e;
}

std::string SenseVoiceLargeEncoder::device() const { return device_blocks_ ? device_blocks_->device() : "cpu"; }

int64_t SenseVoiceLargeEncoder::encoder_frames(int64_t n_mel) {
  auto conv_out = [](int64_t n) { return n > 0 ? (n - 1) / 2 + 1 : 0; };
  return conv_out(conv_out(n_mel));
}

Tensor SenseVoiceLargeEncoder::conv_step(const LinearW& conv, ConvState& st, const float* rows, int64_t n,
                                         bool final) const {
  const int64_t cin = conv.in, d = conv.out;
  if (n > 0) {
    st.buf.insert(st.buf.end(), rows, rows + n * cin);
    st.n_in += n;
  }
  // Output t reads input rows 2t-1 .. 2t+1: without the end of input, t is computable once row
  // 2t+1 exists; at the end, (n_in - 1) / 2 + 1 outputs exist (the last may read the zero pad).
  const int64_t target = final ? (st.n_in > 0 ? (st.n_in - 1) / 2 + 1 : 0) : st.n_in / 2;
  const int64_t count = std::max<int64_t>(0, target - st.n_out);
  Tensor y({count, d});
  if (count > 0) {
    const int64_t s = 2 * st.n_out - 1;
    const int64_t start = std::max<int64_t>(s, 0);
    const int64_t pad_left = s < 0 ? 1 : 0, pad_right = final ? 1 : 0;
    const int64_t Tin = st.n_in - start;
    const int64_t Tout = cpu::conv1d_out_len(Tin, 3, 2, pad_left, pad_right, 1);
    MINMO_CHECK(Tout >= count, ErrorCode::Internal, "conv_step: " << Tout << " outputs for " << count);
    // Only the first `count` outputs are wanted: limit the input to the rows they read.
    const int64_t Tuse = std::min(Tin, 2 * (count - 1) + 3 - pad_left);
    const int64_t pr = (final && Tuse == Tin) ? 1 : 0;
    MINMO_CHECK(cpu::conv1d_out_len(Tuse, 3, 2, pad_left, pr, 1) == count, ErrorCode::Internal,
                "conv_step: output count mismatch");
    cpu::conv1d(st.buf.data() + (start - st.base) * cin, conv.w, conv.b, y.ptr(), Tuse, cin, d, 3, 2, pad_left, pr, 1,
                1);
    cpu::gelu(y.ptr(), count * d);
    st.n_out = target;
  }
  const int64_t keep_from = std::clamp<int64_t>(2 * st.n_out - 1, 0, st.n_in);
  if (keep_from > st.base) {
    st.buf.erase(st.buf.begin(), st.buf.begin() + (keep_from - st.base) * cin);
    st.base = keep_from;
  }
  return y;
}

void SenseVoiceLargeEncoder::encode(Tensor& x, int64_t q0, int64_t total, std::vector<LayerCache>* caches) const {
  const int64_t n = x.rows(), d = cfg_.d_model, H = cfg_.n_heads, dh = d / H, K = cfg_.fsmn_kernel;
  const int64_t left_pad = (K - 1) / 2;
  const float eps = static_cast<float>(cfg_.norm_eps);
  const float scale = 1.0f / std::sqrt(static_cast<float>(dh));
  const int64_t keep_kv = chunk_.chunked ? chunk_.left_chunks * chunk_.chunk_frames : total;
  if (n == 0) return;
  std::vector<int64_t> pos(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) pos[static_cast<size_t>(i)] = q0 + i;
  Tensor h({n, d}), q({n, d}), k({n, d}), v({n, d}), mem({n, d}), ctx({n, d}), o({n, d}), f({n, 4 * d});
  std::vector<int64_t> lo, hi;
  std::vector<float> kall, vall;
  for (size_t l = 0; l < blocks_.size(); ++l) {
    const Block& b = blocks_[l];
    LayerCache* cache = caches ? &(*caches)[l] : nullptr;
    cpu::layer_norm(x.ptr(), b.attn_ln.g, b.attn_ln.b, h.ptr(), n, d, eps);
    b.query(h.ptr(), q.ptr(), n);
    b.key(h.ptr(), k.ptr(), n);
    b.value(h.ptr(), v.ptr(), n);
    cpu::rope_neox(q.ptr(), pos.data(), n, H, dh, cfg_.rope_theta);
    cpu::rope_neox(k.ptr(), pos.data(), n, H, dh, cfg_.rope_theta);
    const int64_t nctx = cache ? static_cast<int64_t>(cache->ctx.size()) / d : 0;
    fsmn_memory(cache ? cache->ctx.data() : nullptr, nctx, v.ptr(), n, d, b.fsmn_t.data(), K, left_pad, q0, total, chunk_,
                mem.ptr());
    // Keys: cached frames (absolute q0 - cached ..) then the new ones.
    const int64_t cached = cache ? static_cast<int64_t>(cache->k.size()) / d : 0;
    const float* kp = k.ptr();
    const float* vp = v.ptr();
    if (cached > 0) {
      kall.assign(cache->k.begin(), cache->k.end());
      kall.insert(kall.end(), k.ptr(), k.ptr() + n * d);
      vall.assign(cache->v.begin(), cache->v.end());
      vall.insert(vall.end(), v.ptr(), v.ptr() + n * d);
      kp = kall.data();
      vp = vall.data();
    }
    const int64_t tk = cached + n;
    cpu::AttnMask mask;
    if (chunk_.chunked) {
      chunk_key_ranges(chunk_, q0, n, q0 - cached, tk, total, lo, hi);
      mask = cpu::AttnMask::ranges(lo.data(), hi.data());
    }
    cpu::attention(q.ptr(), kp, vp, ctx.ptr(), n, tk, H, H, dh, scale, mask);
    b.out(ctx.ptr(), o.ptr(), n);
    cpu::add_inplace(o.ptr(), mem.ptr(), n * d);
    cpu::add_inplace(x.ptr(), o.ptr(), n * d);
    if (cache) {
      if (cached > 0) {
        cache->k.swap(kall);
        cache->v.swap(vall);
      } else {
        cache->k.assign(k.ptr(), k.ptr() + n * d);
        cache->v.assign(v.ptr(), v.ptr() + n * d);
      }
      keep_last_rows(cache->k, d, keep_kv);
      keep_last_rows(cache->v, d, keep_kv);
      cache->ctx.insert(cache->ctx.end(), v.ptr(), v.ptr() + n * d);
      keep_last_rows(cache->ctx, d, left_pad);
    }
    cpu::layer_norm(x.ptr(), b.mlp_ln.g, b.mlp_ln.b, h.ptr(), n, d, eps);
    b.fc1(h.ptr(), f.ptr(), n);
    cpu::gelu(f.ptr(), n * 4 * d);
    b.fc2(f.ptr(), o.ptr(), n);
    cpu::add_inplace(x.ptr(), o.ptr(), n * d);
  }
  cpu::layer_norm(x.ptr(), ln_post_.g, ln_post_.b, x.ptr(), n, d, eps);
}

Tensor SenseVoiceLargeEncoder::run(const Tensor& mel) const {
  MINMO_CHECK(mel.ndim() == 2, ErrorCode::InvalidArgument,
              "sensevoice_large encoder: mel must be [T, " << cfg_.n_mels << "], got shape " << mel.shape_str());
  return run(mel.ptr(), mel.shape[0], mel.shape[1]);
}

Tensor SenseVoiceLargeEncoder::run(const float* mel, int64_t T, int64_t width) const {
  MINMO_CHECK(width == cfg_.n_mels, ErrorCode::InvalidArgument,
              "sensevoice_large encoder: mel must have " << cfg_.n_mels << " columns, got " << width);
  MINMO_CHECK(T >= 1, ErrorCode::InvalidArgument, "sensevoice_large encoder: no mel rows (empty input)");
  MINMO_CHECK(mel != nullptr, ErrorCode::InvalidArgument, "sensevoice_large encoder: null mel");
  if (device_blocks_) {  // chunked: the same as streaming every chunk
    const int64_t n = encoder_frames(T);
    auto state = device_blocks_->new_state(n);
    Tensor frames({0, cfg_.d_model});
    device_blocks_->encode_mel(*state, mel, 0, T, 0, n, true, frames);
    return frames;
  }
  ConvState s1, s2;
  Tensor y1 = conv_step(conv1_, s1, mel, T, true);
  Tensor x = conv_step(conv2_, s2, y1.ptr(), y1.rows(), true);
  encode(x, 0, x.rows(), nullptr);
  return x;
}

// ---------------------------------------------------------------------------------- stream

LargeEncoderStream::LargeEncoderStream(std::shared_ptr<const SenseVoiceLargeEncoder> encoder,
                                       std::shared_ptr<const cuda::CudaProjector> chained)
    : enc_(std::move(encoder)), chained_(std::move(chained)) {
  MINMO_CHECK(enc_ != nullptr, ErrorCode::InvalidArgument, "LargeEncoderStream: no encoder");
  MINMO_CHECK(!chained_ || enc_->device_blocks_, ErrorCode::InvalidArgument,
              "LargeEncoderStream: a chained device projector needs the encoder's blocks on the device");
  MINMO_CHECK(enc_->chunk().chunked, ErrorCode::InvalidArgument,
              "LargeEncoderStream needs chunked encoder attention (streaming.encoder_attention = 'chunked'); with "
              "full attention re-encode the turn with SenseVoiceLargeEncoder::run");
  reset();
}

LargeEncoderStream::~LargeEncoderStream() = default;

void LargeEncoderStream::reset() {
  mel_.clear();
  mel_base_ = n_mel_ = 0;
  conv1_ = {};
  conv2_ = {};
  pending_.clear();
  frames_done_ = 0;
  caches_.assign(enc_->blocks_.size(), {});
  finished_ = false;
}

Tensor LargeEncoderStream::push(const Tensor& mel_rows) {
  if (mel_rows.numel() == 0 && mel_rows.ndim() != 2) return step(nullptr, 0, false);
  MINMO_CHECK(mel_rows.ndim() == 2, ErrorCode::InvalidArgument,
              "large encoder stream: mel rows must be [n, " << enc_->cfg_.n_mels << "], got shape "
                                                            << mel_rows.shape_str());
  return push(mel_rows.ptr(), mel_rows.shape[0], mel_rows.shape[1]);
}

Tensor LargeEncoderStream::push(const float* mel_rows, int64_t n, int64_t width) {
  MINMO_CHECK(!finished_, ErrorCode::InvalidArgument, "large encoder stream: push after finish() (call reset())");
  MINMO_CHECK(width == enc_->cfg_.n_mels, ErrorCode::InvalidArgument,
              "large encoder stream: mel rows must have " << enc_->cfg_.n_mels << " columns, got " << width);
  MINMO_CHECK(n >= 0 && (n == 0 || mel_rows != nullptr), ErrorCode::InvalidArgument,
              "large encoder stream: bad mel rows");
  return step(mel_rows, n, false);
}

Tensor LargeEncoderStream::finish() {
  MINMO_CHECK(!finished_, ErrorCode::InvalidArgument, "large encoder stream: finish() called twice (call reset())");
  Tensor out = step(nullptr, 0, true);
  finished_ = true;
  return out;
}

Tensor LargeEncoderStream::step(const float* rows, int64_t n, bool final) {
  const SenseVoiceLargeEncoder& e = *enc_;
  const int64_t d = e.cfg_.d_model, C = e.chunk_.chunk_frames;
  MINMO_CHECK(!finished_, ErrorCode::InvalidArgument, "large encoder stream: used after finish() (call reset())");
  if (e.device_blocks_) return device_step(rows, n, final);
  Tensor y1 = e.conv_step(e.conv1_, conv1_, rows, n, final);
  Tensor y2 = e.conv_step(e.conv2_, conv2_, y1.ptr(), y1.rows(), final);
  pending_.insert(pending_.end(), y2.data.begin(), y2.data.end());
  const int64_t npend = static_cast<int64_t>(pending_.size()) / d;
  const int64_t m = final ? npend : (npend / C) * C;
  Tensor x({m, d});
  if (m > 0) {
    std::memcpy(x.ptr(), pending_.data(), static_cast<size_t>(m * d) * sizeof(float));
    pending_.erase(pending_.begin(), pending_.begin() + m * d);
    e.encode(x, frames_done_, frames_done_ + m, &caches_);
    frames_done_ += m;
  }
  return x;
}

Tensor LargeEncoderStream::device_step(const float* rows, int64_t n, bool final) {
  const SenseVoiceLargeEncoder& e = *enc_;
  const int64_t M = e.cfg_.n_mels, C = e.chunk_.chunk_frames;
  if (n > 0) mel_.insert(mel_.end(), rows, rows + n * M);
  n_mel_ += n;
  // whole chunks whose mel rows (up to 4 (p0 + C) - 1) are in, then at the end the rest
  int64_t frames = 0;
  if (final) frames = SenseVoiceLargeEncoder::encoder_frames(n_mel_) - frames_done_;
  else if (n_mel_ >= 4 * (frames_done_ + C)) frames = (n_mel_ / 4 - frames_done_) / C * C;
  Tensor out({0, chained_ ? chained_->output_dim() : e.cfg_.d_model});
  if (frames > 0) {
    if (!device_state_) device_state_ = e.device_blocks_->new_state(kDeviceFrames, chained_.get());
    e.device_blocks_->encode_mel(*device_state_, mel_.data(), mel_base_, n_mel_ - mel_base_, frames_done_, frames,
                                 final, out);
    frames_done_ += frames;
  }
  const int64_t keep = std::clamp<int64_t>(4 * frames_done_ - 3, mel_base_, n_mel_);  // the next chunk's first row
  mel_.erase(mel_.begin(), mel_.begin() + (keep - mel_base_) * M);
  mel_base_ = keep;
  return out;
}

}  // namespace minmo
