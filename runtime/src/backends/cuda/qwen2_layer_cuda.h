// One Qwen2 decoder layer on the CUDA backend, shared by the decoder (qwen2_cuda.h) and the
// full-duplex predictor (duplex_cuda.h): weights in a weight arena (DeviceLinear formats of
// weights.h; q|k|v and gate|up stacked into one product each) and the launches of one chunk of
// `rows` positions over an fp32 residual stream with bf16 activations (unfused path; the decoder's
// fused decode step stays in qwen2_cuda.cc).
#pragma once

#include <cstdint>
#include <set>
#include <string>

#include "backends/cuda/device.h"
#include "backends/cuda/gemm.h"
#include "backends/cuda/weights.h"
#include "core/safetensors.h"
#include "modules/qwen2_layer.h"

namespace minmo {
namespace cuda {

// Offsets of one layer's weights: the norms' gammas and the q|k|v bias (bf16), the products.
struct Qwen2DeviceLayer {
  size_t in_norm = 0, post_norm = 0, qkv_bias = 0;
  DeviceLinear qkv, o, gate_up, down;

  // Queues the upload of the layer's tensors `prefix` + input_layernorm.weight, self_attn.{q,k,v,o}_proj,
  // post_attention_layernorm.weight, mlp.{gate,up,down}_proj (NotFound / BundleError like load_linear);
  // adds the products' formats to *formats when given.
  static Qwen2DeviceLayer load(Uploads& up, const WeightStore& w, const std::string& prefix,
                               const Qwen2LayerConfig& c, std::set<std::string>* formats = nullptr);
};

// One chunk's device buffers (rows <= the chunk size they were placed for): resid fp32 [R, H];
// hn, o, down [R, H], qkv [R, (Hq + 2 Hkv) D], q, attn [R, Hq D], act [R, I] bf16; gate_up
// [R, 2 I] (only with a GEMM); ws: the split-K decode attention's workspace; pos: the device
// int32 position of the chunk's first row.
struct Qwen2LayerBuffers {
  float* resid = nullptr;
  minmo_bf16 *hn = nullptr, *qkv = nullptr, *q = nullptr, *attn = nullptr, *o = nullptr, *act = nullptr,
             *down = nullptr, *gate_up = nullptr;
  float* ws = nullptr;
  const int32_t* pos = nullptr;
};

// Why the attention kernels cannot run this layer's shape ("" when they can): head_dim, GQA group.
std::string qwen2_layer_unsupported(const Qwen2LayerConfig& c);

// Keys per block of the split-K decode attention (the workspace size: minmo_decode_attention_workspace_floats).
constexpr int64_t kQwen2SplitSize = 32;

// Enqueues one layer on `rows` positions at *b.pos: first resid += prev_down (when not null: the
// previous layer's FFN output, not yet added) and hn = RMSNorm(resid); then attention (K/V appended
// to k_cache / v_cache [Hkv, capacity, D] bf16) into resid, the FFN's down product into b.down (the
// caller adds it to resid: the next layer, the final norm, or minmo_bias_residual_bf16).
void enqueue_qwen2_layer(const Stream& d, const Arena& weights, const Qwen2DeviceLayer& L, const Qwen2LayerConfig& c,
                         const Qwen2LayerBuffers& b, minmo_bf16* k_cache, minmo_bf16* v_cache, int64_t capacity,
                         const minmo_bf16* prev_down, int64_t rows, const Gemm* gemm);

}  // namespace cuda
}  // namespace minmo
