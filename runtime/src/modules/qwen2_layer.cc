#include "modules/qwen2_layer.h"

#include <cmath>

#include "backends/cpu/ops.h"
#include "backends/cpu/ops_llm.h"
#include "backends/cpu/quant_linear.h"
#include "minmo/status.h"

namespace minmo {

KVCache::KVCache(int64_t layers, int64_t capacity, int64_t kv_heads, int64_t head_dim)
    : layers_(layers), capacity_(capacity), row_(kv_heads * head_dim) {
  MINMO_CHECK(layers >= 1 && kv_heads >= 1 && head_dim >= 1, ErrorCode::InvalidArgument,
              "KV cache: bad sizes layers=" << layers << " kv_heads=" << kv_heads << " head_dim=" << head_dim);
  MINMO_CHECK(capacity >= 1, ErrorCode::InvalidArgument, "KV cache capacity must be >= 1 position, got " << capacity);
  const size_t n = static_cast<size_t>(layers_ * capacity_ * row_);
  k_.reset(new float[n]);
  v_.reset(new float[n]);
}

void KVCache::check_room(int64_t n, const char* what) const {
  MINMO_CHECK(n >= 0, ErrorCode::InvalidArgument, what << ": cannot append " << n << " positions");
  MINMO_CHECK(length_ + n <= capacity_, ErrorCode::CacheFull,
              what << ": KV cache full: " << length_ << " of " << capacity_ << " positions used, cannot append " << n
                   << " more (create the state with a larger capacity, or truncate/reset it)");
}

void KVCache::truncate(int64_t n) {
  MINMO_CHECK(n >= 0 && n <= length_, ErrorCode::InvalidArgument,
              "KV cache: cannot truncate to " << n << " positions (it holds " << length_ << ")");
  length_ = n;
}

void Qwen2Scratch::reserve(const Qwen2LayerConfig& c, int64_t T) {
  if (T <= rows) return;
  auto grow = [T](std::vector<float>& b, int64_t width) { b.resize(static_cast<size_t>(T * width)); };
  grow(x, c.hidden);
  grow(xn, c.hidden);
  grow(q, c.q_dim());
  grow(attn, c.q_dim());
  grow(tmp, c.hidden);
  grow(gate, c.intermediate);
  grow(up, c.intermediate);
  grow(rope_cos, c.head_dim / 2);
  grow(rope_sin, c.head_dim / 2);
  rows = T;
}

void validate_layer_config(const Qwen2LayerConfig& c, const char* what) {
  MINMO_CHECK(c.hidden > 0 && c.intermediate > 0 && c.heads > 0 && c.kv_heads > 0 && c.head_dim > 0,
              ErrorCode::BundleError, what << ": sizes must be positive");
  MINMO_CHECK(c.heads % c.kv_heads == 0, ErrorCode::BundleError,
              what << ": num_attention_heads (" << c.heads << ") must be a multiple of num_key_value_heads ("
                   << c.kv_heads << ")");
  MINMO_CHECK(c.head_dim % 2 == 0, ErrorCode::BundleError, what << ": head_dim must be even, got " << c.head_dim);
  MINMO_CHECK(c.rope_theta > 0 && c.eps >= 0, ErrorCode::BundleError, what << ": rope_theta must be > 0, eps >= 0");
}

Qwen2Layer::Qwen2Layer(const Qwen2LayerConfig& cfg, const WeightStore& w, const std::string& p) : cfg_(cfg) {
  const int64_t H = cfg.hidden, I = cfg.intermediate;
  in_norm_ = load_tensor(w, p + "input_layernorm.weight", {H});
  q_ = load_panel_linear(w, p + "self_attn.q_proj", H, cfg.q_dim());
  k_ = load_panel_linear(w, p + "self_attn.k_proj", H, cfg.kv_dim());
  v_ = load_panel_linear(w, p + "self_attn.v_proj", H, cfg.kv_dim());
  o_ = load_panel_linear(w, p + "self_attn.o_proj", cfg.q_dim(), H, /*bias=*/false);
  post_norm_ = load_tensor(w, p + "post_attention_layernorm.weight", {H});
  gate_ = load_panel_linear(w, p + "mlp.gate_proj", H, I, false);
  up_ = load_panel_linear(w, p + "mlp.up_proj", H, I, false);
  down_ = load_panel_linear(w, p + "mlp.down_proj", I, H, false);
}

void PanelLinear::operator()(const float* x, float* y, int64_t M) const {
  if (qw.kind != cpu::WeightQuant::None) return cpu::linear_quant(x, qw, b, y, M, in, out);
  cpu::linear_panels(x, w, b, y, M, in, out);
}

PanelLinear load_panel_linear(const WeightStore& w, const std::string& name, int64_t in, int64_t out, bool bias) {
  PanelLinear l;
  l.in = in;
  l.out = out;
  if (w.has(name + ".weight_scale")) {  // weight-only quantized at export: its own kernels
    const LinearW q = load_linear(w, name, in, out, bias);
    l.qw = q.qw;
    l.b = q.b;
    return l;
  }
  l.w = w.repack(name + ".weight", {out, in}, [&](float* data, int64_t n) {
    const std::vector<float> rows(data, data + n);
    cpu::pack_panels(rows.data(), data, out, in);
  });
  if (bias) l.b = load_tensor(w, name + ".bias", {out});
  return l;
}

void Qwen2Layer::forward(float* x, int64_t T, int64_t pos0, float* k_cache, float* v_cache, const float* rope_cos,
                         const float* rope_sin, Qwen2Scratch& s) const {
  if (T == 0) return;
  MINMO_CHECK(s.rows >= T, ErrorCode::Internal, "Qwen2Layer: scratch holds " << s.rows << " rows, need " << T);
  const Qwen2LayerConfig& c = cfg_;
  const int64_t H = c.hidden, kvd = c.kv_dim();
  const float eps = static_cast<float>(c.eps);
  float* kn = k_cache + pos0 * kvd;
  float* vn = v_cache + pos0 * kvd;

  cpu::rms_norm_rows(x, in_norm_, s.xn.data(), T, H, eps);
  q_(s.xn.data(), s.q.data(), T);
  k_(s.xn.data(), kn, T);  // K and V go straight into the cache
  v_(s.xn.data(), vn, T);
  cpu::rope_apply(s.q.data(), rope_cos, rope_sin, T, c.heads, c.head_dim);
  cpu::rope_apply(kn, rope_cos, rope_sin, T, c.kv_heads, c.head_dim);
  cpu::cached_causal_attention(s.q.data(), k_cache, v_cache, s.attn.data(), T, pos0, c.heads, c.kv_heads, c.head_dim,
                               static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim))));
  o_(s.attn.data(), s.tmp.data(), T);
  cpu::add_rms_norm_rows(s.tmp.data(), x, post_norm_, s.xn.data(), T, H, eps);  // x += attn; xn = norm(x)
  gate_(s.xn.data(), s.gate.data(), T);
  up_(s.xn.data(), s.up.data(), T);
  cpu::silu_mul(s.gate.data(), s.up.data(), s.gate.data(), T * c.intermediate);
  down_(s.gate.data(), s.tmp.data(), T);
  cpu::add_inplace(x, s.tmp.data(), T * H);
}

}  // namespace minmo
