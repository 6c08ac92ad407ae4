#include "backends/cuda/qwen2_cuda.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <set>
#include <sstream>

#include "backends/cpu/ops.h"
#include "common/args.h"
#include "cpu/cpu_util.h"
#include "modules/audio_common.h"

namespace minmo {
namespace cuda {

namespace {

constexpr int64_t kMaxRows = 64;    // positions per forward chunk (products: GEMM, or gemv slices of 8)
constexpr int64_t kSplitSize = kQwen2SplitSize;

}  // namespace

// ---- state -------------------------------------------------------------------------------------

class CudaQwen2State final : public DecoderState {
 public:
  CudaQwen2State(const CudaQwen2* owner, int64_t capacity)
      : owner_(owner), capacity_(capacity), stream_(owner->device_) {
    const Qwen2Config& c = owner->cfg_;
    const std::shared_ptr<Device>& dev = owner->device_;
    const int64_t H = c.hidden_size, D = c.head_dim, Hq = c.num_attention_heads, Hkv = c.num_key_value_heads;
    const int64_t R = kMaxRows, L = c.num_hidden_layers;
    const int64_t ws = minmo_decode_attention_workspace_floats(Hq, D, capacity, kSplitSize);
    const int64_t fws = minmo_decode_attention_fused_workspace_floats(Hq, D, owner->attn_splits_);
    MINMO_CHECK(ws > 0 && fws > 0, ErrorCode::Internal, "cuda qwen2: no attention workspace size for capacity " << capacity);
    b.k.resize(static_cast<size_t>(L));
    b.v.resize(static_cast<size_t>(L));
    for (size_t l = 0; l < b.k.size(); ++l) {
      arena_.place(&b.k[l], Hkv * capacity * D);
      arena_.place(&b.v[l], Hkv * capacity * D);
    }
    arena_.place(&b.pos, 1);
    arena_.place(&b.resid, R * H);
    for (minmo_bf16** p : {&b.hn, &b.o, &b.down}) arena_.place(p, R * H);
    arena_.place(&b.qkv, R * (Hq + 2 * Hkv) * D);
    arena_.place(&b.q, R * Hq * D);
    arena_.place(&b.attn, R * Hq * D);
    arena_.place(&b.act, R * c.intermediate_size);
    if (owner->prefill_gemm_) arena_.place(&b.gate_up, R * 2 * c.intermediate_size);
    arena_.place(&b.logits, R * owner->head_.n);
    arena_.place(&b.ws, ws);
    arena_.place(&b.fused_ws, fws);
    arena_.place(&b.counters, 1 + Hkv);  // gemv_norm's, then one per KV head (attention)
    if (owner->has_sample_loop()) {
      arena_.place(&b.loop, owner->loop_io_bytes());
      arena_.place(&b.token, 1);
    }
    arena_.commit(dev);
    stream_.memset(b.counters, 0, sizeof(uint32_t) * static_cast<size_t>(1 + Hkv));
    stream_.sync();
    in_ = Allocation(dev, sizeof(float) * R * H, MemoryKind::PinnedHost);
    pos_host_ = Allocation(dev, sizeof(int32_t), MemoryKind::PinnedHost);
    hidden_host_ = Allocation(dev, sizeof(minmo_bf16) * R * H, MemoryKind::PinnedHost);
    logits_host_ = Allocation(dev, sizeof(minmo_bf16) * R * owner->head_.n, MemoryKind::PinnedHost);
    if (owner->prefill_gemm_) {
      std::string why;
      gemm_ = Gemm::open(stream_, &why);
      MINMO_CHECK(gemm_ != nullptr, ErrorCode::DeviceError, "qwen2 decoder: " << why);
    }
    if (owner->has_sample_loop()) loop_host_ = Allocation(dev, owner->loop_io_bytes(), MemoryKind::PinnedHost);
  }

  int64_t length() const override { return length_; }
  int64_t capacity() const override { return capacity_; }
  void truncate(int64_t n) override {
    MINMO_CHECK(n >= 0 && n <= length_, ErrorCode::InvalidArgument,
                "qwen2 decoder: cannot truncate " << length_ << " positions to " << n);
    length_ = n;  // positions >= n are overwritten before they are read again
    fresh_logits_ = false;
  }
  void reset() override {
    length_ = 0;
    fresh_logits_ = false;
  }

