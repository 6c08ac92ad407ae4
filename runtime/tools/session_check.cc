// `minmo_cuda_check session`: one streaming speech-to-text turn on the CPU backend and on a device,
// the same audio pushed in microphone chunks; the device's response tokens must equal the CPU's.
//
//   minmo_cuda_check session --bundle DIR --audio FILE --prompt FILE [--device cuda|cuda-sim]
//                            [--chunk-ms 160] [--runs 5] [--json OUT]
// --audio: raw little-endian float32 samples at the bundle's rate (16 kHz); --prompt: JSON
// {"prefix_ids": [...], "suffix_ids": [...], "stop_ids": [...], "max_new_tokens": N, "text": "..."}
// as the Python layer tokenizes it (kernels/tests/gpu_carry.sh writes both). Reported per backend:
// the response token ids and the session's stage times (first_token = end of speech -> first
// token), p50 over --runs turns.
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "minmo/runtime.h"
#include "minmo/status.h"
#include "tools/tools.h"

namespace minmo {
namespace tools {

namespace {

std::vector<float> read_f32(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  MINMO_CHECK(f.good(), ErrorCode::NotFound, "cannot read audio file " << path);
  const std::streamsize bytes = f.tellg();
  MINMO_CHECK(bytes > 0 && bytes % 4 == 0, ErrorCode::InvalidArgument,
              path << ": " << bytes << " bytes is not a float32 sample array");
  std::vector<float> out(static_cast<size_t>(bytes / 4));
  f.seekg(0);
  f.read(reinterpret_cast<char*>(out.data()), bytes);
  return out;
}

struct Turn {
  std::vector<int64_t> tokens;
  std::map<std::string, std::vector<double>> stages;  // all runs pooled
};

Turn run_turns(const Runtime& rt, const SessionOptions& opt, const std::vector<float>& audio, size_t chunk, int runs) {
  Turn out;
  for (int r = 0; r < runs; ++r) {
    auto s = rt.new_session(opt);
    for (size_t at = 0; at < audio.size(); at += chunk) s->push(audio.data() + at, std::min(chunk, audio.size() - at));
    s->end_of_turn();
    while (s->step()) {
    }
    s->poll();
    if (r == 0) out.tokens = s->response_tokens();
    MINMO_CHECK(s->response_tokens() == out.tokens, ErrorCode::Internal,
                "the same turn gave different tokens in run " << r << " on one backend");
    for (const auto& [name, t] : s->stage_times()) {
      auto& dst = out.stages[name];
      dst.insert(dst.end(), t.ms.begin(), t.ms.end());
    }
    s->close();
  }
  return out;
}

}  // namespace

int session_check(int argc, char** argv) {
  std::string bundle, audio_path, prompt_path, device = "cuda", json_out;
  double chunk_ms = 160.0;
  int runs = 5;
  Args args(argc, argv);
  while (args.more()) {
    const std::string a = args.flag();
    if (a == "--bundle") bundle = args.value(a);
    else if (a == "--audio") audio_path = args.value(a);
    else if (a == "--prompt") prompt_path = args.value(a);
    else if (a == "--device") device = args.value(a);
    else if (a == "--chunk-ms") chunk_ms = std::stod(args.value(a));
    else if (a == "--runs") runs = std::stoi(args.value(a));
    else if (a == "--json") json_out = args.value(a);
    else MINMO_THROW(ErrorCode::InvalidArgument, "unknown argument " << a << " (see tools/session_check.cc)");
  }
  MINMO_CHECK(!bundle.empty() && !audio_path.empty() && !prompt_path.empty(), ErrorCode::InvalidArgument,
              "--bundle, --audio and --prompt are required");
  MINMO_CHECK(device != "cpu" && runs >= 1 && chunk_ms > 0, ErrorCode::InvalidArgument,
              "need --device cuda or cuda-sim, --runs >= 1, --chunk-ms > 0");
  std::ifstream pf(prompt_path);
  MINMO_CHECK(pf.good(), ErrorCode::NotFound, "cannot read prompt file " << prompt_path);
  const nlohmann::json prompt = nlohmann::json::parse(pf);
  SessionOptions opt;
  opt.prefix_ids = prompt.at("prefix_ids").get<std::vector<int64_t>>();
  opt.suffix_ids = prompt.at("suffix_ids").get<std::vector<int64_t>>();
  opt.stop_ids = prompt.at("stop_ids").get<std::vector<int64_t>>();
  opt.max_new_tokens = prompt.value("max_new_tokens", 48);
  const std::vector<float> audio = read_f32(audio_path);
  const size_t chunk = static_cast<size_t>(16000.0 * chunk_ms / 1000.0);

  nlohmann::json report = {{"bundle", bundle}, {"device", device}, {"audio_samples", audio.size()},
                           {"expected_text", prompt.value("text", "")}, {"runs", runs}};
  std::map<std::string, Turn> turns;
  for (const std::string& dev : {std::string("cpu"), device}) {
    const auto rt = Runtime::open(bundle, dev, true);
    turns[dev] = run_turns(*rt, opt, audio, chunk, runs);
    nlohmann::json stages;
    for (const auto& [name, ms] : turns[dev].stages) stages[name] = stats(ms);
    report["backends"][dev] = {{"tokens", turns[dev].tokens}, {"stages", stages}, {"module_devices", rt->module_devices()}};
    std::cerr << dev << ": " << turns[dev].tokens.size() << " tokens, first token p50 "
              << stages.value("first_token", nlohmann::json::object()).value("p50_ms", -1.0) << " ms\n";
  }
  const bool match = turns["cpu"].tokens == turns[device].tokens && !turns["cpu"].tokens.empty();
  report["tokens_match"] = match;
  std::cerr << "response tokens " << (match ? "match" : "DIFFER") << " between cpu and " << device << "\n";
  write_report(report, json_out);
  return match ? 0 : 1;
}

}  // namespace tools
}  // namespace minmo
