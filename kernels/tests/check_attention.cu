// Checks: QKV epilogue (bias + RoPE + KV append), split-K decode attention and chunked-prefill
// attention with GQA, against their CPU twins. Cache slots that the kernels must not read are
// NaN-poisoned; slots they must write start as NaN.
#include <limits>

#include "harness.h"

using harness::DevBuf;

namespace {

const double kTol = 8e-3;
using harness::kNaN;

using harness::Attn;
using harness::cache_with_tail_poison;

std::string attn_shape(const Attn& a, int64_t pos, int64_t tokens, int64_t split = 0) {
  std::string s = harness::shape_str({{"Hq", a.hq}, {"Hkv", a.hkv}, {"D", a.d}, {"S", a.max_seq}, {"pos", pos},
                                      {"T", tokens}});
  if (split) s += " split=" + std::to_string(split);
  return s;
}


void qkv_case(const Attn& a, int64_t tokens, int32_t pos, bool bias, float theta = 1e6f) {  // theta 0: no RoPE
  const int64_t width = (a.hq + 2 * a.hkv) * a.d;
  auto qkv = harness::randn_bf16(size_t(tokens * width));
  auto b = harness::randn_bf16(size_t(width), 0.5f);
  auto kc = harness::randn_bf16(size_t(a.hkv * a.max_seq * a.d)), vc = harness::randn_bf16(kc.size());
  for (int64_t t = 0; t < tokens; ++t) {  // slots to be written start as NaN
    const int64_t p = pos + t;
    if (p < 0 || p >= a.max_seq) continue;
    for (int64_t h = 0; h < a.hkv; ++h)
      for (int64_t i = 0; i < a.d; ++i) kc[size_t((h * a.max_seq + p) * a.d + i)] = vc[size_t((h * a.max_seq + p) * a.d + i)] = kNaN;
  }
  std::vector<uint16_t> q_cpu(size_t(tokens * a.hq * a.d)), kc_cpu = kc, vc_cpu = vc;
  minmo_qkv_rope_append_bf16_cpu(qkv.data(), bias ? b.data() : nullptr, &pos, q_cpu.data(), kc_cpu.data(),
                                 vc_cpu.data(), tokens, a.hq, a.hkv, a.d, a.max_seq, theta);
  DevBuf<uint16_t> dqkv(qkv), db(b), dkc(kc), dvc(vc), dq = DevBuf<uint16_t>::poisoned(q_cpu.size());
  DevBuf<int32_t> dpos(std::vector<int32_t>{pos});
  const int rc = minmo_qkv_rope_append_bf16(dqkv.data(), bias ? db.data() : nullptr, dpos.data(), dq.data(),
                                            dkc.data(), dvc.data(), tokens, a.hq, a.hkv, a.d, a.max_seq, theta,
                                            nullptr);
  harness::sync();
  const double err = std::max({harness::rel_err(dq.host(), q_cpu), harness::rel_err(dkc.host(), kc_cpu),
                               harness::rel_err(dvc.host(), vc_cpu)});
  const std::string name = std::string("qkv_rope_append_bf16") + (bias ? "" : " nobias") + (theta > 0 ? "" : " norope");
  harness::record(name, attn_shape(a, pos, tokens), err,
                  kTol, rc);
}

void decode_case(const Attn& a, int32_t pos, int64_t split) {
  auto q = harness::randn_bf16(size_t(a.hq * a.d));
  auto kc = cache_with_tail_poison(a, int64_t(pos) + 1), vc = cache_with_tail_poison(a, int64_t(pos) + 1);
  std::vector<uint16_t> out_cpu(q.size());
  const float scale = 1.f / std::sqrt(float(a.d));
  minmo_decode_attention_bf16_cpu(q.data(), kc.data(), vc.data(), &pos, out_cpu.data(), nullptr, a.hq, a.hkv, a.d,
                                  a.max_seq, split, scale);
  const int64_t ws = minmo_decode_attention_workspace_floats(a.hq, a.d, a.max_seq, split);
  DevBuf<uint16_t> dq(q), dkc(kc), dvc(vc), dout = DevBuf<uint16_t>::poisoned(q.size());
  DevBuf<float> dws = DevBuf<float>::poisoned(size_t(ws));
  DevBuf<int32_t> dpos(std::vector<int32_t>{pos});
  const int rc = minmo_decode_attention_bf16(dq.data(), dkc.data(), dvc.data(), dpos.data(), dout.data(), dws.data(),
                                             a.hq, a.hkv, a.d, a.max_seq, split, scale, nullptr);
  harness::sync();
  harness::record("decode_attention_bf16", attn_shape(a, pos, 1, split), harness::rel_err(dout.host(), out_cpu),
                  kTol, rc);
}

void prefill_case(const Attn& a, int64_t tokens, int32_t pos) {
  auto q = harness::randn_bf16(size_t(tokens * a.hq * a.d));
  auto kc = cache_with_tail_poison(a, int64_t(pos) + tokens), vc = cache_with_tail_poison(a, int64_t(pos) + tokens);
  std::vector<uint16_t> out_cpu(q.size());
  const float scale = 1.f / std::sqrt(float(a.d));
  minmo_prefill_attention_bf16_cpu(q.data(), kc.data(), vc.data(), &pos, out_cpu.data(), tokens, a.hq, a.hkv, a.d,
                                   a.max_seq, scale);
  DevBuf<uint16_t> dq(q), dkc(kc), dvc(vc), dout = DevBuf<uint16_t>::poisoned(q.size());
  DevBuf<int32_t> dpos(std::vector<int32_t>{pos});
  const int rc = minmo_prefill_attention_bf16(dq.data(), dkc.data(), dvc.data(), dpos.data(), dout.data(), tokens,
                                              a.hq, a.hkv, a.d, a.max_seq, scale, nullptr);
  harness::sync();
  harness::record("prefill_attention_bf16", attn_shape(a, pos, tokens), harness::rel_err(dout.host(), out_cpu), kTol,
                  rc);
}

// Prefill of a prompt in two chunks, then one decode step, all through the CUDA kernels, against
// the CPU twins run the same way (checks that the epilogue and the attention agree on the cache).
void chain_case(const Attn& a, int64_t chunk1, int64_t chunk2) {
  const int64_t width = (a.hq + 2 * a.hkv) * a.d, total = chunk1 + chunk2 + 1;
  auto qkv = harness::randn_bf16(size_t(total * width));
  auto kc = cache_with_tail_poison(a, 0), vc = kc;
  std::vector<uint16_t> kc_cpu = kc, vc_cpu = vc, q_cpu(size_t(total * a.hq * a.d)), o_cpu(q_cpu.size());
  DevBuf<uint16_t> dqkv(qkv), dkc(kc), dvc(vc), dq = DevBuf<uint16_t>::poisoned(q_cpu.size()),
      dout = DevBuf<uint16_t>::poisoned(q_cpu.size());
  const int64_t split = 64, ws = minmo_decode_attention_workspace_floats(a.hq, a.d, a.max_seq, split);
  DevBuf<float> dws = DevBuf<float>::poisoned(size_t(ws));
  const float scale = 1.f / std::sqrt(float(a.d)), theta = 1e4f;
  int rc = MINMO_KERNEL_OK;
  int64_t start = 0;
  for (int64_t len : {chunk1, chunk2, int64_t(1)}) {
    const int32_t pos = int32_t(start);
    DevBuf<int32_t> dpos(std::vector<int32_t>{pos});
    const size_t qoff = size_t(start * a.hq * a.d);
    minmo_qkv_rope_append_bf16_cpu(qkv.data() + start * width, nullptr, &pos, q_cpu.data() + qoff, kc_cpu.data(),
                                   vc_cpu.data(), len, a.hq, a.hkv, a.d, a.max_seq, theta);
    rc |= minmo_qkv_rope_append_bf16(dqkv.data() + start * width, nullptr, dpos.data(), dq.data() + qoff, dkc.data(),
                                     dvc.data(), len, a.hq, a.hkv, a.d, a.max_seq, theta, nullptr);
    minmo_prefill_attention_bf16_cpu(q_cpu.data() + qoff, kc_cpu.data(), vc_cpu.data(), &pos, o_cpu.data() + qoff,
                                     len, a.hq, a.hkv, a.d, a.max_seq, scale);
    if (len == 1)
      rc |= minmo_decode_attention_bf16(dq.data() + qoff, dkc.data(), dvc.data(), dpos.data(), dout.data() + qoff,
                                        dws.data(), a.hq, a.hkv, a.d, a.max_seq, split, scale, nullptr);
    else
      rc |= minmo_prefill_attention_bf16(dq.data() + qoff, dkc.data(), dvc.data(), dpos.data(), dout.data() + qoff,
                                         len, a.hq, a.hkv, a.d, a.max_seq, scale, nullptr);
    harness::sync();
    start += len;
  }
  harness::record("chain prefill+prefill+decode",
                  attn_shape(a, 0, total) + " chunks=" + std::to_string(chunk1) + "," + std::to_string(chunk2),
                  harness::rel_err(dout.host(), o_cpu), kTol, rc);
}

}  // namespace

