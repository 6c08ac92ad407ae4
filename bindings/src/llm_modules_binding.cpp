// minmo_rt._core.testing_llm: the input projector, the Qwen2 decoder, token sampling and the
// full-duplex predictor on numpy arrays, for verification against the PyTorch reference and
// Hugging Face transformers (tests/test_llm_modules.py). Modules are loaded from a .safetensors
// file and a config given as a JSON string (plus the streaming settings where relevant); compute
// runs with the GIL released; results are new numpy arrays.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/backend.h"
#include "backends/cuda/duplex_cuda.h"
#include "core/safetensors.h"
#include "minmo/status.h"
#include "modules/duplex.h"
#include "modules/projector.h"
#include "modules/qwen2.h"
#include "modules/sampling.h"
#include "numpy_util.h"
#include "registry.h"

namespace py = pybind11;
using minmo::ErrorCode;

namespace {

using minmo::pyb::FloatArray;
using IdArray = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

using minmo::pyb::parse_json;
using minmo::pyb::to_numpy;

py::array_t<float> to_numpy(const std::vector<float>& v) {
  py::array_t<float> a(static_cast<py::ssize_t>(v.size()));
  if (!v.empty()) std::memcpy(a.mutable_data(), v.data(), sizeof(float) * v.size());
  return a;
}

void check_2d(const FloatArray& a, const char* name) {
  MINMO_CHECK(a.ndim() == 2, ErrorCode::InvalidArgument,
              name << " must be 2-D [rows, dim], got " << a.ndim() << " dimensions");
}

// Splits n rows into the given segment sizes (the rest as one last segment).
std::vector<int64_t> split_rows(int64_t n, const std::vector<int64_t>& sizes) {
  std::vector<int64_t> out;
  int64_t at = 0;
  for (int64_t s : sizes) {
    MINMO_CHECK(s >= 0, ErrorCode::InvalidArgument, "segment sizes must be >= 0, got " << s);
    if (at >= n) break;
    out.push_back(std::min(s, n - at));
    at += out.back();
  }
  if (at < n) out.push_back(n - at);
  return out;
}

minmo::Tensor concat_rows(const std::vector<minmo::Tensor>& parts, int64_t dim) {
  int64_t rows = 0;
  for (const auto& p : parts) rows += p.rows();
  minmo::Tensor out({rows, dim});
  int64_t r = 0;
  for (const auto& p : parts) {
    if (p.rows()) std::memcpy(out.row(r), p.ptr(), sizeof(float) * p.data.size());
    r += p.rows();
  }
  return out;
}

// A Qwen2 decoder on a device with one state, for tests.
class Qwen2Runner {
 public:
  Qwen2Runner(const std::string& weights_path, const std::string& config, int capacity, const std::string& device) {
    py::gil_scoped_release release;
    model_ = minmo::load_qwen2_decoder(minmo::WeightStore::open(weights_path), parse_json(config, "config"),
                                       minmo::open_device(device));
    state_ = model_->new_state(capacity);
  }
  std::string device() const { return model_->device(); }
  py::array_t<float> embed(IdArray ids) {
    MINMO_CHECK(ids.ndim() == 1, ErrorCode::InvalidArgument, "ids must be 1-D");
    minmo::Tensor out;
    {
      py::gil_scoped_release release;
      out = model_->embed(ids.data(), static_cast<size_t>(ids.shape(0)));
    }
    return to_numpy(out);
  }
  py::tuple forward(FloatArray embeds, bool last_only) {
    check_2d(embeds, "embeds");
    minmo::Tensor logits, hidden;
    {
      py::gil_scoped_release release;
      MINMO_CHECK(embeds.shape(1) == model_->hidden_size(), ErrorCode::InvalidArgument,
                  "embeds must have " << model_->hidden_size() << " columns, got " << embeds.shape(1));
      model_->forward(*state_, embeds.data(), embeds.shape(0), &hidden, &logits, last_only);
    }
    return py::make_tuple(to_numpy(logits), to_numpy(hidden));
  }
  // Prefill prompt ids, then n_steps tokens: each sampled from the last logits and fed back.
  std::vector<int64_t> generate(IdArray prompt, int n_steps, float temperature, int top_k, float top_p,
                                uint64_t seed) {
    MINMO_CHECK(prompt.ndim() == 1 && prompt.shape(0) > 0, ErrorCode::InvalidArgument,
                "prompt must be a non-empty 1-D array of ids");
    std::vector<int64_t> out;
    py::gil_scoped_release release;
    minmo::SamplingParams sp;
    sp.temperature = temperature;
    sp.top_k = top_k;
    sp.top_p = top_p;
    std::mt19937_64 rng(seed);
    minmo::Tensor logits, emb({1, model_->hidden_size()});
    minmo::Tensor x = model_->embed(prompt.data(), static_cast<size_t>(prompt.shape(0)));
    model_->forward(*state_, x, nullptr, &logits, /*last_only=*/true);
    for (int i = 0; i < n_steps; ++i) {
      const int64_t tok = minmo::sample_token(logits.ptr(), static_cast<size_t>(model_->vocab_size()), sp, rng);
      out.push_back(tok);
      if (i + 1 == n_steps) break;
      model_->embed_into(&tok, 1, emb.ptr());
      model_->forward(*state_, emb, nullptr, &logits, true);
    }
    return out;
  }
  int64_t length() const { return state_->length(); }
  int64_t capacity() const { return state_->capacity(); }
  void truncate(int64_t n) { state_->truncate(n); }
  void reset() { state_->reset(); }