 private:
  friend class CudaQwen2;
  // Device buffers (in arena_): per layer K / V caches [Hkv, capacity, D]; the position; the fp32
  // residual stream and bf16 activations of up to kMaxRows rows (gate_up: the GEMM's gate|up
  // output before the SiLU product, when prefill uses the GEMM); the attention workspaces and the
  // fused kernels' self-resetting counters (gemv_norm's, then one per KV head); with a sample loop,
  // its io block (CudaQwen2::loop_io_bytes) and the sampled token.
  struct Buffers {
    std::vector<minmo_bf16*> k, v;
    int32_t* pos;
    float* resid;
    minmo_bf16 *hn, *qkv, *q, *attn, *o, *act, *down, *logits, *gate_up = nullptr;
    float *ws, *fused_ws;
    uint32_t* counters;
    uint8_t* loop;
    int32_t* token;
  };

  const CudaQwen2* owner_;
  int64_t capacity_, length_ = 0;
  Stream stream_;
  std::unique_ptr<Gemm> gemm_;  // prefill products of many rows (null: gemv slices); uses stream_
  Arena arena_;
  Buffers b{};
  Allocation in_, pos_host_, hidden_host_, logits_host_, loop_host_;
  Graph step_[2];  // decode steps (one row) without / with the logits (CudaQwen2::step_graph)
  Graph loop_;     // the sample loop (CudaQwen2::run_sample_loop)
  bool fresh_logits_ = false;  // the device logits row 0 is the last position's
};

// ---- model -------------------------------------------------------------------------------------

CudaQwen2::CudaQwen2(const Qwen2Config& cfg, std::shared_ptr<Device> device) : cfg_(cfg), device_(std::move(device)) {}

std::string SampleLoop::unsupported(int64_t logits_width) const {
  std::ostringstream os;
  if (!embedding || rows < 1) os << "no embedding table";
  else if (n_allowed < 1 || n_allowed > logits_width) os << "drawing from " << n_allowed << " of " << logits_width << " logits";
  else if (steps < 1 || steps > 4096) os << steps << " steps per loop";
  else if (params.top_k < 1 || params.top_k > MINMO_SAMPLING_MAX_TOP_K)
    os << "top_k " << params.top_k << " (the sampling kernel takes 1 .. " << MINMO_SAMPLING_MAX_TOP_K << ")";
  else if (params.win_size < 1 || params.win_size > (1 << 20)) os << "RAS window " << params.win_size;
  else if (!(params.top_p > 0 && params.top_p <= 1) || !(params.tau_r >= 0))
    os << "top_p " << params.top_p << ", tau_r " << params.tau_r;
  return os.str();
}

std::shared_ptr<const CudaQwen2> CudaQwen2::load(const WeightStore& w, const nlohmann::json& config,
                                                 std::shared_ptr<Device> device, const Qwen2Head& head,
                                                 const SampleLoop* loop) {
  const Qwen2Config c = Qwen2Config::from_json(config);
  const int64_t V = c.vocab_size, H = c.hidden_size, D = c.head_dim;
  const int64_t Hq = c.num_attention_heads, Hkv = c.num_key_value_heads;
  const std::string why = unsupported(c);
  MINMO_CHECK(why.empty(), ErrorCode::BundleError, "qwen2 decoder: " << why << "; use device='cpu'");
  auto m = std::make_shared<CudaQwen2>(c, device);
  m->host_ = w;
  m->embed_tokens_ = load_tensor(w, "model.embed_tokens.weight", {V, H});
  Uploads up(m->weights_);
  std::set<std::string> formats;  // of the layers' products
  m->final_norm_ = up.add_bf16(load_tensor(w, "model.norm.weight", {H}), H);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    const Layer L = Layer::load(up, w, p, qwen2_layer_config(c), &formats);
    m->layers_.push_back(L);
  }
  m->format_.clear();
  for (const std::string& f : formats) m->format_ += (m->format_.empty() ? "" : "+") + f;
  MINMO_CHECK(!formats.count("fp8") || device->fp8_supported(), ErrorCode::DeviceError,
              "qwen2 decoder: fp8 weights need an sm_89 or newer GPU; " << device->description()
                                                                       << " has none (export with --quant int8 instead)");
  const int64_t n_out = head.out > 0 ? head.out : V;
  const LinearW h = head.is_lm_head() && c.tie_word_embeddings ? LinearW{m->embed_tokens_, nullptr, H, V, {}}
                                                               : load_linear(w, head.name, H, n_out, head.bias);
  m->head_ = stack_linears(up, {h}, head.name);
  if (h.b) m->head_bias_ = up.add_bf16(h.b, n_out);
  if (loop) {
    const std::string bad = loop->unsupported(n_out);
    MINMO_CHECK(bad.empty(), ErrorCode::InvalidArgument, "qwen2 decoder: sample loop: " << bad);
    m->loop_ = *loop;
    const float* table = loop->embedding;
    const size_t bytes = sizeof(float) * static_cast<size_t>(loop->rows * H);
    m->loop_table_ = up.add(bytes, [table, bytes](uint8_t* dst) { std::memcpy(dst, table, bytes); });
    m->loop_.embedding = nullptr;  // the caller's table is not kept
  }
  m->weights_.commit(device);
  up.run(device);
  m->attn_splits_ = std::max<int64_t>(1, 2 * device->sm_count() / Hkv);
  std::string about;  // whether prefill can use the GEMM (cuBLAS on "cuda"; its gemv twin on "cuda-sim")
  m->prefill_gemm_ = Gemm::available(*device, &about);
  m->prefill_products_ = m->prefill_gemm_ ? about : "gemv, 8 rows per pass (" + about + ")";
  const char* env = std::getenv("MINMO_CUDA_FUSED");
  const bool want_fused = env && *env ? std::string(env) != "0" : H <= 1024;
  m->fused_step_ = want_fused && minmo_args::decode_fused_ok(Hq, Hkv, D, 1, m->attn_splits_);
  return m;
}

std::string CudaQwen2::unsupported(const Qwen2Config& c) { return qwen2_layer_unsupported(qwen2_layer_config(c)); }

std::unique_ptr<DecoderState> CudaQwen2::new_state(int capacity_tokens) const {
  MINMO_CHECK(capacity_tokens >= 1, ErrorCode::InvalidArgument,
              "qwen2 decoder: state capacity must be >= 1 position, got " << capacity_tokens);
  auto s = std::make_unique<CudaQwen2State>(this, capacity_tokens);
  step_graph(*s, 1);  // captured now, when the session starts, not on its first response token
  if (has_sample_loop()) {
    CudaQwen2State* sp = s.get();
    s->loop_ = s->stream_.capture([sp, this] { enqueue_sample_loop(*sp); });
    ++loop_captures_;
  }
  return s;
}

const Graph& CudaQwen2::step_graph(CudaQwen2State& s, int64_t logit_rows) const {
  Graph& g = s.step_[logit_rows];
  if (g.empty())
    g = s.stream_.capture([&s, logit_rows, this] { enqueue_chunk(s, 1, logit_rows); });
  return g;
}

void CudaQwen2::embed_into(const int64_t* ids, size_t n, float* out) const {
  if (n == 0) return;
  cpu::embedding(embed_tokens_, ids, out, static_cast<int64_t>(n), cfg_.vocab_size, cfg_.hidden_size);
}

CudaQwen2::Weights CudaQwen2::weights_of(const DeviceLinear& l) const {
  return {weights_.at<uint8_t>(l.w), weights_.at<float>(l.scale), weights_.at<minmo_bf16>(l.scale),
          weights_.at<uint8_t>(l.zero)};
}

void CudaQwen2::product(const CudaQwen2State& s, const DeviceLinear& l, const minmo_bf16* x, minmo_bf16* y,
                        int64_t rows, bool gated) const {
  linear_product(s.stream_, weights_, l, x, y, rows, gated, s.gemm_.get(), s.b.gate_up);
}

void CudaQwen2::product_norm(const Stream& d, const DeviceLinear& l, const minmo_bf16* x, float* residual,
                             const minmo_bf16* gamma, minmo_bf16* out, uint32_t* counter) const {
  const Weights w = weights_of(l);
  const float eps = static_cast<float>(cfg_.rms_norm_eps);
  if (l.kind == cpu::WeightQuant::None)
    MINMO_DEVICE_CALL(d, gemv_norm_bf16, x, reinterpret_cast<const minmo_bf16*>(w.q), residual, gamma, out, counter,
                      l.n, l.k, eps);
  else if (l.kind == cpu::WeightQuant::Int8)
    MINMO_DEVICE_CALL(d, gemv_norm_int8, x, reinterpret_cast<const int8_t*>(w.q), w.scale, residual, gamma, out,
                      counter, l.n, l.k, eps);
  else if (l.kind == cpu::WeightQuant::Fp8)
    MINMO_DEVICE_CALL(d, gemv_norm_fp8, x, w.q, w.scale, residual, gamma, out, counter, l.n, l.k, eps);
  else
    MINMO_DEVICE_CALL(d, gemv_norm_int4, x, w.q, w.scale_bf16, w.zero, residual, gamma, out, counter, l.n, l.k,
                      l.group, eps);
}

void CudaQwen2::product_qkv_rope(const Stream& d, const Layer& L, const minmo_bf16* x, const int32_t* pos,
                                 minmo_bf16* q, minmo_bf16* kc, minmo_bf16* vc, int64_t capacity) const {
  const DeviceLinear& l = L.qkv;
  const Weights w = weights_of(l);
  const auto* bias = weights_.at<minmo_bf16>(L.qkv_bias);
  const int64_t Hq = cfg_.num_attention_heads, Hkv = cfg_.num_key_value_heads, D = cfg_.head_dim;
  const float theta = static_cast<float>(cfg_.rope_theta);
  if (l.kind == cpu::WeightQuant::None)
    MINMO_DEVICE_CALL(d, gemv_qkv_rope_bf16, x, reinterpret_cast<const minmo_bf16*>(w.q), bias, pos, q, kc, vc, Hq,
                      Hkv, D, capacity, l.k, theta);
  else if (l.kind == cpu::WeightQuant::Int8)
    MINMO_DEVICE_CALL(d, gemv_qkv_rope_int8, x, reinterpret_cast<const int8_t*>(w.q), w.scale, bias, pos, q, kc, vc,
                      Hq, Hkv, D, capacity, l.k, theta);
  else if (l.kind == cpu::WeightQuant::Fp8)
    MINMO_DEVICE_CALL(d, gemv_qkv_rope_fp8, x, w.q, w.scale, bias, pos, q, kc, vc, Hq, Hkv, D, capacity, l.k, theta);
  else
    MINMO_DEVICE_CALL(d, gemv_qkv_rope_int4, x, w.q, w.scale_bf16, w.zero, bias, pos, q, kc, vc, Hq, Hkv, D, capacity,
                      l.k, l.group, theta);
}

void CudaQwen2::enqueue_inputs(CudaQwen2State& s, int64_t rows) const {
  s.stream_.upload(s.b.resid, s.in_.data(), sizeof(float) * rows * cfg_.hidden_size);
  s.stream_.upload(s.b.pos, s.pos_host_.data(), sizeof(int32_t));
}

void CudaQwen2::enqueue_outputs(CudaQwen2State& s, int64_t rows, int64_t logit_rows, bool hidden) const {
  const Stream& d = s.stream_;
  const int64_t H = cfg_.hidden_size;
  if (hidden) d.download(s.hidden_host_.data(), s.b.hn, sizeof(minmo_bf16) * rows * H);
  if (logit_rows > 0) {
    enqueue_head(s, rows, logit_rows);
    d.download(s.logits_host_.data(), s.b.logits, sizeof(minmo_bf16) * logit_rows * head_.n);
  }
}

void CudaQwen2::enqueue_head(CudaQwen2State& s, int64_t rows, int64_t logit_rows) const {
  const Stream& d = s.stream_;
  product(s, head_, s.b.hn + (rows - logit_rows) * cfg_.hidden_size, s.b.logits, logit_rows, false);
  if (head_bias_) MINMO_DEVICE_CALL(d, bias_act_bf16, s.b.logits, bf16(*head_bias_), logit_rows, head_.n, MINMO_ACT_NONE);
}

void CudaQwen2::enqueue_chunk(CudaQwen2State& s, int64_t rows, int64_t logit_rows, bool hidden) const {
  enqueue_inputs(s, rows);
  enqueue_layers(s, rows);
  enqueue_outputs(s, rows, logit_rows, hidden);
}

void CudaQwen2::enqueue_layers(CudaQwen2State& s, int64_t rows) const {
  if (rows == 1 && fused_step_) return enqueue_fused_layers(s);
  const Stream& d = s.stream_;
  const CudaQwen2State::Buffers& b = s.b;
  const int64_t H = cfg_.hidden_size;
  const float eps = static_cast<float>(cfg_.rms_norm_eps);
  const Qwen2LayerConfig lc = qwen2_layer_config(cfg_);
  const Qwen2LayerBuffers lb{b.resid, b.hn, b.qkv, b.q, b.attn, b.o, b.act, b.down, b.gate_up, b.ws, b.pos};
  for (size_t l = 0; l < layers_.size(); ++l)
    enqueue_qwen2_layer(d, weights_, layers_[l], lc, lb, b.k[l], b.v[l], s.capacity_, l ? b.down : nullptr, rows,
                        s.gemm_.get());
  MINMO_DEVICE_CALL(d, rmsnorm_residual_bf16, b.down, b.resid, bf16(final_norm_), b.hn, rows, H, eps);
}

void CudaQwen2::enqueue_fused_layers(CudaQwen2State& s) const {
  const Stream& d = s.stream_;
  const CudaQwen2State::Buffers& b = s.b;
  const Qwen2Config& c = cfg_;
  const int64_t H = c.hidden_size, D = c.head_dim, Hq = c.num_attention_heads, Hkv = c.num_key_value_heads;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  uint32_t* norm_counter = b.counters;
  MINMO_DEVICE_CALL(d, rmsnorm_residual_bf16, nullptr, b.resid, bf16(layers_[0].in_norm), b.hn, 1, H, eps);
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& L = layers_[l];
    const minmo_bf16* gamma_next = bf16(l + 1 < layers_.size() ? layers_[l + 1].in_norm : final_norm_);
    product_qkv_rope(d, L, b.hn, b.pos, b.q, b.k[l], b.v[l], s.capacity_);
    MINMO_DEVICE_CALL(d, decode_attention_fused_bf16, b.q, b.k[l], b.v[l], b.pos, b.attn, b.fused_ws, b.counters + 1,
                      Hq, Hkv, D, s.capacity_, attn_splits_, scale);
    product_norm(d, L.o, b.attn, b.resid, bf16(L.post_norm), b.hn, norm_counter);
    product(s, L.gate_up, b.hn, b.act, 1, true);
    product_norm(d, L.down, b.act, b.resid, gamma_next, b.hn, norm_counter);
  }
}

