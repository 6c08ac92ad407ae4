// Reader of the .safetensors format: 8-byte little-endian header length N, N bytes of JSON
// header {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}},
// then the data section (offsets are relative to its start).
//
// Everything is validated before any tensor is used: header length within the file, valid JSON,
// known dtype, non-negative shape, offsets inside the data section, end - begin equal to
// numel * element size, no two tensors overlapping. Failures throw Error(BundleError) naming the
// file and the tensor.
//
// Floating dtypes (F32, F16, BF16, F64) are converted to fp32 Tensor; integer dtypes (I64, I32,
// I16, BOOL) to TensorI64; one-byte dtypes (I8, U8, F8_E4M3: quantized weights) are kept as raw
// bytes (TensorU8, same shape), never widened.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tensor.h"

namespace minmo {

// Contents of one .safetensors file.
struct SafetensorsFile {
  std::string path;
  std::map<std::string, Tensor> floats;     // F32/F16/BF16/F64 tensors, as fp32
  std::map<std::string, TensorI64> ints;    // integer/bool tensors, as int64
  std::map<std::string, TensorU8> bytes;    // I8 / U8 / F8_E4M3 tensors, raw bytes
  std::map<std::string, std::string> dtype; // every tensor's dtype as stored ("F16", "I64", ...)
  std::map<std::string, std::string> metadata;  // "__metadata__" (empty if absent)
  std::set<std::string> repacked;               // floats rewritten into a module's private layout
};

// Reads and validates a whole file. Throws BundleError (malformed / unreadable file).
SafetensorsFile read_safetensors(const std::string& path);

// Convenience: only the floating tensors of the file, as fp32. Throws BundleError.
std::unordered_map<std::string, Tensor> load_safetensors(const std::string& path);

// Read-only, named access to the tensors of one weight file, optionally restricted to a name
// prefix. Copies are cheap views sharing the loaded tensors; thread-safe for concurrent reads.
class WeightStore {
 public:
  WeightStore() = default;
  // Loads `path` (see read_safetensors). Throws BundleError.
  static WeightStore open(const std::string& path);
  // Wraps already loaded contents.
  explicit WeightStore(SafetensorsFile contents);

  // Whether a tensor named prefix()+name exists (float or int).
  bool has(const std::string& name) const;
  bool has_int(const std::string& name) const;
  // The fp32 tensor prefix()+name. Throws NotFound naming the full name and the file, or
  // BundleError if it exists but has an integer dtype.
  const Tensor& get(const std::string& name) const;
  // Like get() with a shape check: throws BundleError naming the tensor if the shape differs.
  const Tensor& get(const std::string& name, const std::vector<int64_t>& expected_shape) const;
  // Rewrites the fp32 tensor prefix()+name (which must have `shape`) in place into a module's
  // private layout of the same size, `permute(data, numel)`, and returns the data: weights are
  // repacked without a second copy. Load time only (not thread-safe); the change is seen by every
  // view of this file, so afterwards get() and a second repack() of the name throw Internal.
  float* repack(const std::string& name, const std::vector<int64_t>& shape,
                const std::function<void(float*, int64_t)>& permute) const;
  // The integer tensor prefix()+name. Throws NotFound / BundleError likewise.
  const TensorI64& get_int(const std::string& name) const;
  // The raw bytes of the one-byte tensor prefix()+name (I8, U8 or F8_E4M3) with a shape check;
  // `dtype` receives its dtype. Throws NotFound / BundleError (other dtype, wrong shape).
  bool has_bytes(const std::string& name) const;
  const TensorU8& get_bytes(const std::string& name, const std::vector<int64_t>& expected_shape,
                            std::string* dtype = nullptr) const;
  // View restricted to names starting with prefix()+p; get("x") on it reads prefix()+p+"x".
  // Typically p ends with '.', e.g. store.prefix("encoder.layers.3.").
  WeightStore prefix(const std::string& p) const;
  // Names below the current prefix (with the prefix removed), sorted.
  std::vector<std::string> names() const;
  const std::string& current_prefix() const { return prefix_; }
  // The file this store was loaded from ("" if empty).
  const std::string& path() const;
  const std::map<std::string, std::string>& metadata() const;

 private:
  std::shared_ptr<SafetensorsFile> file_;  // shared by all views; mutated only by repack()
  std::string prefix_;
};

}  // namespace minmo
