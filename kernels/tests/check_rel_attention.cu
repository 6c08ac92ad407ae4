// Flow-encoder kernels (minmo_kernels/rel_attention.h) against their CPU twins: the relative-position
// attention over a pruned, non-contiguous key list (prompt rows + recent rows, as the flow's
// segment caches hold them) at CosyVoice2's shapes (8 heads of 64) and odd ones, the position
// encoding, strided LayerNorm / SiLU, embedding rows and the upsampling repeat. Outputs are
// poisoned; strided outputs are compared on the columns the kernels write.
#include <algorithm>

#include "harness.h"

using harness::DevBuf;

namespace {

// Columns [0, width) of every row of x [rows, ld].
std::vector<float> cols(const std::vector<float>& x, int64_t rows, int64_t ld, int64_t width) {
  std::vector<float> o;
  for (int64_t r = 0; r < rows; ++r) o.insert(o.end(), x.begin() + r * ld, x.begin() + r * ld + width);
  return o;
}

// rows queries at positions q0.. over keys at the positions held (a prompt of `prompt` rows, then
// `recent` rows ending with the queries), cached at scattered rows of a cache of `cap` rows.
void attention_case(int64_t rows, int64_t prompt, int64_t recent, int heads, int D, int64_t pad) {
  const int64_t w = int64_t{heads} * D, ldq = 3 * w + pad, ldo = w + pad, cap = 2 * (prompt + recent) + 5;
  const int64_t q0 = prompt + 37 + recent - rows;  // a gap of 37 positions after the prompt
  std::vector<int32_t> pos, key_rows;
  for (int64_t j = 0; j < prompt; ++j) pos.push_back(static_cast<int32_t>(j));
  for (int64_t j = 0; j < recent; ++j) pos.push_back(static_cast<int32_t>(q0 + rows - recent + j));
  const int64_t keys = static_cast<int64_t>(pos.size());
  for (int64_t r = 0; r < cap; ++r) key_rows.push_back(static_cast<int32_t>(r));
  std::shuffle(key_rows.begin(), key_rows.end(), harness::rng());  // scattered cache rows
  key_rows.resize(keys);
  // distance table: one run per contiguous run of key positions
  std::vector<int32_t> key_pe(keys);
  int64_t R = 0;
  for (int64_t a = 0; a < keys;) {
    int64_t b = a + 1;
    while (b < keys && pos[b] == pos[b - 1] + 1) ++b;
    const int64_t rmin = q0 - pos[b - 1], rmax = q0 + rows - 1 - pos[a];
    for (int64_t j = a; j < b; ++j) key_pe[j] = static_cast<int32_t>(R + (q0 - pos[j]) - rmin);
    R += rmax - rmin + 1;
    a = b;
  }
  const int64_t ldp = w + 2 * pad;
  auto cache = harness::randn(size_t(cap * ldq)), p = harness::randn(size_t(R * ldp)), bu = harness::randn(size_t(w)),
       bv = harness::randn(size_t(w)), q = harness::randn(size_t(rows * ldq));
  const float scale = 1.f / std::sqrt(float(D));
  std::vector<float> cpu(size_t(rows * ldo), NAN);
  const int rc_cpu = minmo_rel_attention_f32_cpu(q.data(), ldq, cache.data() + w, cache.data() + 2 * w, ldq,
                                                 key_rows.data(), key_pe.data(), keys, p.data(), ldp, bu.data(),
                                                 bv.data(), cpu.data(), ldo, rows, heads, D, scale);
  DevBuf<float> dq(q), dc(cache), dp(p), du(bu), dv(bv), dout = DevBuf<float>::poisoned(size_t(rows * ldo));
  DevBuf<int32_t> dr(key_rows), de(key_pe);
  const int rc = minmo_rel_attention_f32(dq.data(), ldq, dc.data() + w, dc.data() + 2 * w, ldq, dr.data(), de.data(),
                                         keys, dp.data(), ldp, du.data(), dv.data(), dout.data(), ldo, rows, heads, D,
                                         scale, nullptr);
  harness::sync();
  harness::record("rel_attention_f32",
                  harness::shape_str({{"rows", rows}, {"keys", keys}, {"runs", prompt ? 2 : 1}, {"H", heads}, {"D", D}}),
                  harness::rel_err(cols(dout.host(), rows, ldo, w), cols(cpu, rows, ldo, w)), 2e-6,
                  rc_cpu == MINMO_KERNEL_OK ? rc : rc_cpu + 100);
}

void pos_enc_case(int64_t count, int64_t dim) {
  std::vector<int32_t> dist(count);
  for (int64_t i = 0; i < count; ++i) dist[i] = static_cast<int32_t>(i * 13 % 2000) - 700;
  std::vector<float> cpu(size_t(count * dim), NAN);
  minmo_rel_pos_enc_f32_cpu(dist.data(), count, dim, cpu.data());
  DevBuf<int32_t> dd(dist);
  auto dpe = DevBuf<float>::poisoned(cpu.size());
  const int rc = minmo_rel_pos_enc_f32(dd.data(), count, dim, dpe.data(), nullptr);
  harness::sync();
  harness::record("rel_pos_enc_f32", harness::shape_str({{"count", count}, {"dim", dim}}),
                  harness::rel_err(dpe.host(), cpu), 1e-6, rc);
}

void layernorm_case(int64_t rows, int64_t dim, int64_t pad, bool in_place, float scale) {
  const int64_t ldx = dim + (in_place ? pad : 3), ldo = in_place ? ldx : dim + pad;
  auto x = harness::randn(size_t(rows * ldx), 3.f), g = harness::randn(size_t(dim)), b = harness::randn(size_t(dim));
  for (auto& v : x) v += 2.f;  // a non-zero mean
  std::vector<float> cpu = in_place ? x : std::vector<float>(size_t(rows * ldo), NAN);
  minmo_layernorm_f32_cpu(x.data(), ldx, g.data(), b.data(), cpu.data(), ldo, rows, dim, 1e-5f, scale);
  DevBuf<float> dx(x), dg(g), db(b), dout = DevBuf<float>::poisoned(size_t(rows * ldo));
  float* o = in_place ? dx.data() : dout.data();
  const int rc = minmo_layernorm_f32(dx.data(), ldx, dg.data(), db.data(), o, ldo, rows, dim, 1e-5f, scale, nullptr);
  harness::sync();
  const auto got = in_place ? dx.host() : dout.host();
  harness::record("layernorm_f32", harness::shape_str({{"rows", rows}, {"dim", dim}, {"in_place", in_place}}),
                  harness::rel_err(cols(got, rows, ldo, dim), cols(cpu, rows, ldo, dim)), 2e-6, rc);
}

void silu_case(int64_t rows, int64_t n, int64_t ld) {
  auto y = harness::randn(size_t(rows * ld), 4.f);
  std::vector<float> cpu = y;
  minmo_silu_rows_f32_cpu(cpu.data(), rows, n, ld);
  DevBuf<float> dy(y);
  const int rc = minmo_silu_rows_f32(dy.data(), rows, n, ld, nullptr);
  harness::sync();
  harness::record("silu_rows_f32", harness::shape_str({{"rows", rows}, {"n", n}, {"ld", ld}}),
                  harness::rel_err(dy.host(), cpu), 1e-6, rc);  // the padding columns must stay as they were
}

void embedding_case(int64_t rows, int64_t vocab, int64_t dim, int64_t ldo) {
  auto table = harness::randn(size_t(vocab * dim));
  std::vector<int32_t> ids(rows);
  for (int64_t r = 0; r < rows; ++r) ids[r] = static_cast<int32_t>((r * 7919 + 11) % vocab);
  std::vector<float> cpu(size_t(rows * ldo), NAN);
  minmo_embedding_rows_f32_cpu(table.data(), ids.data(), cpu.data(), rows, vocab, dim, ldo);
  DevBuf<float> dt(table), dout = DevBuf<float>::poisoned(cpu.size());
  DevBuf<int32_t> di(ids);
  const int rc = minmo_embedding_rows_f32(dt.data(), di.data(), dout.data(), rows, vocab, dim, ldo, nullptr);
  harness::sync();
  harness::record("embedding_rows_f32", harness::shape_str({{"rows", rows}, {"vocab", vocab}, {"dim", dim}}),
                  harness::rel_err(cols(dout.host(), rows, ldo, dim), cols(cpu, rows, ldo, dim)), 0.0, rc);
}

void repeat_case(int64_t ctx_rows, int64_t rows, int64_t dim, int repeat) {
  auto ctx = harness::randn(size_t(std::max<int64_t>(ctx_rows, 1) * dim)), x = harness::randn(size_t(rows * dim));
  std::vector<float> cpu(size_t(repeat * (ctx_rows + rows) * dim), NAN);
  minmo_repeat_rows_f32_cpu(ctx_rows ? ctx.data() : nullptr, ctx_rows, x.data(), rows, dim, repeat, cpu.data());
  DevBuf<float> dc(ctx), dx(x), dout = DevBuf<float>::poisoned(cpu.size());
  const int rc = minmo_repeat_rows_f32(ctx_rows ? dc.data() : nullptr, ctx_rows, dx.data(), rows, dim, repeat,
                                       dout.data(), nullptr);
  harness::sync();
  harness::record("repeat_rows_f32", harness::shape_str({{"ctx", ctx_rows}, {"rows", rows}, {"dim", dim}, {"x", repeat}}),
                  harness::rel_err(dout.host(), cpu), 0.0, rc);
}

void rejects_bad_arguments() {
  DevBuf<float> a = DevBuf<float>::poisoned(64);
  DevBuf<int32_t> ids(std::vector<int32_t>(4, 0));
  const int rc = minmo_rel_attention_f32(a.data(), 8, a.data(), a.data(), 8, ids.data(), ids.data(), 4, a.data(), 8,
                                         a.data(), a.data(), a.data() + 32, 8, 1, 1, 129, 1.f, nullptr);
  harness::record("rel_attention_f32", "head_dim 129", 0.0, 0.0, rc, MINMO_KERNEL_INVALID_ARGUMENT);
  harness::record("layernorm_f32", "ldo < dim", 0.0, 0.0,
                  minmo_layernorm_f32(a.data(), 8, a.data(), a.data(), a.data() + 32, 4, 2, 8, 1e-5f, 1.f, nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
}

}  // namespace

MINMO_CHECK(rel_attention) {
  attention_case(25, 0, 25, 8, 64, 0);      // first chunk of 25 tokens (encoder blocks)
  attention_case(30, 8, 90, 8, 64, 4);      // up blocks: prompt + left chunks + this one
  attention_case(7, 5, 19, 3, 48, 3);       // odd sizes
  attention_case(1, 0, 1, 2, 16, 1);        // a single key
  attention_case(3, 2, 11, 1, 128, 0);      // the largest head dim
  if (!harness::small()) attention_case(50, 50, 600, 8, 64, 4);
  pos_enc_case(1, 2);
  pos_enc_case(77, 512);
  pos_enc_case(5, 34);
  layernorm_case(25, 512, 4, false, 22.627417f);
  layernorm_case(7, 33, 3, true, 1.f);
  layernorm_case(1, 1, 1, false, 2.f);
  silu_case(13, 2048, 2052);
  silu_case(3, 5, 9);
  embedding_case(28, 6561, 512, 516);
  embedding_case(3, 7, 5, 5);
  repeat_case(2, 25, 512, 2);
  repeat_case(0, 3, 7, 3);
  repeat_case(2, 1, 5, 2);
  rejects_bad_arguments();
}
