#include "backends/cuda/duplex_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu/cpu_util.h"
#include "minmo/status.h"
#include "modules/audio_common.h"

namespace minmo {
namespace cuda {

namespace {

constexpr int64_t kMaxRows = 64;  // positions per chunk

// p = softmax(l0, l1)[1] of the bf16 logit pairs (turn: columns 0-1, barge: 2-3) of `rows` rows.
void probabilities(const minmo_bf16* logits, int64_t rows, int64_t at, std::vector<float>* p_turn,
                   std::vector<float>* p_barge) {
  for (int64_t t = 0; t < rows; ++t) {
    const minmo_bf16* l = logits + 4 * t;
    auto p1 = [](minmo_bf16 a, minmo_bf16 b) {
      const float l0 = minmo_cpu::bf16_to_f32(a), l1 = minmo_cpu::bf16_to_f32(b);
      const float m = std::max(l0, l1), e0 = std::exp(l0 - m), e1 = std::exp(l1 - m);
      return e1 / (e0 + e1);
    };
    if (p_turn) (*p_turn)[static_cast<size_t>(at + t)] = p1(l[0], l[1]);
    if (p_barge) (*p_barge)[static_cast<size_t>(at + t)] = p1(l[2], l[3]);
  }
}

}  // namespace

CudaDuplex::CudaDuplex(const DuplexConfig& config, std::shared_ptr<Device> device)
    : cfg_(config), device_(std::move(device)) {}

std::string CudaDuplex::unsupported(const DuplexConfig& c) { return qwen2_layer_unsupported(c.layer()); }

std::shared_ptr<const CudaDuplex> CudaDuplex::load(const WeightStore& w, const DuplexConfig& c,
                                                   std::shared_ptr<Device> device) {
  const std::string why = unsupported(c);
  MINMO_CHECK(why.empty(), ErrorCode::BundleError, "duplex predictor: " << why);
  MINMO_CHECK(device != nullptr, ErrorCode::InvalidArgument, "duplex predictor: no device");
  auto m = std::make_shared<CudaDuplex>(c, device);
  const int64_t H = c.hidden_size;
  Uploads up(m->weights_);
  m->proj_ = stack_linears(up, {load_linear(w, "proj", c.llm_hidden, H, /*bias=*/false)}, "proj");
  m->layer_ = Qwen2DeviceLayer::load(up, w, "layer.", c.layer());
  const LinearW turn = load_linear(w, "turn_head", H, 2), barge = load_linear(w, "barge_head", H, 2);
  m->heads_ = stack_linears(up, {turn, barge}, "{turn,barge}_head");
  m->heads_bias_ = up.add(sizeof(minmo_bf16) * 4, [turn, barge](uint8_t* dst) {
    to_bf16(turn.b, 2, dst);
    to_bf16(barge.b, 2, dst + 2 * sizeof(minmo_bf16));
  });
  m->weights_.commit(device);
  up.run(device);
  m->gemm_ = Gemm::available(*device, nullptr);
  return m;
}

std::unique_ptr<CudaDuplexState> CudaDuplex::new_state(int64_t capacity) const {
  MINMO_CHECK(capacity >= 1, ErrorCode::InvalidArgument,
              "duplex predictor: state capacity must be >= 1 position, got " << capacity);
  return std::make_unique<CudaDuplexState>(this, capacity);
}

CudaDuplexState::CudaDuplexState(const CudaDuplex* owner, int64_t capacity)
    : owner_(owner), capacity_(capacity), stream_(owner->device_) {
  const DuplexConfig& c = owner->cfg_;
  const int64_t H = c.hidden_size, D = c.head_dim, Hq = c.num_attention_heads, Hkv = c.num_key_value_heads;
  const int64_t I = c.intermediate_size, R = kMaxRows;
  const int64_t ws = minmo_decode_attention_workspace_floats(Hq, D, capacity, kQwen2SplitSize);
  MINMO_CHECK(ws > 0, ErrorCode::Internal, "duplex predictor: no attention workspace size for capacity " << capacity);
  arena_.place(&k_, Hkv * capacity * D);
  arena_.place(&v_, Hkv * capacity * D);
  arena_.place(&pos_, 1);
  arena_.place(&x_, R * c.llm_hidden);
  arena_.place(&logits_, R * 4);
  arena_.place(&b_.resid, R * H);
  for (minmo_bf16** p : {&b_.hn, &b_.o, &b_.down}) arena_.place(p, R * H);
  arena_.place(&b_.qkv, R * (Hq + 2 * Hkv) * D);
  arena_.place(&b_.q, R * Hq * D);
  arena_.place(&b_.attn, R * Hq * D);
  arena_.place(&b_.act, R * I);
  if (owner->gemm_) arena_.place(&b_.gate_up, R * 2 * I);
  arena_.place(&b_.ws, ws);
  arena_.commit(owner->device_);
  b_.pos = pos_;
  const std::shared_ptr<Device>& dev = owner->device_;
  in_ = Allocation(dev, sizeof(minmo_bf16) * R * c.llm_hidden, MemoryKind::PinnedHost);
  pos_host_ = Allocation(dev, sizeof(int32_t), MemoryKind::PinnedHost);
  logits_host_ = Allocation(dev, sizeof(minmo_bf16) * R * 4, MemoryKind::PinnedHost);
  if (owner->gemm_) {
    std::string why;
    gemm_ = Gemm::open(stream_, &why);
    MINMO_CHECK(gemm_ != nullptr, ErrorCode::DeviceError, "duplex predictor: " << why);
  }
}

CudaDuplexState::~CudaDuplexState() = default;

void CudaDuplexState::truncate(int64_t n) {
  MINMO_CHECK(n >= 0 && n <= length_, ErrorCode::InvalidArgument,
              "duplex predictor: cannot truncate " << length_ << " positions to " << n);
  length_ = n;  // positions >= n are overwritten before they are read again
}

void CudaDuplexState::push(const float* hidden, int64_t T, int64_t width, std::vector<float>* p_turn,
                           std::vector<float>* p_barge) {
  const int64_t W = owner_->cfg_.llm_hidden;
  MINMO_CHECK(width == W, ErrorCode::InvalidArgument,
              "duplex predictor: hidden must have " << W << " columns, got " << width);
  run(hidden, true, T, p_turn, p_barge);
}

void CudaDuplexState::push_device(const minmo_bf16* hidden, int64_t T, std::vector<float>* p_turn,
                                  std::vector<float>* p_barge) {
  run(hidden, false, T, p_turn, p_barge);
}

void CudaDuplexState::run(const void* hidden, bool from_host, int64_t T, std::vector<float>* p_turn,
                          std::vector<float>* p_barge) {
  MINMO_CHECK(T >= 0 && (T == 0 || hidden != nullptr), ErrorCode::InvalidArgument,
              "duplex predictor: bad hidden states");
  MINMO_CHECK(length_ + T <= capacity_, ErrorCode::CacheFull,
              "duplex predictor: KV cache full: " << length_ << " of " << capacity_ << " positions used, cannot append "
                                                  << T << " more");
  if (p_turn) p_turn->resize(static_cast<size_t>(T));
  if (p_barge) p_barge->resize(static_cast<size_t>(T));
  const int64_t W = owner_->cfg_.llm_hidden;
  for (int64_t t0 = 0; t0 < T; t0 += kMaxRows) {
    const int64_t rows = std::min(kMaxRows, T - t0);
    const minmo_bf16* x = nullptr;
    if (from_host) {
      to_bf16(static_cast<const float*>(hidden) + t0 * W, rows * W, in_.as<uint8_t>());
      stream_.upload(x_, in_.data(), sizeof(minmo_bf16) * rows * W);
      x = x_;
    } else {
      x = static_cast<const minmo_bf16*>(hidden) + t0 * W;
    }
    *pos_host_.as<int32_t>() = static_cast<int32_t>(length_);
    enqueue_chunk(x, rows);
    stream_.sync();
    probabilities(logits_host_.as<minmo_bf16>(), rows, t0, p_turn, p_barge);
    length_ += rows;
  }
}

void CudaDuplexState::enqueue_chunk(const minmo_bf16* x, int64_t rows) {
  const CudaDuplex& m = *owner_;
  const DuplexConfig& c = m.cfg_;
  const Stream& d = stream_;
  const int64_t H = c.hidden_size;
  d.upload(pos_, pos_host_.data(), sizeof(int32_t));
  // resid = proj(x): the layer's first step adds b_.down (the projection) to the zeroed residual.
  d.memset(b_.resid, 0, sizeof(float) * rows * H);
  linear_product(d, m.weights_, m.proj_, x, b_.down, rows, false, gemm_.get(), b_.gate_up);
  enqueue_qwen2_layer(d, m.weights_, m.layer_, c.layer(), b_, k_, v_, capacity_, b_.down, rows, gemm_.get());
  MINMO_DEVICE_CALL(d, bias_residual_bf16, b_.down, nullptr, b_.resid, rows, H);
  MINMO_DEVICE_CALL(d, f32_to_bf16, b_.resid, b_.hn, rows * H);
  linear_product(d, m.weights_, m.heads_, b_.hn, logits_, rows, false, gemm_.get(), b_.gate_up);
  MINMO_DEVICE_CALL(d, bias_act_bf16, logits_, m.weights_.at<minmo_bf16>(m.heads_bias_), rows, 4, MINMO_ACT_NONE);
  d.download(logits_host_.data(), logits_, sizeof(minmo_bf16) * rows * 4);
}

}  // namespace cuda
}  // namespace minmo
