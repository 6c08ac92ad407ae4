#include "backends/cuda/encoder_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

#include "common/args.h"
#include "cpu/cpu_util.h"
#include "modules/sensevoice_large.h"

namespace minmo {
namespace cuda {

namespace {

// The rows [row0, row0 + n) of a stacked product's weight, as a product of their own.
DeviceLinear row_slice(const DeviceLinear& l, int64_t row0, int64_t n) {
  DeviceLinear s = l;
  s.n = n;
  if (l.kind == cpu::WeightQuant::None) {
    s.w += static_cast<size_t>(row0 * l.k * 2);
  } else if (l.kind == cpu::WeightQuant::Int8 || l.kind == cpu::WeightQuant::Fp8) {
    s.w += static_cast<size_t>(row0 * l.k);
    s.scale += static_cast<size_t>(row0 * 4);
  } else {  // int4
    const int64_t groups = l.k / l.group;
    s.w += static_cast<size_t>(row0 * l.k / 2);
    s.scale += static_cast<size_t>(row0 * groups * 2);
    s.zero += static_cast<size_t>(row0 * groups);
  }
  return s;
}

}  // namespace

// ---- state -------------------------------------------------------------------------------------

CudaEncoderState::CudaEncoderState(const CudaEncoderBlocks* owner, int64_t max_frames, const CudaProjector* chained)
  : owner_(owner), max_frames_(max_frames), stream_(owner->device_), proj_(chained) {
  const int64_t d = owner->d_, C = owner->chunk_.chunk_frames, L = static_cast<int64_t>(owner->blocks_.size());
  b.k.resize(static_cast<size_t>(L));
  b.v.resize(static_cast<size_t>(L));
  b.vhist.resize(static_cast<size_t>(L));
  for (size_t l = 0; l < b.k.size(); ++l) {
    arena_.place(&b.k[l], max_frames * d);
    arena_.place(&b.v[l], max_frames * d);
    arena_.place(&b.vhist[l], 2 * C * d);
  }
  arena_.place(&b.pos, 2);
  arena_.place(&b.resid, 2 * C * d);
  b.blk.place(arena_, C, d, 4 * d);
  arena_.place(&b.vb, C * d);
  const int64_t M = owner->n_mels_;
  arena_.place(&b.mel, (4 * C + 3) * M);
  arena_.place(&b.col1, (2 * C + 1) * 3 * M);
  arena_.place(&b.y1, (2 * C + 1) * d);
  arena_.place(&b.col2, C * 3 * d);
  arena_.commit(owner->device_);
  in_ = Allocation(owner->device_, sizeof(minmo_bf16) * (4 * C + 3) * M, MemoryKind::PinnedHost);
  out_ = Allocation(owner->device_, sizeof(minmo_bf16) * C * d, MemoryKind::PinnedHost);
  pos_host_ = Allocation(owner->device_, sizeof(int32_t) * 2, MemoryKind::PinnedHost);
  if (chained) proj_state_ = chained->new_state((max_frames + 1) / 2);
}

CudaEncoderState::~CudaEncoderState() = default;


// ---- model -------------------------------------------------------------------------------------

CudaEncoderBlocks::CudaEncoderBlocks(int64_t n_mels, int64_t d, int64_t heads, int64_t kernel, double theta,
                                     double eps, const ChunkSpec& chunk, std::shared_ptr<Device> device)
    : n_mels_(n_mels), d_(d), heads_(heads), kernel_(kernel), theta_(theta), eps_(eps), chunk_(chunk), device_(std::move(device)) {}

std::string CudaEncoderBlocks::unsupported(const SenseVoiceLargeConfig& c, const ChunkSpec& chunk) {
  std::ostringstream os;
  if (!chunk.chunked)
    os << "full-context encoder attention re-encodes the whole turn; the CUDA encoder runs chunked streaming only";
  else if (!minmo_args::attention_ok(1, c.n_heads, c.n_heads, c.d_model / c.n_heads, 1))
    os << c.n_heads << " heads of dimension " << c.d_model / c.n_heads
       << " are not run by the CUDA attention kernels (kernels/include/minmo_kernels/attention.h)";
  else if (chunk.chunk_frames < (c.fsmn_kernel - 1) / 2)
    os << "chunks of " << chunk.chunk_frames << " frames are shorter than the FSMN's left context ("
       << (c.fsmn_kernel - 1) / 2 << " frames); the CUDA encoder keeps one previous chunk";
  return os.str();
}

std::shared_ptr<const CudaEncoderBlocks> CudaEncoderBlocks::load(const WeightStore& w, const SenseVoiceLargeConfig& c,
                                                                 const ChunkSpec& chunk,
                                                                 std::shared_ptr<Device> device) {
  const std::string why = unsupported(c, chunk);
  MINMO_CHECK(why.empty(), ErrorCode::BundleError, "sensevoice_large encoder: " << why << "; use device='cpu'");
  const int64_t d = c.d_model, K = c.fsmn_kernel;
  auto m = std::make_shared<CudaEncoderBlocks>(c.n_mels, d, c.n_heads, K, c.rope_theta, c.norm_eps, chunk, device);
  Uploads up(m->weights_);
  auto conv = [&](const std::string& name, int64_t cin, DeviceLinear* l, size_t* bias) {
    LinearW cw;  // Conv1d [d, cin, 3] = a product over im2col rows of 3 cin
    cw.in = 3 * cin;
    cw.out = d;
    cw.w = load_tensor(w, name + ".weight", {d, cin, 3});
    cw.b = load_tensor(w, name + ".bias", {d});
    *l = stack_linears(up, {cw}, name);
    *bias = up.add_bf16(cw.b, d);
  };
  conv("conv1", c.n_mels, &m->conv1_, &m->conv1_b_);
  conv("conv2", d, &m->conv2_, &m->conv2_b_);
  const BlockNames names{"attn_ln", "attn.query", "attn.key", "attn.value", "attn.out", "mlp_ln", "mlp.0", "mlp.2",
                         false};
  for (int64_t i = 0; i < c.n_blocks; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    Block B;
    B.body = DeviceBlock::load(up, w, p, names, d, 4 * d);
    B.v = row_slice(B.body.qkv, 2 * d, d);
    B.v_bias = B.body.qkv_bias + static_cast<size_t>(4 * d);
    const float* fsmn = load_tensor(w, p + "attn.fsmn.weight", {d, 1, K});  // = [d, K], as the kernel takes it
    B.fsmn = up.add(sizeof(float) * d * K, [fsmn, d, K](uint8_t* dst) { std::memcpy(dst, fsmn, sizeof(float) * d * K); });
    m->blocks_.push_back(B);
  }
  const NormW ln_post = load_norm(w, "ln_post", d);
  m->ln_post_g_ = up.add_bf16(ln_post.g, d);
  m->ln_post_b_ = up.add_bf16(ln_post.b, d);
  m->weights_.commit(device);
  up.run(device);
  return m;
}

std::unique_ptr<CudaEncoderState> CudaEncoderBlocks::new_state(int64_t max_frames, const CudaProjector* chained) const {
  MINMO_CHECK(max_frames >= 1, ErrorCode::InvalidArgument, "sensevoice_large encoder: state needs >= 1 frame");
  if (chained)
    MINMO_CHECK(chained->device_ptr() == device_ && chained->encoder_dim() == d_ &&
                    2 * chained->chunk_tokens() == chunk_.chunk_frames,
                ErrorCode::InvalidArgument,
                "sensevoice_large encoder: the chained projector must be on the same device, take "
                    << d_ << "-wide frames and chunks of " << chunk_.chunk_frames << " frames");
  return std::make_unique<CudaEncoderState>(this, max_frames, chained);
}

void CudaEncoderBlocks::encode_mel(CudaEncoderState& s, const float* mel, int64_t mel0, int64_t n_mel, int64_t p0,
                                   int64_t n, bool final, Tensor& out) const {
  const int64_t C = chunk_.chunk_frames, d = d_, M = n_mels_;
  MINMO_CHECK(s.owner_ == this, ErrorCode::InvalidArgument, "sensevoice_large encoder: a state of another encoder");
  MINMO_CHECK(p0 >= 0 && p0 % C == 0 && n >= 0 && (final || n % C == 0) && mel0 >= 0 && n_mel >= 0,
              ErrorCode::Internal, "sensevoice_large encoder: frames must start at a chunk boundary (p0 " << p0 << ")");
  MINMO_CHECK(p0 + n <= s.max_frames_, ErrorCode::CacheFull,
              "sensevoice_large encoder: the GPU encoder holds " << s.max_frames_ << " frames per turn ("
                                                                  << s.max_frames_ / 25 << " s of audio), "
                                                                  << p0 + n << " needed");
  const Stream& st = s.stream_;
  if (p0 == 0) {  // a new stream: no previous chunk for the FSMN
    for (float* vh : s.b.vhist) st.memset(vh, 0, sizeof(float) * 2 * C * d);
    if (s.proj_) s.proj_->reset(*s.proj_state_);
  }
  const int64_t mel_end = mel0 + n_mel;  // the input's length when final
  const int64_t n1 = mel_end > 0 ? (mel_end - 1) / 2 + 1 : 0;  // conv1 rows when final
  for (int64_t i = 0; i < n; i += C) {
    const int64_t rows = std::min(C, n - i), q0 = p0 + i;
    const bool last = final && q0 + rows == p0 + n;
    // conv1 rows u0 .. u1 - 1 feed conv2 (whose row -1 is padding), mel rows m0 .. m1 - 1 feed them
    const int64_t u0 = std::max<int64_t>(0, 2 * q0 - 1), u1 = last ? std::min(2 * (q0 + rows), n1) : 2 * (q0 + rows);
    const int64_t m0 = std::max<int64_t>(0, 2 * u0 - 1), m1 = last ? std::min(2 * u1, mel_end) : 2 * u1;
    MINMO_CHECK(m0 >= mel0 && m1 <= mel_end && m1 - m0 <= 4 * C + 3, ErrorCode::Internal,
                "sensevoice_large encoder: mel rows " << m0 << ".." << m1 << " are not in " << mel0 << ".." << mel_end);
    to_bf16(mel + (m0 - mel0) * M, (m1 - m0) * M, s.in_.as<uint8_t>());
    int32_t* ph = s.pos_host_.as<int32_t>();
    ph[0] = static_cast<int32_t>(q0);
    ph[1] = static_cast<int32_t>(std::max<int64_t>(0, (q0 / C - chunk_.left_chunks) * C));
    if (s.proj_) s.proj_->prepare_chunk(*s.proj_state_, (rows + 1) / 2);
    if (rows == C && q0 > 0 && !last) {
      // A whole chunk after the first: the mel rows 4 q0 - 3 .. 4 q0 + 4 C - 1 and conv1 rows
      // 2 q0 - 1 .. 2 q0 + 2 C - 1, indexed from 1 so that nothing reads the padding: one graph.
      if (s.chunk_graph_.empty()) {
        const ConvRows c1{1, 2 * C + 1, 1, 4 * C + 3, 4 * C + 4}, c2{1, C, 1, 2 * C + 1, 2 * C + 2};
        s.chunk_graph_ = st.capture([&s, C, c1, c2, this] { encode_chunk(s, C, c1, c2); });
      }
      st.launch(s.chunk_graph_);
    } else {  // absolute rows: the left padding of the first chunk, the right padding of the last
      const int64_t in1 = last ? mel_end : m1, in2 = last ? n1 : u1;
      encode_chunk(s, rows, ConvRows{u0, u1 - u0, m0, m1 - m0, in1}, ConvRows{q0, rows, u0, u1 - u0, in2});
    }
    st.sync();
    if (s.proj_) {
      s.proj_->take_tokens(*s.proj_state_, (rows + 1) / 2, out);
      continue;
    }
    const auto* o = s.out_.as<minmo_bf16>();
    const size_t at = out.data.size();
    out.data.resize(at + static_cast<size_t>(rows * d));
    for (int64_t j = 0; j < rows * d; ++j) out.data[at + static_cast<size_t>(j)] = minmo_cpu::bf16_to_f32(o[j]);
    out.shape[0] += rows;
  }
}

void CudaEncoderBlocks::encode_chunk(CudaEncoderState& s, int64_t rows, const ConvRows& c1,
                                     const ConvRows& c2) const {
  const Stream& st = s.stream_;
  const CudaEncoderState::Buffers& b = s.b;
  const int64_t C = chunk_.chunk_frames, d = d_;
  BlockShape shape;
  shape.d = d;
  shape.heads = heads_;
  shape.ffn = 4 * d;
  shape.max_seq = s.max_frames_;
  shape.eps = static_cast<float>(eps_);
  shape.theta = static_cast<float>(theta_);
  shape.act = MINMO_ACT_GELU;
  float* x = b.resid + C * d;  // the chunk's rows of the residual stream
  const int64_t M = n_mels_;
  st.upload(b.mel, s.in_.data(), sizeof(minmo_bf16) * c1.n_in * M);
  st.upload(b.pos, s.pos_host_.data(), sizeof(int32_t) * 2);
  MINMO_DEVICE_CALL(st, im2col_k3s2_bf16, b.mel, b.col1, c1.t_out0, c1.n_out, c1.t_in0, c1.n_in, M, c1.total_in);
  enqueue_biased_product(st, weights_, conv1_, conv1_b_, b.col1, b.y1, c1.n_out, MINMO_ACT_GELU);
  MINMO_DEVICE_CALL(st, im2col_k3s2_bf16, b.y1, b.col2, c2.t_out0, c2.n_out, c2.t_in0, c2.n_in, d, c2.total_in);
  enqueue_biased_product(st, weights_, conv2_, conv2_b_, b.col2, b.blk.o, rows, MINMO_ACT_GELU);
  st.memset(b.resid, 0, sizeof(float) * (C + rows) * d);  // the FSMN's scratch rows, then the chunk's
  MINMO_DEVICE_CALL(st, bias_residual_bf16, b.blk.o, nullptr, x, rows, d);
  for (size_t l = 0; l < blocks_.size(); ++l) {
    const Block& B = blocks_[l];
    float* vh = b.vhist[l];
    enqueue_block_attention(st, weights_, B.body, shape, b.blk, b.pos, b.k[l], b.v[l], x, rows);
    // FSMN memory: v + bias of this chunk (fp32) after the previous chunk's, limited to this chunk's
    // end; the kernel adds it to the residual rows (out aliases attn), the previous rows are scratch.
    linear_product(st, weights_, B.v, b.blk.hn, b.vb, rows, false);
    st.memset(vh + C * d, 0, sizeof(float) * rows * d);
    MINMO_DEVICE_CALL(st, bias_residual_bf16, b.vb, bf16(B.v_bias), vh + C * d, rows, d);
    MINMO_DEVICE_CALL(st, fsmn_attn_f32, vh, b.resid, weights_.at<float>(B.fsmn), b.resid, C + rows, d, kernel_,
                      (kernel_ - 1) / 2, C);
    if (rows == C) st.copy_on_device(vh, vh + C * d, sizeof(float) * C * d);  // becomes the previous chunk
    enqueue_block_ffn(st, weights_, B.body, shape, b.blk, x, rows);
  }
  MINMO_DEVICE_CALL(st, layernorm_residual_bf16, nullptr, x, bf16(ln_post_g_), bf16(ln_post_b_), b.blk.hn, rows, d,
                    shape.eps);
  if (s.proj_) s.proj_->enqueue_chunk(st, *s.proj_state_, b.blk.hn, rows);  // the frames stay on the device
  else st.download(s.out_.data(), b.blk.hn, sizeof(minmo_bf16) * rows * d);
}

}  // namespace cuda
}  // namespace minmo
