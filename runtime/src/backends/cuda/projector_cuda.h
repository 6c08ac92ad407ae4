// The input projector (modules/projector.h has the math) on the CUDA backend, chunked streaming
// attention only. Per projector chunk of Ct = chunk_frames / 2 tokens (2 Ct encoder frames) at
// token positions t0 .. t0 + r - 1 (r <= Ct; a chunk starts at a multiple of Ct):
//   the frames, bf16 [2 r, encoder_dim] row-major, ARE the frame pairs [r, 2 encoder_dim] (an odd
//   last frame is paired with a zero row) -> linear1 + bias + ReLU -> linear2 + bias into the fp32
//   residual -> n_layers x the shared block (block_cuda.h: LayerNorm, biased q|k|v without RoPE,
//   window attention over the chunks [t0 / Ct - left_chunks, t0 / Ct], out + bias, ReLU FFN)
//   -> the residual rows are the tokens (fp32).
// A whole chunk runs as one CUDA graph, captured at the state's first whole chunk; a partial last
// chunk runs eagerly. The encoder's blocks (encoder_cuda.h) can run this projector on their own
// device output in their chunk's graph ("chained"): no host copy of the frames in between.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backends/cuda/block_cuda.h"
#include "backends/cuda/device.h"
#include "backends/cuda/weights.h"
#include "core/safetensors.h"
#include "core/tensor.h"
#include "modules/audio_common.h"

namespace minmo {

struct ProjectorConfig;

namespace cuda {

class CudaProjectorState;
class CudaEncoderBlocks;

class CudaProjector {
 public:
  // Why the kernels cannot run this projector ("" when they can): full attention, odd chunks, head size.
  static std::string unsupported(const ProjectorConfig& cfg, const ChunkSpec& chunk);
  // Uploads linear1/linear2 and blocks.N.* (names of modules/projector.h). BundleError for a shape
  // the kernels do not run, NotFound / BundleError for missing or misshapen tensors.
  static std::shared_ptr<const CudaProjector> load(const WeightStore& w, const ProjectorConfig& cfg,
                                                   const ChunkSpec& chunk, std::shared_ptr<Device> device);

  // A state holding the K/V caches of max_tokens token positions per layer (a longer turn is CacheFull).
  std::unique_ptr<CudaProjectorState> new_state(int64_t max_tokens) const;
  // ProjectorStream's contract on host frames [n, encoder_dim]: returns the tokens [k, output_dim]
  // that are final; final: end of the stream (the odd last frame is zero-padded, the partial last
  // chunk runs), after which the state starts a new stream.
  Tensor push(CudaProjectorState& s, const float* frames, int64_t n, bool final) const;
  // Drops the state's pending frames: the next push starts a new stream.
  void reset(CudaProjectorState& s) const;

  const std::shared_ptr<Device>& device_ptr() const { return device_; }
  std::string device() const { return device_->name(); }
  int64_t encoder_dim() const { return enc_dim_; }
  int64_t output_dim() const { return shape_.d; }
  int64_t chunk_tokens() const { return ct_; }

  CudaProjector(int64_t enc_dim, int64_t hidden, const BlockShape& shape, const ChunkSpec& chunk,
                std::shared_ptr<Device> device);

 private:
  friend class CudaEncoderBlocks;
  friend class CudaProjectorState;
  // Sets the host side of the next chunk of `tokens` tokens (positions; CacheFull past max_tokens).
  void prepare_chunk(CudaProjectorState& s, int64_t tokens) const;
  // Enqueues on `st` one chunk over `frames` (device bf16, room for 2 tokens rows; n_frames of them
  // valid, n_frames + 1 == 2 tokens pads the last pair with a zero row written here), at the
  // positions prepare_chunk set; the tokens go to the state's pinned output buffer.
  void enqueue_chunk(const Stream& st, CudaProjectorState& s, minmo_bf16* frames, int64_t n_frames) const;
  // Copies a finished chunk's tokens from the pinned output buffer into out (appended).
  void take_tokens(CudaProjectorState& s, int64_t tokens, Tensor& out) const;

  int64_t enc_dim_, hidden_, ct_;
  BlockShape shape_;
  ChunkSpec chunk_;
  std::shared_ptr<Device> device_;
  Arena weights_;
  DeviceLinear linear1_, linear2_;
  size_t linear1_b_ = 0, linear2_b_ = 0;
  std::vector<DeviceBlock> blocks_;
};

// Per-stream state of a CudaProjector.
class CudaProjectorState {
 public:
  CudaProjectorState(const CudaProjector* owner, int64_t max_tokens);

 private:
  friend class CudaProjector;
  friend class CudaEncoderBlocks;
  // Device buffers: per layer the K / V caches [heads, max_tokens, head size]; the positions
  // ([0]: the chunk's first token, [1]: the first key of its window); the frames of one chunk
  // (bf16 [2 Ct, encoder_dim], the host-input path's); linear1's output [Ct, hidden]; the residual
  // [Ct, d]; the block's scratch.
  struct Buffers {
    std::vector<minmo_bf16*> k, v;
    int32_t* pos;
    minmo_bf16 *frames, *h;
    float* resid;
    BlockScratch blk;
  };
  const CudaProjector* owner_;
  int64_t max_tokens_;
  int64_t tokens_done_ = 0;        // tokens of this stream so far
  std::vector<float> pending_;     // host-input path: frames not yet run [n, encoder_dim]
  Stream stream_;
  Arena arena_;
  Buffers b{};
  Allocation in_, out_, pos_host_;  // pinned: bf16 frames, fp32 tokens, the positions
  Graph chunk_graph_;               // host-input path: a whole chunk, captured at its first use
};

}  // namespace cuda
}  // namespace minmo
