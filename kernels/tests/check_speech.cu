// Checks: the speech-path kernels (FSMN + attention, voice-decoder sampling, flow Euler + CFG,
// HiFT iSTFT and cross-fade) against their CPU twins, on fresh random inputs of odd sizes with
// poisoned outputs.
#include <algorithm>

#include "harness.h"

using harness::DevBuf;

namespace {

void fsmn_case(int64_t frames, int64_t dim, int64_t kernel, int64_t left_pad, int64_t chunk, bool with_attn) {
  const size_t n = size_t(frames * dim);
  auto v = harness::randn(n), attn = harness::randn(n), w = harness::randn(size_t(dim * kernel), 0.3f);
  std::vector<float> out_cpu(n, NAN);
  minmo_fsmn_attn_f32_cpu(v.data(), with_attn ? attn.data() : nullptr, w.data(), out_cpu.data(), frames, dim, kernel,
                          left_pad, chunk);
  DevBuf<float> dv(v), da(attn), dw(w), dout = DevBuf<float>::poisoned(n);
  const int rc = minmo_fsmn_attn_f32(dv.data(), with_attn ? da.data() : nullptr, dw.data(), dout.data(), frames, dim,
                                     kernel, left_pad, chunk, nullptr);
  harness::sync();
  harness::record("fsmn_attn_f32",
                  harness::shape_str({{"T", frames}, {"D", dim}, {"K", kernel}, {"left", left_pad}, {"chunk", chunk},
                                      {"attn", with_attn}}),
                  harness::rel_err(dout.host(), out_cpu), 1e-5, rc);
}

MINMO_CHECK(fsmn_attn) {
  fsmn_case(1, 1, 1, 0, 0, true);
  fsmn_case(37, 129, 11, 5, 0, true);
  fsmn_case(37, 129, 11, 3, 0, false);
  fsmn_case(53, 67, 15, 7, 8, true);
  if (!harness::small()) {
    fsmn_case(61, 512, 11, 6, 6, true);
    fsmn_case(301, 1280, 15, 7, 0, true);
    fsmn_case(70001, 3, 11, 5, 8, true);  // more frames than one grid dimension holds
  }
  DevBuf<float> d(std::vector<float>(64, 0.f));
  harness::record("fsmn_attn_f32", "left_pad >= K", 0, 0,
                  minmo_fsmn_attn_f32(d.data(), nullptr, d.data() + 16, d.data() + 32, 2, 4, 3, 3, 0, nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
}

void flow_case(int64_t n, bool with_next) {
  auto x = harness::randn(size_t(n)), est = harness::randn(size_t(2 * n));
  std::vector<float> x_cpu = x, next_cpu(size_t(2 * n), NAN);
  minmo_flow_euler_cfg_f32_cpu(x_cpu.data(), est.data(), with_next ? next_cpu.data() : nullptr, n, 0.7f, 0.1f);
  DevBuf<float> dx(x), de(est), dn = DevBuf<float>::poisoned(size_t(2 * n));
  const int rc = minmo_flow_euler_cfg_f32(dx.data(), de.data(), with_next ? dn.data() : nullptr, n, 0.7f, 0.1f, nullptr);
  harness::sync();
  double err = harness::rel_err(dx.host(), x_cpu);
  if (with_next) err = std::max(err, harness::rel_err(dn.host(), next_cpu));
  harness::record("flow_euler_cfg_f32", harness::shape_str({{"n", n}, {"next_in", with_next}}), err, 1e-6, rc);
}

MINMO_CHECK(flow_euler_cfg) {
  flow_case(1, true);
  flow_case(7, false);
  flow_case(80 * 193, true);
  if (!harness::small()) flow_case(100003, true);
}

void istft_case(int64_t frames, int n_fft, int hop, float limit) {
  const int64_t len = hop * (frames - 1);
  auto spec = harness::randn(size_t((n_fft + 2) * frames), 1.5f);
  spec[0] = 9.f;  // magnitude clip
  std::vector<float> out_cpu(size_t(len), NAN);
  minmo_hift_istft_f32_cpu(spec.data(), out_cpu.data(), frames, n_fft, hop, limit);
  DevBuf<float> ds(spec), dout = DevBuf<float>::poisoned(size_t(len));
  const int rc = minmo_hift_istft_f32(ds.data(), dout.data(), frames, n_fft, hop, limit, nullptr);
  harness::sync();
  harness::record("hift_istft_f32",
                  harness::shape_str({{"frames", frames}, {"n_fft", n_fft}, {"hop", hop}, {"clamp", limit > 0}}),
                  harness::rel_err(dout.host(), out_cpu), 2e-5, rc);
}

void crossfade_case(int64_t overlap) {
  auto chunk = harness::randn(size_t(overlap + 17)), tail = harness::randn(size_t(overlap));
  std::vector<float> cpu = chunk;
  minmo_hamming_crossfade_f32_cpu(cpu.data(), tail.data(), overlap);
  DevBuf<float> dc(chunk), dt(tail);
  const int rc = minmo_hamming_crossfade_f32(dc.data(), dt.data(), overlap, nullptr);
  harness::sync();
  harness::record("hamming_crossfade_f32", harness::shape_str({{"overlap", overlap}}),
                  harness::rel_err(dc.host(), cpu), 1e-6, rc);
}

MINMO_CHECK(hift_istft) {
  istft_case(2, 16, 4, 0.99f);
  istft_case(97, 16, 4, 0.99f);
  istft_case(45, 8, 2, 0.f);
  istft_case(33, 32, 8, 0.5f);
  if (!harness::small()) istft_case(961, 16, 4, 0.f);
  crossfade_case(1);
  crossfade_case(5);
  crossfade_case(3840);
}

// Tokens of the kernel and the twin over many random draws; err = fraction that differ.
void sampling_case(int64_t vocab, int trials) {
  std::uniform_int_distribution<int> tok(0, int(vocab) - 1), len(0, 20);
  std::uniform_real_distribution<float> unit(0.f, 1.f);
  int mismatches = 0, rc_all = MINMO_KERNEL_OK;
  DevBuf<int32_t> dtok = DevBuf<int32_t>::poisoned(1);
  for (int t = 0; t < trials; ++t) {
    auto logits = harness::randn(size_t(vocab), 0.5f + 3.f * unit(harness::rng()));
    std::vector<int32_t> history(size_t(len(harness::rng())));
    for (auto& h : history) h = tok(harness::rng());
    if (t % 2) {  // likely tokens in the history so that RAS fires
      const int32_t best = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
      history.push_back(best);
    }
    std::vector<int32_t> forbid = {tok(harness::rng()), tok(harness::rng()), int32_t(vocab + 5)};
    minmo_sampling_params p;
    p.top_k = (t % 3 == 0) ? 1 : (t % 3 == 1 ? 25 : 64);
    p.top_p = (t % 4 == 0) ? 1.f : 0.8f;
    p.temperature = (t % 5 == 0) ? 0.7f : 1.f;
    p.ras_window = 10;
    p.ras_tau = 0.1f;
    p.force_id = (t == 7) ? int32_t(vocab - 1) : -1;
    p.seed = 1234;
    p.counter = uint64_t(t);
    int32_t cpu_tok = -7;
    minmo_sample_ras_f32_cpu(logits.data(), vocab, history.data(), int64_t(history.size()), forbid.data(),
                             int64_t(forbid.size()), p, &cpu_tok);
    DevBuf<float> dl(logits);
    DevBuf<int32_t> dh(history.empty() ? std::vector<int32_t>{0} : history), df(forbid);
    const int rc = minmo_sample_ras_f32(dl.data(), vocab, dh.data(), int64_t(history.size()), df.data(),
                                        int64_t(forbid.size()), p, dtok.data(), nullptr);
    harness::sync();
    if (rc != MINMO_KERNEL_OK) rc_all = rc;
    mismatches += dtok.host()[0] != cpu_tok;
  }
  harness::record("sample_ras_f32", harness::shape_str({{"vocab", vocab}, {"trials", trials}}),
                  double(mismatches) / trials, 0.0, rc_all);
}

MINMO_CHECK(sample_ras) {
  sampling_case(41, 100);
  sampling_case(6564, harness::small() ? 20 : 300);
  if (!harness::small()) sampling_case(151936, 20);
  // everything forbidden -> -1
  std::vector<float> logits = {0.f, 1.f, 2.f};
  std::vector<int32_t> forbid = {0, 1, 2};
  DevBuf<float> dl(logits);
  DevBuf<int32_t> df(forbid), dtok = DevBuf<int32_t>::poisoned(1);
  minmo_sampling_params p{25, 0.8f, 1.f, 10, 0.1f, -1, 1, 0};
  const int rc = minmo_sample_ras_f32(dl.data(), 3, nullptr, 0, df.data(), 3, p, dtok.data(), nullptr);
  harness::sync();
  harness::record("sample_ras_f32", "all forbidden -> -1", dtok.host()[0] == -1 ? 0.0 : 1.0, 0.0, rc);
}

// The loop sampler: `steps` draws in a row, state and history ring carried on the device and in the
// twin, logits around a common profile (tokens repeat, so RAS redraws happen). err = fraction of
// draws whose token, generator state, history count or position differ.
template <typename L>
void ras_loop_case(const char* name, int64_t vocab, int64_t n_allowed, int steps, minmo_ras_params p, bool bf16) {
  const int64_t cap = p.win_size + 5;
  auto base = harness::randn(size_t(vocab), 3.f);
  std::vector<int32_t> ring_cpu(size_t(cap), -3);
  minmo_ras_state st_cpu{0x1234567890abcdefull + uint64_t(vocab), 0};
  int32_t pos_cpu = 17;
  DevBuf<int32_t> dring(ring_cpu), dpos(std::vector<int32_t>{pos_cpu}), dtok = DevBuf<int32_t>::poisoned(1);
  DevBuf<uint64_t> dst(std::vector<uint64_t>{st_cpu.rng, 0});
  auto* st_dev = reinterpret_cast<minmo_ras_state*>(dst.data());
  int bad = 0, rc_all = MINMO_KERNEL_OK;
  for (int t = 0; t < steps; ++t) {
    auto noise = harness::randn(size_t(vocab), 1.f);
    std::vector<float> row(static_cast<size_t>(vocab));
    for (size_t i = 0; i < row.size(); ++i) row[i] = base[i] + noise[i];
    if (t == steps - 1) row[size_t(n_allowed / 2)] = NAN;  // the last draw: a non-finite logit -> -1
    std::vector<L> logits(row.size());
    if constexpr (sizeof(L) == 2) logits = harness::to_bf16(row);
    else logits = row;
    int32_t tok_cpu = -7;
    const int rc_cpu = bf16 ? minmo_sample_ras_loop_bf16_cpu(reinterpret_cast<const minmo_bf16*>(logits.data()),
                                                            n_allowed, ring_cpu.data(), cap, &st_cpu, &pos_cpu, p,
                                                            &tok_cpu)
                            : minmo_sample_ras_loop_f32_cpu(reinterpret_cast<const float*>(logits.data()), n_allowed,
                                                           ring_cpu.data(), cap, &st_cpu, &pos_cpu, p, &tok_cpu);
    DevBuf<L> dl(logits);
    const int rc = bf16 ? minmo_sample_ras_loop_bf16(reinterpret_cast<const minmo_bf16*>(dl.data()), n_allowed,
                                                     dring.data(), cap, st_dev, dpos.data(), p, dtok.data(), nullptr)
                        : minmo_sample_ras_loop_f32(reinterpret_cast<const float*>(dl.data()), n_allowed, dring.data(),
                                                    cap, st_dev, dpos.data(), p, dtok.data(), nullptr);
    harness::sync();
    if (rc != MINMO_KERNEL_OK) rc_all = rc;
    if (rc_cpu != MINMO_KERNEL_OK) rc_all = rc_cpu;
    const auto st = dst.host();
    bad += dtok.host()[0] != tok_cpu || st[0] != st_cpu.rng || int64_t(st[1]) != st_cpu.n_history ||
           dpos.host()[0] != pos_cpu;
  }
  bad += dring.host() != ring_cpu;
  harness::record(name, harness::shape_str({{"vocab", vocab}, {"allowed", n_allowed}, {"steps", steps},
                                            {"top_k", p.top_k}, {"win", p.win_size}}),
                  double(bad) / steps, 0.0, rc_all);
}

MINMO_CHECK(sample_ras_loop) {
  const minmo_ras_params cosy{25, 10, 0.8, 0.1};
  ras_loop_case<minmo_bf16>("sample_ras_loop_bf16", 6564, 6561, harness::small() ? 8 : 200, cosy, true);
  ras_loop_case<float>("sample_ras_loop_f32", 6564, 6561, harness::small() ? 8 : 100, cosy, false);
  ras_loop_case<float>("sample_ras_loop_f32", 5, 3, 40, minmo_ras_params{1, 3, 1.0, 0.5}, false);
  ras_loop_case<minmo_bf16>("sample_ras_loop_bf16", 4099, 4097, 40, minmo_ras_params{64, 1, 0.95, 0.0}, true);
  if (!harness::small()) ras_loop_case<float>("sample_ras_loop_f32", 151936, 151936, 10, cosy, false);
  DevBuf<float> dl(std::vector<float>(8, 0.f));
  DevBuf<int32_t> dh(std::vector<int32_t>(4, 0)), dtok = DevBuf<int32_t>::poisoned(1);
  DevBuf<uint64_t> dst(std::vector<uint64_t>{1, 0});
  auto* st = reinterpret_cast<minmo_ras_state*>(dst.data());
  harness::record("sample_ras_loop_f32", "history ring < window", 0, 0,
                  minmo_sample_ras_loop_f32(dl.data(), 8, dh.data(), 4, st, nullptr, cosy, dtok.data(), nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
  harness::record("sample_ras_loop_f32", "top_k 65", 0, 0,
                  minmo_sample_ras_loop_f32(dl.data(), 8, dh.data(), 4, st, nullptr, minmo_ras_params{65, 2, 0.8, 0.1},
                                            dtok.data(), nullptr),
                  MINMO_KERNEL_INVALID_ARGUMENT);
}

MINMO_CHECK(embedding_row) {
  for (int64_t dim : {int64_t(1), int64_t(129), int64_t(896), int64_t(3584)}) {
    const int64_t rows = 37;
    auto table = harness::randn(size_t(rows * dim));
    DevBuf<float> dt(table);
    for (int32_t id : {0, 36, 17, -1, 37}) {
      std::vector<float> cpu(size_t(dim), NAN);
      minmo_embedding_row_f32_cpu(table.data(), rows, dim, &id, cpu.data());
      DevBuf<int32_t> did(std::vector<int32_t>{id});
      DevBuf<float> dout = DevBuf<float>::poisoned(size_t(dim));
      const int rc = minmo_embedding_row_f32(dt.data(), rows, dim, did.data(), dout.data(), nullptr);
      harness::sync();
      const auto got = dout.host();
      harness::record("embedding_row_f32", harness::shape_str({{"dim", dim}, {"id", id}}),
                      got == cpu ? 0.0 : 1.0, 0.0, rc);
    }
  }
}

}  // namespace
