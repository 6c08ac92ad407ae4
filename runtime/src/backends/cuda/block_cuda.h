// The pre-norm transformer block that the speech encoder's blocks (encoder_cuda.h) and the input
// projector's (projector_cuda.h) share on the CUDA backend, over one chunk of `rows` rows of an
// fp32 residual stream x with bf16 activations:
//   attention: LN1 -> one stacked q|k|v product -> bias (+ RoPE at the absolute position when
//     theta > 0) and K/V append at the positions from pos[0] (minmo_qkv_rope_append_bf16) ->
//     window attention over the keys [pos[1], pos[0] + rows) -> out product + bias into x
//   FFN: LN2 -> fc1 + bias + activation -> fc2 + bias into x
// pos is a device int32[2] (the chunk's first position, the first key of its window), so a
// captured graph replays at any position. The encoder adds its FSMN memory between the halves.
#pragma once

#include <cstdint>
#include <string>

#include "backends/cuda/device.h"
#include "backends/cuda/weights.h"
#include "core/safetensors.h"

namespace minmo {
namespace cuda {

// Tensor names of one block, relative to its prefix ("blocks.N.").
struct BlockNames {
  std::string ln1, q, k, v, out, ln2, fc1, fc2;
  bool k_bias = true;  // false: the key product has no bias (zeros are stored)
};

// Shapes and constants of a block.
struct BlockShape {
  int64_t d = 0, heads = 0, ffn = 0;
  int64_t max_seq = 0;  // K/V cache positions per head
  float eps = 0.f;
  float theta = 0.f;  // RoPE base; 0: no RoPE
  int act = MINMO_ACT_NONE;  // the FFN's activation (MINMO_ACT_*)
  int64_t head_dim() const { return d / heads; }
};

// A block's weights in a weight arena (offsets; DeviceLinear formats of weights.h).
struct DeviceBlock {
  size_t ln1_g = 0, ln1_b = 0, ln2_g = 0, ln2_b = 0;
  size_t qkv_bias = 0, out_bias = 0, fc1_bias = 0, fc2_bias = 0;  // bf16 [3 d], [d], [ffn], [d]
  DeviceLinear qkv, out, fc1, fc2;

  // Queues the upload of `prefix` + names (NotFound / BundleError for missing or misshapen tensors).
  static DeviceBlock load(Uploads& up, const WeightStore& w, const std::string& prefix, const BlockNames& names,
                          int64_t d, int64_t ffn);
};

// One chunk's bf16 activations of a block: hn (the LN output) [C, d], qkv [C, 3 d], q / attn / o
// [C, d], f [C, ffn], for chunks of at most C rows.
struct BlockScratch {
  minmo_bf16 *hn = nullptr, *qkv = nullptr, *q = nullptr, *attn = nullptr, *o = nullptr, *f = nullptr;
  void place(Arena& arena, int64_t C, int64_t d, int64_t ffn);
};

// The attention half of the block (see the file comment); scratch.hn keeps the LN1 output.
// k_cache, v_cache: bf16 [heads, max_seq, head_dim].
void enqueue_block_attention(const Stream& st, const Arena& weights, const DeviceBlock& B, const BlockShape& s,
                             const BlockScratch& b, const int32_t* pos, minmo_bf16* k_cache, minmo_bf16* v_cache,
                             float* x, int64_t rows);
// The FFN half of the block.
void enqueue_block_ffn(const Stream& st, const Arena& weights, const DeviceBlock& B, const BlockShape& s,
                       const BlockScratch& b, float* x, int64_t rows);

// y [rows, n] = act(x W^T + bias) into a bf16 buffer, or, with `residual`, residual += x W^T + bias.
void enqueue_biased_product(const Stream& st, const Arena& weights, const DeviceLinear& l, size_t bias,
                            const minmo_bf16* x, minmo_bf16* y, int64_t rows, int act, float* residual = nullptr);

}  // namespace cuda
}  // namespace minmo
