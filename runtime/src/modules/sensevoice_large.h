// SenseVoice-Large style voice encoder (reference: export/reference/encoder_large.py):
//   mel [T, n_mels] -> GELU(conv1: k3 s2 p1) -> GELU(conv2: k3 s2 p1) -> n_blocks x
//   { x += out(MHA(RoPE q, RoPE k, v)) + fsmn(v) on LN(x);  x += mlp.2(GELU(mlp.0(LN x))) }
//   -> ln_post -> frames [encoder_frames(T), d_model]   (100 Hz mel in, 25 Hz frames out)
// q and v projections have a bias, k does not; RoPE (rotate-half, base rope_theta) uses the
// absolute frame index from 0; FSMN kernel is symmetric ((K-1)/2 left). Weight names are those of
// the reference state_dict (conv1.weight, blocks.N.attn.query.weight, ..., ln_post.bias).
// Attention mode from ChunkSpec: full, or chunked (chunk_frames encoder frames per chunk,
// left_chunks chunks of left context, FSMN limited to the frame's chunk).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/safetensors.h"
#include "core/tensor.h"
#include "modules/audio_common.h"

namespace minmo {

// Python SenseVoiceLargeConfig (same keys and defaults).
struct SenseVoiceLargeConfig {
  int64_t n_mels = 128;
  int64_t d_model = 1280;
  int64_t n_heads = 20;
  int64_t n_blocks = 32;
  int64_t fsmn_kernel = 15;
  double rope_theta = 10000.0;
  double norm_eps = 1e-5;

  // Throws BundleError on unknown keys / wrong types / invalid values.
  static SenseVoiceLargeConfig from_json(const nlohmann::json& config);
};

class LargeEncoderStream;
namespace cuda {
class Device;
class CudaEncoderBlocks;
class CudaEncoderState;
class CudaProjector;
}  // namespace cuda

class SenseVoiceLargeEncoder {
 public:
  // Borrows the tensors of `weights` (kept alive by this object). Throws NotFound naming a
  // missing tensor, BundleError naming a tensor of the wrong shape (expected and actual).
  SenseVoiceLargeEncoder(const SenseVoiceLargeConfig& config, const ChunkSpec& chunk, const WeightStore& weights);
  // config: the module's config object; streaming: manifest["streaming"].
  // device (null: CPU): the convolutions and blocks run there (backends/cuda/encoder_cuda.h); a
  // configuration its kernels lack runs on the CPU, with the reason in
  // *cpu_fallback when given (else BundleError).
  static std::shared_ptr<const SenseVoiceLargeEncoder> load(const WeightStore& weights, const nlohmann::json& config,
                                                           const nlohmann::json& streaming,
                                                           const std::shared_ptr<cuda::Device>& device = nullptr,
                                                           std::string* cpu_fallback = nullptr);
  // "cpu", or the device the blocks run on.
  std::string device() const;
  // The blocks on the device, or null (CPU).
  const std::shared_ptr<const cuda::CudaEncoderBlocks>& device_blocks() const { return device_blocks_; }

  const SenseVoiceLargeConfig& config() const { return cfg_; }
  const ChunkSpec& chunk() const { return chunk_; }
  int64_t output_dim() const { return cfg_.d_model; }
  // Encoder frames for n_mel mel rows: two stride-2 convolutions.
  static int64_t encoder_frames(int64_t n_mel);

  // Offline: mel [T, n_mels] (T >= 1) -> [encoder_frames(T), d_model], in the configured
  // attention mode (one pass over the whole input, like the reference). Throws InvalidArgument
  // on a wrong width or no rows. Thread-safe.
  Tensor run(const Tensor& mel) const;
  Tensor run(const float* mel, int64_t T, int64_t width) const;

