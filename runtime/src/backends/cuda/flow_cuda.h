// The CosyVoice2 flow's estimator and its Euler / guidance loop (modules/flow.h: FlowModel::segment
// after the encoder) on the CUDA backend (device "cuda" or "cuda-sim"), fp32 like the CPU module.
//
// One estimator call runs both guidance branches as one batch of 2 row blocks (branch 0: [x, mu,
// spk, cond], branch 1: [x, 0, 0, 0]): every product is one Gemm::f32 over 2F rows with the weight
// stored [C_out, C_in k | bias | 0 padding] where a bias column fits (convolutions, ff1,
// final_proj), every causal k = 3 convolution one minmo_flow_causal_im2col_f32 that reads the
// (step, branch)'s 2 carried rows and writes the next segment's. Per resnet: im2col, product,
// LayerNorm + Mish + the step's time projection (precomputed on the host at load: it depends only on
// the step), im2col, product, LayerNorm + Mish + res_conv bias, res_conv product accumulated
// (beta = 1): 7 launches. Per transformer block: norm1 (which also adds to_out's bias to the
// residual), q|k|v product, attention (appends this segment's keys / values to the (step, block)
// cache of both branches), to_out product accumulated, norm3 (adds ff2's bias; writes the ones
// column for ff1's), ff1 product, GELU, ff2 product accumulated: 8 launches. Then the Euler step
// (minmo_flow_euler_cfg_f32) and the copy of x into the next call's input.
//
// A CudaFlowState holds, resident on the device for one utterance: the K/V caches of every
// (Euler step, transformer block) for both branches [cap rows], the causal-conv context of every
// (step, conv) and the activations for segments of up to max_frames frames. Capacities grow when a
// segment needs more (a reallocation, and the graphs are dropped); segments never allocate
// otherwise. The cache's row count lives in device memory, so one CUDA graph per segment length
// (captured the second time a length is seen, up to kMaxGraphs) replays all n_timesteps steps at
// any cache length. Pruning (left_chunks >= 0) compacts the caches before the segment.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backends/cuda/device.h"
#include "backends/cuda/gemm.h"
#include "core/tensor.h"

namespace minmo {

class FlowModel;
struct FlowConfig;

namespace cuda {

class CudaFlowState;

class CudaFlow {
 public:
  static constexpr size_t kMaxGraphs = 8;
  static constexpr size_t kMaxPooled = 4;  // free states kept for reuse (with their buffers and graphs)

  // Why the kernels cannot run this model ("" when they can): head dim, quantized estimator weights.
  static std::string unsupported(const FlowModel& model);
  // Uploads the estimator's weights (fp32). BundleError for an unsupported model.
  CudaFlow(const FlowModel& model, std::shared_ptr<Device> device);
  ~CudaFlow();

  // A state for a new utterance (pooled: a released one is reset and reused, so its buffers and
  // graphs outlive utterances; the deleter, release(), returns it to the pool).
  using StatePtr = std::unique_ptr<CudaFlowState, void (*)(CudaFlowState*)>;
  StatePtr acquire() const;
  static void release(CudaFlowState* s) noexcept;
  // Sizes the state's buffers for segments of up to `frames` frames and caches of `rows` rows now,
  // so that the segments do not allocate (they still grow them when needed).
  void reserve(CudaFlowState& s, int64_t frames, int64_t rows) const;

  // The Euler loop of one segment of F frames (FlowModel::segment after the encoder): x0, mu, cond
  // [F, mel] and spk [mel] host fp32 -> the segment's mel [F, mel] (synchronised). seg: the
  // segment's index; the caches drop segments < seg - left_chunks (left_chunks >= 0), keeping
  // segment 0 when has_prompt, as FlowKV::prune. With mu_device (the device encoder's output in
  // s.mu_buffer(F), written on s.stream()), mu is read there and the host mu is ignored.
  Tensor solve(CudaFlowState& s, const float* x0, const float* mu, const float* spk, const float* cond, int64_t F,
               int64_t seg, int64_t left_chunks, bool has_prompt, const float* mu_device = nullptr) const;

  std::string device() const { return device_->name(); }

