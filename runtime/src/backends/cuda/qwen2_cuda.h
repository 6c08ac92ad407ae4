// The Qwen2 text decoder on the CUDA backend (device "cuda", or "cuda-sim": the same code with
// the CPU twins of the kernels, backends/cuda/device.h).
//
// Weights live in one device allocation, in the formats of kernels/include/minmo_kernels/gemv.h:
// fp32 bundle weights become bf16; weight-only quantized bundles (export --quant) keep their
// int8 / fp8 bytes and fp32 per-channel scales, int4 its packed nibbles and zero points with the
// group scales rounded to bf16. q|k|v and gate|up are concatenated into one product each. The
// token embedding table stays on the host (fp32): sessions embed on the CPU, as their audio
// tokens come from the CPU encoder.
//
// A state holds its own stream, one device allocation (KV cache [layers][Hkv, capacity, D] bf16,
// the activation buffers, the split-K workspace) and pinned host staging buffers, all made when
// the state is created: states run concurrently, and nothing is allocated after. forward() runs
// the positions in chunks of up to 64 rows (prefill attention for a chunk, split-K decode attention
// for one row), with the residual stream in fp32 and activations in bf16; a chunk's bf16 products
// of more than MINMO_GEMV_MAX_BATCH (8) rows go through cuBLAS (backends/cuda/gemm.h) when it loads,
// the others through the gemv products (8 rows per pass over the weights). A decode step (T = 1) is one CUDA graph, captured when
// the state is made (a session's start, not its first token): copy the embedding in, 8 launches
// per layer (5 fused), final norm, the head, copy the hidden state and logits out; the position is
// read on the device, so the graph replays at any position. The head is the LM head or a module's
// own (Qwen2Head: the voice LM's llm_decoder, with its bias). A model loaded with a SampleLoop (the
// voice LM) also captures, per state, a graph of `steps` sampled tokens and the decode steps between
// them (run_sample_loop), its generator state, history and position on the device.
#pragma once

#include <atomic>
#include <functional>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/cuda/device.h"
#include "backends/cuda/qwen2_layer_cuda.h"
#include "backends/cuda/weights.h"
#include "core/safetensors.h"
#include "modules/qwen2_decoder.h"

namespace minmo {
namespace cuda {

// A loop of decode steps fed by their own sampled logits, run as one CUDA graph per state (the
// voice LM's block of speech tokens): sample a token from the last position's logits
// (minmo_sample_ras_loop_bf16: the reference ras_sample with its SplitMix64 state on the device),
// copy its fp32 embedding row into the next position's input (minmo_embedding_row_f32), decode step,
// head, sample, ... `steps` tokens and steps - 1 decode steps; the last token is not fed.
struct SampleLoop {
  const float* embedding = nullptr;  // host fp32 [rows, hidden]: a token's input row (uploaded fp32,
  int64_t rows = 0;                  // so the device feeds the values the host path feeds)
  int64_t n_allowed = 0;             // ids [0, n_allowed) of the head's logits are drawn
  int64_t steps = 0;                 // tokens per run, >= 1
  minmo_ras_params params{};
  // Why the sampling kernel cannot run this loop ("" when it can): top_k, win_size, sizes.
  std::string unsupported(int64_t logits_width) const;
};

class CudaQwen2 final : public Qwen2Decoder {
 public:
  // Uploads the weights of `weights` (tensor names as modules/qwen2.h) to `device`. Throws
  // NotFound / BundleError like the CPU model, BundleError for a shape the kernels do not run
  // (head_dim, GQA group, int4 group size) and DeviceError when the device lacks memory or fp8.
  // loop (optional, validated: InvalidArgument when loop->unsupported()): its embedding table is
  // uploaded and every state gets the loop's buffers and graph (run_sample_loop).
  static std::shared_ptr<const CudaQwen2> load(const WeightStore& weights, const nlohmann::json& config,
                                               std::shared_ptr<Device> device, const Qwen2Head& head = {},
                                               const SampleLoop* loop = nullptr);

