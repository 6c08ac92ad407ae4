// `minmo_cuda_check hift`: HiFT's decode (filter network + iSTFT) on a device
// (backends/cuda/hift_cuda.h) at CosyVoice2 size with random weights, checked against the CPU
// decode and timed.
//
//   minmo_cuda_check hift [--device cuda|cuda-sim] [--frames 36] [--runs 20] [--no-check] [--json OUT]
// Timed (host mel + source in, audio out, synchronised; a CUDA graph from the second run of a window
// length): the first Token2Wav chunk's window (--frames mel frames, as HiftStream decodes the first
// push: no left context, its lookahead inside), and a steady window of --frames new frames plus the
// receptive field (left + frames + right). Also the first push of a device HiftStream (--frames
// frames: f0 predictor, NSF source and decode on the device, one enqueue) and, unless --no-check,
// a device HiftStream against a CPU HiftStream over pushes of --frames, 7, 40 and 13 frames then
// finish() (windows of several lengths, phase and f0 history carried on the device). The f0
// classifier's weights are scaled so that f0 spans about 1..50 Hz (voiced and unvoiced frames).
// Exit status 1 when the device decode differs from the CPU's by more than 1e-4 (relative L2; fp32
// on both), or the device stream from the CPU stream by more than 5e-4: the harmonic phase
// integrates f0, so fp32 rounding differences in f0 grow along the utterance (tests/test_cuda_hift.py
// VOICED_TOL; a different noise seed alone is a difference of about 1e-2).
#include <algorithm>
#include <cmath>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/backend.h"
#include "backends/cuda/hift_cuda.h"
#include "core/safetensors.h"
#include "modules/hift.h"
#include "tools/tools.h"