void CudaQwen2::enqueue_sample_loop(CudaQwen2State& s) const {
  const Stream& d = s.stream_;
  auto* st = reinterpret_cast<minmo_ras_state*>(s.b.loop);
  auto* history = reinterpret_cast<int32_t*>(s.b.loop + sizeof(minmo_ras_state));
  d.upload(s.b.loop, s.loop_host_.data(), loop_io_bytes());
  d.upload(s.b.pos, s.pos_host_.data(), sizeof(int32_t));
  for (int64_t i = 0; i < loop_.steps; ++i) {
    MINMO_DEVICE_CALL(d, sample_ras_loop_bf16, s.b.logits, loop_.n_allowed, history, loop_history_cap(), st, s.b.pos,
                      loop_.params, s.b.token);
    if (i + 1 == loop_.steps) break;
    MINMO_DEVICE_CALL(d, embedding_row_f32, weights_.at<float>(loop_table_), loop_.rows, cfg_.hidden_size, s.b.token,
                      s.b.resid);
    enqueue_layers(s, 1);
    enqueue_head(s, 1, 1);
  }
  d.download(s.loop_host_.data(), s.b.loop, loop_io_bytes());
}

void CudaQwen2::run_sample_loop(DecoderState& base, uint64_t& rng, const int64_t* history, int64_t n_history,
                                int64_t* out) const {
  MINMO_CHECK(has_sample_loop(), ErrorCode::InvalidArgument, "qwen2 decoder: this model has no sample loop");
  auto* own = dynamic_cast<CudaQwen2State*>(&base);
  MINMO_CHECK(own != nullptr && own->owner_ == this, ErrorCode::InvalidArgument,
              "qwen2 decoder: the state was created by another model");
  CudaQwen2State& s = *own;
  MINMO_CHECK(s.fresh_logits_, ErrorCode::InvalidArgument,
              "qwen2 decoder: the sample loop starts from the logits of the state's last position: run forward() "
              "(last_only) first");
  MINMO_CHECK(n_history >= 0 && (n_history == 0 || history != nullptr), ErrorCode::InvalidArgument,
              "qwen2 decoder: sample loop history of " << n_history << " tokens is null or negative");
  const int64_t steps = loop_.steps;
  MINMO_CHECK(s.length_ + steps - 1 <= s.capacity_, ErrorCode::CacheFull,
              "qwen2 decoder: KV cache full: " << s.length_ << " of " << s.capacity_ << " positions used, the sample "
                                               << "loop appends " << steps - 1 << " more");
  const int64_t n0 = std::min<int64_t>(n_history, loop_.params.win_size);
  uint8_t* io = s.loop_host_.as<uint8_t>();
  const minmo_ras_state in{rng, n0};
  std::memcpy(io, &in, sizeof in);
  auto* hist = reinterpret_cast<int32_t*>(io + sizeof(minmo_ras_state));
  for (int64_t i = 0; i < n0; ++i) {
    const int64_t t = history[n_history - n0 + i];
    hist[i] = t >= 0 && t <= INT32_MAX ? static_cast<int32_t>(t) : -1;  // -1 equals no drawn token
  }
  *s.pos_host_.as<int32_t>() = static_cast<int32_t>(s.length_ - 1);
  s.stream_.launch(s.loop_);
  s.stream_.sync();
  ++loop_launches_;
  minmo_ras_state st;
  std::memcpy(&st, io, sizeof st);
  for (int64_t i = 0; i < steps; ++i) {
    out[i] = hist[n0 + i];
    MINMO_CHECK(out[i] >= 0, ErrorCode::Internal,
                "voice LM sampling: non-finite logits (model output) at step " << i << " of the device loop");
  }
  rng = st.rng;
  s.length_ += steps - 1;
  s.fresh_logits_ = false;
}

