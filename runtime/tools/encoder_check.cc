// `minmo_cuda_check encoder`: the chunked SenseVoice-Large style encoder with its blocks on a device
// (backends/cuda/encoder_cuda.h), random weights, checked against the CPU encoder and timed as a
// session streams it: mel rows pushed 160 ms at a time, each push that completes a chunk of 8
// frames (320 ms of audio) timed with the host copies included (the convolutions run on the device). Then the same with
// the input projector chained on the device (backends/cuda/projector_cuda.h: one graph per chunk,
// encoder + projector), its tokens checked against the CPU encoder + projector.
//
//   minmo_cuda_check encoder [--size large|small] [--device cuda|cuda-sim] [--chunks 12] [--no-check]
//                            [--json OUT]
// large: MinMo's encoder (d_model 1280, 20 heads, 32 blocks, FSMN kernel 15) and projector (1280 ->
// 2048 -> 3584, 2 layers of 8 heads, FFN 8192); small: d_model 256, 4 heads, 4 blocks, projector
// 256 -> 512 -> 512 with 2 layers of 8 heads, FFN 1024. Chunks of 8 frames with 4 left chunks. A
// projector the kernels do not run is reported (cpu_fallback) and not timed. Exit status 1 when a
// device output differs from the CPU's by more than 5 % (relative L2).
#include <algorithm>
#include <cmath>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/backend.h"
#include "core/safetensors.h"
#include "backends/cuda/projector_cuda.h"
#include "modules/projector.h"
#include "modules/sensevoice_large.h"
#include "tools/tools.h"

