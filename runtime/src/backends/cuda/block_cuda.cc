#include "backends/cuda/block_cuda.h"

#include <cmath>
#include <cstring>

#include "modules/audio_common.h"

namespace minmo {
namespace cuda {

DeviceBlock DeviceBlock::load(Uploads& up, const WeightStore& w, const std::string& p, const BlockNames& n, int64_t d,
                              int64_t ffn) {
  DeviceBlock B;
  auto norm = [&](const std::string& name, size_t* g, size_t* b) {
    const NormW nw = load_norm(w, p + name, d);
    *g = up.add_bf16(nw.g, d);
    *b = up.add_bf16(nw.b, d);
  };
  norm(n.ln1, &B.ln1_g, &B.ln1_b);
  norm(n.ln2, &B.ln2_g, &B.ln2_b);
  const LinearW q = load_linear(w, p + n.q, d, d), k = load_linear(w, p + n.k, d, d, n.k_bias);
  const LinearW v = load_linear(w, p + n.v, d, d), out = load_linear(w, p + n.out, d, d);
  const LinearW fc1 = load_linear(w, p + n.fc1, d, ffn), fc2 = load_linear(w, p + n.fc2, ffn, d);
  B.qkv = stack_linears(up, {q, k, v}, p + "{" + n.q + "," + n.k + "," + n.v + "}");
  const bool k_bias = n.k_bias;
  B.qkv_bias = up.add(sizeof(minmo_bf16) * 3 * d, [q, k, v, d, k_bias](uint8_t* dst) {
    to_bf16(q.b, d, dst);
    if (k_bias) to_bf16(k.b, d, dst + 2 * d);
    else std::memset(dst + 2 * d, 0, 2 * d);
    to_bf16(v.b, d, dst + 4 * d);
  });
  B.out = stack_linears(up, {out}, p + n.out);
  B.out_bias = up.add_bf16(out.b, d);
  B.fc1 = stack_linears(up, {fc1}, p + n.fc1);
  B.fc1_bias = up.add_bf16(fc1.b, ffn);
  B.fc2 = stack_linears(up, {fc2}, p + n.fc2);
  B.fc2_bias = up.add_bf16(fc2.b, d);
  return B;
}

void BlockScratch::place(Arena& arena, int64_t C, int64_t d, int64_t ffn) {
  for (minmo_bf16** p : {&hn, &q, &attn, &o}) arena.place(p, C * d);
  arena.place(&qkv, 3 * C * d);
  arena.place(&f, C * ffn);
}

void enqueue_biased_product(const Stream& st, const Arena& weights, const DeviceLinear& l, size_t bias,
                            const minmo_bf16* x, minmo_bf16* y, int64_t rows, int act, float* residual) {
  linear_product(st, weights, l, x, y, rows, false);
  const minmo_bf16* b = weights.at<minmo_bf16>(bias);
  if (residual) MINMO_DEVICE_CALL(st, bias_residual_bf16, y, b, residual, rows, l.n);
  else MINMO_DEVICE_CALL(st, bias_act_bf16, y, b, rows, l.n, act);
}

void enqueue_block_attention(const Stream& st, const Arena& weights, const DeviceBlock& B, const BlockShape& s,
                             const BlockScratch& b, const int32_t* pos, minmo_bf16* k_cache, minmo_bf16* v_cache,
                             float* x, int64_t rows) {
  const int64_t d = s.d, H = s.heads, D = s.head_dim();
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  auto w = [&weights](size_t off) { return weights.at<minmo_bf16>(off); };
  MINMO_DEVICE_CALL(st, layernorm_residual_bf16, nullptr, x, w(B.ln1_g), w(B.ln1_b), b.hn, rows, d, s.eps);
  linear_product(st, weights, B.qkv, b.hn, b.qkv, rows, false);
  MINMO_DEVICE_CALL(st, qkv_rope_append_bf16, b.qkv, w(B.qkv_bias), pos, b.q, k_cache, v_cache, rows, H, H, D,
                    s.max_seq, s.theta);
  MINMO_DEVICE_CALL(st, window_attention_bf16, b.q, k_cache, v_cache, pos, pos + 1, b.attn, rows, H, H, D, s.max_seq,
                    scale);
  enqueue_biased_product(st, weights, B.out, B.out_bias, b.attn, b.o, rows, MINMO_ACT_NONE, x);
}

void enqueue_block_ffn(const Stream& st, const Arena& weights, const DeviceBlock& B, const BlockShape& s,
                       const BlockScratch& b, float* x, int64_t rows) {
  MINMO_DEVICE_CALL(st, layernorm_residual_bf16, nullptr, x, weights.at<minmo_bf16>(B.ln2_g),
                    weights.at<minmo_bf16>(B.ln2_b), b.hn, rows, s.d, s.eps);
  enqueue_biased_product(st, weights, B.fc1, B.fc1_bias, b.hn, b.f, rows, s.act);
  enqueue_biased_product(st, weights, B.fc2, B.fc2_bias, b.f, b.o, rows, MINMO_ACT_NONE, x);
}

}  // namespace cuda
}  // namespace minmo
