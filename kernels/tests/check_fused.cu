// Checks: the fused decode-step kernels against their CPU twins: product + residual + RMSNorm
// (self-resetting last-block counter: eager call, then a CUDA graph replayed twice), product +
// bias + RoPE + KV append, and one-launch decode attention (graph replayed at two positions),
// in every weight format, on vector- and scalar-path shapes with NaN-poisoned outputs.
#include <memory>

#include "harness.h"

using harness::DevBuf;

namespace {

const float kEps = 1e-6f;
using harness::kNaN;

enum class Fmt { kBf16, kInt8, kInt4, kInt4Sym, kFp8 };
const char* fmt_name(Fmt f) {
  switch (f) {
    case Fmt::kBf16: return "bf16";
    case Fmt::kInt8: return "int8";
    case Fmt::kInt4: return "int4";
    case Fmt::kInt4Sym: return "int4sym";
    default: return "fp8";
  }
}

// Random weight [rows, K] in one format, on the host and the device.
struct Weight {
  Fmt f;
  int64_t rows, k, group;
  std::vector<uint16_t> w16, s16;
  std::vector<int8_t> w8;
  std::vector<uint8_t> wu8, zero;
  std::vector<float> s32;
  std::unique_ptr<DevBuf<uint16_t>> dw16, ds16;
  std::unique_ptr<DevBuf<int8_t>> dw8;
  std::unique_ptr<DevBuf<uint8_t>> dwu8, dzero;
  std::unique_ptr<DevBuf<float>> ds32;

