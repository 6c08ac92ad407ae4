// minmo_rt._core.testing_audio: the audio frontends and voice encoders on numpy arrays, for
// verification against the PyTorch reference (tests/test_audio_modules.py). Every function
// loads its module from a .safetensors file and a config given as a JSON string, runs it with
// the GIL released and returns new numpy arrays. Inputs are converted to C-contiguous float32;
// shape errors raise InvalidInputError (a ValueError).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "audio/fbank_frontend.h"
#include "audio/whisper_frontend.h"
#include "backends/backend.h"
#include "core/safetensors.h"
#include "minmo/status.h"
#include "modules/projector.h"
#include "modules/sensevoice_large.h"
#include "modules/sensevoice_small.h"
#include "numpy_util.h"
#include "registry.h"

namespace py = pybind11;
using minmo::ErrorCode;

namespace {

using minmo::pyb::FloatArray;

using minmo::pyb::parse_json;
using minmo::pyb::to_numpy;

const float* wave_ptr(const FloatArray& wave, size_t* n) {
  MINMO_CHECK(wave.ndim() == 1, ErrorCode::InvalidArgument,
              "waveform must be 1-D (mono samples), got " << wave.ndim() << " dimensions");
  *n = static_cast<size_t>(wave.shape(0));
  return wave.data();
}

void check_2d(const FloatArray& a, const char* name) {
  MINMO_CHECK(a.ndim() == 2, ErrorCode::InvalidArgument,
              name << " must be 2-D [frames, dim], got " << a.ndim() << " dimensions");
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

// Streams `n` items of `stride` floats through push/take, in pieces of the given sizes (the rest,
// if any, as one last piece); returns all outputs concatenated and the rows out after each push
// (the last entry: rows out of finish()).
template <typename PushFn, typename FinishFn>
std::pair<minmo::Tensor, std::vector<int64_t>> run_schedule(int64_t n, const std::vector<int64_t>& sizes, int64_t dim,
                                                             PushFn push_take, FinishFn finish) {
  std::vector<minmo::Tensor> parts;
  std::vector<int64_t> counts;
  int64_t at = 0;
  auto piece = [&](int64_t len) {
    parts.push_back(push_take(at, len));
    counts.push_back(parts.back().rows());
    at += len;
  };
  for (int64_t s : sizes) {
    MINMO_CHECK(s >= 0, ErrorCode::InvalidArgument, "push sizes must be >= 0, got " << s);
    if (at >= n) break;
    piece(std::min(s, n - at));
  }
  if (at < n) piece(n - at);
  parts.push_back(finish());
  counts.push_back(parts.back().rows());
  return {concat_rows(parts, dim), counts};
}


// Binding body: loads frontend F from (weights_path, config) and runs `compute` on a whole waveform.
template <class F>
auto frontend_offline(minmo::Tensor (F::*compute)(const float*, size_t) const) {
  return [compute](const std::string& weights_path, const std::string& config, FloatArray wave) {
    size_t n;
    const float* p = wave_ptr(wave, &n);
    minmo::Tensor out;
    {
      py::gil_scoped_release release;
      auto fe = F::load(minmo::WeightStore::open(weights_path), parse_json(config, "config"));
      out = ((*fe).*compute)(p, n);
    }
    return to_numpy(out);
  };
}

// Binding body: streams a waveform through frontend F's Stream in pieces of push_sizes samples
// (see run_schedule). Returns (features, rows out per push + [rows out of finish]).
template <class F, class Stream>
auto frontend_streamed() {
  return [](const std::string& weights_path, const std::string& config, FloatArray wave, std::vector<int64_t> sizes) {
    size_t n;
    const float* p = wave_ptr(wave, &n);
    std::pair<minmo::Tensor, std::vector<int64_t>> res;
    {
      py::gil_scoped_release release;
      auto fe = F::load(minmo::WeightStore::open(weights_path), parse_json(config, "config"));
      Stream s(fe);
      res = run_schedule(
          static_cast<int64_t>(n), sizes, fe->output_dim(),
          [&](int64_t at, int64_t len) {
            s.push(p + at, static_cast<size_t>(len));
            return s.take_ready();
          },
          [&] { return s.finish(); });
    }
    return py::make_tuple(to_numpy(res.first), res.second);
  };
}

}  // namespace

MINMO_PY_BINDING(bind_testing_audio) {
  py::module_ t = m.def_submodule(
      "testing_audio",
      "Audio frontends and voice encoders on numpy arrays (verification against the PyTorch reference). "
      "Each function loads the module from `weights_path` (.safetensors) with `config` (JSON string of the "
      "module config) and, for encoders, `chunk` (JSON string of the manifest's streaming settings).");

  // ---- kaldi fbank frontend
  t.def("fbank_offline", frontend_offline(&minmo::FbankFrontend::compute), py::arg("weights_path"), py::arg("config"),
        py::arg("waveform"), "Kaldi fbank + LFR + CMVN of a whole waveform: [rows, lfr_m * num_mel_bins].");
  t.def("fbank_logmel", frontend_offline(&minmo::FbankFrontend::fbank), py::arg("weights_path"), py::arg("config"),
        py::arg("waveform"), "Kaldi log-mel fbank frames before LFR / CMVN: [frames, num_mel_bins].");
  t.def("fbank_streamed", frontend_streamed<minmo::FbankFrontend, minmo::FbankFrontendStream>(),
        py::arg("weights_path"), py::arg("config"), py::arg("waveform"), py::arg("push_sizes"),
        "Streamed fbank frontend: pushes the waveform in pieces of push_sizes samples (rest as one piece), "
        "take_ready() after each, then finish(). Returns (features, rows out per push + [rows out of finish]).");

  // ---- whisper log-mel frontend
  t.def("whisper_offline", frontend_offline(&minmo::WhisperFrontend::compute), py::arg("weights_path"),
        py::arg("config"), py::arg("waveform"), "Whisper log-mel of a whole waveform: [num_samples // hop, n_mels].");
  t.def("whisper_streamed", frontend_streamed<minmo::WhisperFrontend, minmo::WhisperFrontendStream>(),
        py::arg("weights_path"), py::arg("config"), py::arg("waveform"), py::arg("push_sizes"),
        "Streamed whisper frontend (see fbank_streamed). Returns (features, rows out per push + [finish]).");

  // ---- SenseVoice-Small
  t.def(
      "sensevoice_small_run",
      [](const std::string& weights_path, const std::string& config, const std::string& chunk, FloatArray features,
         std::vector<int64_t> query_ids) {
        check_2d(features, "features");
        minmo::SenseVoiceSmallEncoder::Output out;
        {
          py::gil_scoped_release release;
          auto enc = minmo::SenseVoiceSmallEncoder::load(minmo::WeightStore::open(weights_path),
                                                         parse_json(config, "config"), parse_json(chunk, "chunk"));
          out = enc->run(features.data(), features.shape(0), features.shape(1), query_ids.data(),
                         static_cast<int64_t>(query_ids.size()));
        }
        return py::make_tuple(to_numpy(out.encoder_out), to_numpy(out.ctc_logits));
      },
      py::arg("weights_path"), py::arg("config"), py::arg("chunk"), py::arg("features"), py::arg("query_ids"),
      "SenseVoice-Small encoder: features [T, input_dim], 4 query ids -> (encoder_out [T+4, d], ctc_logits [T+4, V]).");
  t.def(
      "ctc_greedy",
      [](FloatArray logits, int64_t blank) {
        check_2d(logits, "logits");
        std::vector<int64_t> ids;
        {
          py::gil_scoped_release release;
          ids = minmo::SenseVoiceSmallEncoder::ctc_greedy(logits.data(), logits.shape(0), logits.shape(1), blank);
        }
        return ids;
      },
      py::arg("logits"), py::arg("blank") = 0,
      "Greedy CTC: per-frame argmax, repeats collapsed, blank dropped -> list of token ids.");

  // ---- SenseVoice-Large
  t.def(
      "sensevoice_large_run",
      [](const std::string& weights_path, const std::string& config, const std::string& chunk, FloatArray mel,
         const std::string& device) {
        check_2d(mel, "mel");
        minmo::Tensor out;
        {
          py::gil_scoped_release release;
          auto enc = minmo::SenseVoiceLargeEncoder::load(minmo::WeightStore::open(weights_path),
                                                         parse_json(config, "config"), parse_json(chunk, "chunk"),
                                                         minmo::open_device(device));
          out = enc->run(mel.data(), mel.shape(0), mel.shape(1));
        }
        return to_numpy(out);
      },
      py::arg("weights_path"), py::arg("config"), py::arg("chunk"), py::arg("mel"), py::arg("device") = "cpu",
      "SenseVoice-Large encoder offline: mel [T, n_mels] -> frames [encoder_frames(T), d]; device: where the "
      "blocks run ('cpu', 'cuda', 'cuda-sim'; BundleError for a configuration the CUDA kernels lack).");
  t.def(
      "sensevoice_large_streamed",
      [](const std::string& weights_path, const std::string& config, const std::string& chunk, FloatArray mel,
         std::vector<int64_t> sizes, const std::string& device) {
        check_2d(mel, "mel");
        std::pair<minmo::Tensor, std::vector<int64_t>> res;
        {
          py::gil_scoped_release release;
          auto enc = minmo::SenseVoiceLargeEncoder::load(minmo::WeightStore::open(weights_path),
                                                         parse_json(config, "config"), parse_json(chunk, "chunk"),
                                                         minmo::open_device(device));
          minmo::LargeEncoderStream s(enc);
          const float* p = mel.data();
          const int64_t width = mel.shape(1);
          res = run_schedule(
              mel.shape(0), sizes, enc->output_dim(),
              [&](int64_t at, int64_t len) { return s.push(p + at * width, len, width); },
              [&] { return s.finish(); });
        }
        return py::make_tuple(to_numpy(res.first), res.second);
      },
      py::arg("weights_path"), py::arg("config"), py::arg("chunk"), py::arg("mel"), py::arg("push_sizes"),
      py::arg("device") = "cpu",
      "Streamed chunked SenseVoice-Large encoder: pushes mel rows in pieces of push_sizes rows, then finish(). "
      "Returns (frames, frames out per push + [frames out of finish]).");
  t.def(
      "speech_tokens_streamed",
      [](const std::string& enc_path, const std::string& enc_config, const std::string& proj_path,
         const std::string& proj_config, const std::string& chunk, FloatArray mel, std::vector<int64_t> sizes,
         const std::string& device) {
        check_2d(mel, "mel");
        std::pair<minmo::Tensor, std::vector<int64_t>> res;
        bool fused = false;
        {
          py::gil_scoped_release release;
          const auto dev = minmo::open_device(device);
          const nlohmann::json ck = parse_json(chunk, "chunk");
          auto enc = minmo::SenseVoiceLargeEncoder::load(minmo::WeightStore::open(enc_path),
                                                         parse_json(enc_config, "config"), ck, dev);
          auto proj = minmo::InputProjector::load(minmo::WeightStore::open(proj_path),
                                                  parse_json(proj_config, "config"), ck, dev);
          fused = enc->device_blocks() && proj->device_projector();
          minmo::LargeEncoderStream es(enc, fused ? proj->device_projector() : nullptr);
          minmo::ProjectorStream ps(proj);
          const float* p = mel.data();
          const int64_t width = mel.shape(1);
          res = run_schedule(
              mel.shape(0), sizes, proj->output_dim(),
              [&](int64_t at, int64_t len) {
                minmo::Tensor out = es.push(p + at * width, len, width);
                return fused ? out : ps.push(out);
              },
              [&] {
                minmo::Tensor out = es.finish();
                if (fused) return out;
                minmo::Tensor toks = out.rows() ? ps.push(out) : minmo::Tensor({0, proj->output_dim()});
                minmo::Tensor rest = ps.finish();
                return concat_rows({toks, rest}, proj->output_dim());
              });
        }
        return py::make_tuple(to_numpy(res.first), res.second, fused);
      },
      py::arg("encoder_path"), py::arg("encoder_config"), py::arg("projector_path"), py::arg("projector_config"),
      py::arg("chunk"), py::arg("mel"), py::arg("push_sizes"), py::arg("device") = "cpu",
      "The chunked encoder then the projector, streamed: mel rows in pieces of push_sizes rows, then finish(). On a "
      "device that runs both, one graph per chunk (the frames stay on the device). Returns (tokens, tokens out per "
      "push + [tokens out of finish], fused).");
}
