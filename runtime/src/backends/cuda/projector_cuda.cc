#include "backends/cuda/projector_cuda.h"

#include <algorithm>
#include <cstring>
#include <sstream>

#include "common/args.h"
#include "modules/projector.h"

namespace minmo {
namespace cuda {

// ---- state -------------------------------------------------------------------------------------

CudaProjectorState::CudaProjectorState(const CudaProjector* owner, int64_t max_tokens)
    : owner_(owner), max_tokens_(max_tokens), stream_(owner->device_) {
  const int64_t d = owner->shape_.d, C = owner->ct_, L = static_cast<int64_t>(owner->blocks_.size());
  b.k.resize(static_cast<size_t>(L));
  b.v.resize(static_cast<size_t>(L));
  for (size_t l = 0; l < b.k.size(); ++l) {
    arena_.place(&b.k[l], max_tokens * d);
    arena_.place(&b.v[l], max_tokens * d);
  }
  arena_.place(&b.pos, 2);
  arena_.place(&b.frames, 2 * C * owner->enc_dim_);
  arena_.place(&b.h, C * owner->hidden_);
  arena_.place(&b.resid, C * d);
  b.blk.place(arena_, C, d, owner->shape_.ffn);
  arena_.commit(owner->device_);
  in_ = Allocation(owner->device_, sizeof(minmo_bf16) * 2 * C * owner->enc_dim_, MemoryKind::PinnedHost);
  out_ = Allocation(owner->device_, sizeof(float) * C * d, MemoryKind::PinnedHost);
  pos_host_ = Allocation(owner->device_, sizeof(int32_t) * 2, MemoryKind::PinnedHost);
}

// ---- model -------------------------------------------------------------------------------------

CudaProjector::CudaProjector(int64_t enc_dim, int64_t hidden, const BlockShape& shape, const ChunkSpec& chunk,
                             std::shared_ptr<Device> device)
    : enc_dim_(enc_dim), hidden_(hidden), ct_(chunk.chunk_frames / 2), shape_(shape), chunk_(chunk),
      device_(std::move(device)) {}

std::string CudaProjector::unsupported(const ProjectorConfig& c, const ChunkSpec& chunk) {
  std::ostringstream os;
  if (!chunk.chunked)
    os << "a full-attention projector runs once over the whole turn; the CUDA projector runs chunked streaming only";
  else if (chunk.chunk_frames % 2 != 0)
    os << "chunks of " << chunk.chunk_frames << " frames do not split into frame pairs";
  else if (!minmo_args::window_shape_ok(1, c.n_heads, c.n_heads, c.output_dim / c.n_heads, 1))
    os << c.n_heads << " heads of dimension " << c.output_dim / c.n_heads
       << " are not run by the CUDA attention kernels (kernels/include/minmo_kernels/attention.h)";
  return os.str();
}

std::shared_ptr<const CudaProjector> CudaProjector::load(const WeightStore& w, const ProjectorConfig& c,
                                                         const ChunkSpec& chunk, std::shared_ptr<Device> device) {
  const std::string why = unsupported(c, chunk);
  MINMO_CHECK(why.empty(), ErrorCode::BundleError, "input projector: " << why << "; use device='cpu'");
  BlockShape shape;
  shape.d = c.output_dim;
  shape.heads = c.n_heads;
  shape.ffn = c.ffn_dim;
  shape.eps = static_cast<float>(c.norm_eps);
  shape.theta = 0.f;  // no positions in the projector's attention
  shape.act = MINMO_ACT_RELU;
  auto m = std::make_shared<CudaProjector>(c.encoder_dim, c.hidden_dim, shape, chunk, device);
  Uploads up(m->weights_);
  const LinearW l1 = load_linear(w, "linear1", 2 * c.encoder_dim, c.hidden_dim);
  const LinearW l2 = load_linear(w, "linear2", c.hidden_dim, c.output_dim);
  m->linear1_ = stack_linears(up, {l1}, "linear1");
  m->linear1_b_ = up.add_bf16(l1.b, c.hidden_dim);
  m->linear2_ = stack_linears(up, {l2}, "linear2");
  m->linear2_b_ = up.add_bf16(l2.b, c.output_dim);
  const BlockNames names{"norm1", "self_attn.linear_q", "self_attn.linear_k", "self_attn.linear_v",
                         "self_attn.linear_out", "norm2", "feed_forward.w_1", "feed_forward.w_2", true};
  for (int64_t i = 0; i < c.n_layers; ++i)
    m->blocks_.push_back(DeviceBlock::load(up, w, "blocks." + std::to_string(i) + ".", names, c.output_dim, c.ffn_dim));
  m->weights_.commit(device);
  up.run(device);
  return m;
}

std::unique_ptr<CudaProjectorState> CudaProjector::new_state(int64_t max_tokens) const {
  MINMO_CHECK(max_tokens >= 1, ErrorCode::InvalidArgument, "input projector: state needs >= 1 token");
  return std::make_unique<CudaProjectorState>(this, max_tokens);
}

void CudaProjector::reset(CudaProjectorState& s) const {
  s.pending_.clear();
  s.tokens_done_ = 0;
}

void CudaProjector::prepare_chunk(CudaProjectorState& s, int64_t tokens) const {
  const int64_t t0 = s.tokens_done_;
  MINMO_CHECK(s.owner_ == this, ErrorCode::InvalidArgument, "input projector: a state of another projector");
  MINMO_CHECK(t0 % ct_ == 0 && tokens >= 1 && tokens <= ct_, ErrorCode::Internal,
              "input projector: a chunk of " << tokens << " tokens at token " << t0);
  MINMO_CHECK(t0 + tokens <= s.max_tokens_, ErrorCode::CacheFull,
              "input projector: the GPU projector holds " << s.max_tokens_ << " tokens per turn ("
                                                          << s.max_tokens_ * 2 / 25 << " s of audio), "
                                                          << t0 + tokens << " needed");
  int32_t* ph = s.pos_host_.as<int32_t>();
  ph[0] = static_cast<int32_t>(t0);
  ph[1] = static_cast<int32_t>(std::max<int64_t>(0, (t0 / ct_ - chunk_.left_chunks) * ct_));
}

void CudaProjector::enqueue_chunk(const Stream& st, CudaProjectorState& s, minmo_bf16* frames,
                                  int64_t n_frames) const {
  const CudaProjectorState::Buffers& b = s.b;
  const int64_t tokens = (n_frames + 1) / 2, d = shape_.d;
  BlockShape shape = shape_;
  shape.max_seq = s.max_tokens_;
  if (n_frames % 2) st.memset(frames + n_frames * enc_dim_, 0, sizeof(minmo_bf16) * enc_dim_);  // the pad frame
  st.upload(b.pos, s.pos_host_.data(), sizeof(int32_t) * 2);
  // [tokens, 2 encoder_dim] pairs are the frames' rows two by two
  enqueue_biased_product(st, weights_, linear1_, linear1_b_, frames, b.h, tokens, MINMO_ACT_RELU);
  st.memset(b.resid, 0, sizeof(float) * tokens * d);
  enqueue_biased_product(st, weights_, linear2_, linear2_b_, b.h, b.blk.o, tokens, MINMO_ACT_NONE, b.resid);
  for (size_t l = 0; l < blocks_.size(); ++l) {
    enqueue_block_attention(st, weights_, blocks_[l], shape, b.blk, b.pos, b.k[l], b.v[l], b.resid, tokens);
    enqueue_block_ffn(st, weights_, blocks_[l], shape, b.blk, b.resid, tokens);
  }
  st.download(s.out_.data(), b.resid, sizeof(float) * tokens * d);
}

void CudaProjector::take_tokens(CudaProjectorState& s, int64_t tokens, Tensor& out) const {
  const float* t = s.out_.as<float>();
  out.data.insert(out.data.end(), t, t + tokens * shape_.d);
  out.shape[0] += tokens;
  s.tokens_done_ += tokens;
}

Tensor CudaProjector::push(CudaProjectorState& s, const float* frames, int64_t n, bool final) const {
  const int64_t E = enc_dim_, C = ct_;
  MINMO_CHECK(s.owner_ == this, ErrorCode::InvalidArgument, "input projector: a state of another projector");
  MINMO_CHECK(n >= 0 && (n == 0 || frames != nullptr), ErrorCode::InvalidArgument, "input projector: bad frames");
  s.pending_.insert(s.pending_.end(), frames, frames + n * E);
  Tensor out({0, shape_.d});
  const Stream& st = s.stream_;
  auto stage = [&s, E](int64_t rows) { to_bf16(s.pending_.data(), rows * E, s.in_.as<uint8_t>()); };
  int64_t have = static_cast<int64_t>(s.pending_.size()) / E;
  int64_t used = 0;
  for (; have - used >= 2 * C; used += 2 * C) {  // whole chunks: one graph each
    to_bf16(s.pending_.data() + used * E, 2 * C * E, s.in_.as<uint8_t>());
    prepare_chunk(s, C);
    if (s.chunk_graph_.empty())
      s.chunk_graph_ = st.capture([&s, C, E, this] {
        s.stream_.upload(s.b.frames, s.in_.data(), sizeof(minmo_bf16) * 2 * C * E);
        enqueue_chunk(s.stream_, s, s.b.frames, 2 * C);
      });
    st.launch(s.chunk_graph_);
    st.sync();
    take_tokens(s, C, out);
  }
  s.pending_.erase(s.pending_.begin(), s.pending_.begin() + used * E);
  if (final) {
    const int64_t r = have - used;
    if (r > 0) {  // the partial last chunk, eagerly
      stage(r);
      prepare_chunk(s, (r + 1) / 2);
      st.upload(s.b.frames, s.in_.data(), sizeof(minmo_bf16) * r * E);
      enqueue_chunk(st, s, s.b.frames, r);
      st.sync();
      take_tokens(s, (r + 1) / 2, out);
    }
    reset(s);
  }
  return out;
}

}  // namespace cuda
}  // namespace minmo