namespace minmo {
namespace tools {

namespace {

// Random weights with PyTorch's default initialisation scale (uniform +-1/sqrt(fan_in), i.e. std
// 1/sqrt(3 fan_in)), Snake alphas near 1: activations stay O(1) through the network.
float init_std(int64_t fan_in) { return 1.f / std::sqrt(3.f * static_cast<float>(fan_in)); }
constexpr float kF0Scale = 400.f;
constexpr double kStreamTol = 5e-4;

WeightStore random_hift(const HiftConfig& c) {
  RandomTensors r("random hift weights", 2000);
  auto conv = [&r](const std::string& name, int64_t cin, int64_t cout, int64_t k) {
    r.add(name + ".weight", {cout, cin, k}, 0.f, init_std(cin * k));
    r.add(name + ".bias", {cout}, 0.f, init_std(cin * k));
  };
  auto resblock = [&](const std::string& p, int64_t ch, int64_t k, const std::vector<int64_t>& dils) {
    for (size_t i = 0; i < dils.size(); ++i) {
      const std::string s = std::to_string(i);
      conv(p + ".convs1." + s, ch, ch, k);
      conv(p + ".convs2." + s, ch, ch, k);
      r.add(p + ".activations1." + s + ".alpha", {ch}, 1.f, 0.1f);
      r.add(p + ".activations2." + s + ".alpha", {ch}, 1.f, 0.1f);
    }
  };
  for (int64_t i = 0; i < c.f0_layers; ++i)
    conv("f0_predictor.condnet." + std::to_string(2 * i), i == 0 ? c.mel_dim : c.f0_channels, c.f0_channels, 3);
  // f0 = |classifier| in Hz: scaled so that frames fall on both sides of the voiced threshold
  r.add("f0_predictor.classifier.weight", {1, c.f0_channels}, 0.f, kF0Scale * init_std(c.f0_channels));
  r.add("f0_predictor.classifier.bias", {1}, 0.f, kF0Scale * init_std(c.f0_channels));
  r.add("m_source.l_linear.weight", {1, c.nb_harmonics + 1}, 0.f, init_std(c.nb_harmonics + 1));
  r.add("m_source.l_linear.bias", {1}, 0.f, init_std(c.nb_harmonics + 1));
  const int64_t base = c.base_channels, n_up = static_cast<int64_t>(c.upsample_rates.size());
  conv("conv_pre", c.mel_dim, base, 7);
  std::vector<int64_t> down(n_up, 1);
  for (int64_t i = n_up - 2; i >= 0; --i) down[i] = down[i + 1] * c.upsample_rates[i + 1];
  const int64_t nk = static_cast<int64_t>(c.resblock_kernel_sizes.size());
  for (int64_t i = 0; i < n_up; ++i) {
    const int64_t cin = base >> i, ch = base >> (i + 1), k = c.upsample_kernel_sizes[i];
    const std::string s = std::to_string(i);
    r.add("ups." + s + ".weight", {cin, ch, k}, 0.f, init_std(ch * k));  // torch's fan_in of a ConvTranspose1d
    r.add("ups." + s + ".bias", {ch}, 0.f, init_std(ch * k));
    conv("source_downs." + s, c.n_fft + 2, ch, down[i] == 1 ? 1 : 2 * down[i]);
    resblock("source_resblocks." + s, ch, c.source_resblock_kernel_sizes[i], c.source_resblock_dilation_sizes[i]);
    for (int64_t j = 0; j < nk; ++j)
      resblock("resblocks." + std::to_string(i * nk + j), ch, c.resblock_kernel_sizes[j], c.resblock_dilation_sizes[j]);
  }
  conv("conv_post", base >> n_up, c.n_fft + 2, 7);
  return r.store();
}

double rel(const std::vector<float>& a, const std::vector<float>& b) {
  return rel_err(Tensor({static_cast<int64_t>(a.size())}, a), Tensor({static_cast<int64_t>(b.size())}, b));
}

}  // namespace

int hift_check(int argc, char** argv) {
  std::string device = "cuda", json_out;
  int64_t frames = 36, runs = 20;
  bool check = true;
  Args args(argc, argv);
  while (args.more()) {
    const std::string a = args.flag();
    if (a == "--device") device = args.value(a);
    else if (a == "--frames") frames = std::stoll(args.value(a));
    else if (a == "--runs") runs = std::stoll(args.value(a));
    else if (a == "--json") json_out = args.value(a);
    else if (a == "--no-check") check = false;
    else MINMO_THROW(ErrorCode::InvalidArgument, "unknown argument " << a << " (see tools/hift_check.cc)");
  }
  MINMO_CHECK(frames >= 1 && runs >= 1, ErrorCode::InvalidArgument, "--frames and --runs must be >= 1");
  const auto dev = open_device(device);
  MINMO_CHECK(dev != nullptr, ErrorCode::InvalidArgument, "--device must be cuda or cuda-sim");
  const nlohmann::json config = nlohmann::json::object();  // HiftConfig's defaults: CosyVoice2
  const HiftConfig cfg = HiftConfig::from_json(config);
  const WeightStore weights = random_hift(cfg);
  double t0 = now_ms();
  const auto gpu = HiftModel::load(weights, config, dev);
  const double upload_s = (now_ms() - t0) / 1e3;
  MINMO_CHECK(gpu->device() == dev->name(), ErrorCode::Internal, "hift did not load on " << dev->name());
  const auto cpu = HiftModel::load(weights, config);
  const auto [L, R] = cpu->receptive_field();
  const int64_t S = cfg.samples_per_frame(), steady = L + frames + R;
  Tensor mel({steady, cfg.mel_dim});
  fill_random(mel, 7, -4.f, 2.f);
  Tensor src({steady * S});
  fill_random(src, 8, 0.f, 0.1f);

  nlohmann::json report = {{"device", device}, {"device_info", dev->description()}, {"receptive_field", {L, R}},
                           {"upload_s", upload_s}};
  int rc = 0;
  auto timed = [&](int64_t T, const char* key) {
    cuda::CudaHiftState state(*gpu->gpu(), T);
    std::vector<double> ms;
    std::vector<float> out;
    for (int64_t i = 0; i < runs + 2; ++i) {  // run 1 eager, run 2 captures the graph
      const double a = now_ms();
      out = gpu->gpu()->decode(state, mel.ptr(), T, src.ptr());
      if (i >= 2) ms.push_back(now_ms() - a);
    }
    report[key] = {{"frames", T}, {"samples", T * S}, {"decode", stats(ms)}};
    std::cerr << key << ": " << T << " frames, decode p50 " << report[key]["decode"].value("p50_ms", -1.0) << " ms\n";
    if (check) {
      const double err = rel(out, cpu->decode(mel.ptr(), T, src.ptr()));
      report[key]["rel_err_vs_cpu"] = err;
      std::cerr << "  vs CPU decode: rel err " << err << (err <= 1e-4 ? " (ok)\n" : " (FAILED)\n");
      if (!(err <= 1e-4)) rc = 1;
    }
  };
  timed(frames, "first_chunk_window");
  timed(steady, "steady_window");
  {  // the first push of a device stream: f0 + source on the host, decode on the device
    std::vector<double> ms;
    size_t samples = 0;
    for (int64_t i = 0; i < std::min<int64_t>(runs, 5); ++i) {
      HiftStream s(*gpu, 0);
      const double a = now_ms();
      samples = s.push(mel.ptr(), frames).size();
      ms.push_back(now_ms() - a);
    }
    report["first_push_stream"] = {{"frames", frames}, {"samples_out", samples}, {"push", stats(ms)}};
    std::cerr << "first push of a device HiftStream (" << frames << " frames): p50 "
              << report["first_push_stream"]["push"].value("p50_ms", -1.0) << " ms\n";
  }
  if (check) {  // device stream vs CPU stream over windows of several lengths
    const std::vector<int64_t> pushes{frames, 7, 40, 13};
    int64_t total = 0;
    for (int64_t n : pushes) total += n;
    Tensor smel({total, cfg.mel_dim});
    fill_random(smel, 9, -4.f, 2.f);
    auto run_stream = [&](const HiftModel& m) {
      HiftStream s(m, 11);
      std::vector<float> out;
      int64_t at = 0;
      for (int64_t n : pushes) {
        const auto a = s.push(smel.ptr() + at * cfg.mel_dim, n);
        out.insert(out.end(), a.begin(), a.end());
        at += n;
      }
      const auto a = s.finish();
      out.insert(out.end(), a.begin(), a.end());
      return out;
    };
    const std::vector<float> d = run_stream(*gpu), c = run_stream(*cpu);
    const std::vector<float> f0 = cpu->f0(smel.ptr(), total);
    int64_t voiced = 0;
    for (float v : f0) voiced += static_cast<double>(v) > cfg.nsf_voiced_threshold;
    const double err = d.size() == c.size() ? rel(d, c) : INFINITY;
    report["stream_vs_cpu"] = {{"pushes", pushes},           {"samples", c.size()},
                               {"voiced_fraction", static_cast<double>(voiced) / static_cast<double>(total)},
                               {"rel_err_vs_cpu", err}};
    report["stream_vs_cpu"]["tolerance"] = kStreamTol;
    std::cerr << "device HiftStream vs CPU HiftStream (pushes " << frames << ", 7, 40, 13; " << voiced << "/" << total
              << " frames voiced): rel err " << err << (err <= kStreamTol ? " (ok)\n" : " (FAILED)\n");
    if (!(err <= kStreamTol)) rc = 1;
  }
  report["check_tolerance"] = 1e-4;
  write_report(report, json_out);
  return rc;
}

}  // namespace tools
}  // namespace minmo
