// minmo_rt._core.testing_t2w: the flow, HiFT and the cached Token2WavStream on numpy arrays, for
// verification against the PyTorch reference (tests/test_token2wav.py). Modules are loaded from a
// .safetensors file and a JSON config; compute releases the GIL. Bad input raises the MinmoError
// subclasses (InvalidInputError, SessionClosedError).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <exception>
#include <optional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "backends/backend.h"
#include "backends/cuda/flow_encoder_cuda.h"
#include "backends/cuda/hift_cuda.h"
#include "core/safetensors.h"
#include "minmo/status.h"
#include "modules/flow.h"
#include "modules/hift.h"
#include "modules/token2wav.h"
#include "numpy_util.h"
#include "registry.h"

namespace py = pybind11;
using minmo::ErrorCode;

namespace {

using minmo::pyb::FloatArray;
using minmo::pyb::parse_json;
using IntArray = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

py::array_t<float> vec_to_numpy(const std::vector<float>& v, std::vector<int64_t> shape) {
  py::array_t<float> a(shape);
  if (!v.empty()) std::memcpy(a.mutable_data(), v.data(), sizeof(float) * v.size());
  return a;
}

std::vector<int64_t> ids_of(const IntArray& a, const char* what) {
  MINMO_CHECK(a.ndim() == 1, ErrorCode::InvalidArgument, what << " must be 1-D, got " << a.ndim() << " dimensions");
  return std::vector<int64_t>(a.data(), a.data() + a.shape(0));
}

std::vector<float> floats_of(const FloatArray& a) { return std::vector<float>(a.data(), a.data() + a.size()); }

const float* mel_rows(const FloatArray& mel, int64_t width, int64_t* T) {
  MINMO_CHECK(mel.ndim() == 2 && mel.shape(1) == width, ErrorCode::InvalidArgument,
              "mel must have shape [T, " << width << "]");
  *T = mel.shape(0);
  return mel.data();
}

// device: "cpu", "cuda" or "cuda-sim" (where the estimator runs; an unsupported model raises).
std::shared_ptr<const minmo::FlowModel> load_flow(const std::string& w, const std::string& c,
                                                  const std::string& device = "cpu") {
  return minmo::FlowModel::load(minmo::WeightStore::open(w), parse_json(c, "flow config"), minmo::open_device(device));
}

// One flow utterance state over a shared model (tests drive FlowModel::segment directly).
struct PyFlowState {
  std::shared_ptr<const minmo::FlowModel> flow;
  minmo::FlowState state;
};
// device: "cpu", "cuda" or "cuda-sim" (an unsupported configuration raises, no CPU fallback).
std::shared_ptr<const minmo::HiftModel> load_hift(const std::string& w, const std::string& c,
                                                  const std::string& device = "cpu") {
  return minmo::HiftModel::load(minmo::WeightStore::open(w), parse_json(c, "hift config"), minmo::open_device(device));
}

// A Token2WavStream that owns its models.
struct PyStream {
  std::shared_ptr<const minmo::FlowModel> flow;
  std::shared_ptr<const minmo::HiftModel> hift;
  std::unique_ptr<minmo::Token2WavStream> stream;
};

}  // namespace

