// The HiFT vocoder's decode (modules/hift.h: filter network + iSTFT) on the CUDA backend (device
// "cuda" or "cuda-sim"), fp32 like the CPU module and CosyVoice2.
//
// Per window of T mel frames (N = S T samples, F = N / hop + 1 spectral frames), time-major
// [frames, channels] activations, every convolution an im2col (minmo_conv1d_im2col_f32: the
// input's LeakyReLU / Snake applied while gathering, a column of ones for the bias) and one fp32
// product through Gemm::f32 with the weight stored [C_out, C_in k | bias | 0 padding]:
//   source STFT (minmo_hift_stft_f32) -> conv_pre -> per upsampling: LeakyReLU gather, product
//   x @ W.view(C_in, C_out k), col2im + bias (+ the reflection pad after the last one); the source
//   branch (source_down conv, its ResBlock) added (minmo_axpby_f32); the ResBlocks, each on a copy
//   of the stage input, residuals accumulated by the products (beta = 1), averaged with axpby;
//   -> LeakyReLU(0.01) gather, conv_post as the product W @ col^T (channel-major, what the iSTFT
//   reads) -> minmo_hift_istft_f32 (exp / sin, iSTFT, clamp).
// The f0 predictor's convolutions (Conv1d k3 + ELU, each ELU applied by the next gather, and the
// classifier as a k = 1 product) run on the device too (f0()): mel in, f0 out (its abs taken on
// the host). The NSF source (float64 phase, sequential) stays on the host; decode() takes the mel
// and the source and returns the audio; nothing else crosses.
//
// A CudaHiftState holds every buffer for windows of up to max_frames frames, allocated once, and
// one CUDA graph per window length seen twice (up to kMaxGraphs; other lengths run eagerly).
// CudaHift pools states, so a stream (HiftStream) takes one at its start and returns it at its end:
// buffers and graphs outlive utterances.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backends/cuda/device.h"
#include "backends/cuda/gemm.h"
#include "modules/audio_common.h"

namespace minmo {

class HiftModel;
struct HiftConfig;

namespace cuda {

class CudaHiftState;

class CudaHift {
 public:
  // Mel frames a streamed window adds beyond the receptive field: HiftStream emits at most this many
  // frames per window on the device, so its states have a fixed size.
  static constexpr int64_t kMaxStep = 64;
  static constexpr size_t kMaxGraphs = 8;
  static constexpr size_t kMaxPooled = 4;  // free states kept for reuse

  // Why the kernels cannot run this configuration ("" when they can).
  static std::string unsupported(const HiftConfig& cfg);
  // Uploads the model's decode weights (fp32). BundleError for an unsupported configuration.
  CudaHift(const HiftModel& model, std::shared_ptr<Device> device);
  ~CudaHift();

  // A state for windows of up to max_frames frames (pooled: one of that size is reused if free).
  // The deleter returns it to the pool.
  struct Release {
    const CudaHift* owner;
    void operator()(CudaHiftState* s) const noexcept;
  };
  using StatePtr = std::unique_ptr<CudaHiftState, Release>;
  StatePtr acquire(int64_t max_frames) const;

  // The f0 predictor: mel [T, mel_dim] (host fp32) -> f0 [T], on the state's stream (synchronised).
  // Same limits as decode().
  std::vector<float> f0(CudaHiftState& s, const float* mel, int64_t T) const;
  // Filter network + iSTFT: mel [T, mel_dim], source [S T] (host fp32) -> audio [S T], on the
  // state's stream (synchronised before returning). InvalidArgument when T exceeds the state's
  // max_frames or is too short for the STFT.
  std::vector<float> decode(CudaHiftState& s, const float* mel, int64_t T, const float* source) const;
  std::string device() const { return device_->name(); }

  struct Conv : ConvShape {  // a Conv1d as a product: weight [cout, ld] = [W.view(cout, cin k) | b | 0]
    size_t w = 0;
    int64_t ld = 0;
    int64_t out_len(int64_t t) const { return (t + 2 * pad - dil * (k - 1) - 1) / stride + 1; }
  };
  struct Up : ConvShape {  // a ConvTranspose1d: weight [cin, cout k] as stored, bias [cout]
    size_t w = 0, b = 0;
  };
  struct Res {
    std::vector<Conv> c1, c2;
    std::vector<size_t> a1, a2;  // Snake alphas [channels]
  };
  // Frame counts of a window of T mel frames.
  struct Shape {
    int64_t T = 0, N = 0, F = 0;
    std::vector<int64_t> t;  // per upsampling stage: frames after it (with the reflection pad)
  };
  Shape shape(int64_t T) const;

 private:
  friend class CudaHiftState;
  void enqueue(CudaHiftState& s, const Shape& sh) const;
  void conv(CudaHiftState& s, const Conv& c, const float* x, int64_t t_in, int32_t act, float slope, size_t alpha,
            float* y, float beta) const;
  void resblock(CudaHiftState& s, const Res& r, float* x, int64_t t) const;
  const float* at(size_t off) const { return weights_.at<float>(off); }

  int64_t mel_dim_, S_, n_fft_, hop_, nk_;
  float lrelu_, limit_;
  std::shared_ptr<Device> device_;
  Arena weights_;
  Conv pre_, post_, f0_cls_;
  std::vector<Conv> f0_convs_;
  std::vector<Up> ups_;
  std::vector<Conv> downs_;
  std::vector<Res> source_res_, res_;
  mutable std::mutex pool_mutex_;
  mutable std::vector<std::unique_ptr<CudaHiftState>> pool_;
};

// Device buffers of one stream of windows (see the file comment).
class CudaHiftState {
 public:
  CudaHiftState(const CudaHift& owner, int64_t max_frames);
  int64_t max_frames() const { return max_frames_; }

 private:
  friend class CudaHift;
  int64_t max_frames_;
  Stream stream_;
  std::unique_ptr<Gemm> gemm_;
  Arena arena_;
  float *mel = nullptr, *f0 = nullptr, *src = nullptr, *spec = nullptr, *col = nullptr, *z = nullptr, *x = nullptr, *y = nullptr,
        *si = nullptr, *tmp = nullptr, *h = nullptr, *post = nullptr, *audio = nullptr;
  Allocation in_, out_;  // pinned: mel | source, audio (or f0)
  std::map<int64_t, int> seen_;
  std::map<int64_t, Graph> graphs_;
};

}  // namespace cuda
}  // namespace minmo
