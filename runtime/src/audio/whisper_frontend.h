// SenseVoice-Large frontend (reference: export/reference/frontend.py WhisperLogMelFrontend):
//   waveform in [-1, 1] -> centred frames (n_fft samples every hop, reflect padding of n_fft/2 on
//   both sides, last STFT frame dropped) -> Hann window -> |DFT_n_fft|^2 -> slaney mel filters
//   -> log10(max(., 1e-10)) -> max(., log_ceiling - 8) -> (x + 4) / 4.
// Output: [num_samples // hop, n_mels]. Tensors from the weights file: "mel_filters"
// [n_mels, n_fft/2 + 1], "window" [n_fft]. Spectra are computed in double.
//
// Whisper's own clamp uses the utterance maximum (log_ceiling = null), which needs the whole
// utterance: the runtime refuses that config (InvalidArgument, not streamable).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include <nlohmann/json.hpp>

#include "audio/spectral.h"
#include "core/safetensors.h"
#include "core/tensor.h"

namespace minmo {

// Python WhisperFrontendConfig (same keys and defaults).
struct WhisperFrontendConfig {
  int64_t sample_rate = 16000;
  int64_t n_fft = 400;
  int64_t hop_length = 160;
  int64_t n_mels = 128;
  std::optional<double> log_ceiling = 2.0;  // null in JSON -> nullopt

  // Throws BundleError on unknown keys / wrong types / invalid values (a null log_ceiling is
  // accepted here; WhisperFrontend refuses it).
  static WhisperFrontendConfig from_json(const nlohmann::json& config);
};

class WhisperFrontend {
 public:
  // Throws InvalidArgument if config.log_ceiling is null (not streamable); NotFound /
  // BundleError for a missing / misshaped tensor.
  WhisperFrontend(const WhisperFrontendConfig& config, const WeightStore& weights);
  static std::shared_ptr<const WhisperFrontend> load(const WeightStore& weights, const nlohmann::json& config);

  const WhisperFrontendConfig& config() const { return cfg_; }
  int64_t output_dim() const { return cfg_.n_mels; }
  // Output rows of a waveform of `num_samples` samples.
  int64_t num_frames(int64_t num_samples) const { return num_samples / cfg_.hop_length; }

  // Offline: exactly one stream push + finish. Throws InvalidArgument if 0 < num_samples // hop
  // and num_samples <= n_fft / 2 (too short for the reflect padding, as the reference).
  Tensor compute(const float* samples, size_t n) const;

  // Log-mel rows of frames first .. first+count-1 of a waveform whose first `num_samples`
  // samples exist so far; buf holds samples from absolute index `base` on (it must cover every
  // sample the frames read, reflect padding included). out[count, n_mels]. OpenMP-parallel; each
  // frame is computed identically whatever `count` is.
  void frames(const float* buf, int64_t base, int64_t num_samples, int64_t first, int64_t count, float* out) const;

 private:
  WhisperFrontendConfig cfg_;
  double floor_;  // log_ceiling - 8
  audio::PowerSpectrum spectrum_;
  audio::MelProjection mel_;
  std::vector<double> window_;
};

// Streaming whisper frontend with the FbankFrontendStream contract: frame f is final once the
// samples up to f*hop + n_fft/2 exist (and, for the first frames, the n_fft/2 + 1 samples the
// left reflect pad reads); the frames that need the right reflect pad come out of finish().
// Concatenated outputs equal WhisperFrontend::compute bit for bit for any push schedule.
class WhisperFrontendStream {
 public:
  explicit WhisperFrontendStream(std::shared_ptr<const WhisperFrontend> frontend);
  // Appends samples (float in [-1, 1]). Throws InvalidArgument after finish() (call reset()).
  void push(const float* samples, size_t n);
  // New final rows [k, n_mels].
  Tensor take_ready();
  // The remaining rows (total = num_samples // hop); throws InvalidArgument if the waveform is
  // too short for the reflect padding (see WhisperFrontend::compute). Ends the stream.
  Tensor finish();
  void reset();
  int64_t samples_pushed() const { return total_samples_; }
  int64_t rows_emitted() const { return frames_done_; }
  const WhisperFrontend& frontend() const { return *fe_; }

 private:
  Tensor compute_frames(int64_t end, bool final);

  std::shared_ptr<const WhisperFrontend> fe_;
  std::vector<float> samples_;  // waveform from absolute sample samples_base_
  int64_t samples_base_ = 0, total_samples_ = 0;
  int64_t frames_done_ = 0;
  bool finished_ = false;
};

}  // namespace minmo