  // Why the kernels cannot run this shape ("" when they can): head_dim, GQA group.
  static std::string unsupported(const Qwen2Config& c);

  const Qwen2Config& config() const override { return cfg_; }
  int64_t logits_width() const override { return head_.n; }
  std::string device() const override { return device_->name(); }
  std::unique_ptr<DecoderState> new_state(int capacity_tokens) const override;
  void embed_into(const int64_t* ids, size_t n, float* out) const override;
  using Qwen2Decoder::forward;
  void forward(DecoderState& state, const float* embeds, int64_t T, Tensor* hidden_out, Tensor* logits_out,
               bool last_only = false) const override;

  // forward() handing the final-norm hidden states over on the device (no host copy): after each
  // chunk of up to 64 positions has run (the state's stream synchronised), on_rows(rows_device, rows)
  // gets the chunk's bf16 rows [rows, hidden] in device memory; the next chunk overwrites them, so
  // on_rows must have read them (its own stream synchronised) when it returns.
  using DeviceRows = std::function<void(const minmo_bf16* rows_device, int64_t rows)>;
  void forward_hidden_device(DecoderState& state, const float* embeds, int64_t T, const DeviceRows& on_rows) const;

  // The decoder layers' product formats: "bf16", "int8", "int4", "fp8", or several joined by "+"
  // (e.g. "bf16+int4" when the export left some linears unquantized).
  const std::string& weight_format() const { return format_; }
  // What runs prefill products of many rows: "cuBLAS (<library file>)", the sim's twin, or the gemv
  // products with the reason cuBLAS is not used.
  const std::string& prefill_products() const { return prefill_products_; }
  // Device bytes of the weights (all layers, final norm, lm_head).
  size_t weight_bytes() const { return weights_.bytes(); }
  // Whether decode steps use the fused kernels (5 launches per layer: q|k|v+RoPE+append, one-launch
  // attention, o+residual+norm, gate|up+SiLU, down+residual+next norm) instead of 8. Default: fused
  // for hidden sizes up to 1024, where a step is bound by launches (CosyVoice2-0.5B's voice LM:
  // 10.5 vs 11.2 ms per 15 steps on an H200), unfused above (Qwen2.5-7B: 3.92 vs 4.21 ms per step);
  // MINMO_CUDA_FUSED=0 / 1 overrides.
  bool fused_step() const { return fused_step_; }

  bool has_sample_loop() const { return loop_.steps > 0; }
  const SampleLoop& sample_loop() const { return loop_; }
  // Runs the sample loop (has_sample_loop()) on `state`, whose last forward() gave the logits of its
  // last position (last_only, or a single row): loop.steps tokens into out[steps]. rng: the
  // SplitMix64 state, uploaded and read back advanced; history[n_history]: the tokens drawn before
  // (the last win_size count for RAS). The state grows by steps - 1 positions. One graph launch
  // (captured when the state was made), one copy in, one copy out. InvalidArgument without fresh
  // logits, CacheFull when the positions do not fit, Internal on a non-finite logit.
  void run_sample_loop(DecoderState& state, uint64_t& rng, const int64_t* history, int64_t n_history,
                       int64_t* out) const;
  // Graphs captured and launched for the sample loop, over all states (tests).
  int64_t sample_loop_captures() const { return loop_captures_; }
  int64_t sample_loop_launches() const { return loop_launches_; }

  using Layer = Qwen2DeviceLayer;

  CudaQwen2(const Qwen2Config& cfg, std::shared_ptr<Device> device);