 private:
  std::shared_ptr<const minmo::Qwen2Decoder> model_;
  std::unique_ptr<minmo::DecoderState> state_;
};

}  // namespace

MINMO_PY_BINDING(bind_devices) {
  m.def(
      "device_info",
      [](const std::string& name) {
        py::gil_scoped_release release;
        const auto d = minmo::open_device(name);
        return d ? d->description() : std::string("CPU backend");
      },
      py::arg("name"),
      "Opens device `name` ('cpu', 'cuda', 'cuda-sim') and describes it (GPU name, compute capability, memory); "
      "raises DeviceError when it is not usable here, with the reason.");
  m.attr("cuda_built") = minmo::cuda::cuda_built();
}

namespace {

// Runs y = relu(x + bias) (x = -1, bias = 0) as a three-launch graph on a fresh cuda-sim stream,
// breaking the GPU rule named by `rule` ("none" breaks nothing); the sim must refuse each broken
// rule with an Internal error. Returns y[0] as the host staging buffer shows it right after the
// launches (still -1: the work is queued) and after the stream's sync (0).
std::pair<float, float> cuda_sim_rule(const std::string& rule) {
  using namespace minmo::cuda;
  const auto dev = Device::open("cuda-sim");
  const Stream st(dev);
  constexpr int64_t n = 64;
  Allocation y(dev, sizeof(minmo_bf16) * 2 * n, MemoryKind::Device);  // rows 1 or 2
  Allocation bias(dev, sizeof(minmo_bf16) * n, MemoryKind::Device);
  Allocation staged(dev, sizeof(minmo_bf16) * n, MemoryKind::PinnedHost);
  std::vector<minmo_bf16> pageable(n, minmo_bf16{0});
  auto* host = staged.as<minmo_bf16>();
  std::fill(host, host + n, minmo_bf16{0});
  st.upload(bias.data(), staged.data(), bias.bytes());
  st.sync();
  std::fill(host, host + n, minmo_bf16{0xBF80});  // bf16 bits of -1.0
  const minmo_bf16* bias_arg = rule == "host_pointer_kernel" ? pageable.data() : bias.as<minmo_bf16>();
  int64_t rows = 1;
  const Graph g = st.capture([&] {
    st.upload(y.data(), rule == "pageable_copy_in_graph" ? static_cast<const void*>(pageable.data()) : staged.data(),
              staged.bytes());
    MINMO_DEVICE_CALL(st, bias_act_bf16, y.as<minmo_bf16>(), bias_arg, rows, n, MINMO_ACT_RELU);
    if (rule == "sync_in_graph") st.sync();
    st.download(rule == "device_as_host" ? bias.data() : staged.data(), y.data(), staged.bytes());
  });
  for (int i = 0; i < 3; ++i) {
    st.launch(g);
    if (rule == "host_value_in_graph") rows = 1 + (i + 1) % 2;  // frozen by a real graph
  }
  MINMO_CHECK(rule == "none" || rule == "host_value_in_graph", ErrorCode::InvalidArgument, "unknown rule '" << rule << "'");
  auto value = [host] {  // bf16 bits -> float
    const uint32_t bits = static_cast<uint32_t>(host[0]) << 16;
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
  };
  const float before = value();
  st.sync();
  return {before, value()};
}

}  // namespace

