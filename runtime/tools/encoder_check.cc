// `minmo_cuda_check encoder`: the chunked SenseVoice-Large style encoder with its blocks on a device
// (backends/cuda/encoder_cuda.h), random weights, checked against the CPU encoder and timed as a
// session streams it: mel rows pushed 160 ms at a time, each push that completes a chunk of 8
// frames (320 ms of audio) timed with the host convolutions and copies included.
//
//   minmo_cuda_check encoder [--size large|small] [--device cuda|cuda-sim] [--chunks 12] [--no-check]
//                            [--json OUT]
// large: MinMo's encoder (d_model 1280, 20 heads, 32 blocks, FSMN kernel 15); small: d_model 256,
// 4 heads, 4 blocks. Chunks of 8 frames with 4 left chunks. Exit status 1 when the device output
// differs from the CPU's by more than 5 % (relative L2).
#include <algorithm>
#include <cmath>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/backend.h"
#include "core/safetensors.h"
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

// Streams mel [T, n_mels] in 16-row (160 ms) pushes; returns all frames, and the wall time of each
// push that produced frames.
Tensor stream(const std::shared_ptr<const SenseVoiceLargeEncoder>& enc, const Tensor& mel, std::vector<double>* ms) {
  LargeEncoderStream s(enc);
  std::vector<float> out;
  const int64_t n_mels = mel.dim(1);
  for (int64_t at = 0; at < mel.rows(); at += 16) {
    const double t0 = now_ms();
    const Tensor y = s.push(mel.ptr() + at * n_mels, std::min<int64_t>(16, mel.rows() - at), n_mels);
    if (y.rows() > 0 && ms) ms->push_back(now_ms() - t0);
    out.insert(out.end(), y.data.begin(), y.data.end());
  }
  const Tensor y = s.finish();
  out.insert(out.end(), y.data.begin(), y.data.end());
  const int64_t d = enc->output_dim(), rows = static_cast<int64_t>(out.size()) / d;
  return Tensor({rows, d}, std::move(out));
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
  const Tensor out = stream(gpu, mel, &ms);
  nlohmann::json report = {{"device", device}, {"device_info", dev->description()}, {"config", config},
                           {"streaming", streaming}, {"frames", out.rows()}, {"upload_s", upload_s},
                           {"push_with_a_chunk", stats(ms)}};
  std::cerr << "encoder " << size << " on " << dev->description() << ": " << out.rows() << " frames; a 160 ms push "
            << "that completes a chunk: p50 " << report["push_with_a_chunk"].value("p50_ms", -1.0) << " ms\n";
  int rc = 0;
  if (check) {
    const Tensor want = stream(SenseVoiceLargeEncoder::load(weights, config, streaming), mel, nullptr);
    const double err = rel_err(out, want);
    report["check"] = {{"frames_rel_err_vs_cpu", err}, {"tolerance", 0.05}};
    std::cerr << "check vs CPU backend: frames rel err " << err << (err <= 0.05 ? " (ok)\n" : " (FAILED)\n");
    if (!(err <= 0.05)) rc = 1;
  }
  write_report(report, json_out);
  return rc;
}

}  // namespace tools
}  // namespace minmo
