#include "backends/cuda/qwen2_layer_cuda.h"

#include <cmath>
#include <sstream>

#include "common/args.h"

namespace minmo {
namespace cuda {

Qwen2DeviceLayer Qwen2DeviceLayer::load(Uploads& up, const WeightStore& w, const std::string& p,
                                        const Qwen2LayerConfig& c, std::set<std::string>* formats) {
  const int64_t H = c.hidden, I = c.intermediate, D = c.head_dim, Hq = c.heads, Hkv = c.kv_heads;
  const LinearW q = load_linear(w, p + "self_attn.q_proj", H, Hq * D);
  const LinearW k = load_linear(w, p + "self_attn.k_proj", H, Hkv * D);
  const LinearW v = load_linear(w, p + "self_attn.v_proj", H, Hkv * D);
  Qwen2DeviceLayer L;
  L.in_norm = up.add_bf16(load_tensor(w, p + "input_layernorm.weight", {H}), H);
  L.post_norm = up.add_bf16(load_tensor(w, p + "post_attention_layernorm.weight", {H}), H);
  const int64_t qkv_n = (Hq + 2 * Hkv) * D;
  L.qkv_bias = up.add(sizeof(minmo_bf16) * qkv_n, [q, k, v, Hq, Hkv, D](uint8_t* dst) {
    to_bf16(q.b, Hq * D, dst);
    to_bf16(k.b, Hkv * D, dst + 2 * Hq * D);
    to_bf16(v.b, Hkv * D, dst + 2 * (Hq + Hkv) * D);
  });
  L.qkv = stack_linears(up, {q, k, v}, p + "self_attn.{q,k,v}_proj");
  L.o = stack_linears(up, {load_linear(w, p + "self_attn.o_proj", Hq * D, H, false)}, p + "self_attn.o_proj");
  L.gate_up = stack_linears(up, {load_linear(w, p + "mlp.gate_proj", H, I, false),
                                 load_linear(w, p + "mlp.up_proj", H, I, false)},
                            p + "mlp.{gate,up}_proj");
  L.down = stack_linears(up, {load_linear(w, p + "mlp.down_proj", I, H, false)}, p + "mlp.down_proj");
  if (formats)
    for (const DeviceLinear* l : {&L.qkv, &L.o, &L.gate_up, &L.down}) formats->insert(l->format());
  return L;
}

std::string qwen2_layer_unsupported(const Qwen2LayerConfig& c) {
  if (minmo_args::attention_ok(1, c.heads, c.kv_heads, c.head_dim, 1)) return "";
  std::ostringstream os;
  os << c.heads << " query heads, " << c.kv_heads << " KV heads of dimension " << c.head_dim
     << " are not run by the CUDA attention kernels (kernels/include/minmo_kernels/attention.h)";
  return os.str();
}

void enqueue_qwen2_layer(const Stream& d, const Arena& w, const Qwen2DeviceLayer& L, const Qwen2LayerConfig& c,
                         const Qwen2LayerBuffers& b, minmo_bf16* kc, minmo_bf16* vc, int64_t cap,
                         const minmo_bf16* prev_down, int64_t rows, const Gemm* gemm) {
  const int64_t H = c.hidden, D = c.head_dim, Hq = c.heads, Hkv = c.kv_heads;
  const float eps = static_cast<float>(c.eps), theta = static_cast<float>(c.rope_theta);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  auto bf16 = [&w](size_t offset) { return w.at<minmo_bf16>(offset); };
  auto product = [&](const DeviceLinear& l, const minmo_bf16* x, minmo_bf16* y, bool gated) {
    linear_product(d, w, l, x, y, rows, gated, gemm, b.gate_up);
  };
  MINMO_DEVICE_CALL(d, rmsnorm_residual_bf16, prev_down, b.resid, bf16(L.in_norm), b.hn, rows, H, eps);
  product(L.qkv, b.hn, b.qkv, false);
  MINMO_DEVICE_CALL(d, qkv_rope_append_bf16, b.qkv, bf16(L.qkv_bias), b.pos, b.q, kc, vc, rows, Hq, Hkv, D, cap, theta);
  if (rows == 1)
    MINMO_DEVICE_CALL(d, decode_attention_bf16, b.q, kc, vc, b.pos, b.attn, b.ws, Hq, Hkv, D, cap, kQwen2SplitSize,
                      scale);
  else
    MINMO_DEVICE_CALL(d, prefill_attention_bf16, b.q, kc, vc, b.pos, b.attn, rows, Hq, Hkv, D, cap, scale);
  product(L.o, b.attn, b.o, false);
  MINMO_DEVICE_CALL(d, rmsnorm_residual_bf16, b.o, b.resid, bf16(L.post_norm), b.hn, rows, H, eps);
  product(L.gate_up, b.hn, b.act, true);
  product(L.down, b.act, b.down, false);
}

}  // namespace cuda
}  // namespace minmo