  Weight(Fmt fmt, int64_t r, int64_t kk, int64_t g = 32) : f(fmt), rows(r), k(kk), group(g) {
    std::uniform_real_distribution<float> ud(0.002f, 0.02f);
    auto scales = [&](size_t n) {
      std::vector<float> v(n);
      for (auto& x : v) x = ud(harness::rng());
      return v;
    };
    const size_t n = size_t(rows * k);
    if (f == Fmt::kBf16) {
      w16 = harness::randn_bf16(n, 0.05f);
      dw16.reset(new DevBuf<uint16_t>(w16));
    } else if (f == Fmt::kInt8) {
      auto b = harness::rand_bytes(n);
      w8.resize(n);
      for (size_t i = 0; i < n; ++i) w8[i] = static_cast<int8_t>(b[i] == 0x80 ? 0x81 : b[i]);
      s32 = scales(size_t(rows));
      dw8.reset(new DevBuf<int8_t>(w8));
      ds32.reset(new DevBuf<float>(s32));
    } else if (f == Fmt::kFp8) {
      wu8 = harness::rand_bytes(n);
      for (auto& b : wu8)
        if ((b & 0x7f) == 0x7f) b = static_cast<uint8_t>(b - 1);  // no NaN encodings
      s32 = scales(size_t(rows));
      dwu8.reset(new DevBuf<uint8_t>(wu8));
      ds32.reset(new DevBuf<float>(s32));
    } else {
      wu8 = harness::rand_bytes(n / 2);
      s16 = harness::to_bf16(scales(size_t(rows * (k / group))));
      zero = harness::rand_bytes(size_t(rows * (k / group)));
      for (auto& z : zero) z &= 15;
      dwu8.reset(new DevBuf<uint8_t>(wu8));
      ds16.reset(new DevBuf<uint16_t>(s16));
      dzero.reset(new DevBuf<uint8_t>(zero));
    }
  }
  const uint8_t* zero_host() const { return f == Fmt::kInt4 ? zero.data() : nullptr; }
  uint8_t* zero_dev() const { return f == Fmt::kInt4 ? dzero->data() : nullptr; }
};

int norm_gpu(const Weight& w, const uint16_t* x, float* res, const uint16_t* gamma, uint16_t* out, uint32_t* counter,
             int64_t n, cudaStream_t s) {
  switch (w.f) {
    case Fmt::kBf16: return minmo_gemv_norm_bf16(x, w.dw16->data(), res, gamma, out, counter, n, w.k, kEps, s);
    case Fmt::kInt8:
      return minmo_gemv_norm_int8(x, w.dw8->data(), w.ds32->data(), res, gamma, out, counter, n, w.k, kEps, s);
    case Fmt::kFp8:
      return minmo_gemv_norm_fp8(x, w.dwu8->data(), w.ds32->data(), res, gamma, out, counter, n, w.k, kEps, s);
    default:
      return minmo_gemv_norm_int4(x, w.dwu8->data(), w.ds16->data(), w.zero_dev(), res, gamma, out, counter, n, w.k,
                                  w.group, kEps, s);
  }
}

int norm_cpu(const Weight& w, const uint16_t* x, float* res, const uint16_t* gamma, uint16_t* out, int64_t n) {
  switch (w.f) {
    case Fmt::kBf16: return minmo_gemv_norm_bf16_cpu(x, w.w16.data(), res, gamma, out, nullptr, n, w.k, kEps);
    case Fmt::kInt8:
      return minmo_gemv_norm_int8_cpu(x, w.w8.data(), w.s32.data(), res, gamma, out, nullptr, n, w.k, kEps);
    case Fmt::kFp8:
      return minmo_gemv_norm_fp8_cpu(x, w.wu8.data(), w.s32.data(), res, gamma, out, nullptr, n, w.k, kEps);
    default:
      return minmo_gemv_norm_int4_cpu(x, w.wu8.data(), w.s16.data(), w.zero_host(), res, gamma, out, nullptr, n, w.k,
                                      w.group, kEps);
  }
}

struct Qkv {
  int64_t hq, hkv, d, max_seq;
};

int qkv_gpu(const Weight& w, const uint16_t* x, const uint16_t* bias, const int32_t* pos, uint16_t* q, uint16_t* kc,
            uint16_t* vc, const Qkv& a, cudaStream_t s) {
  const float th = 1e6f;
  switch (w.f) {
    case Fmt::kBf16:
      return minmo_gemv_qkv_rope_bf16(x, w.dw16->data(), bias, pos, q, kc, vc, a.hq, a.hkv, a.d, a.max_seq, w.k, th, s);
    case Fmt::kInt8:
      return minmo_gemv_qkv_rope_int8(x, w.dw8->data(), w.ds32->data(), bias, pos, q, kc, vc, a.hq, a.hkv, a.d,
                                      a.max_seq, w.k, th, s);
    case Fmt::kFp8:
      return minmo_gemv_qkv_rope_fp8(x, w.dwu8->data(), w.ds32->data(), bias, pos, q, kc, vc, a.hq, a.hkv, a.d,
                                     a.max_seq, w.k, th, s);
    default:
      return minmo_gemv_qkv_rope_int4(x, w.dwu8->data(), w.ds16->data(), w.zero_dev(), bias, pos, q, kc, vc, a.hq,
                                      a.hkv, a.d, a.max_seq, w.k, w.group, th, s);
  }
}

int qkv_cpu(const Weight& w, const uint16_t* x, const uint16_t* bias, const int32_t* pos, uint16_t* q, uint16_t* kc,
            uint16_t* vc, const Qkv& a) {
  const float th = 1e6f;
  switch (w.f) {
    case Fmt::kBf16:
      return minmo_gemv_qkv_rope_bf16_cpu(x, w.w16.data(), bias, pos, q, kc, vc, a.hq, a.hkv, a.d, a.max_seq, w.k, th);
    case Fmt::kInt8:
      return minmo_gemv_qkv_rope_int8_cpu(x, w.w8.data(), w.s32.data(), bias, pos, q, kc, vc, a.hq, a.hkv, a.d,
                                          a.max_seq, w.k, th);
    case Fmt::kFp8:
      return minmo_gemv_qkv_rope_fp8_cpu(x, w.wu8.data(), w.s32.data(), bias, pos, q, kc, vc, a.hq, a.hkv, a.d,
                                         a.max_seq, w.k, th);
    default:
      return minmo_gemv_qkv_rope_int4_cpu(x, w.wu8.data(), w.s16.data(), w.zero_host(), bias, pos, q, kc, vc, a.hq,
                                          a.hkv, a.d, a.max_seq, w.k, w.group, th);
  }
}

int expected_for(Fmt f) {
  return f == Fmt::kFp8 && !minmo_fp8_supported() ? MINMO_KERNEL_UNSUPPORTED : MINMO_KERNEL_OK;
}

void check_status(cudaError_t e) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "CUDA error: %s\n", cudaGetErrorString(e));
    std::exit(2);
  }
}

