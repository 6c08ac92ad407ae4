// Self-registration of binding files. Each bindings/src/<area>.cpp defines its part of the
// module with
//
//   MINMO_PY_BINDING(bind_runtime) { py::class_<...>(m, "Runtime") ...; }
//
// module.cpp creates the exception classes first, then runs every registered function in name
// order, so a binding may refer to the exceptions (and to classes from a binding whose name sorts
// earlier). No other file needs editing to add a binding file.
#pragma once

#include <pybind11/pybind11.h>

#include <string>
#include <utility>
#include <vector>

namespace minmo {
namespace pyb {

using BindFn = void (*)(pybind11::module_&);

inline std::vector<std::pair<std::string, BindFn>>& binding_registry() {
  static std::vector<std::pair<std::string, BindFn>> registry;
  return registry;
}

inline bool register_binding(const char* name, BindFn fn) {
  binding_registry().emplace_back(name, fn);
  return true;
}

}  // namespace pyb
}  // namespace minmo

#define MINMO_PY_BINDING(fn)                                                                 \
  static void fn(pybind11::module_& m);                                                     \
  [[maybe_unused]] static const bool fn##_registered_ = ::minmo::pyb::register_binding(#fn, &fn); \
  static void fn(pybind11::module_& m)
