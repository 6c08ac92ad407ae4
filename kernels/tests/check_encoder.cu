// Checks: the speech encoder's kernels against their CPU twins: residual + LayerNorm (bias), the
// bias / activation and bias + residual epilogues, window (chunk) attention over the KV cache, and
// the im2col of the front Conv1d(k=3, s=2, p=1). Outputs start NaN-poisoned; cache slots outside
// the attended window are NaN (no kernel may read them).
#include "harness.h"

using harness::DevBuf;

namespace {

const double kTolBf16 = 8e-3, kTolF32 = 1e-6;

void layernorm_case(int64_t rows, int64_t dim, bool with_x, bool with_beta) {
  const size_t n = size_t(rows * dim);
  auto x = harness::randn_bf16(n), gamma = harness::randn_bf16(size_t(dim)), beta = harness::randn_bf16(size_t(dim));
  auto res = harness::randn(n, 4.f);
  for (auto& v : res) v += 2.f;  // a row mean far from zero
  std::vector<float> res_cpu = res;
  std::vector<uint16_t> out_cpu(n);
  const float eps = 1e-5f;
  const int rc_cpu = minmo_layernorm_residual_bf16_cpu(with_x ? x.data() : nullptr, res_cpu.data(), gamma.data(),
                                                       with_beta ? beta.data() : nullptr, out_cpu.data(), rows, dim,
                                                       eps);
  DevBuf<uint16_t> dx(x), dg(gamma), db(beta), dout = DevBuf<uint16_t>::poisoned(n);
  DevBuf<float> dr(res);
  const int rc = minmo_layernorm_residual_bf16(with_x ? dx.data() : nullptr, dr.data(), dg.data(),
                                               with_beta ? db.data() : nullptr, dout.data(), rows, dim, eps, nullptr);
  harness::sync();
  // The residual add is the same fp32 addition in both (its error is 0 unless a kernel is wrong).
  const double err = std::max(harness::rel_err(dr.host(), res_cpu), harness::rel_err(dout.host(), out_cpu));
  harness::record("layernorm_residual_bf16",
                  harness::shape_str({{"rows", rows}, {"dim", dim}, {"x", with_x}, {"beta", with_beta}}), err,
                  kTolBf16, rc | rc_cpu);
}

// out aliasing x (allowed): the encoder normalises in place.
void layernorm_in_place_case(int64_t rows, int64_t dim) {
  const size_t n = size_t(rows * dim);
  auto x = harness::randn_bf16(n), gamma = harness::randn_bf16(size_t(dim)), beta = harness::randn_bf16(size_t(dim));
  auto res = harness::randn(n);
  std::vector<float> res_cpu = res;
  std::vector<uint16_t> x_cpu = x;
  minmo_layernorm_residual_bf16_cpu(x_cpu.data(), res_cpu.data(), gamma.data(), beta.data(), x_cpu.data(), rows, dim,
                                    1e-6f);
  DevBuf<uint16_t> dx(x), dg(gamma), db(beta);
  DevBuf<float> dr(res);
  const int rc = minmo_layernorm_residual_bf16(dx.data(), dr.data(), dg.data(), db.data(), dx.data(), rows, dim, 1e-6f,
                                               nullptr);
  harness::sync();
  harness::record("layernorm_residual_bf16", harness::shape_str({{"rows", rows}, {"dim", dim}}) + " out=x",
                  harness::rel_err(dx.host(), x_cpu), kTolBf16, rc);
}

const char* act_name(int act) { return act == MINMO_ACT_GELU ? "gelu" : act == MINMO_ACT_RELU ? "relu" : "none"; }

void bias_act_case(int64_t rows, int64_t n, int act, bool with_bias) {
  auto y = harness::randn_bf16(size_t(rows * n), 2.f), bias = harness::randn_bf16(size_t(n));
  std::vector<uint16_t> y_cpu = y;
  const int rc_cpu = minmo_bias_act_bf16_cpu(y_cpu.data(), with_bias ? bias.data() : nullptr, rows, n, act);
  DevBuf<uint16_t> dy(y), db(bias);
  const int rc = minmo_bias_act_bf16(dy.data(), with_bias ? db.data() : nullptr, rows, n, act, nullptr);
  harness::sync();
  harness::record(std::string("bias_act_bf16 ") + act_name(act),
                  harness::shape_str({{"rows", rows}, {"n", n}, {"bias", with_bias}}),
                  harness::rel_err(dy.host(), y_cpu), kTolBf16, rc | rc_cpu);
}

void bias_residual_case(int64_t rows, int64_t n, bool with_bias) {
  auto y = harness::randn_bf16(size_t(rows * n)), bias = harness::randn_bf16(size_t(n));
  auto res = harness::randn(size_t(rows * n), 3.f);
  std::vector<float> res_cpu = res;
  const int rc_cpu = minmo_bias_residual_bf16_cpu(y.data(), with_bias ? bias.data() : nullptr, res_cpu.data(), rows, n);
  DevBuf<uint16_t> dy(y), db(bias);
  DevBuf<float> dr(res);
  const int rc = minmo_bias_residual_bf16(dy.data(), with_bias ? db.data() : nullptr, dr.data(), rows, n, nullptr);
  harness::sync();
  harness::record("bias_residual_bf16", harness::shape_str({{"rows", rows}, {"n", n}, {"bias", with_bias}}),
                  harness::rel_err(dr.host(), res_cpu), kTolF32, rc | rc_cpu);
}

// fp32 -> bf16: the same bits as the CPU twin (round to nearest even).
void f32_to_bf16_case(int64_t n) {
  auto x = harness::randn(size_t(n), 50.f);
  std::vector<uint16_t> y_cpu(static_cast<size_t>(n));
  const int rc_cpu = minmo_f32_to_bf16_cpu(x.data(), y_cpu.data(), n);
  DevBuf<float> dx(x);
  DevBuf<uint16_t> dy(std::vector<uint16_t>(static_cast<size_t>(n), 0));
  const int rc = minmo_f32_to_bf16(dx.data(), dy.data(), n, nullptr);
  harness::sync();
  harness::record("f32_to_bf16", harness::shape_str({{"n", n}}), harness::rel_err(dy.host(), y_cpu), 0.f, rc | rc_cpu);
}

// Window attention: T tokens at p0, keys [max(lo, 0), min(p0 + T, max_seq)); cache rows outside
// the window are NaN.
void window_case(const harness::Attn& a, int64_t tokens, int32_t pos, int32_t lo) {
  auto q = harness::randn_bf16(size_t(tokens * a.hq * a.d));
  const int64_t end = std::min<int64_t>(int64_t(pos) + tokens, a.max_seq), begin = std::max<int32_t>(lo, 0);
  auto kc = harness::cache_with_tail_poison(a, end), vc = harness::cache_with_tail_poison(a, end);
  for (int64_t h = 0; h < a.hkv; ++h)
    for (int64_t p = 0; p < std::min(begin, a.max_seq); ++p)
      for (int64_t i = 0; i < a.d; ++i)
        kc[size_t((h * a.max_seq + p) * a.d + i)] = vc[size_t((h * a.max_seq + p) * a.d + i)] = harness::kNaN;
  std::vector<uint16_t> out_cpu(q.size());
  const float scale = 1.f / std::sqrt(float(a.d));
  const int rc_cpu = minmo_window_attention_bf16_cpu(q.data(), kc.data(), vc.data(), &pos, &lo, out_cpu.data(), tokens,
                                                     a.hq, a.hkv, a.d, a.max_seq, scale);
  DevBuf<uint16_t> dq(q), dkc(kc), dvc(vc), dout = DevBuf<uint16_t>::poisoned(q.size());
  DevBuf<int32_t> dpos(std::vector<int32_t>{pos}), dlo(std::vector<int32_t>{lo});
  const int rc = minmo_window_attention_bf16(dq.data(), dkc.data(), dvc.data(), dpos.data(), dlo.data(), dout.data(),
                                             tokens, a.hq, a.hkv, a.d, a.max_seq, scale, nullptr);
  harness::sync();
  const auto got = dout.host();
  double err = harness::rel_err(got, out_cpu);
  if (begin >= end)  // empty window: exact zeros (rel_err of zeros against zeros is 0 anyway)
    for (uint16_t v : got) err = v == 0 ? err : INFINITY;
  harness::record("window_attention_bf16",
                  harness::shape_str({{"Hq", a.hq}, {"Hkv", a.hkv}, {"D", a.d}, {"S", a.max_seq}, {"pos", pos},
                                      {"T", tokens}, {"lo", lo}}),
                  err, kTolBf16, rc | rc_cpu);
}

// The chunked encoder's attention through the CUDA kernels: each chunk's q|k|v goes through the
// QKV epilogue (RoPE at the absolute position, appended to the cache), then window attention over
// the chunk and `left` chunks before it; against the twins run the same way.
void window_chain_case(const harness::Attn& a, int64_t chunk, int64_t left, int64_t frames, float theta = 1e4f) {
  const int64_t width = (a.hq + 2 * a.hkv) * a.d;
  auto qkv = harness::randn_bf16(size_t(frames * width));
  auto kc = harness::cache_with_tail_poison(a, 0), vc = kc;
  std::vector<uint16_t> kc_cpu = kc, vc_cpu = vc, q_cpu(size_t(frames * a.hq * a.d)), o_cpu(q_cpu.size());
  DevBuf<uint16_t> dqkv(qkv), dkc(kc), dvc(vc), dq = DevBuf<uint16_t>::poisoned(q_cpu.size()),
                                                dout = DevBuf<uint16_t>::poisoned(q_cpu.size());
  const float scale = 1.f / std::sqrt(float(a.d));
  int rc = MINMO_KERNEL_OK;
  for (int64_t start = 0; start < frames; start += chunk) {
    const int64_t len = std::min(chunk, frames - start);
    const int32_t pos = int32_t(start), lo = int32_t((start / chunk - left) * chunk);
    DevBuf<int32_t> dpos(std::vector<int32_t>{pos}), dlo(std::vector<int32_t>{lo});
    const size_t qoff = size_t(start * a.hq * a.d);
    rc |= minmo_qkv_rope_append_bf16_cpu(qkv.data() + start * width, nullptr, &pos, q_cpu.data() + qoff,
                                         kc_cpu.data(), vc_cpu.data(), len, a.hq, a.hkv, a.d, a.max_seq, theta);
    rc |= minmo_window_attention_bf16_cpu(q_cpu.data() + qoff, kc_cpu.data(), vc_cpu.data(), &pos, &lo,
                                          o_cpu.data() + qoff, len, a.hq, a.hkv, a.d, a.max_seq, scale);
    rc |= minmo_qkv_rope_append_bf16(dqkv.data() + start * width, nullptr, dpos.data(), dq.data() + qoff, dkc.data(),
                                     dvc.data(), len, a.hq, a.hkv, a.d, a.max_seq, theta, nullptr);
    rc |= minmo_window_attention_bf16(dq.data() + qoff, dkc.data(), dvc.data(), dpos.data(), dlo.data(),
                                      dout.data() + qoff, len, a.hq, a.hkv, a.d, a.max_seq, scale, nullptr);
    harness::sync();
  }
  harness::record("chain qkv_rope+window",
                  harness::shape_str({{"Hq", a.hq}, {"Hkv", a.hkv}, {"D", a.d}, {"frames", frames}, {"chunk", chunk},
                                      {"left", left}, {"rope", theta > 0 ? 1 : 0}}),
                  harness::rel_err(dout.host(), o_cpu), kTolBf16, rc);
}

// im2col of output rows [t_out0, t_out0 + n_out) from x holding input rows [t_in0, t_in0 + n_in);
// n_in < 0: exactly the rows the outputs read.
void im2col_case(int64_t total_in, int64_t channels, int64_t t_out0, int64_t n_out, int64_t t_in0 = -1,
                 int64_t n_in = -1) {
  if (n_in < 0) {
    t_in0 = std::max<int64_t>(2 * t_out0 - 1, 0);
    n_in = std::min(2 * (t_out0 + n_out), total_in) - t_in0;
  }
  auto x = harness::randn_bf16(size_t(n_in * channels));
  std::vector<uint16_t> out_cpu(size_t(n_out * 3 * channels), harness::kNaN);
  const int rc_cpu =
      minmo_im2col_k3s2_bf16_cpu(x.data(), out_cpu.data(), t_out0, n_out, t_in0, n_in, channels, total_in);
  DevBuf<uint16_t> dx(x), dout = DevBuf<uint16_t>::poisoned(out_cpu.size());
  const int rc =
      minmo_im2col_k3s2_bf16(dx.data(), dout.data(), t_out0, n_out, t_in0, n_in, channels, total_in, nullptr);
  harness::sync();
  // A copy: must match bit for bit (rel_err also fails on a NaN left in the output).
  const auto got = dout.host();
  double err = harness::rel_err(got, out_cpu);
  if (got != out_cpu) err = INFINITY;
  harness::record("im2col_k3s2_bf16",
                  harness::shape_str({{"total", total_in}, {"C", channels}, {"t_out0", t_out0}, {"n_out", n_out},
                                      {"t_in0", t_in0}, {"n_in", n_in}}),
                  err, 0.0, rc | rc_cpu);
}

}  // namespace

