// GPU-vs-CPU-twin harness: runs every check registered with MINMO_CHECK (tests/check_*.cu) and
// prints a PASS/FAIL table. Exit status: 0 when every case passed or no CUDA device is present
// (prints SKIP), 1 when a case failed, 2 on a CUDA error.
// Usage: minmo_kernels_cuda_test [--small] [--filter SUBSTRING] [--seed N]
#include <algorithm>
#include <cstdlib>
#include <utility>

#include "harness.h"

namespace harness {
namespace {

struct Row {
  std::string kernel, shape;
  double err, tol;
  int status, expected;
  bool pass;
};

std::vector<std::pair<const char*, void (*)()>>& checks() {
  static std::vector<std::pair<const char*, void (*)()>> c;
  return c;
}
std::vector<Row>& rows() {
  static std::vector<Row> r;
  return r;
}
bool g_small = false;

}  // namespace

int add_check(const char* name, void (*fn)()) {
  checks().emplace_back(name, fn);
  return 0;
}

bool small() { return g_small; }

std::mt19937& rng() {
  static std::mt19937 r(1234);
  return r;
}

void record(const std::string& kernel, const std::string& shape, double err, double tol, int status,
            int expected_status) {
  const bool pass = status == expected_status && (expected_status != MINMO_KERNEL_OK || err <= tol);
  rows().push_back({kernel, shape, err, tol, status, expected_status, pass});
  std::printf("%-4s  %-28s %-52s err %9.2e  tol %7.1e  status %s\n", pass ? "PASS" : "FAIL", kernel.c_str(),
              shape.c_str(), expected_status == MINMO_KERNEL_OK ? err : 0.0, tol, minmo_kernel_status_string(status));
  std::fflush(stdout);
}

void sync() {
  const cudaError_t e = cudaDeviceSynchronize();
  if (e != cudaSuccess) {
    std::fprintf(stderr, "CUDA error after kernel: %s\n", cudaGetErrorString(e));
    std::exit(2);
  }
}

std::string shape_str(std::initializer_list<std::pair<const char*, long long>> dims) {
  std::string s;
  for (const auto& d : dims) {
    if (!s.empty()) s += ' ';
    s += d.first;
    s += '=';
    s += std::to_string(d.second);
  }
  return s;
}

}  // namespace harness

int main(int argc, char** argv) {
  std::string filter;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--small") {
      harness::g_small = true;
    } else if (a == "--filter" && i + 1 < argc) {
      filter = argv[++i];
    } else if (a == "--seed" && i + 1 < argc) {
      harness::rng().seed(static_cast<unsigned>(std::strtoul(argv[++i], nullptr, 10)));
    } else {
      std::fprintf(stderr, "usage: %s [--small] [--filter SUBSTRING] [--seed N]\n", argv[0]);
      return 2;
    }
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("SKIP: no CUDA device\n");
    return 0;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("device: %s (sm_%d%d, %d SMs)%s\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount,
              harness::g_small ? " [small shapes]" : "");
  // The fused decode-step checks run last: a device fault there (which ends the process) cannot
  // hide the results of the other families.
  auto& checks = harness::checks();
  std::stable_partition(checks.begin(), checks.end(), [](const std::pair<const char*, void (*)()>& c) {
    return std::string(c.first).rfind("fused", 0) != 0;
  });
  for (const auto& c : checks) {
    if (!filter.empty() && std::string(c.first).find(filter) == std::string::npos) continue;
    c.second();
  }
  int failed = 0;
  for (const auto& r : harness::rows()) failed += r.pass ? 0 : 1;
  std::printf("\n%zu cases, %d failed: %s\n", harness::rows().size(), failed, failed ? "FAIL" : "PASS");
  if (failed) {
    std::printf("failed cases:\n");
    for (const auto& r : harness::rows())
      if (!r.pass) std::printf("  %s %s (err %.2e, status %s)\n", r.kernel.c_str(), r.shape.c_str(), r.err,
                               minmo_kernel_status_string(r.status));
  }
  return failed ? 1 : 0;
}