void CudaQwen2::forward(DecoderState& state, const float* embeds, int64_t T, Tensor* hidden_out, Tensor* logits_out,
                        bool last_only) const {
  run_forward(state, embeds, T, hidden_out, logits_out, last_only, nullptr);
}

void CudaQwen2::forward_hidden_device(DecoderState& state, const float* embeds, int64_t T,
                                      const DeviceRows& on_rows) const {
  MINMO_CHECK(on_rows != nullptr, ErrorCode::InvalidArgument, "qwen2 decoder: no consumer of the hidden states");
  run_forward(state, embeds, T, nullptr, nullptr, false, &on_rows);
}

void CudaQwen2::run_forward(DecoderState& base, const float* embeds, int64_t T, Tensor* hidden_out, Tensor* logits_out,
                            bool last_only, const DeviceRows* on_rows) const {
  auto* own = dynamic_cast<CudaQwen2State*>(&base);
  MINMO_CHECK(own != nullptr && own->owner_ == this, ErrorCode::InvalidArgument,
              "qwen2 decoder: the state was created by another model");
  CudaQwen2State& s = *own;
  MINMO_CHECK(T >= 0, ErrorCode::InvalidArgument, "qwen2 decoder: negative number of positions " << T);
  const int64_t H = cfg_.hidden_size, V = head_.n;
  MINMO_CHECK(s.length_ + T <= s.capacity_, ErrorCode::CacheFull,
              "qwen2 decoder: KV cache full: " << s.length_ << " of " << s.capacity_
                                               << " positions used, cannot append " << T << " more");
  if (hidden_out) ensure_shape(hidden_out, {T, H});
  if (logits_out) ensure_shape(logits_out, {last_only && T > 0 ? 1 : T, V});
  if (T == 0) return;
  MINMO_CHECK(embeds != nullptr, ErrorCode::InvalidArgument, "qwen2 decoder: embeddings are null");

  const Stream& d = s.stream_;
  for (int64_t t0 = 0; t0 < T; t0 += kMaxRows) {
    const int64_t rows = std::min(kMaxRows, T - t0);
    // Logit rows of this chunk: all of them, or the very last position's only.
    const int64_t logit_rows = !logits_out ? 0 : !last_only ? rows : (t0 + rows == T ? 1 : 0);
    std::memcpy(s.in_.data(), embeds + t0 * H, sizeof(float) * rows * H);
    *s.pos_host_.as<int32_t>() = static_cast<int32_t>(s.length_);
    if (rows == 1) {  // a decode step: its graph
      d.launch(step_graph(s, logit_rows));
    } else {
      enqueue_chunk(s, rows, logit_rows, hidden_out != nullptr);
    }
    d.sync();
    s.length_ += rows;
    if (on_rows) (*on_rows)(s.b.hn, rows);
    s.fresh_logits_ = t0 + rows == T && logit_rows == 1;
    if (hidden_out) {
      const auto* h = s.hidden_host_.as<minmo_bf16>();
      float* dst = hidden_out->ptr() + t0 * H;
      for (int64_t i = 0; i < rows * H; ++i) dst[i] = minmo_cpu::bf16_to_f32(h[i]);
    }
    if (logit_rows > 0) {
      const auto* lg = s.logits_host_.as<minmo_bf16>();
      float* dst = logits_out->ptr() + (last_only ? 0 : t0 * V);
      for (int64_t i = 0; i < logit_rows * V; ++i) dst[i] = minmo_cpu::bf16_to_f32(lg[i]);
    }
  }
}

}  // namespace cuda
}  // namespace minmo
