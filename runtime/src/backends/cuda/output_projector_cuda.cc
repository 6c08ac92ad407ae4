#include "backends/cuda/output_projector_cuda.h"

#include <cstring>

#include "modules/audio_common.h"
#include "modules/voice_lm.h"

namespace minmo {
namespace cuda {

CudaOutputProjectorState::CudaOutputProjectorState(const CudaOutputProjector* owner)
    : owner_(owner), stream_(owner->device_) {
  arena_.place(&x_, owner->embed_dim_ + owner->hidden_);
  arena_.place(&y_, owner->out_dim_);
  arena_.place(&out_, owner->out_dim_);
  arena_.commit(owner->device_);
  in_ = Allocation(owner->device_, sizeof(minmo_bf16) * (owner->embed_dim_ + owner->hidden_), MemoryKind::PinnedHost);
  result_ = Allocation(owner->device_, sizeof(float) * owner->out_dim_, MemoryKind::PinnedHost);
}

CudaOutputProjector::CudaOutputProjector(int64_t embed_dim, int64_t hidden, int64_t out_dim,
                                         std::shared_ptr<Device> device)
    : embed_dim_(embed_dim), hidden_(hidden), out_dim_(out_dim), device_(std::move(device)) {}

std::shared_ptr<const CudaOutputProjector> CudaOutputProjector::load(const WeightStore& w,
                                                                     const OutputProjectorConfig& c,
                                                                     std::shared_ptr<Device> device) {
  auto m = std::make_shared<CudaOutputProjector>(c.embed_dim, c.llm_hidden, c.output_dim, device);
  Uploads up(m->weights_);
  const LinearW l = load_linear(w, "linear", c.embed_dim + c.llm_hidden, c.output_dim);
  m->linear_ = stack_linears(up, {l}, "linear");
  m->bias_ = up.add_bf16(l.b, c.output_dim);
  m->weights_.commit(device);
  up.run(device);
  return m;
}

std::unique_ptr<CudaOutputProjectorState> CudaOutputProjector::new_state() const {
  return std::make_unique<CudaOutputProjectorState>(this);
}

void CudaOutputProjector::enqueue_row(const CudaOutputProjectorState& s) const {
  const Stream& st = s.stream_;
  st.upload(s.x_, s.in_.data(), sizeof(minmo_bf16) * (embed_dim_ + hidden_));
  linear_product(st, weights_, linear_, s.x_, s.y_, 1, false);
  st.memset(s.out_, 0, sizeof(float) * out_dim_);
  MINMO_DEVICE_CALL(st, bias_residual_bf16, s.y_, weights_.at<minmo_bf16>(bias_), s.out_, 1, out_dim_);
  st.download(s.result_.data(), s.out_, sizeof(float) * out_dim_);
}

void CudaOutputProjector::run_row(CudaOutputProjectorState& s, const float* embed, const float* hidden,
                                  float* out) const {
  MINMO_CHECK(s.owner_ == this, ErrorCode::InvalidArgument, "output projector: a state of another projector");
  auto* in = s.in_.as<uint8_t>();
  to_bf16(embed, embed_dim_, in);
  to_bf16(hidden, hidden_, in + 2 * embed_dim_);
  if (s.graph_.empty()) s.graph_ = s.stream_.capture([&s, this] { enqueue_row(s); });
  s.stream_.launch(s.graph_);
  s.stream_.sync();
  std::memcpy(out, s.result_.data(), sizeof(float) * out_dim_);
}

Tensor CudaOutputProjector::run(const Tensor& token_embeds, const Tensor& hidden) const {
  MINMO_CHECK(token_embeds.ndim() == 2 && token_embeds.dim(1) == embed_dim_, ErrorCode::InvalidArgument,
              "output projector: token_embeds must be [T, " << embed_dim_ << "], got " << token_embeds.shape_str());
  MINMO_CHECK(hidden.ndim() == 2 && hidden.dim(1) == hidden_ && hidden.rows() == token_embeds.rows(),
              ErrorCode::InvalidArgument,
              "output projector: hidden must be [" << token_embeds.rows() << ", " << hidden_ << "], got "
                                                   << hidden.shape_str());
  Tensor out({token_embeds.rows(), out_dim_});
  if (token_embeds.rows() == 0) return out;
  auto s = new_state();
  for (int64_t t = 0; t < token_embeds.rows(); ++t) run_row(*s, token_embeds.row(t), hidden.row(t), out.row(t));
  return out;
}

}  // namespace cuda
}  // namespace minmo