namespace minmo {
namespace tools {

namespace {

WeightStore random_encoder(const SenseVoiceLargeConfig& c) {
  RandomTensors r("random encoder weights", 1000);
  auto add = [&r](const std::string& name, std::vector<int64_t> shape, float mean, float std) {
    r.add(name, std::move(shape), mean, std);
  };
  const int64_t d = c.d_model;
  const float w = 1.f / std::sqrt(static_cast<float>(d));  // keeps the residual stream O(1)
  add("conv1.weight", {d, c.n_mels, 3}, 0.f, 0.05f);
  add("conv1.bias", {d}, 0.f, 0.05f);
  add("conv2.weight", {d, d, 3}, 0.f, w / 2);
  add("conv2.bias", {d}, 0.f, 0.05f);
  for (int64_t i = 0; i < c.n_blocks; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    for (const char* ln : {"attn_ln", "mlp_ln"}) {
      add(p + ln + ".weight", {d}, 1.f, 0.1f);
      add(p + ln + ".bias", {d}, 0.f, 0.1f);
    }
    for (const char* lin : {"attn.query", "attn.key", "attn.value", "attn.out"}) add(p + lin + ".weight", {d, d}, 0.f, w);
    for (const char* b : {"attn.query", "attn.value", "attn.out"}) add(p + b + ".bias", {d}, 0.f, 0.05f);
    add(p + "attn.fsmn.weight", {d, 1, c.fsmn_kernel}, 0.f, 0.1f);
    add(p + "mlp.0.weight", {4 * d, d}, 0.f, w);
    add(p + "mlp.0.bias", {4 * d}, 0.f, 0.05f);
    add(p + "mlp.2.weight", {d, 4 * d}, 0.f, w / 2);
    add(p + "mlp.2.bias", {d}, 0.f, 0.05f);
  }
  add("ln_post.weight", {d}, 1.f, 0.1f);
  add("ln_post.bias", {d}, 0.f, 0.1f);
  return r.store();
}

WeightStore random_projector(const ProjectorConfig& c) {
  RandomTensors r("random projector weights", 2000);
  const int64_t d = c.output_dim;
  auto linear = [&r](const std::string& name, int64_t in, int64_t out, float gain) {
    r.add(name + ".weight", {out, in}, 0.f, gain / std::sqrt(static_cast<float>(in)));
    r.add(name + ".bias", {out}, 0.f, 0.05f);
  };
  linear("linear1", 2 * c.encoder_dim, c.hidden_dim, 1.f);
  linear("linear2", c.hidden_dim, d, 1.f);
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    for (const char* ln : {"norm1", "norm2"}) {
      r.add(p + ln + ".weight", {d}, 1.f, 0.1f);
      r.add(p + ln + ".bias", {d}, 0.f, 0.1f);
    }
    for (const char* lin : {"linear_q", "linear_k", "linear_v", "linear_out"})
      linear(p + "self_attn." + lin, d, d, 1.f);
    linear(p + "feed_forward.w_1", d, c.ffn_dim, 1.f);
    linear(p + "feed_forward.w_2", c.ffn_dim, d, 0.5f);
  }
  return r.store();
}

// Streams mel [T, n_mels] in 16-row (160 ms) pushes through push(rows, n) (encoder frames, or the
// chained projector's tokens, of width `width`) and finish(); returns all rows, and the wall time
// of each push that produced rows.
template <class Push, class Finish>
Tensor stream_rows(const Tensor& mel, int64_t width, Push push, Finish finish, std::vector<double>* ms) {
  std::vector<float> out;
  const int64_t n_mels = mel.dim(1);
  for (int64_t at = 0; at < mel.rows(); at += 16) {
    const double t0 = now_ms();
    const Tensor y = push(mel.ptr() + at * n_mels, std::min<int64_t>(16, mel.rows() - at));
    if (y.rows() > 0 && ms) ms->push_back(now_ms() - t0);
    out.insert(out.end(), y.data.begin(), y.data.end());
  }
  const Tensor y = finish();
  out.insert(out.end(), y.data.begin(), y.data.end());
  const int64_t rows = static_cast<int64_t>(out.size()) / width;
  return Tensor({rows, width}, std::move(out));
}

// The encoder's frames (proj null) or, with proj, the projector's tokens: chained on the device
// when both run there, else the two streams one after the other.
Tensor stream(const std::shared_ptr<const SenseVoiceLargeEncoder>& enc,
              const std::shared_ptr<const InputProjector>& proj, const Tensor& mel, std::vector<double>* ms) {
  const int64_t n_mels = mel.dim(1);
  const bool chained = proj && proj->device_projector() && enc->device_blocks();
  LargeEncoderStream s(enc, chained ? proj->device_projector() : nullptr);
  if (!proj || chained)
    return stream_rows(
        mel, proj ? proj->output_dim() : enc->output_dim(),
        [&](const float* rows, int64_t n) { return s.push(rows, n, n_mels); }, [&] { return s.finish(); }, ms);
  ProjectorStream ps(proj);
  return stream_rows(
      mel, proj->output_dim(), [&](const float* rows, int64_t n) { return ps.push(s.push(rows, n, n_mels)); },
      [&] {
        const Tensor last = s.finish();
        Tensor toks = last.rows() ? ps.push(last) : Tensor({0, proj->output_dim()});
        const Tensor rest = ps.finish();
        toks.data.insert(toks.data.end(), rest.data.begin(), rest.data.end());
        toks.shape[0] += rest.rows();
        return toks;
      },
      ms);
}

}  // namespace

int encoder_check(int argc, char** argv) {
  std::string size = "large", device = "cuda", json_out;
  int64_t chunks = 12;
  bool check = true;
  Args args(argc, argv);
  while (args.more()) {
    const std::string a = args.flag();
    if (a == "--size") size = args.value(a);
    else if (a == "--device") device = args.value(a);
    else if (a == "--chunks") chunks = std::stoll(args.value(a));
    else if (a == "--json") json_out = args.value(a);
    else if (a == "--no-check") check = false;
    else MINMO_THROW(ErrorCode::InvalidArgument, "unknown argument " << a << " (see tools/encoder_check.cc)");
  }
  MINMO_CHECK(size == "large" || size == "small", ErrorCode::InvalidArgument, "--size must be large or small");
  MINMO_CHECK(chunks >= 1, ErrorCode::InvalidArgument, "--chunks must be >= 1");
  const auto dev = open_device(device);
  MINMO_CHECK(dev != nullptr, ErrorCode::InvalidArgument, "--device must be cuda or cuda-sim");
  const nlohmann::json config = size == "large" ? nlohmann::json::object()  // SenseVoiceLargeConfig's defaults
                                                : nlohmann::json{{"d_model", 256}, {"n_heads", 4}, {"n_blocks", 4}};
  const nlohmann::json proj_config =
      size == "large" ? nlohmann::json::object()  // ProjectorConfig's defaults: MinMo's projector
                      : nlohmann::json{{"encoder_dim", 256}, {"hidden_dim", 512}, {"output_dim", 512}, {"ffn_dim", 1024}};
  const nlohmann::json streaming = {{"encoder_attention", "chunked"}, {"chunk_frames", 8}, {"left_chunks", 4}};
  const SenseVoiceLargeConfig cfg = SenseVoiceLargeConfig::from_json(config);
  const WeightStore weights = random_encoder(cfg);
  double t0 = now_ms();
  const auto gpu = SenseVoiceLargeEncoder::load(weights, config, streaming, dev);
  const double upload_s = (now_ms() - t0) / 1e3;
  MINMO_CHECK(gpu->device() == dev->name(), ErrorCode::Internal, "the encoder did not load on " << dev->name());
  Tensor mel({chunks * 32 + 7, cfg.n_mels});  // 8 frames per 32 mel rows, and a partial last chunk
  fill_random(mel, 7, 0.f, 1.f);
  std::vector<double> ms;
  const Tensor out = stream(gpu, nullptr, mel, &ms);
  nlohmann::json report = {{"device", device}, {"device_info", dev->description()}, {"config", config},
                           {"streaming", streaming}, {"frames", out.rows()}, {"upload_s", upload_s},
                           {"push_with_a_chunk", stats(ms)}};
  std::cerr << "encoder " << size << " on " << dev->description() << ": " << out.rows() << " frames; a 160 ms push "
            << "that completes a chunk: p50 " << report["push_with_a_chunk"].value("p50_ms", -1.0) << " ms\n";
  // the input projector chained after the blocks (one graph per chunk), or its reason to stay on the CPU
  const ProjectorConfig pcfg = ProjectorConfig::from_json(proj_config);
  const WeightStore proj_weights = random_projector(pcfg);
  std::string why;
  const auto gpu_proj = InputProjector::load(proj_weights, proj_config, streaming, dev, &why);
  std::vector<double> chained_ms;
  Tensor tokens;
  nlohmann::json pj = {{"config", proj_config}, {"device", gpu_proj->device()}};
  if (!why.empty()) {
    pj["cpu_fallback"] = why;
    std::cerr << "encoder+projector: the projector stays on the CPU: " << why << "\n";
  } else {
    tokens = stream(gpu, gpu_proj, mel, &chained_ms);
    pj["tokens"] = tokens.rows();
    pj["push_with_a_chunk"] = stats(chained_ms);
    std::cerr << "encoder+projector on " << dev->name() << ": " << tokens.rows() << " tokens; a 160 ms push that "
              << "completes a chunk (one graph: encoder blocks + projector): p50 "
              << pj["push_with_a_chunk"].value("p50_ms", -1.0) << " ms\n";
  }
  int rc = 0;
  if (check) {
    const auto cpu_enc = SenseVoiceLargeEncoder::load(weights, config, streaming);
    const Tensor want = stream(cpu_enc, nullptr, mel, nullptr);
    const double err = rel_err(out, want);
    report["check"] = {{"frames_rel_err_vs_cpu", err}, {"tolerance", 0.05}};
    std::cerr << "check vs CPU backend: frames rel err " << err << (err <= 0.05 ? " (ok)\n" : " (FAILED)\n");
    if (!(err <= 0.05)) rc = 1;
    if (why.empty()) {
      const Tensor want_tokens = stream(cpu_enc, InputProjector::load(proj_weights, proj_config, streaming), mel, nullptr);
      const double terr = tokens.shape == want_tokens.shape ? rel_err(tokens, want_tokens) : 1e30;
      pj["check"] = {{"tokens_rel_err_vs_cpu", terr}, {"tolerance", 0.05}};
      std::cerr << "check vs CPU backend: encoder+projector tokens rel err " << terr
                << (terr <= 0.05 ? " (ok)\n" : " (FAILED)\n");
      if (!(terr <= 0.05)) rc = 1;
    }
  }
  report["projector"] = pj;
  write_report(report, json_out);
  return rc;
}

}  // namespace tools
}  // namespace minmo
