// minmo_cuda_check SUBCOMMAND [FLAGS]: see tools/tools.h.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iostream>

#include "minmo/status.h"
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

void write_report(const nlohmann::json& report, const std::string& path) {
  const std::string text = report.dump(2);
  if (!path.empty()) std::ofstream(path) << text << "\n";
  std::cout << text << "\n";
}

}  // namespace tools
}  // namespace minmo

int main(int argc, char** argv) {
  const char* usage = "usage: minmo_cuda_check decoder|session [FLAGS] (runtime/tools/*_check.cc)";
  if (argc < 2 || (std::strcmp(argv[1], "decoder") != 0 && std::strcmp(argv[1], "session") != 0)) {
    std::cerr << usage << "\n";
    return 2;
  }
  try {
    return std::strcmp(argv[1], "decoder") == 0 ? minmo::tools::decoder_check(argc - 1, argv + 1)
                                                : minmo::tools::session_check(argc - 1, argv + 1);
  } catch (const minmo::Error& e) {
    std::cerr << "minmo_cuda_check " << argv[1] << ": " << minmo::error_code_name(e.code()) << ": " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "minmo_cuda_check " << argv[1] << ": " << e.what() << "\n";
    return 2;
  }
}
