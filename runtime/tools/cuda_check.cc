// minmo_cuda_check SUBCOMMAND [FLAGS]: see tools/tools.h.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iostream>

#include "minmo/status.h"
#include "modules/voice_lm.h"
#include "tools/tools.h"

namespace minmo {
namespace tools {

std::string Args::value(const std::string& flag) {
  MINMO_CHECK(i_ + 1 < argc_, ErrorCode::InvalidArgument, flag << " needs a value");
  return argv_[++i_];
}

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

nlohmann::json stats(std::vector<double> ms) {
  if (ms.empty()) return {{"count", 0}};
  std::sort(ms.begin(), ms.end());
  auto q = [&](double p) { return ms[std::min(ms.size() - 1, static_cast<size_t>(p * (ms.size() - 1) + 0.5))]; };
  return {{"p50_ms", q(0.5)}, {"p99_ms", q(0.99)}, {"min_ms", ms.front()}, {"count", ms.size()}};
}

void fill_random(Tensor& t, uint64_t seed, float mean, float std) {
  const float half = std * std::sqrt(3.f);
  const int64_t n = t.numel();
  float* p = t.ptr();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {  // counter-based: value i from its own SplitMix64 stream
    SplitMix64 g(seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(i));
    p[i] = mean + half * static_cast<float>(2.0 * g.uniform() - 1.0);
  }
}

void RandomTensors::add(const std::string& name, std::vector<int64_t> shape, float mean, float std) {
  Tensor t(std::move(shape));
  fill_random(t, seed_++, mean, std);
  file_.dtype[name] = "F32";
  file_.floats.emplace(name, std::move(t));
}

double rel_err(const Tensor& a, const Tensor& b) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double d = static_cast<double>(a.data[i]) - b.data[i];
    num += d * d;
    den += static_cast<double>(b.data[i]) * b.data[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

void write_report(const nlohmann::json& report, const std::string& path) {
  const std::string text = report.dump(2);
  if (!path.empty()) std::ofstream(path) << text << "\n";
  std::cout << text << "\n";
}

}  // namespace tools
}  // namespace minmo

int main(int argc, char** argv) {
  const char* usage = "usage: minmo_cuda_check decoder|encoder|session|hift|flow|flow-encoder [FLAGS] (runtime/tools/*_check.cc)";
  const std::string cmd = argc >= 2 ? argv[1] : "";
  int (*run)(int, char**) = cmd == "decoder"   ? minmo::tools::decoder_check
                            : cmd == "encoder" ? minmo::tools::encoder_check
                            : cmd == "session" ? minmo::tools::session_check
                            : cmd == "hift"    ? minmo::tools::hift_check
                            : cmd == "flow"    ? minmo::tools::flow_check
                            : cmd == "flow-encoder" ? minmo::tools::flow_encoder_check
                                               : nullptr;
  if (!run) {
    std::cerr << usage << "\n";
    return 2;
  }
  try {
    return run(argc - 1, argv + 1);
  } catch (const minmo::Error& e) {
    std::cerr << "minmo_cuda_check " << argv[1] << ": " << minmo::error_code_name(e.code()) << ": " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "minmo_cuda_check " << argv[1] << ": " << e.what() << "\n";
    return 2;
  }
}
