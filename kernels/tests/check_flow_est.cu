// Flow-estimator kernels (minmo_kernels/flow_est.h) against their CPU twins, at CosyVoice2's
// estimator shapes (256 channels, 8 heads of 64, a first chunk of 36 frames per branch over a cache)
// and odd small ones. Outputs start NaN-poisoned; cache rows past the ones a call may read are NaN.
#include "harness.h"

using harness::DevBuf;

namespace {

void im2col_case(int64_t batch, int64_t n, int64_t C, int k) {
  const int64_t ld = (C * k + 1 + 3) / 4 * 4, keep = k - 1;
  auto x = harness::randn(size_t(batch * n * C)), ctx = harness::randn(size_t(std::max<int64_t>(batch * keep * C, 1)));
  std::vector<float> out(size_t(batch * n * ld), NAN), next(ctx.size(), NAN);
  minmo_flow_causal_im2col_f32_cpu(x.data(), ctx.data(), next.data(), out.data(), batch, n, C, k, ld);
  DevBuf<float> dx(x), dc(ctx), dn = DevBuf<float>::poisoned(next.size()), dout = DevBuf<float>::poisoned(out.size());
  const int rc = minmo_flow_causal_im2col_f32(dx.data(), dc.data(), dn.data(), dout.data(), batch, n, C, k, ld, nullptr);
  harness::sync();
  const auto shape = harness::shape_str({{"B", batch}, {"n", n}, {"C", C}, {"k", k}});
  harness::record("flow_causal_im2col_f32", shape, harness::rel_err(dout.host(), out), 0.0, rc);
  if (k > 1) harness::record("flow_causal_im2col_f32 ctx", shape, harness::rel_err(dn.host(), next), 0.0, rc);
}

void norm_case(int64_t rows, int64_t C, int64_t ld, int act, bool post, bool add) {
  auto x = harness::randn(size_t(rows * C), 3.f), g = harness::randn(size_t(C)), b = harness::randn(size_t(C)),
       pb = harness::randn(size_t(C)), ad = harness::randn(size_t(C));
  std::vector<float> xc = x, out(size_t(rows * ld), NAN);
  minmo_flow_norm_act_f32_cpu(xc.data(), g.data(), b.data(), post ? pb.data() : nullptr, add ? ad.data() : nullptr,
                              out.data(), rows, C, ld, 1e-5f, act);
  DevBuf<float> dx(x), dg(g), db(b), dp(pb), da(ad), dout = DevBuf<float>::poisoned(out.size());
  const int rc = minmo_flow_norm_act_f32(dx.data(), dg.data(), db.data(), post ? dp.data() : nullptr,
                                         add ? da.data() : nullptr, dout.data(), rows, C, ld, 1e-5f, act, nullptr);
  harness::sync();
  const auto shape = harness::shape_str({{"rows", rows}, {"C", C}, {"ld", ld}, {"act", act}, {"post", post}, {"add", add}});
  harness::record("flow_norm_act_f32", shape, harness::rel_err(dout.host(), out), 2e-6, rc);
  harness::record("flow_norm_act_f32 residual", shape, harness::rel_err(dx.host(), xc), 1e-7, rc);
}

void attention_case(int64_t batch, int64_t n, int64_t heads, int64_t hd, int64_t m0, int64_t cap) {
  const int64_t inner = heads * hd;
  auto qkv = harness::randn(size_t(batch * n * 3 * inner));
  std::vector<float> kc = harness::randn(size_t(batch * cap * inner)), vc = harness::randn(kc.size());
  for (int64_t b = 0; b < batch; ++b)  // rows >= m0: written (m0 .. m0+n) or never read
    for (int64_t r = m0; r < cap; ++r)
      for (int64_t i = 0; i < inner; ++i) kc[size_t((b * cap + r) * inner + i)] = vc[size_t((b * cap + r) * inner + i)] = NAN;
  const std::vector<int32_t> rows{static_cast<int32_t>(m0)};
  std::vector<float> kcpu = kc, vcpu = vc, out(size_t(batch * n * inner), NAN);
  minmo_flow_attention_f32_cpu(qkv.data(), kcpu.data(), vcpu.data(), out.data(), rows.data(), batch, n, heads, hd, cap,
                               0.125f);
  DevBuf<float> dq(qkv), dk(kc), dv(vc), dout = DevBuf<float>::poisoned(out.size());
  DevBuf<int32_t> dr(rows);
  const int rc = minmo_flow_attention_f32(dq.data(), dk.data(), dv.data(), dout.data(), dr.data(), batch, n, heads, hd,
                                          cap, 0.125f, nullptr);
  harness::sync();
  auto valid = [&](std::vector<float> c) {  // rows < m0 + n of every batch block
    std::vector<float> v;
    for (int64_t b = 0; b < batch; ++b)
      v.insert(v.end(), c.begin() + b * cap * inner, c.begin() + (b * cap + m0 + n) * inner);
    return v;
  };
  const auto shape = harness::shape_str({{"B", batch}, {"n", n}, {"h", heads}, {"d", hd}, {"m0", m0}, {"cap", cap}});
  harness::record("flow_attention_f32", shape, harness::rel_err(dout.host(), out), 2e-6, rc);
  harness::record("flow_attention_f32 k append", shape, harness::rel_err(valid(dk.host()), valid(kcpu)), 0.0, rc);
  harness::record("flow_attention_f32 v append", shape, harness::rel_err(valid(dv.host()), valid(vcpu)), 0.0, rc);
}

void compact_case(int64_t count, int64_t width, int64_t cap, int64_t first, int64_t last, int64_t rows) {
  auto c = harness::randn(size_t(count * cap * width));
  std::vector<float> cpu = c;
  minmo_flow_kv_compact_f32_cpu(cpu.data(), count, cap * width, width, first, last, rows);
  DevBuf<float> dc(c);
  const int rc = minmo_flow_kv_compact_f32(dc.data(), count, cap * width, width, first, last, rows, nullptr);
  harness::sync();
  harness::record("flow_kv_compact_f32",
                  harness::shape_str({{"count", count}, {"w", width}, {"first", first}, {"last", last}, {"rows", rows}}),
                  harness::rel_err(dc.host(), cpu), 0.0, rc);
}

void gelu_case(int64_t n) {
  auto y = harness::randn(size_t(n), 3.f);
  std::vector<float> cpu = y;
  minmo_flow_gelu_f32_cpu(cpu.data(), n);
  DevBuf<float> dy(y);
  const int rc = minmo_flow_gelu_f32(dy.data(), n, nullptr);
  harness::sync();
  harness::record("flow_gelu_f32", harness::shape_str({{"n", n}}), harness::rel_err(dy.host(), cpu), 1e-6, rc);
}

void copy_rows_case(int64_t src_rows, int64_t lds, int64_t rows, int64_t ldd, int64_t cols) {
  auto s = harness::randn(size_t(src_rows * lds)), d = harness::randn(size_t(rows * ldd));
  std::vector<float> cpu = d;
  minmo_flow_copy_rows_f32_cpu(s.data(), lds, src_rows, cpu.data(), ldd, rows, cols);
  DevBuf<float> ds(s), dd(d);
  const int rc = minmo_flow_copy_rows_f32(ds.data(), lds, src_rows, dd.data(), ldd, rows, cols, nullptr);
  harness::sync();
  harness::record("flow_copy_rows_f32",
                  harness::shape_str({{"src_rows", src_rows}, {"rows", rows}, {"cols", cols}, {"ldd", ldd}}),
                  harness::rel_err(dd.host(), cpu), 0.0, rc);
}

}  // namespace

