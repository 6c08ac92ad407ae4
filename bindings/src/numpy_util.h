// Conversions shared by the binding files: numpy <-> Tensor, JSON arguments.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <string>

#include <nlohmann/json.hpp>

#include "core/tensor.h"
#include "minmo/status.h"

namespace minmo {
namespace pyb {

using FloatArray = pybind11::array_t<float, pybind11::array::c_style | pybind11::array::forcecast>;

// Parses a JSON argument ("" = {}); InvalidArgument naming `what` when it is not JSON.
inline nlohmann::json parse_json(const std::string& text, const char* what) {
  try {
    return text.empty() ? nlohmann::json::object() : nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    MINMO_THROW(ErrorCode::InvalidArgument, what << " is not valid JSON: " << e.what());
  }
}

// A new float32 numpy array holding a copy of `t`.
inline pybind11::array_t<float> to_numpy(const Tensor& t) {
  pybind11::array_t<float> a(t.shape);
  if (t.numel()) std::memcpy(a.mutable_data(), t.ptr(), sizeof(float) * t.data.size());
  return a;
}

}  // namespace pyb
}  // namespace minmo
