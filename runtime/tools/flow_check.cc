// `minmo_cuda_check flow`: the CosyVoice2 flow (encoder, estimator + Euler / guidance loop) on a
// device (backends/cuda/flow_encoder_cuda.h, flow_cuda.h) at CosyVoice2 size (FlowConfig's defaults) with random weights,
// checked against the CPU flow and timed.
//
//   minmo_cuda_check flow [--device cuda|cuda-sim] [--size cosyvoice2|small] [--chunk 15] [--left 4]
//                         [--runs 20] [--no-check] [--json OUT]
// Timed (FlowModel::segment: host tokens in, mel out, synchronised; the states reserved as
// Token2WavStream does, so the encoder runs on the device too and mu stays there; a CUDA graph from
// the second time a segment length is seen):
//   - first chunk: a new utterance's first segment, --chunk tokens plus the 3 lookahead tokens, as
//     Token2WavStream runs it (states are pooled, so from the third utterance its graph replays);
//   - steady chunk: chunks of a long utterance once the caches hold --left chunks (their size no
//     longer changes);
//   - the CPU encoder alone on the first chunk (what the device encoder replaces).
// Also the kernel / product launches of one segment. Exit status 1 when the device mel of the first
// chunk or of a steady chunk differs from the CPU's by more than 1e-4 (relative L2; fp32 on both).
#include <algorithm>
#include <cmath>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/backend.h"
#include "backends/cuda/flow_cuda.h"
#include "core/safetensors.h"
#include "modules/flow.h"
#include "tools/tools.h"

