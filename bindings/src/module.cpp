// minmo_rt._core: exception classes, threading, bundle/weight-file readers; the other parts of
// the module are added by the MINMO_PY_BINDING files (registry.h).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>

#include "core/manifest.h"
#include "core/safetensors.h"
#include "core/threading.h"
#include "minmo/status.h"
#include "registry.h"

namespace py = pybind11;

namespace {

struct ErrorClasses {
  PyObject* minmo = nullptr;
  PyObject* bundle = nullptr;
  PyObject* unsupported_version = nullptr;
  PyObject* invalid_input = nullptr;
  PyObject* cache_full = nullptr;
  PyObject* closed = nullptr;
  PyObject* device = nullptr;
};
ErrorClasses g_errors;  // owned by the module (never freed: the module is never unloaded)

PyObject* new_error(py::module_& m, const char* name, PyObject* bases, const char* doc) {
  const std::string full = std::string("minmo_rt._core.") + name;
  PyObject* cls = PyErr_NewExceptionWithDoc(full.c_str(), doc, bases, nullptr);
  if (!cls) throw py::error_already_set();
  m.add_object(name, py::reinterpret_borrow<py::object>(cls));
  return cls;
}

PyObject* error_class(minmo::ErrorCode code) {
  switch (code) {
    case minmo::ErrorCode::InvalidArgument: return g_errors.invalid_input;
    case minmo::ErrorCode::BundleError: return g_errors.bundle;
    case minmo::ErrorCode::UnsupportedVersion: return g_errors.unsupported_version;
    case minmo::ErrorCode::CacheFull: return g_errors.cache_full;
    case minmo::ErrorCode::Closed: return g_errors.closed;
    case minmo::ErrorCode::DeviceError: return g_errors.device;
    case minmo::ErrorCode::NotFound:
    case minmo::ErrorCode::Internal: return g_errors.minmo;
  }
  return g_errors.minmo;
}

py::object json_to_py(const nlohmann::json& j) { return py::module_::import("json").attr("loads")(j.dump()); }

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "minmo-rt native core (C++ runtime binding)";

  g_errors.minmo = new_error(m, "MinmoError", PyExc_RuntimeError, "Base class of all minmo-rt errors.");
  g_errors.bundle = new_error(m, "BundleError", g_errors.minmo,
                              "The bundle on disk is malformed, incomplete, modified or unsafe.");
  g_errors.unsupported_version = new_error(m, "UnsupportedVersionError", g_errors.bundle,
                                           "The bundle's format major version is not supported by this runtime.");
  {
    py::tuple bases = py::make_tuple(py::handle(g_errors.minmo), py::handle(PyExc_ValueError));
    g_errors.invalid_input = new_error(m, "InvalidInputError", bases.ptr(), "Invalid input from the caller.");
  }
  g_errors.cache_full = new_error(m, "CacheFullError", g_errors.minmo, "A KV/state cache cannot hold the input.");
  g_errors.closed = new_error(m, "SessionClosedError", g_errors.minmo, "The session was closed.");
  g_errors.device = new_error(m, "DeviceError", g_errors.minmo,
                              "The requested device is missing, out of memory, or reported a failure.");

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const minmo::Error& e) {
      PyErr_SetString(error_class(e.code()), e.what());
    }
  });

  m.def("set_num_threads", &minmo::set_num_threads, py::arg("n"),
        "Compute threads for OpenMP regions and OpenBLAS (0: one per core).");
  m.def("get_num_threads", &minmo::num_threads, "Threads OpenMP regions currently use.");

  m.def(
      "load_manifest",
      [](const std::string& path, bool verify) {
        minmo::Manifest man;
        {
          py::gil_scoped_release release;
          man = minmo::load_manifest(path, verify);
        }
        py::dict d;
        d["dir"] = man.dir;
        d["major"] = man.major;
        d["minor"] = man.minor;
        d["mode"] = man.mode;
        d["sample_rate"] = man.sample_rate;
        d["streaming"] = json_to_py(man.streaming);
        d["tokenizer"] = json_to_py(man.tokenizer);
        d["tokenizer_path"] = man.tokenizer_path;
        py::dict modules;
        for (const auto& kv : man.modules) {
          const auto& e = kv.second;
          py::dict md;
          md["name"] = e.name;
          md["arch"] = e.arch;
          md["dtype"] = e.dtype;
          md["quant"] = e.quant;
          md["config"] = json_to_py(e.config);
          md["weights_path"] = e.weights_path;
          md["onnx_path"] = e.onnx_path;
          modules[py::str(kv.first)] = md;
        }
        d["modules"] = modules;
        py::dict files;
        for (const auto& kv : man.files) {
          py::dict fd;
          fd["path"] = kv.second.path;
          fd["abs_path"] = kv.second.abs_path;
          fd["size"] = kv.second.size;
          fd["sha256"] = kv.second.sha256;
          files[py::str(kv.first)] = fd;
        }
        d["files"] = files;
        d["raw"] = json_to_py(man.raw);
        return d;
      },
      py::arg("bundle_dir"), py::arg("verify") = true,
      "Parse (and with verify=True check sizes and SHA-256 of) a bundle's manifest.json with the C++ "
      "reader; returns the parsed fields as a dict (paths resolved, 'raw' = the JSON as read).");

  m.def(
      "load_safetensors",
      [](const std::string& path) {
        minmo::SafetensorsFile f;
        {
          py::gil_scoped_release release;
          f = minmo::read_safetensors(path);
        }
        py::dict out;
        for (const auto& kv : f.floats) {
          py::array_t<float> a(kv.second.shape);
          std::memcpy(a.mutable_data(), kv.second.ptr(), sizeof(float) * kv.second.data.size());
          out[py::str(kv.first)] = a;
        }
        for (const auto& kv : f.ints) {
          py::array_t<int64_t> a(kv.second.shape);
          std::memcpy(a.mutable_data(), kv.second.ptr(), sizeof(int64_t) * kv.second.data.size());
          out[py::str(kv.first)] = a;
        }
        for (const auto& kv : f.bytes) {
          py::array a = f.dtype.at(kv.first) == "I8" ? py::array(py::array_t<int8_t>(kv.second.shape))
                                                     : py::array(py::array_t<uint8_t>(kv.second.shape));
          std::memcpy(a.mutable_data(), kv.second.ptr(), kv.second.data.size());
          out[py::str(kv.first)] = a;
        }
        return out;
      },
      py::arg("path"),
      "Read a .safetensors file with the C++ loader: dict name -> numpy array (floating dtypes as "
      "float32, integer dtypes as int64; I8 as int8, U8 and F8_E4M3 as uint8 raw bytes).");

  auto& registry = minmo::pyb::binding_registry();
  std::sort(registry.begin(), registry.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& entry : registry) entry.second(m);
}
