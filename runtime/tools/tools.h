// minmo_cuda_check: the runtime's CUDA backend checked against its CPU backend and timed, without
// Python, so it runs on a GPU machine that has only the CUDA driver (kernels/tests/gpu_carry.sh
// packs it). Subcommands (tools/cuda_check.cc dispatches):
//   decoder  the LLM or voice LM decoder on a bundle or on random weights (tools/decoder_check.cc)
//   encoder  the chunked speech encoder at SenseVoice-Large size, random weights (tools/encoder_check.cc)
//   session  a streaming speech-to-text session on a bundle (tools/session_check.cc)
//   hift     HiFT's decode at CosyVoice2 size, random weights (tools/hift_check.cc)
//   flow     the flow's estimator + Euler loop at CosyVoice2 size, random weights (tools/flow_check.cc)
//   flow-encoder  the flow's conformer encoder at CosyVoice2 size, random weights (tools/flow_encoder_check.cc)
// Each prints a JSON report (and writes it with --json OUT); exit status 0: checks passed, 1: a check
// failed, 2: bad arguments or an error (message on stderr).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/safetensors.h"
#include "core/tensor.h"

namespace minmo {
namespace tools {

// The flags of a subcommand: argv[0] is the subcommand.
class Args {
 public:
  Args(int argc, char** argv) : argc_(argc), argv_(argv) {}
  bool more() const { return i_ + 1 < argc_; }
  std::string flag() { return argv_[++i_]; }
  // The value after `flag`; InvalidArgument when there is none.
  std::string value(const std::string& flag);

 private:
  int argc_, i_ = 0;
  char** argv_;
};

double now_ms();
// p50 / p99 / min / count of wall times in milliseconds.
nlohmann::json stats(std::vector<double> ms);
// Uniform values of standard deviation `std` around `mean` (value i from SplitMix64 seeded with
// seed and i: parallel and reproducible).
void fill_random(Tensor& t, uint64_t seed, float mean, float std);
// Random fp32 tensors by name, as a weight file would hold them (fill_random, one seed each).
class RandomTensors {
 public:
  RandomTensors(std::string what, uint64_t seed) : seed_(seed) { file_.path = "<" + what + ">"; }
  void add(const std::string& name, std::vector<int64_t> shape, float mean, float std);
  WeightStore store() { return WeightStore(std::move(file_)); }

 private:
  SafetensorsFile file_;
  uint64_t seed_;
};
}  // namespace tools
struct FlowConfig;
namespace tools {
// Every tensor FlowModel loads (modules/flow.cc) for config c, random, with PyTorch's default
// initialisation scales and LayerNorm gains near 1 (tools/flow_check.cc; the flow and flow-encoder
// checks share it).
WeightStore random_flow(const FlowConfig& c);
// ||a - b|| / ||b||.
double rel_err(const Tensor& a, const Tensor& b);
// Prints the report; also writes it to `path` unless empty.
void write_report(const nlohmann::json& report, const std::string& path);

int decoder_check(int argc, char** argv);
int encoder_check(int argc, char** argv);
int session_check(int argc, char** argv);
int hift_check(int argc, char** argv);
int flow_check(int argc, char** argv);
int flow_encoder_check(int argc, char** argv);

}  // namespace tools
}  // namespace minmo
