// The SenseVoice-Large style encoder on the CUDA backend (device "cuda" or "cuda-sim"), chunked
// streaming attention only: the two strided convolutions, the n_blocks blocks and ln_post
// (modules/sensevoice_large.h has the math).
//
// Per chunk of C = chunk_frames frames at absolute frames p0 .. p0 + r - 1 (r <= C; a chunk
// starts at a multiple of C), with the fp32 residual stream and bf16 activations:
//   the mel rows the chunk reads (4 p0 - 3 .. 4 (p0 + r) - 1) in -> im2col (k3 s2, the zero padding
//   at both ends of the input) -> conv1 product + bias + GELU (its 2 r + 1 rows from 2 p0 - 1, one
//   recomputed from the previous chunk) -> im2col -> conv2 product + bias + GELU -> the residual;
//   per block: LN -> one stacked q|k|v product -> bias + RoPE at the absolute frame + K/V append
//   (minmo_qkv_rope_append_bf16, MHA) -> window attention over [chunk start - left_chunks C, p0 + r)
//   -> out product + bias into the residual; the FSMN memory (fp32: v + bias of the previous chunk
//   and this one, the kernel limited to this chunk's end) added into the residual;
//   LN -> fc1 + bias + GELU -> fc2 + bias into the residual; after the blocks ln_post.
// The v product is run a second time, on its own, for the FSMN (its row layout differs from the
// KV cache's): about 8 % more weight reads than the CPU path.
// A state holds the K/V caches of max_frames absolute frames per block (a turn longer than that
// is CacheFull), the previous chunk's v per block, and the activation buffers, all allocated when
// the state is made. A whole chunk after the first runs as one CUDA graph (about 14 launches per
// block; the convolutions' coordinates are relative to the chunk's mel rows), captured at its first
// use; the first chunk (the convolutions' left padding) and a final one run eagerly.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backends/cuda/device.h"
#include "backends/cuda/block_cuda.h"
#include "backends/cuda/projector_cuda.h"
#include "backends/cuda/weights.h"
#include "core/safetensors.h"
#include "core/tensor.h"
#include "modules/audio_common.h"

namespace minmo {

struct SenseVoiceLargeConfig;

namespace cuda {

class CudaEncoderState;

class CudaEncoderBlocks {
 public:
  // Why the kernels cannot run this encoder ("" when they can): full attention, head size.
  static std::string unsupported(const SenseVoiceLargeConfig& cfg, const ChunkSpec& chunk);
  // Uploads blocks.N.* and ln_post.* (names of modules/sensevoice_large.h). BundleError for a shape
  // the kernels do not run, NotFound / BundleError for missing or misshapen tensors.
  static std::shared_ptr<const CudaEncoderBlocks> load(const WeightStore& w, const SenseVoiceLargeConfig& cfg,
                                                       const ChunkSpec& chunk, std::shared_ptr<Device> device);

  // chained: an input projector on the same device (projector_cuda.h) that runs on each chunk's
  // frames in the chunk's graph; InvalidArgument when its device or shapes do not match.
  std::unique_ptr<CudaEncoderState> new_state(int64_t max_frames, const CudaProjector* chained = nullptr) const;
  // The frames p0 .. p0 + n - 1 of a stream (p0 a multiple of chunk_frames; whole chunks unless
  // final) from its mel rows mel0 .. mel0 + n_mel - 1 (host fp32 [n_mel, n_mels]), which hold every
  // existing row those frames read (4 p0 - 3 .. 4 (p0 + n) - 1); final: the input ends at row
  // mel0 + n_mel (zero padding after). p0 == 0 starts a new stream on the state. Appends the frames
  // [n, d_model] to `out`, or, for a state with a chained projector, the chunks' tokens [k, projector
  // output_dim] (the final chunk being the projector's last). CacheFull past the state's max_frames.
  void encode_mel(CudaEncoderState& s, const float* mel, int64_t mel0, int64_t n_mel, int64_t p0, int64_t n,
                  bool final, Tensor& out) const;
  int64_t n_mels() const { return n_mels_; }
  std::string device() const { return device_->name(); }
  const std::shared_ptr<Device>& device_ptr() const { return device_; }

  struct Block {
    DeviceBlock body;      // LN, q|k|v, attention, out, FFN (block_cuda.h)
    DeviceLinear v;        // the v rows of body.qkv, for the FSMN
    size_t v_bias = 0;     // into body.qkv_bias
    size_t fsmn = 0;       // fp32 [d, K]
  };

  CudaEncoderBlocks(int64_t n_mels, int64_t d, int64_t heads, int64_t kernel, double theta, double eps,
                    const ChunkSpec& chunk, std::shared_ptr<Device> device);

 private:
  friend class CudaEncoderState;
  // Where a chunk's convolution inputs are, in the coordinates of minmo_im2col_k3s2_bf16: the
  // first output row, the first input row held and how many, the input's length.
  struct ConvRows {
    int64_t t_out0, n_out, t_in0, n_in, total_in;
  };
  // Enqueues one chunk of `rows` frames: the mel rows in the state's pinned buffer, the first frame
  // and window start in its pinned position buffer (read on the device, so a whole chunk is one
  // replayable graph), the convolutions at c1 / c2.
  void encode_chunk(CudaEncoderState& s, int64_t rows, const ConvRows& c1, const ConvRows& c2) const;
  const minmo_bf16* bf16(size_t off) const { return weights_.at<minmo_bf16>(off); }

  int64_t n_mels_, d_, heads_, kernel_;
  double theta_, eps_;
  ChunkSpec chunk_;
  std::shared_ptr<Device> device_;
  Arena weights_;
  std::vector<Block> blocks_;
  size_t ln_post_g_ = 0, ln_post_b_ = 0;
  DeviceLinear conv1_, conv2_;  // [d, 3 cin] (Conv1d weights, as im2col lays out its rows)
  size_t conv1_b_ = 0, conv2_b_ = 0;
};

// Per-stream state of a CudaEncoderBlocks (see the file comment).
class CudaEncoderState {
 public:
  CudaEncoderState(const CudaEncoderBlocks* owner, int64_t max_frames, const CudaProjector* chained);
  ~CudaEncoderState();

 private:
  friend class CudaEncoderBlocks;
  // Device buffers: per block the K / V caches [heads, max_frames, head size] (absolute frames) and
  // the fp32 v + bias of the previous and the current chunk [2 C, d] (the FSMN's input); the
  // position and the window start; the residual [2 C, d] (rows C.. the chunk, rows 0..C-1 scratch
  // the FSMN writes for the previous chunk's rows); bf16 activations of one chunk.
  struct Buffers {
    std::vector<minmo_bf16*> k, v;
    std::vector<float*> vhist;
    int32_t* pos;  // [0]: the chunk's first frame, [1]: the first key frame of its window
    float* resid;
    BlockScratch blk;
    minmo_bf16* vb;
    minmo_bf16 *mel, *col1, *y1, *col2;  // [4 C + 3, n_mels], [2 C + 1, 3 n_mels], [2 C + 1, d], [C, 3 d]
  };
  const CudaEncoderBlocks* owner_;
  int64_t max_frames_;
  Stream stream_;
  Arena arena_;
  Buffers b{};
  Allocation in_, out_, pos_host_;  // pinned: bf16 mel rows, bf16 frames, the positions
  Graph chunk_graph_;  // a whole chunk after the first, captured at its first use
  const CudaProjector* proj_ = nullptr;          // chained projector, or null
  std::unique_ptr<CudaProjectorState> proj_state_;  // its state (the K/V caches of the turn's tokens)
};

}  // namespace cuda
}  // namespace minmo
