// SenseVoice-Small frontend (reference: export/reference/frontend.py KaldiFbankFrontend):
//   waveform in [-1, 1] * waveform_scale -> frames (win = 25 ms, hop = 10 ms, snip_edges, no
//   dither) -> remove DC -> pre-emphasis -> Hamming window -> |DFT_512|^2 -> kaldi mel banks ->
//   log(max(., FLT_EPSILON)) -> LFR stacking (m frames every n, left pad (m-1)/2 copies of
//   frame 0, tail repeats the last frame) -> CMVN (x + shift) * scale.
// Output rows: ceil(frames / lfr_n), each lfr_m * num_mel_bins wide.
//
// The filterbank, window and CMVN vectors come from the module's weights file (tensors
// "mel_banks" [num_mel_bins, padded/2 + 1], "window" [win], "cmvn_shift" / "cmvn_scale"
// [lfr_m * num_mel_bins]); nothing is recomputed here. Spectra are computed in double.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>

#include "audio/spectral.h"
#include "core/safetensors.h"
#include "core/tensor.h"

namespace minmo {

// Python FbankFrontendConfig (same keys and defaults).
struct FbankFrontendConfig {
  int64_t sample_rate = 16000;
  int64_t num_mel_bins = 80;
  double frame_length_ms = 25.0;
  double frame_shift_ms = 10.0;
  double preemphasis = 0.97;
  double low_freq = 20.0;
  double high_freq = 0.0;
  int64_t lfr_m = 7;
  int64_t lfr_n = 6;
  bool apply_cmvn = true;
  double waveform_scale = 32768.0;

  // Throws BundleError on unknown keys / wrong types / invalid values.
  static FbankFrontendConfig from_json(const nlohmann::json& config);
  int64_t output_dim() const { return num_mel_bins * lfr_m; }
};

// Immutable frontend (config + tables); share it between streams with shared_ptr.
class FbankFrontend {
 public:
  // Reads the tensors named above from `weights` (NotFound naming a missing tensor, BundleError
  // naming a tensor of the wrong shape with both shapes).
  FbankFrontend(const FbankFrontendConfig& config, const WeightStore& weights);
  static std::shared_ptr<const FbankFrontend> load(const WeightStore& weights, const nlohmann::json& config);

  const FbankFrontendConfig& config() const { return cfg_; }
  int64_t window_length() const { return win_; }   // samples per frame (400)
  int64_t hop_length() const { return hop_; }      // samples between frames (160)
  int64_t padded_length() const { return padded_; }  // DFT size (512)
  int64_t output_dim() const { return cfg_.output_dim(); }
  // Fbank frames of a waveform of `num_samples` samples (snip_edges).
  int64_t num_frames(int64_t num_samples) const;

  // Offline: the whole waveform -> features [rows, output_dim]; exactly one stream push + finish.
  Tensor compute(const float* samples, size_t n) const;
  // Log-mel energies before LFR / CMVN: [num_frames(n), num_mel_bins].
  Tensor fbank(const float* samples, size_t n) const;
  // Log-mel energies of `count` frames whose first sample is samples[0] and which start every
  // hop samples (samples must hold (count - 1) * hop + win values): out[count, num_mel_bins].
  // OpenMP-parallel over frames; each frame is computed identically whatever `count` is.
  void frames(const float* samples, int64_t count, float* out) const;


 private:
  FbankFrontendConfig cfg_;
  int64_t win_, hop_, padded_;
  audio::PowerSpectrum spectrum_;
  audio::MelProjection mel_;
  std::vector<double> window_;
  std::vector<float> cmvn_shift_, cmvn_scale_;
  friend class FbankFrontendStream;
};

// Streaming fbank frontend. push() waveform pieces of any size; take_ready() returns the feature
// rows that became final (an LFR row is final once every frame it stacks exists); finish()
// returns the remaining rows (the tail rows repeat the last frame) and ends the stream.
// Concatenated outputs equal FbankFrontend::compute on the whole waveform, bit for bit, for any
// push schedule. Not thread-safe (one stream per session).
class FbankFrontendStream {
 public:
  explicit FbankFrontendStream(std::shared_ptr<const FbankFrontend> frontend);
  // Appends samples (float in [-1, 1]). Throws InvalidArgument after finish() (call reset()).
  void push(const float* samples, size_t n);
  // New final rows [k, output_dim] (k may be 0).
  Tensor take_ready();
  // The rows not returned yet, including the tail; the stream then refuses push until reset().
  Tensor finish();
  // Back to an empty stream.
  void reset();
  int64_t samples_pushed() const { return total_samples_; }
  int64_t rows_emitted() const { return rows_emitted_; }
  const FbankFrontend& frontend() const { return *fe_; }

 private:
  void compute_frames();
  Tensor emit(bool final);

  std::shared_ptr<const FbankFrontend> fe_;
  std::vector<float> samples_;  // waveform from absolute sample samples_base_
  int64_t samples_base_ = 0, total_samples_ = 0;
  std::vector<float> frames_;   // log-mel frames from absolute frame frames_base_
  int64_t frames_base_ = 0, frames_done_ = 0;
  std::vector<float> frame0_;   // frame 0 (the left LFR padding)
  int64_t rows_emitted_ = 0;
  bool finished_ = false;
};

}  // namespace minmo