MINMO_CHECK(encoder_norm_epilogues) {
  const bool sm = harness::small();
  std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 3}, {2, 64}, {3, 1000}, {1, 1280}};
  if (!sm)
    shapes = {{1, 3}, {2, 64}, {3, 1000}, {1, 1280}, {5, 1280}, {8, 1280}, {7, 80}, {4, 5120}, {64, 1280},
              {2, 20001}};
  for (const auto& s : shapes) {
    layernorm_case(s.first, s.second, true, true);
    layernorm_case(s.first, s.second, false, true);
  }
  layernorm_case(3, 257, true, false);
  layernorm_in_place_case(4, 1280);
  for (int act : {MINMO_ACT_NONE, MINMO_ACT_GELU, MINMO_ACT_RELU})
    for (const auto& s : shapes) {
      bias_act_case(s.first, s.second, act, true);
      if (s.second == 1000) bias_act_case(s.first, s.second, act, false);
    }
  if (!sm) bias_act_case(300, 5120, MINMO_ACT_GELU, true);  // more rows than row slices per column block
  for (const auto& s : shapes) bias_residual_case(s.first, s.second, true);
  bias_residual_case(3, 1000, false);
  if (!sm) bias_residual_case(300, 1280, true);
  for (int64_t n : {1, 1000, 64 * 896}) f32_to_bf16_case(n);

  uint16_t* p = reinterpret_cast<uint16_t*>(256);
  float* r = reinterpret_cast<float*>(4096);
  harness::record("layernorm_residual_bf16", "out overlaps residual", 0, 0,
                  minmo_layernorm_residual_bf16(nullptr, r, p, nullptr, reinterpret_cast<uint16_t*>(r) + 2, 1, 64,
                                                1e-5f, nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
  harness::record("layernorm_residual_bf16", "dim=0", 0, 0,
                  minmo_layernorm_residual_bf16(nullptr, r, p, nullptr, p + 64, 1, 0, 1e-5f, nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
  harness::record("bias_act_bf16", "act=3", 0, 0, minmo_bias_act_bf16(p, nullptr, 1, 64, 3, nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
  harness::record("bias_act_bf16", "bias inside y", 0, 0, minmo_bias_act_bf16(p, p + 64, 2, 64, 1, nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
  harness::record("bias_residual_bf16", "null residual", 0, 0,
                  minmo_bias_residual_bf16(p, nullptr, nullptr, 1, 64, nullptr), MINMO_KERNEL_INVALID_ARGUMENT);
  harness::record("bias_residual_bf16", "y overlaps residual", 0, 0,
                  minmo_bias_residual_bf16(reinterpret_cast<uint16_t*>(r) + 8, nullptr, r, 1, 64, nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
  harness::record("f32_to_bf16", "y inside x", 0, 0, minmo_f32_to_bf16(r, reinterpret_cast<uint16_t*>(r) + 4, 8, nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
}

MINMO_CHECK(encoder_window_attention) {
  const bool sm = harness::small();
  // SenseVoice-Large (20 heads of 64, MHA), GQA groups 1 and 4, head dims 32 / 64 / 128; MinMo's input
  // projector (8 heads of 448) and another wide head (320, GQA 2).
  const harness::Attn enc{20, 20, 64, sm ? 48 : 400}, g4{8, 2, 64, 72}, d32{4, 1, 32, 60}, d128{8, 2, 128, 50},
      mha128{3, 3, 128, 33}, proj{8, 8, 448, 60}, d320{4, 2, 320, 41};
  for (const harness::Attn& a : {enc, g4, d32, d128, mha128, proj, d320}) {
    window_case(a, 8, 0, 0);                                         // first chunk: lo = 0
    window_case(a, 8, 16, 0);                                        // lo = 0 with earlier chunks
    const int32_t mid = int32_t(std::min<int64_t>(40, a.max_seq - 8));
    window_case(a, 8, mid, std::max(mid - 32, 8));                    // lo > 0
    window_case(a, 8, int32_t(a.max_seq - 4), int32_t(a.max_seq - 36));  // clipped by max_seq
    window_case(a, 5, 3, -16);                                       // lo < 0 clamps to 0; odd T
    window_case(a, 1, int32_t(a.max_seq / 2), int32_t(a.max_seq / 2));  // a single key
    window_case(a, 3, 10, 13);                                       // empty: lo >= p0 + T
    window_case(a, 4, -9, 0);                                        // empty: chunk before the cache
  }
  if (!sm) {
    window_case(enc, 8, 320, 288);  // 5 chunks of 8 at a long stream position
    window_case(enc, 37, 100, 40);
    window_case(g4, 64, 0, 0);
  }
  window_chain_case(sm ? harness::Attn{4, 4, 64, 48} : enc, 8, 4, sm ? 43 : 203);
  window_chain_case(harness::Attn{8, 2, 32, 61}, 8, 2, 61);
  window_chain_case(harness::Attn{8, 8, 448, 40}, 4, 4, 39, 0.f);  // the projector's: chunks of 4 tokens, no RoPE

  uint16_t* p = reinterpret_cast<uint16_t*>(256);
  int32_t* ip = reinterpret_cast<int32_t*>(512);
  harness::record("window_attention_bf16", "lo=null", 0, 0,
                  minmo_window_attention_bf16(p, p, p, ip, nullptr, p + 4096, 1, 4, 2, 64, 64, 1.f, nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
  harness::record("window_attention_bf16", "head_dim=48", 0, 0,
                  minmo_window_attention_bf16(p, p, p, ip, ip, p + 4096, 1, 4, 2, 48, 64, 1.f, nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
  harness::record("window_attention_bf16", "Hq % Hkv != 0", 0, 0,
                  minmo_window_attention_bf16(p, p, p, ip, ip, p + 4096, 1, 5, 2, 64, 64, 1.f, nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
  harness::record("window_attention_bf16", "out overlaps q", 0, 0,
                  minmo_window_attention_bf16(p, p + 8192, p + 8192, ip, ip, p + 64, 2, 4, 2, 64, 64, 1.f, nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
  harness::record("window_attention_bf16", "q misaligned", 0, 0,
                  minmo_window_attention_bf16(p + 1, p + 8192, p + 8192, ip, ip, p + 4096, 1, 4, 2, 64, 64, 1.f,
                                              nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
}

MINMO_CHECK(encoder_im2col) {
  const bool sm = harness::small();
  // Offline: all outputs of an input (odd and even lengths, the 128 mel bins of conv1, d_model).
  for (int64_t total : {1, 2, 3, 8, 17}) im2col_case(total, 3, 0, (total + 1) / 2);
  im2col_case(33, 128, 0, 17);
  im2col_case(sm ? 20 : 200, sm ? 64 : 1280, 0, sm ? 10 : 100);
  // Chunked: t_out0 > 0 from exactly the rows read, from a wider window, the last output (right pad).
  im2col_case(41, 80, 5, 7);
  im2col_case(41, 80, 5, 7, 3, 27);
  im2col_case(41, 80, 20, 1);
  im2col_case(40, 1000, 12, 8);
  if (!sm) im2col_case(1000, 1280, 123, 200, 200, 700);

  uint16_t* p = reinterpret_cast<uint16_t*>(256);
  harness::record("im2col_k3s2_bf16", "row 5 not in x", 0, 0,
                  minmo_im2col_k3s2_bf16(p, p + 4096, 3, 1, 6, 4, 4, 20, nullptr), MINMO_KERNEL_INVALID_ARGUMENT);
  harness::record("im2col_k3s2_bf16", "output past the end", 0, 0,
                  minmo_im2col_k3s2_bf16(p, p + 4096, 0, 6, 0, 10, 4, 10, nullptr), MINMO_KERNEL_INVALID_ARGUMENT);
  harness::record("im2col_k3s2_bf16", "out overlaps x", 0, 0,
                  minmo_im2col_k3s2_bf16(p, p + 8, 0, 2, 0, 10, 4, 10, nullptr), MINMO_KERNEL_INVALID_ARGUMENT);
  harness::record("im2col_k3s2_bf16", "channels=0", 0, 0,
                  minmo_im2col_k3s2_bf16(p, p + 4096, 0, 2, 0, 10, 0, 10, nullptr), MINMO_KERNEL_INVALID_ARGUMENT);
}