 private:
  friend class CudaQwen2State;
  // Enqueues the positions of one chunk (rows <= kMaxRows) of state s at the device position
  // *s.pos: the embeddings are in s's pinned input buffer; afterwards its pinned outputs hold the
  // hidden states (all rows) and the logits of the last `logit_rows` rows. One row runs the fused
  // step when fused_step_.
  // hidden: whether the hidden states are copied to the pinned output (graphs always copy them).
  void enqueue_chunk(class CudaQwen2State& s, int64_t rows, int64_t logit_rows, bool hidden = true) const;
  // forward() and forward_hidden_device() (on_rows not null).
  void run_forward(DecoderState& state, const float* embeds, int64_t T, Tensor* hidden_out, Tensor* logits_out,
                   bool last_only, const DeviceRows* on_rows) const;
  // The layers and final norm of `rows` positions at *s.pos: fp32 input rows in the residual
  // buffer -> normed hidden states (bf16) in hn.
  void enqueue_layers(class CudaQwen2State& s, int64_t rows) const;
  // The head (and its bias) on the last logit_rows rows of hn -> the device logits.
  void enqueue_head(class CudaQwen2State& s, int64_t rows, int64_t logit_rows) const;
  // The sample loop's graph body (run_sample_loop).
  void enqueue_sample_loop(class CudaQwen2State& s) const;
  // The state's decode-step graph with (1) or without (0) the logits, captured on first use; the
  // one with logits is captured when the state is made.
  const Graph& step_graph(class CudaQwen2State& s, int64_t logit_rows) const;
  // The fused decode step's layers (one row; fused_step_), as enqueue_layers.
  void enqueue_fused_layers(class CudaQwen2State& s) const;
  // The copies around a chunk: the pinned embeddings and position in; the final-norm hidden
  // states out, and the head's logits of the last logit_rows rows.
  void enqueue_inputs(class CudaQwen2State& s, int64_t rows) const;
  void enqueue_outputs(class CudaQwen2State& s, int64_t rows, int64_t logit_rows, bool hidden = true) const;
  const minmo_bf16* bf16(size_t offset) const { return weights_.at<minmo_bf16>(offset); }
  // The sample loop's io block: minmo_ras_state, then the int32 history ring of
  // loop_history_cap() entries (the last win_size tokens before the loop, then its steps).
  int64_t loop_history_cap() const { return loop_.params.win_size + loop_.steps; }
  size_t loop_io_bytes() const { return sizeof(minmo_ras_state) + sizeof(int32_t) * loop_history_cap(); }
  // Device pointers of a product's weight arguments (the ones its format uses).
  struct Weights {
    const uint8_t* q;
    const float* scale;
    const minmo_bf16* scale_bf16;
    const uint8_t* zero;
  };
  Weights weights_of(const DeviceLinear& l) const;
  // y[rows] = x W^T (gated: silu(x Wg^T) * (x Wu^T)) in l's format, on s's stream (and GEMM).
  void product(const class CudaQwen2State& s, const DeviceLinear& l, const minmo_bf16* x, minmo_bf16* y, int64_t rows,
               bool gated) const;
  // residual += x W^T; out = RMSNorm(residual) * gamma (one row).
  void product_norm(const Stream& st, const DeviceLinear& l, const minmo_bf16* x, float* residual,
                    const minmo_bf16* gamma, minmo_bf16* out, uint32_t* counter) const;
  // The layer's q|k|v product + bias + RoPE + KV append at *pos (one row).
  void product_qkv_rope(const Stream& st, const Layer& L, const minmo_bf16* x, const int32_t* pos, minmo_bf16* q,
                        minmo_bf16* kc, minmo_bf16* vc, int64_t capacity) const;

  Qwen2Config cfg_;
  std::shared_ptr<Device> device_;
  WeightStore host_;                     // keeps the host embedding table alive
  const float* embed_tokens_ = nullptr;  // host [V, H]
  std::string format_ = "bf16";
  bool fused_step_ = false;
  bool prefill_gemm_ = false;  // states open a Gemm for their prefill chunks
  std::string prefill_products_;
  int64_t attn_splits_ = 1;  // max_splits of the one-launch decode attention
  Arena weights_;
  std::vector<Layer> layers_;
  size_t final_norm_ = 0;
  DeviceLinear head_;
  std::optional<size_t> head_bias_;  // bf16 [head_.n] in the weight arena, when the head has a bias
  SampleLoop loop_;                  // steps == 0: none
  size_t loop_table_ = 0;            // fp32 [loop_.rows, hidden] in the weight arena
  mutable std::atomic<int64_t> loop_captures_{0}, loop_launches_{0};
};

}  // namespace cuda
}  // namespace minmo
