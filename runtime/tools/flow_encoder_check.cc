// `minmo_cuda_check flow-encoder`: the CosyVoice2 flow's encoder (FlowModel::encode_segment) on a
// device (backends/cuda/flow_encoder_cuda.h) at CosyVoice2 size (FlowConfig defaults) with random
// weights, checked against the CPU encoder segment by segment and timed.
//
//   minmo_cuda_check flow-encoder [--device cuda|cuda-sim] [--chunk 15] [--runs 20] [--no-check] [--json OUT]
// Check: a prompt segment of 20 tokens, then chunks of --chunk tokens with 3 lookahead tokens (the
// last one cut to none), left_chunks 2; exit status 1 when a segment's mu differs from the CPU's by
// more than 1e-4 (relative L2; fp32 on both). Timed (tokens from the host, mu left on the device,
// stream synchronised): the first chunk of an utterance (--chunk tokens + 3 lookahead, Token2WavStream's
// first segment) on a fresh state (eager launches) and on a state reused with reset() (its CUDA
// graph from the second utterance on), and a steady chunk (left_chunks 4, after 5 chunks, so its
// keys are the 4 left chunks + itself; graphs once the cache rows repeat).
#include <algorithm>
#include <cmath>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/backend.h"
#include "backends/cuda/flow_encoder_cuda.h"
#include "core/safetensors.h"
#include "modules/flow.h"
#include "tools/tools.h"

namespace minmo {
namespace tools {

int flow_encoder_check(int argc, char** argv) {
  std::string device = "cuda", json_out;
  int64_t chunk = 15, runs = 20;
  bool check = true;
  Args args(argc, argv);
  while (args.more()) {
    const std::string a = args.flag();
    if (a == "--device") device = args.value(a);
    else if (a == "--chunk") chunk = std::stoll(args.value(a));
    else if (a == "--runs") runs = std::stoll(args.value(a));
    else if (a == "--json") json_out = args.value(a);
    else if (a == "--no-check") check = false;
    else MINMO_THROW(ErrorCode::InvalidArgument, "unknown argument " << a << " (see tools/flow_encoder_check.cc)");
  }
  MINMO_CHECK(chunk >= 1 && runs >= 1, ErrorCode::InvalidArgument, "--chunk and --runs must be >= 1");
  const auto dev = open_device(device);
  MINMO_CHECK(dev != nullptr, ErrorCode::InvalidArgument, "--device must be cuda or cuda-sim");
  const FlowConfig cfg = FlowConfig::from_json(nlohmann::json::object());  // CosyVoice2 sizes
  const auto model = std::make_shared<const FlowModel>(cfg, random_flow(cfg));
  double t0 = now_ms();
  const cuda::CudaFlowEncoder enc(*model, dev);
  const double upload_s = (now_ms() - t0) / 1e3;
  const int64_t L = cfg.pre_lookahead, prompt = 20, n_chunks = 4;
  std::vector<int64_t> tokens(prompt + n_chunks * chunk + 5 * chunk + runs * chunk + L);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int64_t>((i * 2654435761u + 17) % cfg.vocab_size);

  nlohmann::json report = {{"device", device},          {"device_info", dev->description()},
                           {"config", "CosyVoice2 (FlowConfig defaults), random weights"},
                           {"upload_s", upload_s},      {"chunk_tokens", chunk},
                           {"lookahead", L}};
  int rc = 0;
  if (check) {  // prompt + chunks, left_chunks 2, lookahead cut at the end
    const int64_t N = prompt + n_chunks * chunk;
    FlowState cs = model->new_state(std::vector<float>(cfg.spk_dim, 1.f), true, 2);
    cuda::CudaFlowEncoderState ds(enc, true, 2, std::max(prompt, chunk), N);
    std::vector<double> errs;
    for (int64_t a = 0; a < N;) {
      const int64_t b = a == 0 ? prompt : std::min(a + chunk, N), n_look = std::min(L, N - b);
      const Tensor ref = model->encode_segment(cs, tokens.data() + a, b - a, tokens.data() + b, n_look);
      cs.tokens_done += b - a;
      cs.segments_done += 1;
      const Tensor got = enc.encode_segment(ds, tokens.data() + a, b - a, tokens.data() + b, n_look);
      errs.push_back(rel_err(got, ref));
      a = b;
    }
    const double worst = *std::max_element(errs.begin(), errs.end());
    report["check"] = {{"segments", errs.size()}, {"rel_err_vs_cpu", errs}, {"worst", worst}, {"tolerance", 1e-4}};
    std::cerr << "device vs CPU encoder over " << errs.size() << " segments: worst rel err " << worst
              << (worst <= 1e-4 ? " (ok)\n" : " (FAILED)\n");
    if (!(worst <= 1e-4)) rc = 1;
  }
  cuda::Allocation mu(dev, sizeof(float) * 2 * chunk * cfg.mel_dim, cuda::MemoryKind::Device);
  {  // first chunk: on a fresh state (eager), and on a state reused with reset() (a graph from the 2nd use)
    std::vector<double> fresh, reused;
    cuda::CudaFlowEncoderState r(enc, false, 4, chunk, 6 * chunk);
    for (int64_t i = 0; i < runs + 2; ++i) {
      cuda::CudaFlowEncoderState s(enc, false, 4, chunk, 6 * chunk);
      s.stream().sync();
      double a = now_ms();
      enc.encode_segment(s, tokens.data(), chunk, tokens.data() + chunk, L, mu.as<float>());
      s.stream().sync();
      if (i >= 2) fresh.push_back(now_ms() - a);
      r.reset(false, 4);
      r.stream().sync();
      a = now_ms();
      enc.encode_segment(r, tokens.data(), chunk, tokens.data() + chunk, L, mu.as<float>());
      r.stream().sync();
      if (i >= 2) reused.push_back(now_ms() - a);
    }
    report["first_chunk"] = {{"tokens", chunk},          {"lookahead", L}, {"encode_reused_state", stats(reused)},
                             {"encode_fresh_state", stats(fresh)}, {"graphs", r.graphs()}};
    std::cerr << "first chunk (" << chunk << " + " << L << " tokens): encode p50 "
              << report["first_chunk"]["encode_reused_state"].value("p50_ms", -1.0) << " ms (reused state, graph), "
              << report["first_chunk"]["encode_fresh_state"].value("p50_ms", -1.0) << " ms (fresh state, eager)\n";
  }
  {  // steady chunks: left_chunks 4, timed from the 6th chunk on
    cuda::CudaFlowEncoderState s(enc, false, 4, chunk, 6 * chunk);
    std::vector<double> ms;
    const int64_t* t = tokens.data();
    for (int64_t k = 0; k < 5 + runs; ++k) {
      const double a = now_ms();
      enc.encode_segment(s, t + k * chunk, chunk, t + (k + 1) * chunk, L, mu.as<float>());
      s.stream().sync();
      if (k >= 5) ms.push_back(now_ms() - a);
    }
    report["steady_chunk"] = {{"tokens", chunk},
                              {"left_chunks", 4},
                              {"keys_tokens", 5 * chunk},
                              {"encode", stats(ms)},
                              {"graphs", s.graphs()}};
    std::cerr << "steady chunk (4 left chunks): encode p50 " << report["steady_chunk"]["encode"].value("p50_ms", -1.0)
              << " ms\n";
  }
  write_report(report, json_out);
  return rc;
}

}  // namespace tools
}  // namespace minmo
