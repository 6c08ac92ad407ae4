// `minmo_cuda_check session`: one streaming speech-to-text turn on the CPU backend and on a device,
// the same audio pushed in microphone chunks; the device's response tokens must equal the CPU's.
//
//   minmo_cuda_check session --bundle DIR --audio FILE --prompt FILE [--device cuda|cuda-sim]
//                            [--chunk-ms 160] [--runs 5] [--json OUT]
// --audio: raw little-endian float32 samples at the bundle's rate (16 kHz); --prompt: JSON
// {"prefix_ids": [...], "suffix_ids": [...], "stop_ids": [...], "max_new_tokens": N, "text": "..."}
// as the Python layer tokenizes it (kernels/tests/gpu_carry.sh writes both). Reported per backend:
// the response token ids, the session's stage times (first_token = end of speech -> first token),
// p50 over --runs turns, where each module ran (module_devices, cpu_fallbacks) and the number of
// duplex events; and the duplex probabilities' max |device - CPU| (duplex_max_abs_diff).
#include <algorithm>
#include <cmath>
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
  std::vector<float> p_turn, p_barge;  // the full-duplex predictor's, per audio token (run 0)
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
    const std::vector<Event> events = s->poll();
    if (r == 0) {
      out.tokens = s->response_tokens();
      for (const Event& e : events)
        if (e.kind == EventKind::Duplex) {
          out.p_turn.push_back(e.p_turn);
          out.p_barge.push_back(e.p_barge);
        }
    }
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

// max |a - b| over two probability series of one length (-1 when the lengths differ).
double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return -1.0;
  double m = 0.0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(static_cast<double>(a[i]) - b[i]));
  return m;
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
    report["backends"][dev] = {{"tokens", turns[dev].tokens},
                               {"stages", stages},
                               {"module_devices", rt->module_devices()},
                               {"cpu_fallbacks", rt->cpu_fallbacks()},
                               {"duplex_events", turns[dev].p_turn.size()}};
    std::cerr << dev << ": modules";
    for (const auto& [name, where] : rt->module_devices()) std::cerr << " " << name << "=" << where;
    std::cerr << "\n";
    std::cerr << dev << ": " << turns[dev].tokens.size() << " tokens, first token p50 "
              << stages.value("first_token", nlohmann::json::object()).value("p50_ms", -1.0) << " ms\n";
  }
  const bool match = turns["cpu"].tokens == turns[device].tokens && !turns["cpu"].tokens.empty();
  report["tokens_match"] = match;
  // The duplex probabilities of the device (bf16) against the CPU's (fp32), max |difference|.
  const Turn &c = turns["cpu"], &d = turns[device];
  report["duplex_max_abs_diff"] = {{"p_turn", max_abs_diff(c.p_turn, d.p_turn)},
                                   {"p_barge", max_abs_diff(c.p_barge, d.p_barge)}};
  std::cerr << "duplex: " << c.p_turn.size() << " events, max |p_turn diff| " << max_abs_diff(c.p_turn, d.p_turn)
            << ", max |p_barge diff| " << max_abs_diff(c.p_barge, d.p_barge) << " (-1: counts differ)\n";
  std::cerr << "response tokens " << (match ? "match" : "DIFFER") << " between cpu and " << device << "\n";
  write_report(report, json_out);
  return match ? 0 : 1;
}

}  // namespace tools
}  // namespace minmo
