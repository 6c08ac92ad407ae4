// CosyVoice2 flow (export/reference/flow.py): speech tokens -> 80-bin mel at 2 frames per token,
// computed segment by segment with caches (the streaming semantics of
// export/reference/token2wav.py):
//   - the token sequence is [prompt, generated]; the prompt is segment 0 (when present), the
//     generated tokens form chunks of `chunk_tokens` tokens;
//   - every attention lets a position see its own segment, the `left_chunks` segments before it
//     (all when < 0) and the prompt; convolutions are causal except the pre-lookahead layer, which
//     reads the `pre_lookahead` following tokens (zeros after the last token);
//   - so a segment's mel is final once its tokens and the lookahead are known. FlowState keeps
//     per-layer K/V (encoder, and every estimator transformer block per Euler step and guidance
//     branch) and causal-conv context; with left_chunks >= 0 the cost of a segment does not grow
//     with its index.
// Full attention (the public non-streaming mode) is one segment holding everything.
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
class CudaFlow;
class CudaFlowState;
class Device;
}  // namespace cuda

// Standard normal floats number start .. start+count-1 of (seed, stream): splitmix64 hashes of a
// counter + Box-Muller in double (export/reference/flow.py counter_normal, bit-compatible up to
// libm rounding). out must hold count floats.
void counter_normal(uint64_t seed, uint64_t stream, uint64_t start, int64_t count, float* out);
constexpr uint64_t kFlowNoiseStream = 0;
constexpr uint64_t kHiftNoiseStream = 1;

struct FlowConfig {
  int64_t vocab_size = 6561, d_model = 512, n_heads = 8, ffn_dim = 2048, n_blocks = 6, n_up_blocks = 4;
  int64_t pre_lookahead = 3, mel_dim = 80, spk_dim = 192, token_mel_ratio = 2;
  int64_t est_channels = 256, est_heads = 8, est_head_dim = 64, n_transformer = 4, n_mid_blocks = 12;
  int64_t n_timesteps = 10;
  double cfg_rate = 0.7;
  // Strict parse of the Python FlowConfig dict; BundleError on unknown keys or invalid values.
  static FlowConfig from_json(const nlohmann::json& config);
};

// Rows [first, last) that a cache whose rows belong to segments `seg` (in order) drops to keep
// segments >= min_seg, and segment 0 when keep_prompt (first == last: nothing to drop).
std::pair<int64_t, int64_t> flow_prune_range(const std::vector<int64_t>& seg, int64_t min_seg, bool keep_prompt);

// Keys / values of one attention layer over the positions kept so far, with their absolute
// positions and segments (segments are appended in order).
struct FlowKV {
  std::vector<float> k, v;         // [n, width]
  std::vector<int64_t> pos, seg;   // [n]
  int64_t rows() const { return static_cast<int64_t>(pos.size()); }
  // Drops rows of segments < min_seg, except segment 0 when keep_prompt.
  void prune(int64_t min_seg, bool keep_prompt, int64_t width);
};

class FlowModel;
namespace cuda {
class CudaFlowEncoder;
class CudaFlowEncoderState;
}  // namespace cuda

// Per-utterance state of the flow (see the header comment). Created by FlowModel::new_state.
struct FlowState {
  // encoder
  std::vector<float> pre_ctx;               // last 2 conv1 outputs of the pre-lookahead layer [2, d]
  std::vector<float> up_ctx;                // last 2 token rows entering the upsampling conv [2, d]
  std::vector<FlowKV> enc_kv, up_kv;       // per block
  // estimator, per Euler step and guidance branch (index step * 2 + branch)
  struct Est {
    std::vector<std::vector<float>> conv;   // causal-conv context, 2 input rows each
    std::vector<FlowKV> kv;                // per transformer block
  };
  std::vector<Est> est;                     // empty when the estimator runs on the device
  // The estimator's device state (K/V caches, conv context, buffers) on a model with a device
  // estimator (FlowModel::gpu()), else null.
  std::unique_ptr<cuda::CudaFlowState, void (*)(cuda::CudaFlowState*)> gpu{nullptr, nullptr};
  // The encoder's device state (FlowModel::reserve makes it, on gpu's stream), else null: the
  // encoder then runs on the CPU. Declared after gpu, so destroyed before it.
  std::unique_ptr<cuda::CudaFlowEncoderState, void (*)(cuda::CudaFlowEncoderState*)> gpu_enc{nullptr, nullptr};
  std::vector<float> spk80;                 // projected speaker [80]
  bool has_prompt = false;
  int64_t left_chunks = -1;
  int64_t tokens_done = 0;                  // tokens of finished segments
  int64_t segments_done = 0;
};

class FlowModel {
 public:
  FlowModel(const FlowConfig& config, const WeightStore& weights);
  // device: null for the CPU, else the estimator and its Euler / guidance loop run on the CUDA
  // backend (backends/cuda/flow_cuda.h), and the encoder too (backends/cuda/flow_encoder_cuda.h) for
  // states that FlowModel::reserve sized. A model the device kernels do not run is a BundleError, or,
  // with cpu_fallback given, loads on the CPU and stores the reason there.
  static std::shared_ptr<const FlowModel> load(const WeightStore& weights, const nlohmann::json& config,
                                               const std::shared_ptr<cuda::Device>& device = nullptr,
                                               std::string* cpu_fallback = nullptr);
  ~FlowModel();
  const FlowConfig& config() const { return cfg_; }
  // "cpu", "cuda" or "cuda-sim": where segment() runs the estimator.
  std::string device() const;
  // The device estimator (null on the CPU).
  const cuda::CudaFlow* gpu() const { return gpu_.get(); }

