// The CosyVoice2 flow's encoder (FlowModel::encode_segment: token embedding, pre-lookahead layer,
// conformer blocks with relative-position attention over segment caches, 2x upsampling, up-blocks,
// after-norm, projection to mu) on the CUDA backend (device "cuda" or "cuda-sim"), fp32 like the CPU
// module, segment by segment with the streaming semantics of modules/flow.h.
//
// Time-major activations; every product is one Gemm::f32 (cuBLAS) with the bias folded in: a weight
// is stored [out, ld] = [W | b | 0] and its input rows carry a column of ones (set once when the
// state is made; the kernels write only the first `in` columns). Convolutions are im2col
// (minmo_conv1d_im2col_f32) + product. Per conformer block: LayerNorm, one q|k|v product written
// straight into the block's cache rows ([q | k | v] per row), minmo_rel_attention_f32 over the key
// list (the segment mask: prompt rows + the last left_chunks segments + this one), out-projection and
// FFN products accumulating into the residual (beta = 1), SiLU. The relative-position rows
// W_pos pe(d) of every block of a stage come from one product over the distances the kept key
// positions need (minmo_rel_pos_enc_f32). About 105 launches per segment at CosyVoice2 size
// (6 + 4 blocks), no host synchronisation inside a segment.
//
// Cache rows are allocated per segment (first fit over the live segments' row ranges) and freed by
// the same pruning as FlowKV::prune; the host keeps positions and segments, the device only K/V.
// Token ids, key lists and distances are uploaded before the device work, which then depends only on
// the segment's shape (tokens, lookahead, cache row, kept tokens, table sizes, output pointer): a
// state records one CUDA graph per shape seen twice (up to kMaxGraphs; others run eagerly). With
// left_chunks >= 0 steady chunks repeat a few shapes, and a state reused with reset() replays the
// first chunk's graph in the next utterance.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "backends/cuda/device.h"
#include "backends/cuda/gemm.h"
#include "core/tensor.h"
#include "modules/flow.h"

namespace minmo {
namespace cuda {

class CudaFlowEncoderState;

class CudaFlowEncoder {
 public:
  // Uploads the encoder's weights (fp32). BundleError when a weight is quantized (not supported on
  // the device) or a size does not fit the kernels.
  CudaFlowEncoder(const FlowModel& model, std::shared_ptr<Device> device);
  ~CudaFlowEncoder();
  const FlowConfig& config() const { return cfg_; }
  const std::shared_ptr<Device>& device() const { return device_; }

  // Encodes the state's next segment: tokens [n] (absolute token index = state.tokens_done()),
  // then n_look <= pre_lookahead lookahead tokens (fewer only at the end of the utterance, zeros
  // after), host arrays. Enqueues the work on the state's stream and leaves mu [2n, mel_dim] (fp32,
  // row-major) at mu_device, a device pointer the caller owns (>= 2n * mel_dim floats), without
  // synchronising; the state then counts the segment as done (tokens_done += n, segments_done += 1).
  // Synchronises the stream first (the previous segment's uploads read the staging buffer).
  // InvalidArgument (nothing enqueued, state unchanged) on n < 1, n > max_segment, n_look outside
  // [0, pre_lookahead], a token id outside [0, vocab_size), or when the caches would need more than
  // max_tokens tokens. A DeviceError leaves the state unusable.
  void encode_segment(CudaFlowEncoderState& s, const int64_t* tokens, int64_t n, const int64_t* lookahead,
                      int64_t n_look, float* mu_device) const;
  // The same, returning mu [2n, mel_dim] on the host (synchronised): for tests and checks.
  Tensor encode_segment(CudaFlowEncoderState& s, const int64_t* tokens, int64_t n, const int64_t* lookahead,
                        int64_t n_look) const;

  struct Block {  // offsets into the weight arena
    size_t ln1_g, ln1_b, ln2_g, ln2_b, u, vb, qkv, out, w1, w2;
  };
  struct Stage {  // conformer blocks sharing one key layout (the token or the mel rate)
    std::vector<Block> blocks;
    size_t pos = 0;  // every block's linear_pos stacked [n_blocks d, d]
  };