MINMO_PY_BINDING(bind_token2wav) {
  py::module_ t = m.def_submodule("testing_t2w", "Token2Wav modules (flow, HiFT, cached stream) for tests");
  t.def(
      "flow_offline",
      [](const std::string& weights, const std::string& config, IntArray tokens, FloatArray speaker,
         IntArray prompt_tokens, FloatArray prompt_mel, uint64_t seed, int64_t chunk_tokens, int64_t left_chunks,
         const std::string& device) {
        auto tok = ids_of(tokens, "tokens");
        auto ptok = ids_of(prompt_tokens, "prompt_tokens");
        auto spk = floats_of(speaker), pmel = floats_of(prompt_mel);
        minmo::Tensor mel;
        {
          py::gil_scoped_release release;
          mel = load_flow(weights, config, device)->offline(tok, spk, ptok, pmel, seed, chunk_tokens, left_chunks);
        }
        return minmo::pyb::to_numpy(mel);
      },
      py::arg("weights_path"), py::arg("config"), py::arg("tokens"), py::arg("speaker"), py::arg("prompt_tokens"),
      py::arg("prompt_mel"), py::arg("seed") = 0, py::arg("chunk_tokens") = 15, py::arg("left_chunks") = -1,
      py::arg("device") = "cpu",
      "Flow over the whole sequence (chunk_tokens <= 0: full attention) -> mel [2N, 80] of the generated tokens "
      "(estimator on `device`).");
  py::class_<minmo::FlowModel, std::shared_ptr<minmo::FlowModel>>(t, "FlowModel")
      .def(py::init([](const std::string& weights, const std::string& config, const std::string& device) {
             return std::const_pointer_cast<minmo::FlowModel>(load_flow(weights, config, device));
           }),
           py::arg("weights_path"), py::arg("config"), py::arg("device") = "cpu")
      .def_property_readonly("device", &minmo::FlowModel::device, "Where segment() runs the estimator.")
      .def(
          "new_state",
          [](std::shared_ptr<minmo::FlowModel> m, FloatArray speaker, bool has_prompt, int64_t left_chunks) {
            auto s = std::make_unique<PyFlowState>();
            s->flow = m;
            s->state = m->new_state(floats_of(speaker), has_prompt, left_chunks);
            return s;
          },
          py::arg("speaker"), py::arg("has_prompt") = false, py::arg("left_chunks") = -1,
          "A fresh utterance state (FlowModel::new_state).");
  py::class_<PyFlowState>(t, "FlowState")
      .def(
          "segment",
          [](PyFlowState& s, IntArray tokens, IntArray lookahead, std::optional<FloatArray> cond, uint64_t seed) {
            auto tok = ids_of(tokens, "tokens");
            auto look = ids_of(lookahead, "lookahead");
            const int64_t n = static_cast<int64_t>(tok.size()), mel = s.flow->config().mel_dim;
            std::vector<float> c;
            if (cond) {
              MINMO_CHECK(cond->ndim() == 2 && cond->shape(0) == 2 * n && cond->shape(1) == mel,
                          ErrorCode::InvalidArgument, "cond must have shape [" << 2 * n << ", " << mel << "]");
              c = floats_of(*cond);
            }
            minmo::Tensor out;
            {
              py::gil_scoped_release release;
              out = s.flow->segment(s.state, tok.data(), n, look.data(), static_cast<int64_t>(look.size()),
                                    cond ? c.data() : nullptr, seed);
            }
            return minmo::pyb::to_numpy(out);
          },
          py::arg("tokens"), py::arg("lookahead"), py::arg("cond") = py::none(), py::arg("seed") = 0,
          "FlowModel::segment: the next segment's tokens and lookahead -> its mel [2n, 80].")
      .def(
          "reserve",
          [](PyFlowState& s, int64_t segment_tokens, int64_t cache_tokens) {
            s.flow->reserve(s.state, segment_tokens, cache_tokens);
          },
          py::arg("segment_tokens"), py::arg("cache_tokens"),
          "FlowModel::reserve: device buffers for segments of up to segment_tokens tokens and caches of "
          "cache_tokens tokens; on a fresh state with left_chunks >= 0 also the device encoder.")
      .def_property_readonly("encoder_device", [](const PyFlowState& s) { return s.flow->encoder_device(s.state); },
                             "Where segment() runs this state's encoder.")
      .def_property_readonly("tokens_done", [](const PyFlowState& s) { return s.state.tokens_done; });
  t.def(
      "flow_encode_segments",
      [](const std::string& weights, const std::string& config, std::vector<IntArray> utterances, int64_t prompt_tokens,
         int64_t chunk_tokens, int64_t left_chunks, const std::string& device, int64_t max_tokens, int64_t passes) {
        MINMO_CHECK(chunk_tokens >= 1 && prompt_tokens >= 0, ErrorCode::InvalidArgument,
                    "chunk_tokens must be >= 1 and prompt_tokens >= 0");
        std::vector<std::vector<int64_t>> ids;
        for (const auto& u : utterances) ids.push_back(ids_of(u, "tokens"));
        std::vector<std::vector<minmo::Tensor>> mus(ids.size());
        {
          py::gil_scoped_release release;
          auto flow = load_flow(weights, config);
          const int64_t L = flow->config().pre_lookahead;
          // segments per utterance: the prompt, then chunks; lookahead = the next tokens (cut at the end)
          std::vector<std::vector<std::pair<int64_t, int64_t>>> segs(ids.size());
          int64_t longest = 1, total = 1;
          for (size_t u = 0; u < ids.size(); ++u) {
            const int64_t N = static_cast<int64_t>(ids[u].size()), P = std::min(prompt_tokens, N);
            if (P > 0) segs[u].push_back({0, P});
            for (int64_t a = P; a < N; a += chunk_tokens) segs[u].push_back({a, std::min(a + chunk_tokens, N)});
            for (auto [a, b] : segs[u]) longest = std::max(longest, b - a);
            total = std::max(total, N);
          }
          std::unique_ptr<minmo::cuda::CudaFlowEncoder> enc;
          std::vector<std::unique_ptr<minmo::cuda::CudaFlowEncoderState>> dev_states;
          std::vector<minmo::FlowState> cpu_states;
          if (device != "cpu") {
            enc = std::make_unique<minmo::cuda::CudaFlowEncoder>(*flow, minmo::open_device(device));
            for (size_t u = 0; u < ids.size(); ++u)
              dev_states.push_back(std::make_unique<minmo::cuda::CudaFlowEncoderState>(
                  *enc, prompt_tokens > 0, left_chunks, longest, max_tokens > 0 ? max_tokens : total));
          } else {
            for (size_t u = 0; u < ids.size(); ++u)
              cpu_states.push_back(flow->new_state(std::vector<float>(flow->config().spk_dim, 1.f), prompt_tokens > 0,
                                                   left_chunks));
          }
          for (int64_t pass = 0; pass < std::max<int64_t>(passes, 1); ++pass) {
          if (pass > 0) {  // again on the same states: device states reset (graphs kept), CPU states new
            for (auto& m : mus) m.clear();
            for (auto& d : dev_states) d->reset(prompt_tokens > 0, left_chunks);
            for (auto& c : cpu_states)
              c = flow->new_state(std::vector<float>(flow->config().spk_dim, 1.f), prompt_tokens > 0, left_chunks);
          }
          for (size_t k = 0;; ++k) {  // round robin over the utterances, one segment each
            bool any = false;
            for (size_t u = 0; u < ids.size(); ++u) {
              if (k >= segs[u].size()) continue;
              any = true;
              const auto [a, b] = segs[u][k];
              const int64_t N = static_cast<int64_t>(ids[u].size()), n_look = std::min(L, N - b);
              const int64_t* t = ids[u].data();
              if (enc) {
                mus[u].push_back(enc->encode_segment(*dev_states[u], t + a, b - a, t + b, n_look));
              } else {
                minmo::FlowState& st = cpu_states[u];
                mus[u].push_back(flow->encode_segment(st, t + a, b - a, t + b, n_look));
                st.tokens_done += b - a;
                st.segments_done += 1;
              }
            }
            if (!any) break;
          }
          }
        }
        py::list out;
        for (auto& per : mus) {
          py::list l;
          for (auto& mu : per) l.append(minmo::pyb::to_numpy(mu));
          out.append(l);
        }
        return out;
      },
      py::arg("weights_path"), py::arg("config"), py::arg("utterances"), py::arg("prompt_tokens") = 0,
      py::arg("chunk_tokens") = 15, py::arg("left_chunks") = -1, py::arg("device") = "cpu", py::arg("max_tokens") = 0,
      py::arg("passes") = 1,
      "The flow encoder segment by segment (FlowModel::encode_segment on the CPU, CudaFlowEncoder on cuda / "
      "cuda-sim), each utterance on its own state, segments interleaved round robin: the first prompt_tokens "
      "tokens are segment 0, then chunks of chunk_tokens, each with the next pre_lookahead tokens as lookahead. "
      "Returns per utterance the list of mu [2n, 80]. max_tokens: the device states' cache size (0: the longest "
      "utterance). passes > 1: the whole schedule again on the same states (CudaFlowEncoderState::reset, so "
      "the device replays its recorded graphs); the last pass's results.");
  t.def(
      "hift_synthesize",
      [](const std::string& weights, const std::string& config, FloatArray mel, uint64_t seed,
         const std::string& device) {
        std::vector<float> wav;
        {
          auto h = load_hift(weights, config, device);
          int64_t T = 0;
          const float* p = mel_rows(mel, h->config().mel_dim, &T);
          py::gil_scoped_release release;
          wav = h->synthesize(p, T, seed);
        }
        return vec_to_numpy(wav, {static_cast<int64_t>(wav.size())});
      },
      py::arg("weights_path"), py::arg("config"), py::arg("mel"), py::arg("seed") = 0, py::arg("device") = "cpu",
      "Offline HiFT: mel [T, 80] -> audio (decode on `device`).");
  t.def(
      "hift_f0",
      [](const std::string& weights, const std::string& config, FloatArray mel, const std::string& device) {
        auto h = load_hift(weights, config, device);
        int64_t T = 0;
        const float* p = mel_rows(mel, h->config().mel_dim, &T);
        MINMO_CHECK(T > 0, ErrorCode::InvalidArgument, "mel has no frames");
        std::vector<float> f;
        if (const minmo::cuda::CudaHift* g = h->gpu()) {
          minmo::cuda::CudaHiftState state(*g, T);
          f = g->f0(state, p, T);
        } else {
          f = h->f0(p, T);
        }
        return vec_to_numpy(f, {T});
      },
      py::arg("weights_path"), py::arg("config"), py::arg("mel"), py::arg("device") = "cpu",
      "HiFT f0 predictor on `device`: mel [T, 80] -> f0 [T].");
  t.def(
      "hift_decode",
      [](const std::string& weights, const std::string& config, FloatArray mel, FloatArray source,
         const std::string& device) {
        auto h = load_hift(weights, config, device);
        int64_t T = 0;
        const float* p = mel_rows(mel, h->config().mel_dim, &T);
        const int64_t S = h->config().samples_per_frame();
        MINMO_CHECK(source.ndim() == 1 && source.shape(0) == S * T, ErrorCode::InvalidArgument,
                    "source must have " << S * T << " samples");
        std::vector<float> wav;
        {
          py::gil_scoped_release release;
          if (const minmo::cuda::CudaHift* g = h->gpu()) {
            minmo::cuda::CudaHiftState state(*g, T);
            wav = g->decode(state, p, T, source.data());
          } else {
            wav = h->decode(p, T, source.data());
          }
        }
        return vec_to_numpy(wav, {S * T});
      },
      py::arg("weights_path"), py::arg("config"), py::arg("mel"), py::arg("source"), py::arg("device") = "cpu",
      "HiFT filter network + iSTFT on `device`: mel [T, 80], source [S*T] -> audio [S*T].");
  t.def(
      "hift_device",
      [](const std::string& weights, const std::string& config, const std::string& device) {
        return load_hift(weights, config, device)->device();
      },
      py::arg("weights_path"), py::arg("config"), py::arg("device"), "Where a HiFT loaded for `device` decodes.");
  t.def(
      "hift_receptive_field",
      [](const std::string& weights, const std::string& config) { return load_hift(weights, config)->receptive_field(); },
      py::arg("weights_path"), py::arg("config"), "(left, right) mel frames of the exact streaming window.");
  t.def(
      "hift_streamed",
      [](const std::string& weights, const std::string& config, FloatArray mel, std::vector<int64_t> sizes, uint64_t seed,
         const std::string& device) {
        auto h = load_hift(weights, config, device);
        int64_t T = 0;
        const float* p = mel_rows(mel, h->config().mel_dim, &T);
        std::vector<float> wav;
        std::vector<int64_t> outs;
        {
          py::gil_scoped_release release;
          minmo::HiftStream s(*h, seed);
          int64_t at = 0;
          for (int64_t n : sizes) {
            n = std::min(n, T - at);
            if (n <= 0) break;
            auto a = s.push(p + at * h->config().mel_dim, n);
            outs.push_back(static_cast<int64_t>(a.size()));
            wav.insert(wav.end(), a.begin(), a.end());
            at += n;
          }
          if (at < T) {
            auto a = s.push(p + at * h->config().mel_dim, T - at);
            outs.push_back(static_cast<int64_t>(a.size()));
            wav.insert(wav.end(), a.begin(), a.end());
          }
          auto a = s.finish();
          outs.push_back(static_cast<int64_t>(a.size()));
          wav.insert(wav.end(), a.begin(), a.end());
        }
        return py::make_tuple(vec_to_numpy(wav, {static_cast<int64_t>(wav.size())}), outs);
      },
      py::arg("weights_path"), py::arg("config"), py::arg("mel"), py::arg("push_sizes"), py::arg("seed") = 0,
      py::arg("device") = "cpu", "Exact streaming HiFT: pushes mel rows in pieces, then finish(). Returns (audio, samples out per call).");

  t.def(
      "hift_streamed_concurrent",
      [](const std::string& weights, const std::string& config, std::vector<FloatArray> mels,
         std::vector<int64_t> sizes, std::vector<uint64_t> seeds, const std::string& device, bool threads) {
        MINMO_CHECK(!mels.empty() && mels.size() == seeds.size() && !sizes.empty(), ErrorCode::InvalidArgument,
                    "one seed per mel and at least one push size");
        auto h = load_hift(weights, config, device);
        const int64_t M = h->config().mel_dim;
        std::vector<const float*> rows(mels.size());
        std::vector<int64_t> frames(mels.size());
        for (size_t i = 0; i < mels.size(); ++i) rows[i] = mel_rows(mels[i], M, &frames[i]);
        std::vector<std::vector<float>> wav(mels.size());
        {
          py::gil_scoped_release release;
          std::vector<std::unique_ptr<minmo::HiftStream>> st;
          for (uint64_t seed : seeds) st.push_back(std::make_unique<minmo::HiftStream>(*h, seed));
          std::vector<int64_t> at(mels.size(), 0);
          // push number j of stream i: sizes[j % sizes.size()] rows (the rest at the end), then finish()
          auto step = [&](size_t i, size_t j) {
            const int64_t n = std::min(sizes[j % sizes.size()], frames[i] - at[i]);
            auto a = n > 0 ? st[i]->push(rows[i] + at[i] * M, n) : st[i]->finish();
            at[i] += n > 0 ? n : 0;
            wav[i].insert(wav[i].end(), a.begin(), a.end());
            return n > 0;
          };
          if (threads) {
            std::vector<std::thread> pool;
            std::vector<std::exception_ptr> err(mels.size());
            for (size_t i = 0; i < mels.size(); ++i)
              pool.emplace_back([&, i] {
                try {
                  for (size_t j = 0; step(i, j); ++j) {
                  }
                } catch (...) {
                  err[i] = std::current_exception();
                }
              });
            for (auto& th : pool) th.join();
            for (auto& e : err)
              if (e) std::rethrow_exception(e);
          } else {
            std::vector<bool> live(mels.size(), true);
            for (size_t j = 0, n_live = mels.size(); n_live > 0; ++j)
              for (size_t i = 0; i < mels.size(); ++i)
                if (live[i] && !step(i, j)) {
                  live[i] = false;
                  --n_live;
                }
          }
        }
        py::list out;
        for (const auto& w : wav) out.append(vec_to_numpy(w, {static_cast<int64_t>(w.size())}));
        return out;
      },
      py::arg("weights_path"), py::arg("config"), py::arg("mels"), py::arg("push_sizes"), py::arg("seeds"),
      py::arg("device") = "cpu", py::arg("threads") = false,
      "Several exact HiFT streams of one model: push i of each stream has push_sizes[i % len] rows, then finish(); "
      "interleaved push by push on one thread, or one thread per stream. Returns each stream's audio.");
  t.def(
      "counter_normal",
      [](uint64_t seed, uint64_t stream, uint64_t start, int64_t count, const std::string& device) {
        MINMO_CHECK(count >= 1, ErrorCode::InvalidArgument, "count must be >= 1");
        std::vector<float> out(static_cast<size_t>(count));
        {
          py::gil_scoped_release release;
          auto dev = minmo::open_device(device);
          if (!dev) {
            minmo::counter_normal(seed, stream, start, count, out.data());
          } else {
            namespace cu = minmo::cuda;
            cu::Stream st(dev);
            cu::Allocation d(dev, sizeof(float) * count, cu::MemoryKind::Device);
            cu::Allocation h(dev, sizeof(float) * count, cu::MemoryKind::PinnedHost);
            MINMO_DEVICE_CALL(st, counter_normal_f32, seed, stream, start, count, d.as<float>());
            st.download(h.data(), d.data(), sizeof(float) * count);
            st.sync();
            std::memcpy(out.data(), h.data(), sizeof(float) * count);
          }
        }
        return vec_to_numpy(out, {count});
      },
      py::arg("seed"), py::arg("stream"), py::arg("start"), py::arg("count"), py::arg("device") = "cpu",
      "Normals start .. start+count-1 of (seed, stream): the runtime's counter_normal on the CPU, "
      "minmo_counter_normal_f32 on a device.");

  py::class_<PyStream>(t, "Token2WavStream")
      .def(py::init([](const std::string& flow_weights, const std::string& flow_config, const std::string& hift_weights,
                       const std::string& hift_config, FloatArray speaker, IntArray prompt_tokens, FloatArray prompt_mel,
                       uint64_t seed, int chunk_tokens, int lookahead, int left_chunks, const std::string& device) {
             auto s = std::make_unique<PyStream>();
             s->flow = load_flow(flow_weights, flow_config, device);
             s->hift = load_hift(hift_weights, hift_config, device);
             minmo::Token2WavOptions o;
             o.speaker = floats_of(speaker);
             o.prompt_tokens = ids_of(prompt_tokens, "prompt_tokens");
             o.prompt_mel = floats_of(prompt_mel);
             o.seed = seed;
             o.chunk_tokens = chunk_tokens;
             o.lookahead = lookahead;
             o.left_chunks = left_chunks;
             s->stream = std::make_unique<minmo::Token2WavStream>(*s->flow, *s->hift, std::move(o));
             return s;
           }),
           py::arg("flow_weights"), py::arg("flow_config"), py::arg("hift_weights"), py::arg("hift_config"),
           py::arg("speaker"), py::arg("prompt_tokens") = IntArray(0), py::arg("prompt_mel") = FloatArray(0),
           py::arg("seed") = 0, py::arg("chunk_tokens") = 15, py::arg("lookahead") = 3, py::arg("left_chunks") = 4,
           py::arg("device") = "cpu")
      .def(
          "push",
          [](PyStream& s, IntArray tokens) {
            auto ids = ids_of(tokens, "tokens");
            std::vector<float> a;
            {
              py::gil_scoped_release release;
              a = s.stream->push(ids.data(), ids.size());
            }
            return vec_to_numpy(a, {static_cast<int64_t>(a.size())});
          },
          py::arg("tokens"), "Appends speech tokens; returns the audio that became final.")
      .def("finish",
           [](PyStream& s) {
             std::vector<float> a;
             {
               py::gil_scoped_release release;
               a = s.stream->finish();
             }
             return vec_to_numpy(a, {static_cast<int64_t>(a.size())});
           })
      .def_property_readonly("finished", [](const PyStream& s) { return s.stream->finished(); })
      .def_property_readonly("segment_times",
                             [](const PyStream& s) {
                               std::vector<std::pair<double, double>> out;
                               for (const auto& t : s.stream->segment_times()) out.emplace_back(t.flow_ms, t.hift_ms);
                               return out;
                             },
                             "[(flow_ms, hift_ms)] per generated segment run so far")
      .def_property_readonly("mel", [](const PyStream& s) {
        const auto& m = s.stream->mel();
        return vec_to_numpy(m, {s.stream->mel_frames_out(), s.flow->config().mel_dim});
      });
}