  // A fresh state: speaker [spk_dim] (L2-normalised here, must be finite and non-zero).
  // Throws InvalidArgument on a wrong size.
  FlowState new_state(const std::vector<float>& speaker, bool has_prompt, int64_t left_chunks) const;
  // With a device estimator: sizes the state's device buffers for segments of up to
  // `segment_tokens` tokens and caches of `cache_tokens` tokens now (segments grow them when they
  // need more). On a fresh state with bounded attention (left_chunks >= 0), it also moves the
  // state's encoder to the device, with buffers of exactly those sizes: a later segment longer than
  // segment_tokens, or caches beyond cache_tokens (prompt + (left_chunks + 1) chunks), are then an
  // InvalidArgument. A no-op on the CPU.
  void reserve(FlowState& st, int64_t segment_tokens, int64_t cache_tokens) const;
  // "cpu" or the device the state's encoder runs on.
  std::string encoder_device(const FlowState& st) const;

  // Processes the next segment: tokens [n] (their absolute index = state.tokens_done), followed by
  // up to pre_lookahead lookahead tokens (fewer only at the end of the utterance), cond [2n, 80]
  // (prompt mel for prompt frames, or null for zeros), noise seed. Returns the segment's mel
  // [2n, 80]. Token ids are checked (InvalidArgument). With a device estimator (gpu()), the
  // n_timesteps Euler steps run on the device, after the encoder: on the device too when the state
  // has a device encoder (reserve()), mu staying there; else on the CPU, mu uploaded.
  Tensor segment(FlowState& st, const int64_t* tokens, int64_t n, const int64_t* lookahead, int64_t n_look,
                 const float* cond, uint64_t seed) const;

  // Offline: the whole sequence segment by segment (chunk_tokens <= 0: one segment = full attention).
  // Returns the mel of the generated tokens [2N, 80] (prompt frames dropped), like
  // token2wav.flow_offline.
  Tensor offline(const std::vector<int64_t>& tokens, const std::vector<float>& speaker,
                 const std::vector<int64_t>& prompt_tokens, const std::vector<float>& prompt_mel, uint64_t seed,
                 int64_t chunk_tokens, int64_t left_chunks) const;

  // mu [2n, 80] of a segment (the encoder only; advances the encoder part of the state).
  Tensor encode_segment(FlowState& st, const int64_t* tokens, int64_t n, const int64_t* lookahead,
                        int64_t n_look) const;

 private:
  friend class cuda::CudaFlowEncoder;  // reads the encoder's weights (backends/cuda/flow_encoder_cuda.h)
  struct RelAttn {
    LinearW q, k, v, out, pos;
    const float* u = nullptr;   // pos_bias_u [h, dk]
    const float* vb = nullptr;  // pos_bias_v [h, dk]
  };
  struct Conformer {
    NormW norm_mha, norm_ff;
    RelAttn attn;
    LinearW w1, w2;
  };
  struct Resnet {
    ConvW conv1, conv2, res;   // res: 1x1
    NormW ln1, ln2;
    LinearW mlp;
    int conv_slot = 0;         // index of conv1's context in FlowState::Est::conv (conv2 = +1)
  };
  struct TBlock {
    NormW norm1, norm3;
    LinearW q, k, v, out, ff1, ff2;
    int kv_slot = 0;
  };
  struct Stage {
    Resnet resnet;
    std::vector<TBlock> blocks;
  };

  void conformer(const Conformer& b, Tensor& x, int64_t pos0, int64_t seg, FlowKV& kv, const FlowState& st) const;
  void rel_attention(const RelAttn& a, const float* x, int64_t n, int64_t pos0, int64_t seg, FlowKV& kv,
                     const FlowState& st, float* out) const;
  void causal_conv(const ConvW& c, const float* x, int64_t n, std::vector<float>& ctx, float* y) const;
  void resnet(const Resnet& r, const Tensor& x, const float* temb_proj, FlowState::Est& es, Tensor& out) const;
  void tblock(const TBlock& b, Tensor& x, int64_t pos0, int64_t seg, FlowState::Est& es, const FlowState& st) const;
  // One estimator evaluation on n new frames: returns dphi [n, 80].
  Tensor estimator(FlowState::Est& es, int step, const float* x, const float* mu, const float* spk, const float* cond,
                   int64_t n, int64_t pos0, int64_t seg, const FlowState& st) const;

  FlowConfig cfg_;
  WeightStore weights_;
  const float* embedding_ = nullptr;
  LinearW spk_affine_, embed_lin_, up_embed_lin_, proj_;
  NormW embed_ln_, up_embed_ln_, after_norm_;
  ConvW pre_conv1_, pre_conv2_, up_conv_;
  std::vector<Conformer> enc_, up_;
  std::vector<Stage> stages_;  // down, mids..., up
  ConvW down_conv_, up_conv2_, final_conv_, final_proj_;
  NormW final_ln_;
  int n_conv_slots_ = 0, n_kv_slots_ = 0;
  std::vector<float> t_span_;              // n_timesteps + 1
  std::vector<std::vector<float>> temb_;   // per step: time embedding [4 * est_channels]
  std::shared_ptr<const cuda::CudaFlow> gpu_;
  std::shared_ptr<const cuda::CudaFlowEncoder> gpu_enc_;  // with gpu_, unless the encoder's weights are quantized
  friend class cuda::CudaFlow;  // uploads the estimator weights above
};

}  // namespace minmo