 private:
  friend class CudaFlowEncoderState;
  // What the device work of a segment depends on (everything else is read from device memory).
  struct Shape {
    int64_t n = 0, n_look = 0, row0 = 0, keys = 0, r_enc = 0, r_up = 0;  // keys: tokens in the caches
    float* mu = nullptr;
  };
  void enqueue(CudaFlowEncoderState& s, const Shape& sh) const;
  const float* at(size_t off) const { return weights_.at<float>(off); }
  // The blocks of one stage on s.x [rows, d] (this segment's cache rows from row0).
  void conformer_stage(CudaFlowEncoderState& s, const Stage& stage, const std::vector<float*>& caches, int64_t rows,
                       int64_t row0, int64_t keys, const int32_t* key_rows, const int32_t* key_pe,
                       const float* p) const;

  FlowConfig cfg_;
  std::shared_ptr<Device> device_;
  int64_t d_, ld_, ldf_, ldc1_, ldc2_, ldc5_;  // widths: model, product input (d + ones), ffn, conv im2col
  Arena weights_;
  size_t embedding_ = 0, embed_ = 0, embed_ln_g_ = 0, embed_ln_b_ = 0, conv1_ = 0, conv2_ = 0, up_conv_ = 0,
         up_embed_ = 0, up_ln_g_ = 0, up_ln_b_ = 0, after_g_ = 0, after_b_ = 0, proj_ = 0;
  Stage enc_, up_;
};

// The device state of one utterance's encoder: per-block K/V caches, the two convolution contexts,
// activation buffers for segments of up to max_segment tokens and caches of up to max_tokens tokens
// (all kept segments, this one included; with left_chunks < 0 that is the utterance, prompt
// included), allocated once. Its stream (own, or the caller's so that the estimator that reads mu
// runs in order after it) is used by one thread at a time.
class CudaFlowEncoderState {
 public:
  CudaFlowEncoderState(const CudaFlowEncoder& enc, bool has_prompt, int64_t left_chunks, int64_t max_segment,
                       int64_t max_tokens);
  // On the caller's stream and cuBLAS handle (both must outlive the state).
  CudaFlowEncoderState(const CudaFlowEncoder& enc, const Stream& stream, const Gemm& gemm, bool has_prompt,
                       int64_t left_chunks, int64_t max_segment, int64_t max_tokens);
  ~CudaFlowEncoderState();
  // Starts a new utterance on the same buffers (and graphs): no allocation.
  void reset(bool has_prompt, int64_t left_chunks);
  static constexpr size_t kMaxGraphs = 16;
  const Stream& stream() const { return *stream_; }
  int64_t tokens_done() const { return tokens_done_; }
  int64_t segments_done() const { return segments_done_; }
  int64_t max_segment() const { return max_segment_; }
  int64_t max_tokens() const { return max_tokens_; }
  size_t graphs() const { return graphs_.size(); }  // recorded so far

 private:
  friend class CudaFlowEncoder;
  struct Live {  // a kept segment: its tokens' positions and cache rows (token units)
    int64_t seg, pos0, n, row0;
  };
  void init(const CudaFlowEncoder& enc);

  std::unique_ptr<Stream> own_stream_;
  std::unique_ptr<Gemm> own_gemm_;
  const Stream* stream_ = nullptr;
  const Gemm* gemm_ = nullptr;
  bool has_prompt_;
  int64_t left_chunks_, max_segment_, max_tokens_;
  int64_t tokens_done_ = 0, segments_done_ = 0;
  std::vector<Live> live_;
  Arena arena_;
  // a: product inputs [rows, ld] with the ones column; f: FFN hidden [rows, ldf] (ones column); x: residual stream [rows, d]; h: conv rows with
  // context; col: im2col; cache_*: per block [rows, 3d]; p_*: W_pos pe rows per stage; ints: ids |
  // key rows | key pe rows | distances of both stages; mu: the host variant's output.
  float *a = nullptr, *f = nullptr, *x = nullptr, *h = nullptr, *col = nullptr, *pe = nullptr, *p_enc = nullptr, *p_up = nullptr,
        *pre_ctx = nullptr, *up_ctx = nullptr, *mu = nullptr;
  int32_t* ints = nullptr;
  std::vector<float*> cache_enc, cache_up;
  int64_t d_ = 0;
  using GraphKey = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, uintptr_t>;
  std::map<GraphKey, int> seen_;
  std::map<GraphKey, Graph> graphs_;
  Allocation staging_, out_;  // pinned: ints, mu
};

}  // namespace cuda
}  // namespace minmo
