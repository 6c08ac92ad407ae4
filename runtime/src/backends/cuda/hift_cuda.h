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
// classifier as a k = 1 product) and the NSF source run on the device too: window() is the whole
// vocoder for one window of a stream (or a whole utterance) as one enqueue: mel upload -> f0
// predictor -> minmo_hift_phase_f64 (float64 phase scan continuing the state's history ring of f0
// and phase) -> minmo_hift_source_f32 (harmonics, counter-based noise, l_linear, tanh) -> decode
// -> download of the audio that became final. f0() and decode() (host source in) remain for tests
// and timings.
//
// A CudaHiftState holds every buffer for windows of up to max_frames frames, allocated once, the
// history ring of a stream (frame k's f0 and phases in slot k % (max_frames + 1)), and one CUDA
// graph per window length and kind (decode / window) seen twice (up to kMaxGraphs; others run
// eagerly). The window's position and seed live in device memory, so a graph replays for every
// window of its length.
// CudaHift pools states, so a stream (HiftStream) takes one at its start and returns it at its end:
// buffers and graphs outlive utterances.
#pragma once

#include <cstdint>
#include <functional>
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
  // The vocoder over mel [T, mel_dim] (host fp32) of frames a0 .. a0+T-1 of an utterance -> the
  // audio of frames [e0, e1) (S (e1 - e0) samples), synchronised. Frames [a0, e0) must have become
  // final in earlier windows on this state (their f0 and phase are read from its history ring);
  // frames [e0, e1) become final here. Offline synthesis: a0 = e0 = 0, e1 = T. InvalidArgument
  // unless 0 <= a0 <= e0 <= e1 <= a0 + T, 1 <= T <= max_frames and, for a0 > 0, frames a0 - 1 ..
  // e0 - 1 are the last ones made final on this state (checked on the host).
  std::vector<float> window(CudaHiftState& s, const float* mel, int64_t T, int64_t a0, int64_t e0, int64_t e1,
                            uint64_t seed) const;
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
  void enqueue_f0(CudaHiftState& s, int64_t T) const;
  void enqueue_window(CudaHiftState& s, const Shape& sh) const;
  // Replays the state's graph of (kind, T) or runs `enqueue` (capturing it the second time).
  void run_graph(CudaHiftState& s, int kind, int64_t T, const std::function<void()>& enqueue) const;
  void conv(CudaHiftState& s, const Conv& c, const float* x, int64_t t_in, int32_t act, float slope, size_t alpha,
            float* y, float beta) const;
  void resblock(CudaHiftState& s, const Res& r, float* x, int64_t t) const;
  const float* at(size_t off) const { return weights_.at<float>(off); }

  int64_t mel_dim_, S_, n_fft_, hop_, nk_;
  minmo_hift_nsf nsf_{};
  size_t lin_w_ = 0, lin_b_ = 0;  // l_linear [H], bias [1]
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
  // NSF source: the window's f0 [T] and phases [T + 1, H]; the history ring [cap], [cap, H]
  float *f0w = nullptr, *f0_hist = nullptr;
  double *q = nullptr, *q_hist = nullptr;
  minmo_hift_window* win = nullptr;
  int64_t cap_ = 0;
  int64_t final_ = 0;  // frames made final on this state by window() (its history ring holds up to here)
  Allocation in_, out_, win_in_;  // pinned: mel | source, audio (or f0), the window's position
  std::map<std::pair<int, int64_t>, int> seen_;
  std::map<std::pair<int, int64_t>, Graph> graphs_;
};

}  // namespace cuda
}  // namespace minmo
