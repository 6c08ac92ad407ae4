// Owning, contiguous, row-major host tensors. Deliberately plain: shape and data are public
// members; the last dimension is the fastest-varying one.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "minmo/status.h"

namespace minmo {

namespace detail {
// Product of the dims; throws InvalidArgument on a negative dim.
inline int64_t shape_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    MINMO_CHECK(d >= 0, ErrorCode::InvalidArgument, "negative dimension " << d << " in tensor shape");
    n *= d;
  }
  return n;
}
inline std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}
}  // namespace detail

// Row-major tensor of element type T owning its storage. Invariant (kept by the constructors and
// reshape; callers that edit shape/data directly must keep it): data.size() == numel(shape).
// A default-constructed tensor has shape {} and no data (rows() == 0, numel() == 0).
template <typename T>
struct BasicTensor {
  std::vector<int64_t> shape;
  std::vector<T> data;

  BasicTensor() = default;
  // Tensor of the given shape filled with `fill`.
  explicit BasicTensor(std::vector<int64_t> shape_, T fill = T(0))
      : shape(std::move(shape_)), data(static_cast<size_t>(detail::shape_numel(shape)), fill) {}
  // Tensor taking over `values`; throws InvalidArgument if sizes disagree.
  BasicTensor(std::vector<int64_t> shape_, std::vector<T> values) : shape(std::move(shape_)), data(std::move(values)) {
    MINMO_CHECK(static_cast<int64_t>(data.size()) == detail::shape_numel(shape), ErrorCode::InvalidArgument,
                "tensor of shape " << detail::shape_str(shape) << " cannot hold " << data.size() << " values");
  }

  int64_t ndim() const { return static_cast<int64_t>(shape.size()); }
  // Number of elements held (0 for a default-constructed tensor).
  int64_t numel() const { return static_cast<int64_t>(data.size()); }
  bool empty() const { return data.empty(); }
  // Size of dimension i; negative i counts from the end. Throws InvalidArgument out of range.
  int64_t dim(int64_t i) const {
    const int64_t n = ndim();
    if (i < 0) i += n;
    MINMO_CHECK(i >= 0 && i < n, ErrorCode::InvalidArgument,
                "dimension index " << i << " out of range for a tensor of shape " << detail::shape_str(shape));
    return shape[static_cast<size_t>(i)];
  }
  // Leading dimension (0 for a tensor without dimensions).
  int64_t rows() const { return shape.empty() ? 0 : shape[0]; }
  T* ptr() { return data.data(); }
  const T* ptr() const { return data.data(); }
  // Pointer to row r of the leading dimension.
  T* row(int64_t r) { return data.data() + r * (numel() / (rows() ? rows() : 1)); }
  const T* row(int64_t r) const { return data.data() + r * (numel() / (rows() ? rows() : 1)); }
  // Changes the shape in place (same numel; one dim may be -1 and is inferred). Returns *this.
  BasicTensor& reshape(std::vector<int64_t> new_shape) {
    int64_t known = 1, infer = -1;
    for (size_t i = 0; i < new_shape.size(); ++i) {
      if (new_shape[i] == -1) {
        MINMO_CHECK(infer < 0, ErrorCode::InvalidArgument, "reshape: more than one -1 in " << detail::shape_str(new_shape));
        infer = static_cast<int64_t>(i);
      } else {
        MINMO_CHECK(new_shape[i] >= 0, ErrorCode::InvalidArgument, "reshape: negative dimension in " << detail::shape_str(new_shape));
        known *= new_shape[i];
      }
    }
    if (infer >= 0) {
      MINMO_CHECK(known > 0 && numel() % known == 0, ErrorCode::InvalidArgument,
                  "reshape: cannot infer -1 in " << detail::shape_str(new_shape) << " from " << numel() << " elements");
      new_shape[static_cast<size_t>(infer)] = numel() / known;
      known = numel();
    }
    MINMO_CHECK(known == numel(), ErrorCode::InvalidArgument,
                "reshape: shape " << detail::shape_str(shape) << " (" << numel() << " elements) cannot become "
                                  << detail::shape_str(new_shape));
    shape = std::move(new_shape);
    return *this;
  }
  std::string shape_str() const { return detail::shape_str(shape); }
};

// fp32 activations and weights.
struct Tensor : BasicTensor<float> {
  using BasicTensor<float>::BasicTensor;
};

// Integer inputs (token ids, positions) and integer tensors from weight files.
struct TensorI64 : BasicTensor<int64_t> {
  using BasicTensor<int64_t>::BasicTensor;
};

// Raw one-byte tensors from weight files (quantized weights: int8, packed int4, fp8 e4m3 bits).
struct TensorU8 : BasicTensor<uint8_t> {
  using BasicTensor<uint8_t>::BasicTensor;
};

}  // namespace minmo