MINMO_PY_BINDING(bind_testing_llm) {
  py::module_ t = m.def_submodule(
      "testing_llm",
      "Input projector, Qwen2 decoder, sampling and duplex predictor on numpy arrays (verification against the "
      "PyTorch reference). Modules load from `weights_path` (.safetensors) with `config` (JSON string of the "
      "module config) and, for the projector, `chunk` (JSON string of the manifest's streaming settings).");

  t.def(
      "cuda_sim_rule",
      [](const std::string& rule) {
        py::gil_scoped_release release;
        return cuda_sim_rule(rule);
      },
      py::arg("rule"),
      "Breaks one GPU rule on cuda-sim ('none', 'host_pointer_kernel', 'pageable_copy_in_graph', "
      "'sync_in_graph', 'device_as_host', 'host_value_in_graph'); raises MinmoError when the sim catches it. "
      "Returns (y[0] on the host before the sync, after it) of the graph's relu(-1).");

  // ---- input projector
  t.def(
      "projector_offline",
      [](const std::string& weights_path, const std::string& config, const std::string& chunk, FloatArray frames,
         const std::string& device) {
        check_2d(frames, "frames");
        minmo::Tensor out;
        {
          py::gil_scoped_release release;
          auto p = minmo::InputProjector::load(minmo::WeightStore::open(weights_path), parse_json(config, "config"),
                                               parse_json(chunk, "chunk"), minmo::open_device(device));
          out = p->run(frames.data(), frames.shape(0), frames.shape(1));
        }
        return to_numpy(out);
      },
      py::arg("weights_path"), py::arg("config"), py::arg("chunk"), py::arg("frames"), py::arg("device") = "cpu",
      "Input projector offline: frames [T, encoder_dim] -> tokens [(T-1)//2+1, output_dim]; device: where it runs "
      "('cpu', 'cuda', 'cuda-sim'; BundleError for a configuration the CUDA kernels lack).");
  t.def(
      "projector_streamed",
      [](const std::string& weights_path, const std::string& config, const std::string& chunk, FloatArray frames,
         std::vector<int64_t> sizes, const std::string& device) {
        check_2d(frames, "frames");
        minmo::Tensor out;
        std::vector<int64_t> counts;
        {
          py::gil_scoped_release release;
          auto p = minmo::InputProjector::load(minmo::WeightStore::open(weights_path), parse_json(config, "config"),
                                               parse_json(chunk, "chunk"), minmo::open_device(device));
          minmo::ProjectorStream s(p);
          const int64_t width = frames.shape(1);
          std::vector<minmo::Tensor> parts;
          int64_t at = 0;
          for (int64_t len : split_rows(frames.shape(0), sizes)) {
            parts.push_back(s.push(frames.data() + at * width, len, width));
            counts.push_back(parts.back().rows());
            at += len;
          }
          parts.push_back(s.finish());
          counts.push_back(parts.back().rows());
          out = concat_rows(parts, p->output_dim());
        }
        return py::make_tuple(to_numpy(out), counts);
      },
      py::arg("weights_path"), py::arg("config"), py::arg("chunk"), py::arg("frames"), py::arg("push_sizes"),
      py::arg("device") = "cpu",
      "Streamed chunked projector: pushes frames in pieces of push_sizes rows (rest as one piece), then finish(). "
      "Returns (tokens, tokens out per push + [tokens out of finish]).");

  // ---- Qwen2 decoder
  py::class_<Qwen2Runner>(t, "Qwen2Runner",
                          "A Qwen2 decoder on `device` ('cpu', 'cuda', 'cuda-sim') with one state (KV cache of "
                          "`capacity` positions).")
      .def(py::init<const std::string&, const std::string&, int, const std::string&>(), py::arg("weights_path"),
           py::arg("config"), py::arg("capacity"), py::arg("device") = "cpu")
      .def_property_readonly("device", &Qwen2Runner::device)
      .def("embed", &Qwen2Runner::embed, py::arg("ids"), "Token embeddings [n, hidden].")
      .def("forward", &Qwen2Runner::forward, py::arg("embeds"), py::arg("last_only") = false,
           "Appends embeds [T, hidden]; returns (logits [T or 1, vocab], final-norm hidden [T, hidden]).")
      .def("generate", &Qwen2Runner::generate, py::arg("prompt"), py::arg("n_steps"), py::arg("temperature") = 0.f,
           py::arg("top_k") = 0, py::arg("top_p") = 1.f, py::arg("seed") = 0,
           "Prefills prompt ids, then samples n_steps tokens (each fed back). Returns the token ids.")
      .def_property_readonly("length", &Qwen2Runner::length)
      .def_property_readonly("capacity", &Qwen2Runner::capacity)
      .def("truncate", &Qwen2Runner::truncate, py::arg("n"))
      .def("reset", &Qwen2Runner::reset);
  t.def(
      "qwen2_forward",
      [](const std::string& weights_path, const std::string& config, FloatArray embeds, std::vector<int64_t> segments,
         int capacity) {
        check_2d(embeds, "embeds");
        minmo::Tensor logits, hidden;
        {
          py::gil_scoped_release release;
          auto model = minmo::Qwen2Model::load(minmo::WeightStore::open(weights_path), parse_json(config, "config"));
          const int64_t T = embeds.shape(0), H = model->hidden_size();
          MINMO_CHECK(embeds.shape(1) == H, ErrorCode::InvalidArgument,
                      "embeds must have " << H << " columns, got " << embeds.shape(1));
          auto state = model->new_state(capacity > 0 ? capacity : static_cast<int>(std::max<int64_t>(T, 1)));
          std::vector<minmo::Tensor> ls, hs;
          int64_t at = 0;
          for (int64_t len : split_rows(T, segments)) {
            ls.emplace_back();
            hs.emplace_back();
            model->forward(*state, embeds.data() + at * H, len, &hs.back(), &ls.back(), false);
            at += len;
          }
          logits = concat_rows(ls, model->vocab_size());
          hidden = concat_rows(hs, H);
        }
        return py::make_tuple(to_numpy(logits), to_numpy(hidden));
      },
      py::arg("weights_path"), py::arg("config"), py::arg("embeds"), py::arg("segments"), py::arg("capacity") = 0,
      "Runs embeds [T, hidden] through a fresh state in segments of the given sizes (rest as one); capacity 0 = T. "
      "Returns (logits [T, vocab], hidden [T, hidden]) of every position.");

  // ---- sampling
  t.def(
      "sample",
      [](FloatArray logits, float temperature, int top_k, float top_p, uint64_t seed, int n) {
        MINMO_CHECK(logits.ndim() == 1, ErrorCode::InvalidArgument, "logits must be 1-D");
        MINMO_CHECK(n >= 0, ErrorCode::InvalidArgument, "n must be >= 0");
        py::array_t<int64_t> out(n);
        {
          int64_t* o = out.mutable_data();
          py::gil_scoped_release release;
          minmo::SamplingParams sp;
          sp.temperature = temperature;
          sp.top_k = top_k;
          sp.top_p = top_p;
          std::mt19937_64 rng(seed);
          for (int i = 0; i < n; ++i)
            o[i] = minmo::sample_token(logits.data(), static_cast<size_t>(logits.shape(0)), sp, rng);
        }
        return out;
      },
      py::arg("logits"), py::arg("temperature") = 0.f, py::arg("top_k") = 0, py::arg("top_p") = 1.f,
      py::arg("seed") = 0, py::arg("n") = 1,
      "n draws of sample_token from one logits row with one generator seeded with `seed`.");

  // ---- duplex predictor
  t.def(
      "duplex_streamed",
      [](const std::string& weights_path, const std::string& config, FloatArray hidden, std::vector<int64_t> sizes,
         int64_t capacity, bool model_api, const std::string& device) {
        check_2d(hidden, "hidden");
        std::vector<float> turn, barge;
        {
          py::gil_scoped_release release;
          const int64_t T = hidden.shape(0), W = hidden.shape(1);
          const int64_t cap = capacity > 0 ? capacity : std::max<int64_t>(T, 1);
          const minmo::WeightStore weights = minmo::WeightStore::open(weights_path);
          const nlohmann::json cfg = parse_json(config, "config");
          // The CUDA backend's predictor (host input), or the CPU one; model_api: DuplexPredictor::new_state +
          // DuplexPredictor::push, else DuplexState(shared_ptr).
          std::function<void(const float*, int64_t, std::vector<float>*, std::vector<float>*)> push;
          std::shared_ptr<const minmo::cuda::CudaDuplex> model;
          std::unique_ptr<minmo::cuda::CudaDuplexState> dst;
          std::shared_ptr<const minmo::DuplexPredictor> pred;
          std::unique_ptr<minmo::DuplexState> st;
          if (const auto dev = minmo::open_device(device)) {
            model = minmo::cuda::CudaDuplex::load(weights, minmo::DuplexConfig::from_json(cfg), dev);
            dst = model->new_state(cap);
            push = [&](const float* x, int64_t len, std::vector<float>* pt, std::vector<float>* pb) {
              dst->push(x, len, W, pt, pb);
            };
          } else {
            pred = minmo::DuplexPredictor::load(weights, cfg);
            st = model_api ? pred->new_state(cap) : std::make_unique<minmo::DuplexState>(pred, cap);
            push = [&](const float* x, int64_t len, std::vector<float>* pt, std::vector<float>* pb) {
              if (!model_api) return st->push(x, len, W, pt, pb);
              minmo::Tensor piece({len, W});
              std::memcpy(piece.ptr(), x, sizeof(float) * static_cast<size_t>(len * W));
              pred->push(*st, piece, pt, pb);
            };
          }
          std::vector<float> pt, pb;
          int64_t at = 0;
          for (int64_t len : split_rows(T, sizes)) {
            push(hidden.data() + at * W, len, &pt, &pb);
            turn.insert(turn.end(), pt.begin(), pt.end());
            barge.insert(barge.end(), pb.begin(), pb.end());
            at += len;
          }
        }
        return py::make_tuple(to_numpy(turn), to_numpy(barge));
      },
      py::arg("weights_path"), py::arg("config"), py::arg("hidden"), py::arg("push_sizes"), py::arg("capacity") = 0,
      py::arg("model_api") = false, py::arg("device") = "cpu",
      "Duplex predictor streamed: pushes hidden [T, llm_hidden] in pieces of push_sizes rows (rest as one); "
      "capacity 0 = T. Returns (p_turn [T], p_barge [T]). device 'cuda' / 'cuda-sim': the CUDA backend's "
      "predictor (host input path; BundleError for a shape its kernels lack).");
}