namespace minmo {
namespace tools {

namespace {

float init_std(int64_t fan_in) { return 1.f / std::sqrt(3.f * static_cast<float>(fan_in)); }

}  // namespace

WeightStore random_flow(const FlowConfig& c) {
  RandomTensors r("random flow weights", 3000);
  const int64_t d = c.d_model, mel = c.mel_dim, ch = c.est_channels, tdim = 4 * ch, cin = 4 * mel;
  const int64_t inner = c.est_heads * c.est_head_dim;
  auto linear = [&](const std::string& n, int64_t in, int64_t out, bool bias = true) {
    r.add(n + ".weight", {out, in}, 0.f, init_std(in));
    if (bias) r.add(n + ".bias", {out}, 0.f, init_std(in));
  };
  auto conv = [&](const std::string& n, int64_t ci, int64_t co, int64_t k) {
    r.add(n + ".weight", {co, ci, k}, 0.f, init_std(ci * k));
    r.add(n + ".bias", {co}, 0.f, init_std(ci * k));
  };
  auto norm = [&](const std::string& n, int64_t dim) {
    r.add(n + ".weight", {dim}, 1.f, 0.1f);
    r.add(n + ".bias", {dim}, 0.f, 0.1f);
  };
  r.add("input_embedding.weight", {c.vocab_size, d}, 0.f, 1.f);
  linear("spk_embed_affine_layer", c.spk_dim, mel);
  linear("encoder.embed.out.0", d, d);
  norm("encoder.embed.out.1", d);
  conv("encoder.pre_lookahead_layer.conv1", d, d, c.pre_lookahead + 1);
  conv("encoder.pre_lookahead_layer.conv2", d, d, 3);
  auto conformer = [&](const std::string& p) {
    norm(p + ".norm_mha", d);
    norm(p + ".norm_ff", d);
    for (const char* l : {"linear_q", "linear_k", "linear_v", "linear_out"}) linear(p + ".self_attn." + l, d, d);
    linear(p + ".self_attn.linear_pos", d, d, false);
    r.add(p + ".self_attn.pos_bias_u", {c.n_heads, d / c.n_heads}, 0.f, 0.1f);
    r.add(p + ".self_attn.pos_bias_v", {c.n_heads, d / c.n_heads}, 0.f, 0.1f);
    linear(p + ".feed_forward.w_1", d, c.ffn_dim);
    linear(p + ".feed_forward.w_2", c.ffn_dim, d);
  };
  for (int64_t i = 0; i < c.n_blocks; ++i) conformer("encoder.encoders." + std::to_string(i));
  conv("encoder.up_layer.conv", d, d, 5);
  linear("encoder.up_embed.out.0", d, d);
  norm("encoder.up_embed.out.1", d);
  for (int64_t i = 0; i < c.n_up_blocks; ++i) conformer("encoder.up_encoders." + std::to_string(i));
  norm("encoder.after_norm", d);
  linear("encoder_proj", d, mel);
  const std::string e = "decoder.estimator.";
  auto resnet = [&](const std::string& p, int64_t ci) {
    conv(p + ".block1.block.0", ci, ch, 3);
    norm(p + ".block1.block.2", ch);
    conv(p + ".block2.block.0", ch, ch, 3);
    norm(p + ".block2.block.2", ch);
    conv(p + ".res_conv", ci, ch, 1);
    linear(p + ".mlp.1", tdim, ch);
  };
  auto blocks = [&](const std::string& p) {
    for (int64_t i = 0; i < c.n_transformer; ++i) {
      const std::string q = p + "." + std::to_string(i);
      norm(q + ".norm1", ch);
      norm(q + ".norm3", ch);
      for (const char* l : {"to_q", "to_k", "to_v"}) linear(q + ".attn1." + l, ch, inner, false);
      linear(q + ".attn1.to_out.0", inner, ch);
      linear(q + ".ff.net.0.proj", ch, 4 * ch);
      linear(q + ".ff.net.2", 4 * ch, ch);
    }
  };
  resnet(e + "down_blocks.0.0", cin);
  blocks(e + "down_blocks.0.1");
  conv(e + "down_blocks.0.2", ch, ch, 3);
  for (int64_t i = 0; i < c.n_mid_blocks; ++i) {
    resnet(e + "mid_blocks." + std::to_string(i) + ".0", ch);
    blocks(e + "mid_blocks." + std::to_string(i) + ".1");
  }
  resnet(e + "up_blocks.0.0", 2 * ch);
  blocks(e + "up_blocks.0.1");
  conv(e + "up_blocks.0.2", ch, ch, 3);
  conv(e + "final_block.block.0", ch, ch, 3);
  norm(e + "final_block.block.2", ch);
  conv(e + "final_proj", ch, mel, 1);
  linear(e + "time_mlp.linear_1", cin, tdim);
  linear(e + "time_mlp.linear_2", tdim, tdim);
  return r.store();
}

namespace {

double rel(const Tensor& a, const Tensor& b) { return rel_err(a, b); }

}  // namespace

int flow_check(int argc, char** argv) {
  std::string device = "cuda", json_out, size = "cosyvoice2";
  int64_t chunk = 15, left = 4, runs = 20;
  bool check = true;
  Args args(argc, argv);
  while (args.more()) {
    const std::string a = args.flag();
    if (a == "--device") device = args.value(a);
    else if (a == "--size") size = args.value(a);
    else if (a == "--chunk") chunk = std::stoll(args.value(a));
    else if (a == "--left") left = std::stoll(args.value(a));
    else if (a == "--runs") runs = std::stoll(args.value(a));
    else if (a == "--json") json_out = args.value(a);
    else if (a == "--no-check") check = false;
    else MINMO_THROW(ErrorCode::InvalidArgument, "unknown argument " << a << " (see tools/flow_check.cc)");
  }
  MINMO_CHECK(chunk >= 1 && left >= 0 && runs >= 1, ErrorCode::InvalidArgument,
              "--chunk and --runs must be >= 1, --left >= 0");
  MINMO_CHECK(size == "cosyvoice2" || size == "small", ErrorCode::InvalidArgument, "--size must be cosyvoice2 or small");
  const auto dev = open_device(device);
  MINMO_CHECK(dev != nullptr, ErrorCode::InvalidArgument, "--device must be cuda or cuda-sim");
  nlohmann::json config = nlohmann::json::object();  // FlowConfig's defaults: CosyVoice2
  if (size == "small")
    config = {{"vocab_size", 97},  {"d_model", 64},        {"n_heads", 4},       {"ffn_dim", 96},
              {"n_blocks", 2},     {"n_up_blocks", 2},     {"est_channels", 64}, {"est_heads", 2},
              {"est_head_dim", 32}, {"n_transformer", 2}, {"n_mid_blocks", 2},  {"n_timesteps", 4}};
  const FlowConfig cfg = FlowConfig::from_json(config);
  const WeightStore weights = random_flow(cfg);
  double t0 = now_ms();
  const auto gpu = FlowModel::load(weights, config, dev);
  const double upload_s = (now_ms() - t0) / 1e3;
  MINMO_CHECK(gpu->device() == dev->name(), ErrorCode::Internal, "flow did not load on " << dev->name());
  const auto cpu = FlowModel::load(weights, config);

  const int64_t L = cfg.pre_lookahead, steady_at = left + 2;  // chunk index whose caches are full
  const int64_t n_chunks = steady_at + runs + 2, T = n_chunks * chunk + L;
  std::vector<int64_t> tokens(T);
  for (int64_t i = 0; i < T; ++i) tokens[i] = static_cast<int64_t>((i * 2654435761ULL + 17) % cfg.vocab_size);
  Tensor spk_t({cfg.spk_dim});
  fill_random(spk_t, 11, 0.f, 1.f);
  const std::vector<float> spk(spk_t.data);
  const uint64_t seed = 5;
  auto seg = [&](const FlowModel& m, FlowState& st, int64_t k) {
    return m.segment(st, tokens.data() + k * chunk, chunk, tokens.data() + (k + 1) * chunk, L, nullptr, seed);
  };

  nlohmann::json report = {{"device", device},  {"device_info", dev->description()}, {"size", size},
                           {"chunk_tokens", chunk}, {"frames_per_chunk", 2 * chunk}, {"left_chunks", left},
                           {"lookahead", L},     {"n_timesteps", cfg.n_timesteps},   {"upload_s", upload_s}};
  int rc = 0;
  // first chunk of a new utterance (pooled states: the graph of its length replays from run 3)
  std::vector<double> first_ms;
  std::string report_encoder;
  Tensor first_dev;
  int64_t launches = 0;
  for (int64_t i = 0; i < runs + 2; ++i) {
    FlowState st = gpu->new_state(spk, false, left);
    gpu->reserve(st, chunk, (left + 1) * chunk);  // as Token2WavStream does
    const double a = now_ms();
    first_dev = seg(*gpu, st, 0);
    if (i >= 2) first_ms.push_back(now_ms() - a);
    if (i == 0) {
      launches = st.gpu->launches_per_segment();
      report_encoder = gpu->encoder_device(st);
    }
  }
  std::vector<double> enc_ms;
  for (int64_t i = 0; i < std::min<int64_t>(runs, 10); ++i) {
    FlowState st = cpu->new_state(spk, false, left);
    const double a = now_ms();
    cpu->encode_segment(st, tokens.data(), chunk, tokens.data() + chunk, L);
    enc_ms.push_back(now_ms() - a);
  }
  // steady chunks of one long utterance
  std::vector<double> steady_ms;
  Tensor steady_dev;
  {
    FlowState st = gpu->new_state(spk, false, left);
    gpu->reserve(st, chunk, (left + 1) * chunk);
    for (int64_t k = 0; k < n_chunks; ++k) {
      const double a = now_ms();
      Tensor m = seg(*gpu, st, k);
      if (k >= steady_at) steady_ms.push_back(now_ms() - a);
      if (k == steady_at) steady_dev = m;
    }
    report["cache_rows_steady"] = st.gpu->cache_rows();
    report["graphs_captured"] = st.gpu->graphs();
  }
  report["encoder_device"] = report_encoder;
  report["launches_per_chunk"] = launches;  // the estimator loop's
  report["launches_per_estimator_call"] = launches / cfg.n_timesteps;
  report["first_chunk"] = {{"segment", stats(first_ms)}, {"encoder_cpu", stats(enc_ms)}};
  report["steady_chunk"] = {{"segment", stats(steady_ms)}, {"chunk_index", steady_at}};
  std::cerr << "first chunk (" << chunk << " tokens + " << L << " lookahead, " << 2 * chunk << " frames): segment p50 "
            << report["first_chunk"]["segment"].value("p50_ms", -1.0) << " ms (CPU encoder p50 "
            << report["first_chunk"]["encoder_cpu"].value("p50_ms", -1.0) << " ms); steady chunk p50 "
            << report["steady_chunk"]["segment"].value("p50_ms", -1.0) << " ms; " << launches
            << " estimator launches per chunk; encoder on " << report_encoder << "\n";
  if (check) {
    FlowState st = cpu->new_state(spk, false, left);
    const double e_first = rel(first_dev, seg(*cpu, st, 0));
    for (int64_t k = 1; k < steady_at; ++k) seg(*cpu, st, k);
    const double e_steady = rel(steady_dev, seg(*cpu, st, steady_at));
    report["check"] = {{"first_chunk_rel_err_vs_cpu", e_first}, {"steady_chunk_rel_err_vs_cpu", e_steady},
                       {"tolerance", 1e-4}};
    std::cerr << "vs CPU flow: first chunk rel err " << e_first << ", steady chunk " << e_steady << "\n";
    if (!(e_first <= 1e-4 && e_steady <= 1e-4)) rc = 1;
  }
  write_report(report, json_out);
  return rc;
}

}  // namespace tools
}  // namespace minmo
