// minmo_rt._core.Runtime / Session: the streaming API on numpy arrays. No logic beyond
// argument conversion; compute runs with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>

#include "numpy_util.h"
#include "registry.h"
#include "core/tensor.h"
#include "minmo/runtime.h"

namespace py = pybind11;
using minmo::ErrorCode;

namespace {

minmo::Tensor to_tensor(const std::string& key, const py::handle& obj) {
  MINMO_CHECK(py::isinstance<py::array>(obj), ErrorCode::InvalidArgument, "input '" << key << "' must be a numpy array");
  py::array a = py::reinterpret_borrow<py::array>(obj);
  std::vector<int64_t> shape(a.shape(), a.shape() + a.ndim());
  minmo::Tensor t(shape);
  if (a.dtype().is(py::dtype::of<float>())) {
    auto c = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(a);
    std::copy(c.data(), c.data() + c.size(), t.data.begin());
  } else if (a.dtype().is(py::dtype::of<int64_t>())) {
    auto c = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(a);
    std::transform(c.data(), c.data() + c.size(), t.data.begin(), [](int64_t v) { return static_cast<float>(v); });
  } else {
    MINMO_THROW(ErrorCode::InvalidArgument, "input '" << key << "' must be float32 (or int64 ids), got "
                                                      << py::str(a.dtype()).cast<std::string>());
  }
  return t;
}

template <class T>
T opt(const py::dict& d, const char* key, T fallback) {
  return d.contains(key) ? d[key].cast<T>() : fallback;
}

py::dict stage_dict(const std::map<std::string, minmo::StageTimes>& times) {
  py::dict stages;
  for (const auto& [name, st] : times) {
    std::vector<double> v = st.ms;
    std::vector<double> sorted = v;
    std::sort(sorted.begin(), sorted.end());
    auto pct = [&](double p) {
      if (sorted.empty()) return 0.0;
      size_t i = std::min(sorted.size() - 1, static_cast<size_t>(p * static_cast<double>(sorted.size() - 1) + 0.5));
      return sorted[i];
    };
    double total = 0;
    for (double x : v) total += x;
    py::dict d;
    d["count"] = v.size();
    d["total_ms"] = total;
    d["p50_ms"] = pct(0.5);
    d["p99_ms"] = pct(0.99);
    d["ms"] = v;
    stages[py::str(name)] = d;
  }
  return stages;
}

py::dict stage_stats(const minmo::Session& s) {
  py::dict out;
  out["stages"] = stage_dict(s.stage_times());
  out["counters"] = s.counters();
  return out;
}

// (kind, time_ms, token, p_turn, p_barge, audio float32 array or None, sample_rate)
py::list events_to_python(std::vector<minmo::Event> events) {
  py::list out;
  for (auto& e : events) {
    py::object audio = py::none();
    if (e.kind == minmo::EventKind::Audio) {
      const int64_t n = static_cast<int64_t>(e.audio.size());
      audio = minmo::pyb::to_numpy(minmo::Tensor({n}, std::move(e.audio)));
    }
    out.append(py::make_tuple(static_cast<int>(e.kind), e.time_ms, e.token, e.p_turn, e.p_barge, audio, e.sample_rate));
  }
  return out;
}

minmo::SpeechOptions speech_options(const py::dict& d) {
  minmo::SpeechOptions o;
  o.speaker = opt<std::vector<float>>(d, "speaker", {});
  o.prompt_speech_tokens = opt<std::vector<int64_t>>(d, "prompt_speech_tokens", {});
  o.prompt_mel = opt<std::vector<float>>(d, "prompt_mel", {});
  o.seed = opt<uint64_t>(d, "speech_seed", 0);
  o.output = opt<std::string>(d, "speech_output", "audio");
  o.voice_kv_capacity = opt<int>(d, "voice_kv_capacity", 0);
  return o;
}

}  // namespace