uint32_t read_u32(const uint32_t* dev, size_t i = 0) {
  uint32_t v = 0;
  check_status(cudaMemcpy(&v, dev + i, 4, cudaMemcpyDeviceToHost));
  return v;
}

// N outputs, K inputs. One eager call, then a graph of one call replayed twice: the residual
// accumulates three products, and the counter must be back at zero after each.
void norm_case(Fmt f, int64_t n, int64_t k, int64_t misalign = 0, int64_t group = 32) {
  const int expected = expected_for(f);
  Weight w(f, n, k, group);
  auto x = harness::randn_bf16(size_t(k)), gamma = harness::randn_bf16(size_t(n));
  auto res = harness::randn(size_t(n), 4.f);
  std::vector<float> res_cpu = res;
  std::vector<uint16_t> out_cpu(static_cast<size_t>(n));
  DevBuf<uint16_t> dx(x, size_t(misalign)), dg(gamma), dout = DevBuf<uint16_t>::poisoned(size_t(n));
  DevBuf<float> dr(res);
  DevBuf<uint32_t> dcnt(std::vector<uint32_t>{0u});
  std::string shape = harness::shape_str({{"N", n}, {"K", k}});
  if (f == Fmt::kInt4 || f == Fmt::kInt4Sym) shape += " g=" + std::to_string(group);
  if (misalign) shape += " x+1";
  const std::string name = std::string("gemv_norm_") + fmt_name(f);
  int rc = norm_gpu(w, dx.data(), dr.data(), dg.data(), dout.data(), dcnt.data(), n, nullptr);
  harness::sync();
  if (expected != MINMO_KERNEL_OK || rc != MINMO_KERNEL_OK) {
    harness::record(name, shape, 0, 0, rc, expected);
    return;
  }
  norm_cpu(w, x.data(), res_cpu.data(), gamma.data(), out_cpu.data(), n);
  // One error against the bf16 tolerance: the fp32 residual's error counts with tolerance 3e-5.
  double err = std::max(harness::rel_err(dr.host(), res_cpu) * 8e-3 / 3e-5, harness::rel_err(dout.host(), out_cpu));
  const bool counter_ok = read_u32(dcnt.data()) == 0;
  harness::record(name, shape + " eager", counter_ok ? err : INFINITY, 8e-3, rc);

  cudaStream_t s;
  check_status(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaGraph_t g = nullptr;
  cudaGraphExec_t ge = nullptr;
  check_status(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  rc = norm_gpu(w, dx.data(), dr.data(), dg.data(), dout.data(), dcnt.data(), n, s);
  check_status(cudaStreamEndCapture(s, &g));
  check_status(cudaGraphInstantiate(&ge, g, 0));
  double err2 = 0;
  bool counters_ok = true;
  for (int rep = 0; rep < 2; ++rep) {
    check_status(cudaGraphLaunch(ge, s));
    check_status(cudaStreamSynchronize(s));
    counters_ok = counters_ok && read_u32(dcnt.data()) == 0;
    norm_cpu(w, x.data(), res_cpu.data(), gamma.data(), out_cpu.data(), n);
    err2 = std::max({err2, harness::rel_err(dr.host(), res_cpu) * 8e-3 / 3e-5, harness::rel_err(dout.host(), out_cpu)});
  }
  check_status(cudaGraphExecDestroy(ge));
  check_status(cudaGraphDestroy(g));
  check_status(cudaStreamDestroy(s));
  harness::record(name, shape + " graph x2", counters_ok ? err2 : INFINITY, 8e-3, rc);
}

// One token at position pos; cache slots to be written start as NaN, outputs poisoned.
void qkv_case(Fmt f, const Qkv& a, int64_t k, int32_t pos, bool bias, int64_t misalign = 0, int64_t group = 32) {
  const int expected = expected_for(f);
  const int64_t rows = (a.hq + 2 * a.hkv) * a.d;
  Weight w(f, rows, k, group);
  auto x = harness::randn_bf16(size_t(k)), b = harness::randn_bf16(size_t(rows), 0.5f);
  auto kc = harness::randn_bf16(size_t(a.hkv * a.max_seq * a.d)), vc = harness::randn_bf16(kc.size());
  if (pos >= 0 && pos < a.max_seq)
    for (int64_t h = 0; h < a.hkv; ++h)
      for (int64_t i = 0; i < a.d; ++i) kc[size_t((h * a.max_seq + pos) * a.d + i)] = vc[size_t((h * a.max_seq + pos) * a.d + i)] = kNaN;
  std::vector<uint16_t> q_cpu(size_t(a.hq * a.d)), kc_cpu = kc, vc_cpu = vc;
  DevBuf<uint16_t> dx(x, size_t(misalign)), db(b), dkc(kc), dvc(vc), dq = DevBuf<uint16_t>::poisoned(q_cpu.size());
  DevBuf<int32_t> dpos(std::vector<int32_t>{pos});
  std::string shape = harness::shape_str({{"Hq", a.hq}, {"Hkv", a.hkv}, {"D", a.d}, {"S", a.max_seq}, {"K", k},
                                          {"pos", pos}});
  if (!bias) shape += " nobias";
  if (misalign) shape += " x+1";
  const int rc = qkv_gpu(w, dx.data(), bias ? db.data() : nullptr, dpos.data(), dq.data(), dkc.data(), dvc.data(), a,
                         nullptr);
  harness::sync();
  double err = 0;
  if (rc == MINMO_KERNEL_OK && expected == MINMO_KERNEL_OK) {
    qkv_cpu(w, x.data(), bias ? b.data() : nullptr, &pos, q_cpu.data(), kc_cpu.data(), vc_cpu.data(), a);
    err = std::max({harness::rel_err(dq.host(), q_cpu), harness::rel_err(dkc.host(), kc_cpu),
                    harness::rel_err(dvc.host(), vc_cpu)});
  }
  harness::record(std::string("gemv_qkv_rope_") + fmt_name(f), shape, err, 8e-3, rc, expected);
}

using harness::Attn;
using harness::cache_with_tail_poison;


// Captures one launch in a graph and replays it at each position of `positions` (the cache holds
// keys up to the largest; the NaN tail beyond it must not be read), workspace NaN-poisoned.
void decode_fused_case(const Attn& a, std::vector<int32_t> positions, int64_t max_splits) {
  int32_t top = 0;
  for (int32_t p : positions) top = std::max(top, p);
  auto q = harness::randn_bf16(size_t(a.hq * a.d));
  auto kc = cache_with_tail_poison(a, int64_t(top) + 1), vc = cache_with_tail_poison(a, int64_t(top) + 1);
  const float scale = 1.f / std::sqrt(float(a.d));
  const int64_t ws = minmo_decode_attention_fused_workspace_floats(a.hq, a.d, max_splits);
  DevBuf<uint16_t> dq(q), dkc(kc), dvc(vc), dout = DevBuf<uint16_t>::poisoned(q.size());
  DevBuf<float> dws = DevBuf<float>::poisoned(size_t(ws));
  DevBuf<uint32_t> dcnt(std::vector<uint32_t>(size_t(a.hkv), 0u));
  DevBuf<int32_t> dpos(std::vector<int32_t>{positions[0]});
  harness::sync();  // the uploads above ran on the legacy stream; the graph runs on a non-blocking one
  cudaStream_t s;
  check_status(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaGraph_t g = nullptr;
  cudaGraphExec_t ge = nullptr;
  check_status(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  const int rc = minmo_decode_attention_fused_bf16(dq.data(), dkc.data(), dvc.data(), dpos.data(), dout.data(),
                                                   dws.data(), dcnt.data(), a.hq, a.hkv, a.d, a.max_seq, max_splits,
                                                   scale, s);
  check_status(cudaStreamEndCapture(s, &g));
  check_status(cudaGraphInstantiate(&ge, g, 0));
  for (int32_t pos : positions) {
    check_status(cudaMemcpyAsync(dpos.data(), &pos, 4, cudaMemcpyHostToDevice, s));
    check_status(cudaGraphLaunch(ge, s));
    check_status(cudaStreamSynchronize(s));
    std::vector<uint16_t> out_cpu(q.size());
    minmo_decode_attention_fused_bf16_cpu(q.data(), kc.data(), vc.data(), &pos, out_cpu.data(), nullptr, nullptr, a.hq,
                                          a.hkv, a.d, a.max_seq, max_splits, scale);
    bool counters_ok = true;
    for (int64_t h = 0; h < a.hkv; ++h) counters_ok = counters_ok && read_u32(dcnt.data(), size_t(h)) == 0;
    const std::string shape = harness::shape_str({{"Hq", a.hq}, {"Hkv", a.hkv}, {"D", a.d}, {"S", a.max_seq},
                                                  {"pos", pos}, {"splits", max_splits}});
    harness::record("decode_attention_fused_bf16", shape + " graph",
                    counters_ok ? harness::rel_err(dout.host(), out_cpu) : INFINITY, 8e-3, rc);
  }
  check_status(cudaGraphExecDestroy(ge));
  check_status(cudaGraphDestroy(g));
  check_status(cudaStreamDestroy(s));
}

const Fmt kFormats[] = {Fmt::kBf16, Fmt::kInt8, Fmt::kInt4, Fmt::kInt4Sym, Fmt::kFp8};

}  // namespace

MINMO_CHECK(fused_norm) {
  const bool sm = harness::small();
  // {N, K}: K % 32 == 0 takes every format's 128-bit path; N % 4 != 0 the scalar norm tail.
  // {12, 4096} and {40, 2048} split K over 4 and 2 warps (bf16).
  std::vector<std::pair<int64_t, int64_t>> shapes = {{37, 128}, {64, 256}, {5, 64}, {12, 4096}, {40, 2048}};
  if (!sm)
    shapes.insert(shapes.end(), {{896, 896}, {896, 4864}, {3584, 3584}, {3584, 18944}, {1027, 896}, {5000, 512},
                                 {4608, 3584}, {131, 2048}});
  for (Fmt f : kFormats)
    for (const auto& s : shapes) norm_case(f, s.first, s.second);
  // Scalar product path: K not a multiple of the chunk, or misaligned activations.
  norm_case(Fmt::kBf16, 29, 77);
  norm_case(Fmt::kInt8, 31, 200);
  norm_case(Fmt::kFp8, 19, 256, 1);
  norm_case(Fmt::kInt4, 17, 256, 1, 64);
  if (!sm) norm_case(Fmt::kInt4, 300, 4864, 0, 128);

  uint16_t* p = reinterpret_cast<uint16_t*>(256);
  float* r = reinterpret_cast<float*>(1 << 20);
  uint16_t* o = reinterpret_cast<uint16_t*>(1 << 21);
  harness::record("gemv_norm_bf16", "counter=null", 0, 0,
                  minmo_gemv_norm_bf16(p, p, r, p, o, nullptr, 4, 8, kEps, nullptr), MINMO_KERNEL_INVALID_ARGUMENT);
  harness::record("gemv_norm_bf16", "out overlaps x", 0, 0,
                  minmo_gemv_norm_bf16(p, p, r, p, p + 2, reinterpret_cast<uint32_t*>(512), 4, 8, kEps, nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
  harness::record("gemv_norm_int4", "K % group != 0", 0, 0,
                  minmo_gemv_norm_int4(p, reinterpret_cast<uint8_t*>(p), p, nullptr, r, p, o,
                                       reinterpret_cast<uint32_t*>(512), 4, 160, 128, kEps, nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
}

MINMO_CHECK(fused_qkv) {
  const bool sm = harness::small();
  // D 32: minmo-tiny (4/2, K = hidden 128) and a 6/1 group.
  const Qkv a7b{28, 4, 128, sm ? 40 : 300}, a05{14, 2, 64, 50}, odd{3, 1, 64, 9}, d192{4, 2, 192, 20},
      wide{2, 1, 256, 12}, tiny{4, 2, 32, 24}, d32{6, 1, 32, 10};
  for (Fmt f : kFormats) {
    qkv_case(f, odd, 128, 0, true);
    qkv_case(f, odd, 128, 8, false);
    qkv_case(f, odd, 128, 11, true);  // beyond the cache: q only
    qkv_case(f, d192, 256, 7, true);
    qkv_case(f, tiny, 128, 0, true);
    qkv_case(f, tiny, 128, 23, false);
    qkv_case(f, d32, 256, 4, true);
    qkv_case(f, d32, 256, 10, true);  // beyond the cache: q only
    qkv_case(f, a05, sm ? 128 : 896, 33, true);
    qkv_case(f, odd, 4096, 5, true);  // long rows, few pairs: K split over 4 warps (2 for int4)
    if (!sm) {
      qkv_case(f, a7b, 3584, 299, true);
      qkv_case(f, wide, 512, 5, true);
    }
  }
  // Scalar product path.
  qkv_case(Fmt::kBf16, odd, 77, 3, true);
  qkv_case(Fmt::kBf16, tiny, 77, 5, true);
  qkv_case(Fmt::kInt8, d32, 200, 9, false);
  qkv_case(Fmt::kInt8, wide, 200, 4, true);
  qkv_case(Fmt::kInt4, odd, 256, 2, true, 1, 64);
  qkv_case(Fmt::kFp8, a05, 256, 1, false, 1);

  uint16_t* p = reinterpret_cast<uint16_t*>(256);
  int32_t* ip = reinterpret_cast<int32_t*>(512);
  harness::record("gemv_qkv_rope_bf16", "head_dim=96", 0, 0,
                  minmo_gemv_qkv_rope_bf16(p, p, nullptr, ip, p + 8192, p, p, 2, 1, 96, 8, 64, 1e4f, nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
  harness::record("gemv_qkv_rope_bf16", "theta=0", 0, 0,
                  minmo_gemv_qkv_rope_bf16(p, p, nullptr, ip, p + 8192, p, p, 2, 1, 64, 8, 64, 0.f, nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
}

MINMO_CHECK(fused_attention) {
  const bool sm = harness::small();
  // Qwen2.5-7B (28/4, D 128), voice LM (14/2, D 64), odd group, MHA, D 256 / 192, D 32 (minmo-tiny
  // 4/2 and a 6/1 group).
  const Attn a7b{28, 4, 128, sm ? 100 : 4200}, a05{14, 2, 64, sm ? 70 : 600}, odd{15, 3, 128, 77}, mha{5, 5, 64, 50},
      wide{6, 1, 256, 45}, d192{4, 2, 192, 40}, tiny{4, 2, 32, sm ? 70 : 300}, d32{6, 1, 32, 45};
  for (const Attn& a : {a05, odd, mha, wide, d192, tiny, d32}) {
    const int32_t mid = int32_t(a.max_seq / 2 + 3), last = int32_t(a.max_seq - 1), beyond = int32_t(a.max_seq + 5);
    if (sm) {  // also run under compute-sanitizer memcheck and racecheck: fewer launches
      for (int64_t splits : {1, 3}) decode_fused_case(a, {0, 32, mid, beyond}, splits);
    } else {
      for (int64_t splits : {1, 3, 8}) decode_fused_case(a, {0, 31, 32, mid, last, beyond}, splits);
    }
  }
  if (sm) {
    decode_fused_case(a7b, {0, 40, 99}, 4);
  } else {
    decode_fused_case(a7b, {128, 1024, 4096, 31, 0}, 66);
    decode_fused_case(a7b, {127, 1025, 4199}, 33);
    decode_fused_case(a7b, {4199}, 1);
    decode_fused_case(a05, {256, 270, 511}, 264);
    decode_fused_case(tiny, {299, 100, 0}, 10);
  }
  uint16_t* p = reinterpret_cast<uint16_t*>(256);
  int32_t* ip = reinterpret_cast<int32_t*>(512);
  float* wp = reinterpret_cast<float*>(1024);
  uint32_t* cp = reinterpret_cast<uint32_t*>(2048);
  harness::record("decode_attention_fused_bf16", "D=256 G=32 (shared memory)", 0, 0,
                  minmo_decode_attention_fused_bf16(p, p, p, ip, p + 65536, wp, cp, 32, 1, 256, 64, 4, 1.f, nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
  harness::record("decode_attention_fused_bf16", "max_splits=0", 0, 0,
                  minmo_decode_attention_fused_bf16(p, p, p, ip, p + 65536, wp, cp, 4, 2, 64, 64, 0, 1.f, nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
  harness::record("decode_attention_fused_bf16", "counters=null", 0, 0,
                  minmo_decode_attention_fused_bf16(p, p, p, ip, p + 65536, wp, nullptr, 4, 2, 64, 64, 4, 1.f, nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
}
