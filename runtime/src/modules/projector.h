// Input projector (export/reference/projector.py InputProjector):
//   frames [T, encoder_dim] -> zero-pad T to even -> pairs [(T+1)/2, 2*encoder_dim]
//   -> linear2(ReLU(linear1(.))) -> n_layers x { x += attn(LN1 x); x += w_2(ReLU(w_1(LN2 x))) }
//   -> tokens [(T-1)/2 + 1, output_dim]   (12.5 Hz audio tokens from 25 Hz encoder frames)
// Weight names: linear1.{weight,bias}, linear2.{weight,bias}, blocks.N.{norm1, norm2}.{weight,bias},
// blocks.N.self_attn.linear_{q,k,v,out}.{weight,bias}, blocks.N.feed_forward.w_{1,2}.{weight,bias}.
// Attention mode from the manifest's streaming settings (ChunkSpec): full, or chunked where a
// projector chunk is chunk_frames / 2 tokens and token i sees the tokens of chunks
// (i / C - left_chunks) .. i / C (C = chunk_frames / 2), its whole own chunk included.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/safetensors.h"
#include "core/tensor.h"
#include "modules/audio_common.h"
#include "modules/qwen2_layer.h"

namespace minmo {

// Python ProjectorConfig (same keys and defaults).
struct ProjectorConfig {
  int64_t encoder_dim = 1280;
  int64_t hidden_dim = 2048;
  int64_t output_dim = 3584;
  int64_t n_layers = 2;
  int64_t n_heads = 8;
  int64_t ffn_dim = 8192;
  double norm_eps = 1e-5;

  // Throws BundleError on unknown keys / wrong types / invalid values.
  static ProjectorConfig from_json(const nlohmann::json& config);
};

class ProjectorStream;
namespace cuda {
class Device;
class CudaProjector;
class CudaProjectorState;
}  // namespace cuda

class InputProjector {
 public:
  // Borrows the tensors of `weights` (kept alive by this object). Throws NotFound naming a
  // missing tensor, BundleError naming a tensor of the wrong shape (expected and actual).
  // device: the projector on the device (load()); the CPU layers are then not made (their weights
  // are repacked in place, which the device upload must read first).
  InputProjector(const ProjectorConfig& config, const ChunkSpec& chunk, const WeightStore& weights,
                 std::shared_ptr<const cuda::CudaProjector> device = nullptr);
  // config: the module's config object; streaming: manifest["streaming"].
  // device (null: CPU): the projector runs there (backends/cuda/projector_cuda.h, chunked attention);
  // a configuration its kernels lack runs on the CPU, with the reason in *cpu_fallback when given
  // (else BundleError).
  static std::shared_ptr<const InputProjector> load(const WeightStore& weights, const nlohmann::json& config,
                                                    const nlohmann::json& streaming,
                                                    const std::shared_ptr<cuda::Device>& device = nullptr,
                                                    std::string* cpu_fallback = nullptr);
  // "cpu", or the device it runs on.
  std::string device() const;
  // The device projector, or null (CPU).
  const std::shared_ptr<const cuda::CudaProjector>& device_projector() const { return device_; }

  const ProjectorConfig& config() const { return cfg_; }
  const ChunkSpec& chunk() const { return chunk_; }
  int64_t output_dim() const { return cfg_.output_dim; }
  // Tokens per projector chunk (chunk_frames / 2).
  int64_t chunk_tokens() const { return chunk_.chunk_frames / 2; }
  // (n_frames - 1) / 2 + 1 for n_frames > 0, else 0.
  static int64_t output_tokens(int64_t n_frames) { return n_frames > 0 ? (n_frames - 1) / 2 + 1 : 0; }

  // Offline: frames [T, encoder_dim] (T >= 0) -> tokens [output_tokens(T), output_dim] in the
  // configured attention mode (one pass, explicit chunk mask). InvalidArgument on a wrong width.
  // Thread-safe.
  Tensor run(const Tensor& frames) const;
  Tensor run(const float* frames, int64_t T, int64_t width) const;

 private:
  friend class ProjectorStream;
  struct Layer {
    NormW norm1, norm2;
    PanelLinear q, k, v, out, w1, w2;
  };
  // pairs [n, 2*encoder_dim] -> x [n, output_dim] (linear1, ReLU, linear2).
  void embed_pairs(const float* pairs, int64_t n, float* x) const;
  // One layer over the n rows of x (in place). The keys/values are those already in kbuf/vbuf
  // ([nk, d] each) followed by the n new rows, which are appended to kbuf/vbuf. ranges: per-query
  // key ranges [lo, hi) into that key list, or null for all keys.
  void layer_forward(const Layer& L, float* x, int64_t n, std::vector<float>& kbuf, std::vector<float>& vbuf,
                     const std::vector<int64_t>* lo, const std::vector<int64_t>* hi) const;

  ProjectorConfig cfg_;
  ChunkSpec chunk_;
  WeightStore weights_;
  std::shared_ptr<const cuda::CudaProjector> device_;  // null: the CPU layers below run
  PanelLinear linear1_, linear2_;
  std::vector<Layer> layers_;
};

// Streaming projector for the chunked attention mode. push() encoder frames as they come; it
// returns the tokens that are final: a token needs both of its frames and its whole projector
// chunk (tokens attend within their chunk). finish() pads an odd trailing frame with zeros, runs
// the partial last chunk and ends the stream. Per layer it keeps the K/V of the last left_chunks
// chunks. Concatenated outputs equal InputProjector::run (chunked) within float rounding, for any
// push schedule. Requires a chunked ChunkSpec (InvalidArgument otherwise).
class ProjectorStream {
 public:
  // Tokens per turn when the projector runs on a device (its K/V caches are made once): the tokens
  // of LargeEncoderStream::kDeviceFrames frames; a longer turn is CacheFull.
  static constexpr int64_t kDeviceTokens = 2048;
  explicit ProjectorStream(std::shared_ptr<const InputProjector> projector);
  ~ProjectorStream();
  // frames [n, encoder_dim] (n may be 0) -> new tokens [k, output_dim]. InvalidArgument on a wrong
  // width or after finish().
  Tensor push(const Tensor& frames);
  Tensor push(const float* frames, int64_t n, int64_t width);
  Tensor finish();
  // Back to an empty stream (caches cleared), ready for a new input.
  void reset();
  int64_t tokens_emitted() const { return tokens_done_; }
  bool finished() const { return finished_; }
  const InputProjector& projector() const { return *proj_; }

 private:
  // Runs the layers over the first n pending tokens (one chunk, or the partial last one).
  Tensor run_chunk(int64_t n);
  // push() / finish() on the device projector.
  Tensor device_push(const float* frames, int64_t n, bool final);

  std::shared_ptr<const InputProjector> proj_;
  std::vector<float> odd_frame_;   // a frame waiting for its pair ([encoder_dim] or empty)
  std::vector<float> pending_;     // embedded tokens [np, output_dim] not yet through the layers
  std::vector<std::vector<float>> kcache_, vcache_;  // per layer [cached tokens, output_dim]
  int64_t tokens_done_ = 0;
  bool finished_ = false;
  std::unique_ptr<cuda::CudaProjectorState> device_state_;  // on the device (kept across reset())
};

}  // namespace minmo