MINMO_PY_BINDING(bind_runtime) {
  py::class_<minmo::Session>(m, "Session", "A streaming session (see minmo_rt.Session for the Python API).")
      .def("push",
           [](minmo::Session& s, py::array_t<float, py::array::c_style | py::array::forcecast> x) {
             MINMO_CHECK(x.ndim() == 1, ErrorCode::InvalidArgument, "push() takes a 1-D float32 array");
             const float* p = x.data();
             size_t n = static_cast<size_t>(x.size());
             py::gil_scoped_release nogil;
             s.push(p, n);
           })
      .def("end_of_turn", &minmo::Session::end_of_turn, py::call_guard<py::gil_scoped_release>())
      .def("step", &minmo::Session::step, py::call_guard<py::gil_scoped_release>())
      .def("poll", [](minmo::Session& s) { return events_to_python(s.poll()); })
      .def("cancel", &minmo::Session::cancel)
      .def("close", &minmo::Session::close)
      .def("stats", &stage_stats)
      .def_property_readonly("closed", &minmo::Session::closed)
      .def_property_readonly("responding", &minmo::Session::responding)
      .def_property_readonly("turn_samples", &minmo::Session::turn_samples)
      .def_property_readonly("response_tokens", &minmo::Session::response_tokens)
      .def_property_readonly("speech_tokens", &minmo::Session::speech_tokens);

  py::class_<minmo::TtsSession>(m, "TtsSession", "A text-to-speech session (see minmo_rt.TtsSession).")
      .def("push_text",
           [](minmo::TtsSession& s, std::vector<int64_t> ids) {
             py::gil_scoped_release nogil;
             s.push_text(ids.data(), ids.size());
           })
      .def("end_text", &minmo::TtsSession::end_text)
      .def("step", &minmo::TtsSession::step, py::call_guard<py::gil_scoped_release>())
      .def("poll", [](minmo::TtsSession& s) { return events_to_python(s.poll()); })
      .def("cancel", &minmo::TtsSession::cancel)
      .def("close", &minmo::TtsSession::close)
      .def("stats", [](const minmo::TtsSession& s) { return stage_dict(s.stage_times()); })
      .def_property_readonly("closed", &minmo::TtsSession::closed)
      .def_property_readonly("finished", &minmo::TtsSession::finished)
      .def_property_readonly("speech_tokens", &minmo::TtsSession::speech_tokens);

  py::class_<minmo::Runtime, std::shared_ptr<minmo::Runtime>>(m, "Runtime", "A loaded bundle.")
      .def(py::init([](const std::string& dir, const std::string& device, bool verify) {
             py::gil_scoped_release nogil;
             return minmo::Runtime::open(dir, device, verify);
           }),
           py::arg("bundle_dir"), py::arg("device") = "cpu", py::arg("verify_files") = true)
      .def("manifest_json", &minmo::Runtime::manifest_json)
      .def("module_names", &minmo::Runtime::module_names)
      .def("module_devices", &minmo::Runtime::module_devices)
      .def("cpu_fallbacks", &minmo::Runtime::cpu_fallbacks)
      .def("run_module",
           [](const minmo::Runtime& rt, const std::string& name, const py::dict& inputs) {
             minmo::TensorMap in;
             for (auto item : inputs) {
               std::string key = py::str(item.first);
               in.emplace(key, to_tensor(key, item.second));
             }
             minmo::TensorMap out;
             {
               py::gil_scoped_release nogil;
               out = rt.run_module(name, in);
             }
             py::dict d;
             for (const auto& [k, v] : out) d[py::str(k)] = minmo::pyb::to_numpy(v);
             return d;
           })
      .def("new_session", [](const minmo::Runtime& rt, const py::dict& d) {
        minmo::SessionOptions o;
        o.prefix_ids = opt<std::vector<int64_t>>(d, "prefix_ids", {});
        o.suffix_ids = opt<std::vector<int64_t>>(d, "suffix_ids", {});
        o.stop_ids = opt<std::vector<int64_t>>(d, "stop_ids", {});
        o.query_ids = opt<std::vector<int64_t>>(d, "query_ids", {});
        o.max_new_tokens = opt<int>(d, "max_new_tokens", 128);
        o.temperature = opt<float>(d, "temperature", 0.f);
        o.top_k = opt<int>(d, "top_k", 0);
        o.top_p = opt<float>(d, "top_p", 1.f);
        o.seed = opt<uint64_t>(d, "seed", 0);
        o.kv_capacity = opt<int>(d, "kv_capacity", 0);
        o.speak = opt<bool>(d, "speak", false);
        o.speech = speech_options(d);
        py::gil_scoped_release nogil;
        return rt.new_session(o);
      })
      .def("new_tts_session", [](const minmo::Runtime& rt, const py::dict& d) {
        minmo::TtsOptions o;
        o.instruction_ids = opt<std::vector<int64_t>>(d, "instruction_ids", {});
        o.speech = speech_options(d);
        py::gil_scoped_release nogil;
        return rt.new_tts_session(o);
      });
}