 private:
  friend class LargeEncoderStream;
  struct Block {
    NormW attn_ln, mlp_ln;
    LinearW query, key, value, out, fc1, fc2;
    std::vector<float> fsmn_t;  // FSMN weight as [K, d]
  };
  // Per-layer streaming state: K (after RoPE) / V of the last left_chunks * chunk_frames frames
  // and the last (K-1)/2 value rows (FSMN left context).
  struct LayerCache {
    std::vector<float> k, v;   // [cached, d]
    std::vector<float> ctx;    // [nctx, d]
  };
  // Conv (k3 s2 p1) + GELU state over a growing input; see sensevoice_large.cc.
  struct ConvState {
    std::vector<float> buf;  // input rows from absolute row `base`
    int64_t base = 0, n_in = 0, n_out = 0;
  };
  // Feeds rows to a conv stage; returns its new (GELU'd) output rows. final: the input ended
  // (right zero padding applies).
  Tensor conv_step(const LinearW& conv, ConvState& st, const float* rows, int64_t n, bool final) const;
  // Runs the blocks + ln_post over frames at absolute positions q0 .. q0+n-1; `total` = frames
  // known to exist (limits the chunked FSMN / attention). caches: per-layer state (updated), or
  // null for a stateless pass starting at q0 = 0.
  void encode(Tensor& x, int64_t q0, int64_t total, std::vector<LayerCache>* caches) const;

  SenseVoiceLargeConfig cfg_;
  ChunkSpec chunk_;
  WeightStore weights_;
  std::shared_ptr<const cuda::CudaEncoderBlocks> device_blocks_;  // null: the blocks run on the CPU
  LinearW conv1_, conv2_;  // weight [d, cin * 3] (Conv1d layout), bias [d]
  std::vector<Block> blocks_;
  NormW ln_post_;
};

// Streaming chunked encoder. push() mel rows as the frontend makes them; it returns the encoder
// frames of every chunk (chunk_frames frames) that is complete and whose inputs are final (the
// convolutions need one future mel row; the right zero padding applies only at finish()).
// finish() returns the remaining frames (the partial last chunk) and ends the stream.
// Concatenated outputs equal SenseVoiceLargeEncoder::run on all rows (chunked mode) within
// float rounding for any push schedule. Requires the encoder's ChunkSpec to be chunked
// (InvalidArgument otherwise: full attention re-encodes the turn with run()).
class LargeEncoderStream {
 public:
  // Frames per turn when the blocks run on a device (their K/V caches are made once): 4096 = 164 s
  // of audio; a longer turn is CacheFull.
  static constexpr int64_t kDeviceFrames = 4096;
  // chained: an input projector on the device of the encoder's blocks (cuda::CudaEncoderBlocks::
  // new_state); push() and finish() then return its audio tokens [k, output_dim] instead of frames,
  // the frames never leaving the device. InvalidArgument when the blocks run on the CPU.
  explicit LargeEncoderStream(std::shared_ptr<const SenseVoiceLargeEncoder> encoder,
                              std::shared_ptr<const cuda::CudaProjector> chained = nullptr);
  ~LargeEncoderStream();
  // rows [n, n_mels] (n may be 0) -> new frames [k, d_model]. InvalidArgument on a wrong width
  // or after finish().
  Tensor push(const Tensor& mel_rows);
  Tensor push(const float* mel_rows, int64_t n, int64_t width);
  Tensor finish();
  void reset();
  int64_t frames_emitted() const { return frames_done_; }
  const SenseVoiceLargeEncoder& encoder() const { return *enc_; }

 private:
  Tensor step(const float* rows, int64_t n, bool final);
  // step() with the encoder on a device: the convolutions run there too, on the mel rows kept here.
  Tensor device_step(const float* rows, int64_t n, bool final);

  std::shared_ptr<const SenseVoiceLargeEncoder> enc_;
  SenseVoiceLargeEncoder::ConvState conv1_, conv2_;
  std::vector<float> pending_;  // subsampled frames not encoded yet, from frame frames_done_
  int64_t frames_done_ = 0;
  std::vector<SenseVoiceLargeEncoder::LayerCache> caches_;
  std::vector<float> mel_;          // device path: mel rows from mel_base_ (the next chunk's first)
  int64_t mel_base_ = 0, n_mel_ = 0;  // n_mel_: rows pushed this stream
  std::shared_ptr<const cuda::CudaProjector> chained_;
  std::unique_ptr<cuda::CudaEncoderState> device_state_;  // the blocks on the device (kept across reset())
  bool finished_ = false;
};

}  // namespace minmo