MINMO_CHECK(flow_est) {
  im2col_case(2, 36, 320, 3);
  im2col_case(2, 1, 7, 3);
  im2col_case(1, 13, 5, 1);
  im2col_case(2, 37, 512, 3);
  norm_case(72, 256, 260, MINMO_FLOW_ACT_NONE, true, false);
  norm_case(72, 256, 256, MINMO_FLOW_ACT_MISH, false, true);
  norm_case(3, 37, 41, MINMO_FLOW_ACT_MISH, true, true);
  attention_case(2, 36, 8, 64, 0, 40);
  attention_case(2, 30, 8, 64, 157, 230);
  attention_case(2, 1, 3, 16, 5, 9);
  attention_case(1, 7, 2, 200, 11, 18);
  compact_case(9, 512, 50, 10, 25, 41);
  compact_case(5, 3, 20, 0, 19, 20);
  compact_case(3, 37, 200, 4, 6, 199);
  gelu_case(1);
  gelu_case(72 * 1024 + 3);
  copy_rows_case(36, 80, 72, 320, 80);
  copy_rows_case(5, 9, 5, 14, 7);
  if (!harness::small()) {
    attention_case(2, 300, 8, 64, 450, 800);
    compact_case(2240, 512, 120, 12, 60, 110);
  }
}
