// CosyVoice2 HiFT vocoder (export/reference/hift.py): 80-bin mel -> 24 kHz audio, offline and as an
// exact stream (HiftStream).
//
// The vocoder is not causal (its convolutions look both ways), but it is local except for the
// harmonic phase, which accumulates over the whole utterance. HiftStream is exact: it carries the
// phase (float64, in turns) and f0 of finished frames, and finalises the audio of mel frames
// [e0, e1) by running the network over frames [e0 - left, e1 + right) (receptive_field()), so the
// streamed audio equals synthesize() of the whole mel. It holds back `right` frames of audio until
// the following mel (or the end) is known; cost per pushed frame is constant.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/safetensors.h"
#include "core/tensor.h"
#include "modules/audio_common.h"

namespace minmo {

namespace cuda {
class CudaHift;
class CudaHiftState;
class Device;
}  // namespace cuda

struct HiftConfig {
  int64_t mel_dim = 80, base_channels = 512, nb_harmonics = 8, sample_rate = 24000;
  double nsf_alpha = 0.1, nsf_sigma = 0.003, nsf_voiced_threshold = 10.0;
  std::vector<int64_t> upsample_rates{8, 5, 3}, upsample_kernel_sizes{16, 11, 7};
  int64_t n_fft = 16, hop_len = 4;
  std::vector<int64_t> resblock_kernel_sizes{3, 7, 11};
  std::vector<std::vector<int64_t>> resblock_dilation_sizes{{1, 3, 5}, {1, 3, 5}, {1, 3, 5}};
  std::vector<int64_t> source_resblock_kernel_sizes{7, 7, 11};
  std::vector<std::vector<int64_t>> source_resblock_dilation_sizes{{1, 3, 5}, {1, 3, 5}, {1, 3, 5}};
  double lrelu_slope = 0.1, audio_limit = 0.99;
  int64_t f0_channels = 512, f0_layers = 5;

  static HiftConfig from_json(const nlohmann::json& config);
  // Audio samples per mel frame (hop_len * prod(upsample_rates); 480 for CosyVoice2).
  int64_t samples_per_frame() const;
};

class HiftModel {
 public:
  HiftModel(const HiftConfig& config, const WeightStore& weights);
  // device: null for the CPU, else streams and synthesize() run on the CUDA backend
  // (backends/cuda/hift_cuda.h: f0 predictor, NSF source and decode, one enqueue per window). A
  // configuration the kernels do not run is a BundleError, or, with cpu_fallback given, loads on
  // the CPU and stores the reason there.
  static std::shared_ptr<const HiftModel> load(const WeightStore& weights, const nlohmann::json& config,
                                               const std::shared_ptr<cuda::Device>& device = nullptr,
                                               std::string* cpu_fallback = nullptr);
  ~HiftModel();
  const HiftConfig& config() const { return cfg_; }
  // "cpu", "cuda" or "cuda-sim": where streams and synthesize() decode.
  std::string device() const;
  // The device decode (null on the CPU).
  const cuda::CudaHift* gpu() const { return gpu_.get(); }

  // (left, right) mel frames the audio of a frame depends on, rounded up with a frame of margin
  // (hift.receptive_field in the reference).
  std::pair<int64_t, int64_t> receptive_field() const { return rf_; }

  // f0 [T] of mel [T, mel_dim] (zero padding at both ends), on the CPU.
  std::vector<float> f0(const float* mel, int64_t T) const;
  // Filter network + iSTFT on the CPU: mel [T, mel_dim], source [S*T] -> audio [S*T].
  std::vector<float> decode(const float* mel, int64_t T, const float* source) const;
  // NSF source of frames a0 .. a0+T-1 given their f0 and accumulated phases q ([T, H+1], turns);
  // q_prev: the phase of frame a0-1 (null: a0 is the start of the utterance); seed: noise.
  std::vector<float> source(const float* f0, const double* q, const double* q_prev, int64_t T, int64_t a0,
                            uint64_t seed) const;
  // Per-frame phase advance in turns for one sample, per harmonic: r[h] = frac(f0 * (h+1) / sr).
  void phase_step(float f0, double* r) const;
  // Offline synthesis of a whole utterance (the reference HiFT.forward). Throws InvalidArgument on
  // no rows.
  std::vector<float> synthesize(const float* mel, int64_t T, uint64_t seed) const;

 private:
  struct ResBlock {
    std::vector<ConvW> c1, c2;
    std::vector<const float*> a1, a2;  // Snake alphas
  };
  void conv(const ConvW& c, const float* x, int64_t T, std::vector<float>& y, int64_t& Tout) const;
  void resblock(const ResBlock& r, std::vector<float>& x, int64_t T, int64_t C) const;

  HiftConfig cfg_;
  WeightStore weights_;
  std::vector<ConvW> f0_convs_;
  LinearW f0_cls_, l_linear_;
  ConvW conv_pre_, conv_post_;
  std::vector<ConvW> ups_;  // ConvTranspose1d: w [cin, cout, k]
  std::vector<ConvW> source_downs_;
  std::vector<ResBlock> source_res_, res_;
  std::pair<int64_t, int64_t> rf_;
  std::vector<float> window_;  // periodic Hann [n_fft]
  std::shared_ptr<const cuda::CudaHift> gpu_;
  friend class cuda::CudaHift;  // uploads the weights above
};

// Exact streaming HiFT over mel frames pushed in order (see the header comment).
// On a model with a device decode, the stream holds a device state for windows of the receptive
// field plus CudaHift::kMaxStep frames and finalises at most kMaxStep frames per window; the f0
// and phase of finished frames stay in that state (CudaHift::window), so a window is one upload of
// its mel, one enqueue and one download of its final audio.
class HiftStream {
 public:
  HiftStream(const HiftModel& model, uint64_t seed);
  ~HiftStream();
  // Appends mel rows [n, mel_dim]; returns the audio that became final (may be empty).
  std::vector<float> push(const float* mel, int64_t n);
  // The rest of the audio; the stream is done afterwards.
  std::vector<float> finish();
  int64_t frames_emitted() const { return e0_; }

 private:
  std::vector<float> emit(int64_t e1);
  // emit() on the CPU: the audio of frames [e0_, e1) from the mel window [a0, a0 + T) at win.
  std::vector<float> emit_cpu(const float* win, int64_t T, int64_t a0, int64_t e1);
  // Emits up to e1 in windows the device state holds.
  std::vector<float> emit_steps(int64_t e1);
  const HiftModel& m_;
  struct GpuState;
  std::unique_ptr<GpuState> gpu_;
  uint64_t seed_;
  int64_t H_;
  std::vector<float> mel_;   // rows from mel_base_
  int64_t mel_base_ = 0, total_ = 0, e0_ = 0;
  std::vector<float> f0_hist_;   // CPU: exact f0 of frames hist_base_ .. e0_-1 (device: in its state)
  std::vector<double> q_hist_;   // their phases [*, H]
  int64_t hist_base_ = 0;
};

}  // namespace minmo
