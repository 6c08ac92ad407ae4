// minmo_rt._core.testing_voice: the voice LM interleave stream and repetition-aware sampling on
// numpy arrays, for verification against export/reference/voice_decoder.py
// (tests/test_voice_decoder.py). The voice LM is loaded from a .safetensors file and its config
// as a JSON string; compute runs with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <vector>

#include "core/safetensors.h"
#include "minmo/status.h"
#include <algorithm>

#include "backends/backend.h"
#include "backends/cuda/qwen2_cuda.h"
#include "modules/voice_lm.h"
#include "numpy_util.h"
#include "registry.h"

namespace py = pybind11;
using minmo::ErrorCode;

namespace {

class VoiceStreamRunner {
 public:
  VoiceStreamRunner(const std::string& weights_path, const std::string& config, uint64_t seed, int capacity,
                    const std::string& device) {
    py::gil_scoped_release release;
    lm_ = minmo::VoiceLM::load(minmo::WeightStore::open(weights_path), minmo::pyb::parse_json(config, "config"),
                               minmo::open_device(device));
    stream_ = std::make_unique<minmo::VoiceTokenStream>(lm_, seed, capacity);
    capacity_ = capacity;
  }
  void push_text(minmo::pyb::FloatArray rows) {
    MINMO_CHECK(rows.ndim() == 2 && rows.shape(1) == lm_->hidden_size(), ErrorCode::InvalidArgument,
                "text vectors must be [n, " << lm_->hidden_size() << "]");
    const float* p = rows.data();
    py::gil_scoped_release release;
    stream_->push_text(p, rows.shape(0));
  }
  void end_text() { stream_->end_text(); }
  int64_t step() {
    py::gil_scoped_release release;
    return stream_->step();
  }
  std::vector<int64_t> tokens() const { return stream_->tokens(); }
  std::string device() const { return lm_->body().device(); }
  // The device sample loop: blocks this stream drew with it, graphs captured / launched by the model.
  py::dict device_loop() const {
    py::dict d;
    const auto* cq = dynamic_cast<const minmo::cuda::CudaQwen2*>(&lm_->body());
    d["enabled"] = lm_->block_on_device();
    d["note"] = lm_->block_loop_note();
    d["blocks"] = stream_->device_blocks();
    d["captures"] = cq ? cq->sample_loop_captures() : 0;
    d["launches"] = cq ? cq->sample_loop_launches() : 0;
    return d;
  }
  uint64_t rng_state() const { return stream_->rng_state(); }
  // A new stream of the same LM reusing this one's state (as a session's next response does).
  void restart(uint64_t seed) {
    py::gil_scoped_release release;
    stream_ = std::make_unique<minmo::VoiceTokenStream>(lm_, seed, capacity_, stream_->release_state());
  }

 private:
  std::shared_ptr<const minmo::VoiceLM> lm_;
  std::unique_ptr<minmo::VoiceTokenStream> stream_;
  int capacity_ = 0;
};

}  // namespace

MINMO_PY_BINDING(bind_testing_voice) {
  py::module_ t = m.def_submodule("testing_voice", "Voice LM stream and sampling, for tests against the reference");
  t.attr("NEED_TEXT") = minmo::VoiceTokenStream::kNeedText;
  t.attr("ENDED") = minmo::VoiceTokenStream::kEnded;
  py::class_<VoiceStreamRunner>(t, "VoiceStream")
      .def(py::init<const std::string&, const std::string&, uint64_t, int, const std::string&>(), py::arg("weights"),
           py::arg("config_json"), py::arg("seed"), py::arg("capacity") = 4096, py::arg("device") = "cpu")
      .def_property_readonly("device", &VoiceStreamRunner::device)
      .def("push_text", &VoiceStreamRunner::push_text)
      .def("end_text", &VoiceStreamRunner::end_text)
      .def("step", &VoiceStreamRunner::step)
      .def_property_readonly("tokens", &VoiceStreamRunner::tokens)
      .def_property_readonly("device_loop", &VoiceStreamRunner::device_loop)
      .def_property_readonly("rng_state", [](const VoiceStreamRunner& r) { return r.rng_state(); })
      .def("restart", &VoiceStreamRunner::restart, py::arg("seed"),
           "A new stream (seed) on this one's LM state, reset, as a session's next response.");
  t.def(
      "voice_logits",
      [](const std::string& weights_path, const std::string& config, minmo::pyb::FloatArray embeds,
         const std::string& device) {
        MINMO_CHECK(embeds.ndim() == 2, ErrorCode::InvalidArgument, "embeds must be [T, hidden]");
        minmo::Tensor logits;
        {
          py::gil_scoped_release release;
          auto lm = minmo::VoiceLM::load(minmo::WeightStore::open(weights_path), minmo::pyb::parse_json(config, "config"),
                                         minmo::open_device(device));
          MINMO_CHECK(embeds.shape(1) == lm->hidden_size(), ErrorCode::InvalidArgument,
                      "embeds must have " << lm->hidden_size() << " columns");
          auto state = lm->body().new_state(static_cast<int>(std::max<int64_t>(1, embeds.shape(0))));
          lm->forward(*state, embeds.data(), embeds.shape(0), logits, false);
        }
        return minmo::pyb::to_numpy(logits);
      },
      py::arg("weights"), py::arg("config_json"), py::arg("embeds"), py::arg("device") = "cpu",
      "Speech logits [T, S + 3] of every row of embeds [T, hidden] (one forward from an empty state).");
  t.def("splitmix64", [](uint64_t seed, int n) {
    minmo::SplitMix64 r(seed);
    std::vector<uint64_t> out;
    for (int i = 0; i < n; ++i) out.push_back(r.next());
    return out;
  });
}