MINMO_CHECK(attention) {
  const bool sm = harness::small();
  // Qwen2.5-7B (28/4, D 128), voice LM 0.5B (14/2, D 64), odd group counts, MHA, D 192/256,
  // D 32 (minmo-tiny 4/2; 6/1: lanes 16..31 idle in every warp of a 6-warp group).
  const Attn a7b{28, 4, 128, sm ? 80 : 1100}, a05{14, 2, 64, sm ? 70 : 300}, odd{15, 3, 128, 77}, mha{5, 5, 64, 50},
      wide{6, 1, 256, 45}, d192{4, 2, 192, 40}, tiny{4, 2, 32, sm ? 70 : 260}, d32{6, 1, 32, 45};
  for (const Attn& a : {a7b, a05, odd, mha, wide, d192, tiny, d32}) {
    qkv_case(a, 1, 0, true);
    qkv_case(a, 1, int32_t(a.max_seq - 1), true);
    qkv_case(a, 7, 5, false);
    qkv_case(a, 5, int32_t(a.max_seq - 3), true);  // the last two tokens fall outside the cache
    qkv_case(a, 6, 9, true, 0.f);
    for (int64_t split : {32, 64, 256}) {
      decode_case(a, 0, split);
      decode_case(a, int32_t(a.max_seq / 2 + 3), split);
      decode_case(a, int32_t(a.max_seq - 1), split);
    }
    decode_case(a, int32_t(a.max_seq + 5), 64);  // beyond the cache: attends to all of it
    prefill_case(a, 1, 0);
    prefill_case(a, 13, 0);
    prefill_case(a, 9, int32_t(a.max_seq / 3));
    prefill_case(a, 3, int32_t(a.max_seq - 3));
  }
  if (!sm) {
    decode_case(a7b, 1023, 64);
    prefill_case(a7b, 64, 200);
    prefill_case(a05, 128, 37);
    const Attn tiny_long{4, 2, 32, 2048};  // minmo-tiny at a long context: 64 splits of 32 keys
    decode_case(tiny_long, 2047, 32);
    decode_case(tiny_long, 1000, 256);
    prefill_case(tiny_long, 96, 1500);
  }
  chain_case(odd, 19, 33);
  chain_case(a05, 8, 40);
  chain_case(tiny, 21, 34);

  uint16_t* p = reinterpret_cast<uint16_t*>(256);
  int32_t* ip = reinterpret_cast<int32_t*>(512);
  float* wp = reinterpret_cast<float*>(1024);
  harness::record("decode_attention_bf16", "head_dim=96", 0, 0,
                  minmo_decode_attention_bf16(p, p, p, ip, p + 4096, wp, 4, 2, 96, 64, 64, 1.f, nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
  harness::record("prefill_attention_bf16", "head_dim=16", 0, 0,
                  minmo_prefill_attention_bf16(p, p, p, ip, p + 4096, 1, 4, 2, 16, 64, 1.f, nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
  harness::record("decode_attention_bf16", "split=48", 0, 0,
                  minmo_decode_attention_bf16(p, p, p, ip, p + 4096, wp, 4, 2, 64, 64, 48, 1.f, nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
  harness::record("prefill_attention_bf16", "Hq % Hkv != 0", 0, 0,
                  minmo_prefill_attention_bf16(p, p, p, ip, p + 4096, 2, 5, 2, 64, 64, 1.f, nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
  harness::record("qkv_rope_append_bf16", "theta<0", 0, 0,
                  minmo_qkv_rope_append_bf16(p, nullptr, ip, p, p, p, 1, 4, 2, 64, 64, -1.f, nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
}
