// Pieces shared by the audio frontends and voice encoders: strict config parsing, the encoder
// attention mode (ChunkSpec), chunked attention key ranges and the SAN-M / FSMN memory block.
// Mirrors export/reference/configs.py (ChunkSpec) and layers.py (chunk_attention_mask,
// chunk_limits, fsmn_memory).
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/cpu/quant_linear.h"
#include "core/safetensors.h"
#include "core/tensor.h"

namespace minmo {

// Keeps the last `keep` rows of a row-major buffer of `width` columns (left-context caches).
inline void keep_last_rows(std::vector<float>& buf, int64_t width, int64_t keep) {
  const int64_t rows = static_cast<int64_t>(buf.size()) / width;
  if (rows > keep) buf.erase(buf.begin(), buf.begin() + (rows - keep) * width);
}

// Reads a module config (a JSON object with the keys of a Python config dataclass). Absent keys
// take the dataclass default; a key the dataclass does not have, a value of the wrong type, or a
// non-object config throws Error(BundleError) naming `what` and the key.
class ConfigReader {
 public:
  ConfigReader(const nlohmann::json& config, std::string what);
  int64_t get_int(const std::string& key, int64_t def);
  double get_float(const std::string& key, double def);
  bool get_bool(const std::string& key, bool def);
  std::string get_string(const std::string& key, const std::string& def);
  // null -> std::nullopt.
  std::optional<double> get_optional_float(const std::string& key, std::optional<double> def);
  // A list of integers, or a list of lists of integers.
  std::vector<int64_t> get_int_list(const std::string& key, const std::vector<int64_t>& def);
  std::vector<std::vector<int64_t>> get_int_lists(const std::string& key, const std::vector<std::vector<int64_t>>& def);
  // Throws BundleError if the config has keys that were never asked for.
  void finish() const;

 private:
  const nlohmann::json* find(const std::string& key);
  const nlohmann::json& config_;
  std::string what_;
  std::set<std::string> known_;
};

// Encoder attention mode (manifest["streaming"]; Python ChunkSpec).
//   full:    every frame sees the whole input.
//   chunked: frame i is in chunk i / chunk_frames and attends to chunks (c - left_chunks) .. c;
//            convolution memories (FSMN) read no frame after the end of the frame's chunk.
struct ChunkSpec {
  bool chunked = false;
  int64_t chunk_frames = 8;  // even, >= 2
  int64_t left_chunks = 4;   // >= 0

  // From {"encoder_attention": "full"|"chunked", "chunk_frames": int, "left_chunks": int}
  // (absent keys: defaults; null / missing object: full attention). Throws BundleError on
  // unknown keys or invalid values (the Python ChunkSpec's rules).
  static ChunkSpec from_json(const nlohmann::json& streaming);
  nlohmann::json to_json() const;
};

// Attention key ranges of the queries at absolute positions q0 .. q0+n-1 when the keys held
// are the absolute positions k0 .. k0+tk-1 (k0 <= q0) and `total` frames exist so far (the end
// of the input). lo/hi are indices into the held keys (resized to n). Full attention: every
// held key. Chunked: keys of chunks c-left .. c, clipped to the held keys and to `total`.
void chunk_key_ranges(const ChunkSpec& chunk, int64_t q0, int64_t n, int64_t k0, int64_t tk, int64_t total,
                      std::vector<int64_t>& lo, std::vector<int64_t>& hi);

// One past the last frame that the convolution memory of frame `pos` may read (layers.py
// chunk_limits): the end of its chunk (clipped to total) when chunked, else total.
inline int64_t chunk_limit(const ChunkSpec& chunk, int64_t pos, int64_t total) {
  if (!chunk.chunked) return total;
  const int64_t end = (pos / chunk.chunk_frames + 1) * chunk.chunk_frames;
  return end < total ? end : total;
}

// SAN-M memory block (layers.py fsmn_memory) over new rows with left context:
//   out[i, d] = v[i, d] + sum_t w[d, t] * src(q0 + i - left_pad + t, d)
// where src(a) is the value row at absolute position a: a context row for q0 - nctx <= a < q0,
// a new row for q0 <= a < q0 + n; taps with a < 0 or a >= chunk_limit(chunk, q0 + i, total)
// read zero. ctx: [nctx, D] rows at positions q0 - nctx .. q0 - 1 (nctx >= min(left_pad, q0)
// is required so every readable tap is held). v, out: [n, D]; w is the Conv1d depthwise weight
// [D, 1, K], passed transposed as weight_t [K, D] (transpose_fsmn). out must not alias v.
void fsmn_memory(const float* ctx, int64_t nctx, const float* v, int64_t n, int64_t D, const float* weight_t, int64_t K,
                 int64_t left_pad, int64_t q0, int64_t total, const ChunkSpec& chunk, float* out);
// Conv1d depthwise weight [D, 1, K] -> [K, D] (the layout fsmn_memory reads).
std::vector<float> transpose_fsmn(const float* weight, int64_t D, int64_t K);

// Copies columns [col, col + width) of x[rows, ld] into out[rows, width].
void copy_columns(const float* x, int64_t rows, int64_t ld, int64_t col, int64_t width, float* out);

// A linear layer's weights (PyTorch nn.Linear layout), borrowed from a WeightStore.
struct LinearW {
  const float* w = nullptr;  // [out, in]; null when the weight is quantized (qw)
  const float* b = nullptr;  // [out] or null
  int64_t in = 0, out = 0;
  cpu::QuantWeight qw;       // kind != None: weight-only quantized weight (export/quantize.py)
  // y[M, out] = x[M, in] @ w^T + b.
  void operator()(const float* x, float* y, int64_t M) const;
};
// A LayerNorm's weights.
struct NormW {
  const float* g = nullptr;
  const float* b = nullptr;
  int64_t dim = 0;
};

// Loaders with the errors the runtime promises: missing tensor -> NotFound naming it; wrong shape
// -> BundleError naming the tensor, the expected and the actual shape. load_linear also reads a
// weight-only quantized weight (export/quantize.py: `<name>.weight` I8 / F8_E4M3 / packed U8 with
// `<name>.weight_scale` [+ `<name>.weight_zero`]) into LinearW::qw; a wrong dtype or scale shape
// -> BundleError naming the tensor.
LinearW load_linear(const WeightStore& w, const std::string& name, int64_t in, int64_t out, bool bias = true);
// The geometry of a Conv1d (or ConvTranspose1d).
struct ConvShape {
  int64_t cin = 0, cout = 0, k = 0, stride = 1, pad = 0, dil = 1;
};
// Conv1d weight [cout, cin, k] and bias [cout] (PyTorch layout) with its geometry.
struct ConvW : ConvShape {
  const float* w = nullptr;
  const float* b = nullptr;
};
ConvW load_conv(const WeightStore& w, const std::string& name, int64_t cin, int64_t cout, int64_t k, int64_t stride = 1,
                int64_t pad = 0, int64_t dil = 1);
NormW load_norm(const WeightStore& w, const std::string& name, int64_t dim);
const float* load_tensor(const WeightStore& w, const std::string& name, const std::vector<int64_t>& shape);

}  // namespace minmo