 private:
  friend class CudaFlowState;
  struct Conv {  // causal Conv1d as a product: weight [cout, ld] = [W.view(cout, cin k) | b | 0]
    int64_t cin = 0, cout = 0, k = 0, ld = 0;
    size_t w = 0;
    int slot = -1;  // carried-context slot (k > 1)
  };
  struct Norm {
    size_t g = 0, b = 0;
  };
  struct Resnet {
    Conv c1, c2;
    Norm ln1, ln2;
    size_t res_w = 0, res_b = 0;  // res_conv [ch, cin], bias [ch]
    int64_t cin = 0;
  };
  struct Block {
    Norm n1, n3;
    size_t qkv = 0, out_w = 0, out_b = 0, ff1 = 0, ff2_w = 0, ff2_b = 0;  // ff1 [4ch, ldc] with its bias column
    int kv = 0;
  };
  struct Stage {
    Resnet r;
    std::vector<Block> blocks;
  };
  const float* at(size_t off) const { return weights_.at<float>(off); }
  // The launches of one segment of F frames (all steps), on the state's stream.
  void enqueue(CudaFlowState& s, int64_t F) const;
  void estimator(CudaFlowState& s, int step, int64_t F) const;
  void conv(CudaFlowState& s, const Conv& c, int step, const float* x, int64_t F, float* y, float beta) const;
  void resnet(CudaFlowState& s, const Resnet& r, int step, size_t stage, const float* x, float* out, int64_t F) const;
  void block(CudaFlowState& s, const Block& b, int step, float* x, int64_t F) const;

  int64_t mel_, ch_, heads_, hd_, inner_, ldc_, steps_, n_slots_ = 0, n_blocks_ = 0;
  float cfg_rate_;
  std::vector<float> dt_;
  std::shared_ptr<Device> device_;
  Arena weights_;
  std::vector<Stage> stages_;
  Conv down_, up_, final_;
  Norm final_ln_;
  size_t final_proj_ = 0;  // [mel, ldc] with its bias column
  size_t tproj_ = 0;       // [steps, stages, ch]
  std::vector<int64_t> ctx_off_;  // per conv slot: offset of step 0 in the context arrays
  int64_t ctx_floats_ = 0, ld_col_ = 0;
  mutable std::mutex pool_mutex_;
  mutable std::vector<std::unique_ptr<CudaFlowState>> pool_;
};

// Device buffers of one utterance (see the file comment).
class CudaFlowState {
 public:
  CudaFlowState(const CudaFlow& owner);
  int64_t max_frames() const { return max_frames_; }
  int64_t cache_capacity() const { return cap_; }
  int64_t cache_rows() const { return static_cast<int64_t>(seg_.size()); }
  // Kernel and product launches of one segment (all steps; counted when it last ran without a graph).
  int64_t launches_per_segment() const { return launches_; }
  int64_t graphs() const { return static_cast<int64_t>(graphs_.size()); }
  // The state's stream and cuBLAS handle (the device encoder enqueues on them, so that the Euler
  // loop reads its mu in order).
  const Stream& stream() const { return stream_; }
  const Gemm& gemm() const { return *gemm_; }
  // Device room for a segment's mu [F, mel] (grows the buffers to F frames first).
  float* mu_buffer(int64_t F);

 private:
  friend class CudaFlow;
  // Grows the activation buffers to F frames and the caches to `rows` rows (keeping their content).
  void reserve(int64_t F, int64_t rows);
  // Empties the caches and zeroes the conv context (a new utterance).
  void reset();
  const CudaFlow& o_;
  Stream stream_;
  std::unique_ptr<Gemm> gemm_;
  int64_t max_frames_ = 0, cap_ = 0, launches_ = 0;
  Arena act_;
  float *in = nullptr, *cat = nullptr, *a = nullptr, *b = nullptr, *t1 = nullptr, *col = nullptr, *y = nullptr,
        *qkv = nullptr, *att = nullptr, *f = nullptr, *dphi = nullptr, *x = nullptr, *mu = nullptr;
  Allocation kv_, ctx_, ctx_next_, rows_;  // caches, conv contexts, the cache's row count (int32)
  Allocation host_in_, host_out_, host_rows_;  // pinned staging
  std::vector<int64_t> seg_;  // segment of each cache row
  std::map<int64_t, int> seen_;
  std::map<int64_t, Graph> graphs_;
};

}  // namespace cuda
}  // namespace minmo
