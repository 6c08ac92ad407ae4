#include "backends/cuda/hift_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

#include "backends/cuda/weights.h"
#include "modules/flow.h"
#include "modules/hift.h"

namespace minmo {
namespace cuda {

namespace {

int64_t round_up4(int64_t v) { return (v + 3) / 4 * 4; }

// Graph kinds of a state (CudaHift::run_graph).
constexpr int kDecodeGraph = 0, kWindowGraph = 1;

// Every length and kernel parameter the kernels take as int32.
bool fits_int32(int64_t v) { return v >= 0 && v < (int64_t{1} << 31); }

}  // namespace

std::string CudaHift::unsupported(const HiftConfig& c) {
  std::ostringstream os;
  if (c.n_fft > MINMO_HIFT_MAX_NFFT || c.hop_len > c.n_fft / 2)
    os << "n_fft " << c.n_fft << " / hop " << c.hop_len << " are not run by the iSTFT kernel (n_fft <= "
       << MINMO_HIFT_MAX_NFFT << ", hop <= n_fft / 2; kernels/include/minmo_kernels/hift.h)";
  for (int64_t v : c.upsample_kernel_sizes)
    if (!fits_int32(v)) os << "upsampling kernel " << v << " too large";
  if (c.nb_harmonics + 1 > MINMO_HIFT_MAX_HARMONICS)
    os << "nb_harmonics " << c.nb_harmonics << " is not run by the source kernels (at most "
       << MINMO_HIFT_MAX_HARMONICS - 1 << "; kernels/include/minmo_kernels/hift.h)";
  if (!fits_int32(c.samples_per_frame())) os << c.samples_per_frame() << " samples per frame too many";
  return os.str();
}

CudaHift::CudaHift(const HiftModel& m, std::shared_ptr<Device> device)
    : device_(std::move(device)) {
  const HiftConfig& c = m.config();
  const std::string why = unsupported(c);
  MINMO_CHECK(why.empty(), ErrorCode::BundleError, "hift on " << device_->name() << ": " << why);
  mel_dim_ = c.mel_dim;
  S_ = c.samples_per_frame();
  n_fft_ = c.n_fft;
  hop_ = c.hop_len;
  nk_ = static_cast<int64_t>(c.resblock_kernel_sizes.size());
  lrelu_ = static_cast<float>(c.lrelu_slope);
  limit_ = static_cast<float>(c.audio_limit);
  nsf_.harmonics = static_cast<int32_t>(c.nb_harmonics + 1);
  nsf_.samples_per_frame = static_cast<int32_t>(S_);
  nsf_.sample_rate = static_cast<double>(c.sample_rate);
  nsf_.alpha = c.nsf_alpha;
  nsf_.sigma = c.nsf_sigma;
  nsf_.voiced_threshold = c.nsf_voiced_threshold;
  nsf_.noise_stream = kHiftNoiseStream;
  Uploads up(weights_);
  auto conv = [&](const ConvW& w) {
    Conv d;
    static_cast<ConvShape&>(d) = w;
    d.ld = round_up4(w.cin * w.k + 1);
    const int64_t width = w.cin * w.k, ld = d.ld, cout = w.cout;
    const float *wp = w.w, *bp = w.b;
    d.w = up.add(sizeof(float) * cout * ld, [=](uint8_t* dst) {
      auto* o = reinterpret_cast<float*>(dst);
      for (int64_t r = 0; r < cout; ++r) {
        std::memcpy(o + r * ld, wp + r * width, sizeof(float) * width);
        o[r * ld + width] = bp ? bp[r] : 0.f;
        std::fill(o + r * ld + width + 1, o + (r + 1) * ld, 0.f);
      }
    });
    return d;
  };
  auto vec = [&](const float* p, int64_t n) {
    return up.add(sizeof(float) * n, [=](uint8_t* dst) { std::memcpy(dst, p, sizeof(float) * n); });
  };
  auto res = [&](const HiftModel::ResBlock& r, int64_t ch) {
    Res d;
    for (size_t i = 0; i < r.c1.size(); ++i) {
      d.c1.push_back(conv(r.c1[i]));
      d.c2.push_back(conv(r.c2[i]));
      d.a1.push_back(vec(r.a1[i], ch));
      d.a2.push_back(vec(r.a2[i], ch));
    }
    return d;
  };
  for (const ConvW& w : m.f0_convs_) f0_convs_.push_back(conv(w));
  {
    ConvW cls;  // the classifier Linear(f0_channels, 1) as a k = 1 convolution
    cls.w = m.f0_cls_.w;
    cls.b = m.f0_cls_.b;
    cls.cin = m.f0_cls_.in;
    cls.cout = m.f0_cls_.out;
    cls.k = 1;
    MINMO_CHECK(cls.w != nullptr, ErrorCode::BundleError, "hift: a quantized f0 classifier is not supported");
    f0_cls_ = conv(cls);
  }
  MINMO_CHECK(m.l_linear_.w != nullptr, ErrorCode::BundleError, "hift: a quantized m_source.l_linear is not supported");
  lin_w_ = vec(m.l_linear_.w, nsf_.harmonics);
  const float lin_b = m.l_linear_.b ? m.l_linear_.b[0] : 0.f;
  lin_b_ = up.add(sizeof(float), [lin_b](uint8_t* dst) { std::memcpy(dst, &lin_b, sizeof(float)); });
  pre_ = conv(m.conv_pre_);
  post_ = conv(m.conv_post_);
  for (size_t i = 0; i < m.ups_.size(); ++i) {
    const ConvW& w = m.ups_[i];
    Up u;
    static_cast<ConvShape&>(u) = w;
    u.w = vec(w.w, w.cin * w.cout * w.k);
    u.b = vec(w.b, w.cout);
    ups_.push_back(u);
    downs_.push_back(conv(m.source_downs_[i]));
    source_res_.push_back(res(m.source_res_[i], w.cout));
  }
  for (size_t i = 0; i < m.res_.size(); ++i) res_.push_back(res(m.res_[i], ups_[i / nk_].cout));
  weights_.commit(device_);
  up.run(device_);
}

CudaHift::~CudaHift() = default;

CudaHift::Shape CudaHift::shape(int64_t T) const {
  Shape sh;
  sh.T = T;
  sh.N = S_ * T;
  sh.F = sh.N / hop_ + 1;
  int64_t t = T;
  MINMO_CHECK(pre_.out_len(T) == T, ErrorCode::Internal, "hift: conv_pre changes the frame count");
  for (size_t i = 0; i < ups_.size(); ++i) {
    const Up& u = ups_[i];
    t = (t - 1) * u.stride + u.k - 2 * u.pad + (i + 1 == ups_.size() ? 1 : 0);
    MINMO_CHECK(downs_[i].out_len(sh.F) == t, ErrorCode::Internal,
                "hift: source branch has " << downs_[i].out_len(sh.F) << " frames, filter branch " << t);
    sh.t.push_back(t);
  }
  MINMO_CHECK(post_.out_len(t) == sh.F, ErrorCode::Internal,
              "hift: " << post_.out_len(t) << " spectral frames, expected " << sh.F);
  return sh;
}

// ---- state -------------------------------------------------------------------------------------

CudaHiftState::CudaHiftState(const CudaHift& o, int64_t max_frames)
    : max_frames_(max_frames), stream_(o.device_) {
  std::string why;
  gemm_ = Gemm::open(stream_, &why);
  MINMO_CHECK(gemm_ != nullptr, ErrorCode::DeviceError, "hift on " << o.device() << ": " << why);
  const CudaHift::Shape sh = o.shape(max_frames);
  // Largest im2col, ConvTranspose product and activation over the network at this length.
  int64_t ncol = sh.T * o.pre_.ld, nz = 0, act = sh.T * o.pre_.cout;
  for (const auto& c : o.f0_convs_) {
    ncol = std::max(ncol, sh.T * c.ld);
    act = std::max(act, sh.T * c.cout);
  }
  ncol = std::max(ncol, sh.T * o.f0_cls_.ld);
  int64_t t = sh.T;
  auto res_col = [&](const CudaHift::Res& r, int64_t tt) {
    for (const auto& c : r.c1) ncol = std::max(ncol, tt * c.ld);
    for (const auto& c : r.c2) ncol = std::max(ncol, tt * c.ld);
  };
  for (size_t i = 0; i < o.ups_.size(); ++i) {
    const CudaHift::Up& u = o.ups_[i];
    ncol = std::max(ncol, t * u.cin);
    nz = std::max(nz, t * u.cout * u.k);
    t = sh.t[i];
    act = std::max(act, t * u.cout);
    ncol = std::max(ncol, t * o.downs_[i].ld);
    res_col(o.source_res_[i], t);
    for (int64_t j = 0; j < o.nk_; ++j) res_col(o.res_[i * o.nk_ + j], t);
  }
  ncol = std::max(ncol, sh.F * o.post_.ld);
  arena_.place(&mel, sh.T * o.mel_dim_);
  arena_.place(&f0, sh.T * o.f0_cls_.cout);
  arena_.place(&src, sh.N);
  arena_.place(&spec, sh.F * (o.n_fft_ + 2));
  arena_.place(&col, ncol);
  arena_.place(&z, std::max<int64_t>(nz, 1));
  for (float** p : {&x, &y, &si, &tmp, &h}) arena_.place(p, act);
  arena_.place(&post, sh.F * (o.n_fft_ + 2));
  arena_.place(&audio, sh.N);
  const int64_t H = o.nsf_.harmonics;
  cap_ = sh.T + 1;
  arena_.place(&f0w, sh.T);
  arena_.place(&f0_hist, cap_);
  arena_.place(&q, (sh.T + 1) * H);
  arena_.place(&q_hist, cap_ * H);
  arena_.place(&win, 1);
  arena_.commit(o.device_);
  in_ = Allocation(o.device_, sizeof(float) * (sh.T * o.mel_dim_ + sh.N), MemoryKind::PinnedHost);
  out_ = Allocation(o.device_, sizeof(float) * sh.N, MemoryKind::PinnedHost);
  win_in_ = Allocation(o.device_, sizeof(minmo_hift_window), MemoryKind::PinnedHost);
}

// ---- decode ------------------------------------------------------------------------------------

void CudaHift::conv(CudaHiftState& s, const Conv& c, const float* x, int64_t t_in, int32_t act, float slope,
                    size_t alpha, float* y, float beta) const {
  const Stream& st = s.stream_;
  const int64_t t_out = c.out_len(t_in);
  const float* a = act == MINMO_CONV_ACT_SNAKE ? at(alpha) : static_cast<const float*>(nullptr);
  MINMO_DEVICE_CALL(st, conv1d_im2col_f32, x, a, s.col, t_in, c.cin, t_out, c.ld, static_cast<int32_t>(c.k),
                    static_cast<int32_t>(c.stride), static_cast<int32_t>(c.pad), static_cast<int32_t>(c.dil), act,
                    slope);
  s.gemm_->f32(s.col, at(c.w), y, t_out, c.cout, c.ld, c.ld, c.ld, c.cout, true, 1.f, beta);
}

void CudaHift::resblock(CudaHiftState& s, const Res& r, float* x, int64_t t) const {
  for (size_t i = 0; i < r.c1.size(); ++i) {
    conv(s, r.c1[i], x, t, MINMO_CONV_ACT_SNAKE, 0.f, r.a1[i], s.h, 0.f);
    conv(s, r.c2[i], s.h, t, MINMO_CONV_ACT_SNAKE, 0.f, r.a2[i], x, 1.f);  // x += c2(snake(c1(snake(x))))
  }
}

void CudaHift::enqueue(CudaHiftState& s, const Shape& sh) const {
  const Stream& st = s.stream_;
  const float* none = nullptr;
  MINMO_DEVICE_CALL(st, hift_stft_f32, s.src, s.spec, sh.N, static_cast<int32_t>(n_fft_), static_cast<int32_t>(hop_));
  conv(s, pre_, s.mel, sh.T, MINMO_CONV_ACT_NONE, 0.f, 0, s.x, 0.f);
  int64_t t = sh.T;
  for (size_t i = 0; i < ups_.size(); ++i) {
    const Up& u = ups_[i];
    const int64_t n = u.cout * u.k;
    MINMO_DEVICE_CALL(st, conv1d_im2col_f32, s.x, none, s.col, t, u.cin, t, u.cin, 1, 1, 0, 1, MINMO_CONV_ACT_LEAKY_RELU,
                      lrelu_);
    s.gemm_->f32(s.col, at(u.w), s.z, t, n, u.cin, u.cin, n, n, false);
    MINMO_DEVICE_CALL(st, conv_transpose1d_col2im_f32, s.z, at(u.b), s.y, t, u.cout, static_cast<int32_t>(u.k),
                      static_cast<int32_t>(u.stride), static_cast<int32_t>(u.pad),
                      static_cast<int32_t>(i + 1 == ups_.size() ? 1 : 0));
    t = sh.t[i];
    const int64_t len = t * u.cout;
    conv(s, downs_[i], s.spec, sh.F, MINMO_CONV_ACT_NONE, 0.f, 0, s.si, 0.f);
    resblock(s, source_res_[i], s.si, t);
    MINMO_DEVICE_CALL(st, axpby_f32, static_cast<const float*>(s.si), s.y, len, 1.f, 1.f);
    for (int64_t j = 0; j < nk_; ++j) {
      st.copy_on_device(s.tmp, s.y, sizeof(float) * len);
      resblock(s, res_[i * nk_ + j], s.tmp, t);
      MINMO_DEVICE_CALL(st, axpby_f32, static_cast<const float*>(s.tmp), s.x, len, 1.f / static_cast<float>(nk_),
                        j == 0 ? 0.f : 1.f);
    }
  }
  // conv_post as post[n_fft + 2, F] = W [n_fft + 2, ld] @ col[F, ld]^T (channel-major for the iSTFT)
  MINMO_DEVICE_CALL(st, conv1d_im2col_f32, s.x, none, s.col, t, post_.cin, sh.F, post_.ld,
                    static_cast<int32_t>(post_.k), 1, static_cast<int32_t>(post_.pad), 1, MINMO_CONV_ACT_LEAKY_RELU, 0.01f);
  s.gemm_->f32(at(post_.w), s.col, s.post, post_.cout, sh.F, post_.ld, post_.ld, post_.ld, sh.F, true);
  MINMO_DEVICE_CALL(st, hift_istft_f32, static_cast<const float*>(s.post), s.audio, sh.F,
                    static_cast<int32_t>(n_fft_), static_cast<int32_t>(hop_), limit_);
}

// Conv + bias per layer; the ELU after each is applied by the next layer's gather. s.mel -> s.f0
// (signed: the source kernels take its absolute value).
void CudaHift::enqueue_f0(CudaHiftState& s, int64_t T) const {
  const float* x = s.mel;
  float* bufs[2] = {s.x, s.y};
  for (size_t i = 0; i < f0_convs_.size(); ++i) {
    conv(s, f0_convs_[i], x, T, i == 0 ? MINMO_CONV_ACT_NONE : MINMO_CONV_ACT_ELU, 0.f, 0, bufs[i % 2], 0.f);
    x = bufs[i % 2];
  }
  conv(s, f0_cls_, x, T, MINMO_CONV_ACT_ELU, 0.f, 0, s.f0, 0.f);
}

// s.mel and s.win -> s.audio: f0 predictor, source phase (history ring), source, decode.
void CudaHift::enqueue_window(CudaHiftState& s, const Shape& sh) const {
  const Stream& st = s.stream_;
  enqueue_f0(s, sh.T);
  MINMO_DEVICE_CALL(st, hift_phase_f64, static_cast<const float*>(s.f0), static_cast<const minmo_hift_window*>(s.win),
                    s.f0_hist, s.q_hist, s.cap_, s.f0w, s.q, sh.T, nsf_);
  MINMO_DEVICE_CALL(st, hift_source_f32, static_cast<const float*>(s.f0w), static_cast<const double*>(s.q),
                    static_cast<const minmo_hift_window*>(s.win), at(lin_w_), at(lin_b_), s.src, sh.T, nsf_);
  enqueue(s, sh);
}

void CudaHift::run_graph(CudaHiftState& s, int kind, int64_t T, const std::function<void()>& enqueue) const {
  const std::pair<int, int64_t> key{kind, T};
  auto g = s.graphs_.find(key);
  if (g == s.graphs_.end() && ++s.seen_[key] >= 2 && s.graphs_.size() < kMaxGraphs)
    g = s.graphs_.emplace(key, s.stream_.capture(enqueue)).first;
  if (g != s.graphs_.end()) s.stream_.launch(g->second);
  else enqueue();
}

std::vector<float> CudaHift::window(CudaHiftState& s, const float* mel, int64_t T, int64_t a0, int64_t e0, int64_t e1,
                                    uint64_t seed) const {
  MINMO_CHECK(T >= 1 && T <= s.max_frames_, ErrorCode::InvalidArgument,
              "hift: a window of " << T << " frames on a device state of " << s.max_frames_);
  MINMO_CHECK(a0 >= 0 && a0 <= e0 && e0 <= e1 && e1 <= a0 + T, ErrorCode::InvalidArgument,
              "hift: window [" << a0 << ", " << a0 + T << ") cannot finalise frames [" << e0 << ", " << e1 << ")");
  MINMO_CHECK(S_ * T > n_fft_ / 2, ErrorCode::InvalidArgument, "hift: too few samples for the STFT");
  MINMO_CHECK(e0 == 0 || e0 == s.final_, ErrorCode::InvalidArgument,
              "hift: frames before " << e0 << " are not the last ones made final on this state (" << s.final_ << ")");
  const Shape sh = shape(T);
  const Stream& st = s.stream_;
  float* in = s.in_.as<float>();
  std::memcpy(in, mel, sizeof(float) * T * mel_dim_);
  *s.win_in_.as<minmo_hift_window>() = minmo_hift_window{a0, e0, e1, seed};
  st.upload(s.mel, in, sizeof(float) * T * mel_dim_);
  st.upload(s.win, s.win_in_.data(), sizeof(minmo_hift_window));
  run_graph(s, kWindowGraph, T, [this, &s, sh] { enqueue_window(s, sh); });
  const int64_t first = (e0 - a0) * S_, n = (e1 - e0) * S_;
  if (n > 0) st.download(s.out_.data(), s.audio + first, sizeof(float) * n);
  st.sync();
  s.final_ = e1;
  const float* out = s.out_.as<float>();
  return std::vector<float>(out, out + n);
}

std::vector<float> CudaHift::f0(CudaHiftState& s, const float* mel, int64_t T) const {
  MINMO_CHECK(T >= 1 && T <= s.max_frames_, ErrorCode::InvalidArgument,
              "hift: a window of " << T << " frames on a device state of " << s.max_frames_);
  const Stream& st = s.stream_;
  float* in = s.in_.as<float>();
  std::memcpy(in, mel, sizeof(float) * T * mel_dim_);
  st.upload(s.mel, in, sizeof(float) * T * mel_dim_);
  enqueue_f0(s, T);
  st.download(s.out_.data(), s.f0, sizeof(float) * T);
  st.sync();
  const float* out = s.out_.as<float>();
  std::vector<float> f(out, out + T);
  for (float& v : f) v = std::fabs(v);
  return f;
}

std::vector<float> CudaHift::decode(CudaHiftState& s, const float* mel, int64_t T, const float* source) const {
  MINMO_CHECK(T >= 1 && T <= s.max_frames_, ErrorCode::InvalidArgument,
              "hift: a window of " << T << " frames on a device state of " << s.max_frames_);
  MINMO_CHECK(S_ * T > n_fft_ / 2, ErrorCode::InvalidArgument, "hift: too few samples for the STFT");
  const Shape sh = shape(T);
  const Stream& st = s.stream_;
  float* in = s.in_.as<float>();
  std::memcpy(in, mel, sizeof(float) * T * mel_dim_);
  std::memcpy(in + s.max_frames_ * mel_dim_, source, sizeof(float) * sh.N);
  st.upload(s.mel, in, sizeof(float) * T * mel_dim_);
  st.upload(s.src, in + s.max_frames_ * mel_dim_, sizeof(float) * sh.N);
  run_graph(s, kDecodeGraph, T, [this, &s, sh] { enqueue(s, sh); });
  st.download(s.out_.data(), s.audio, sizeof(float) * sh.N);
  st.sync();
  const float* out = s.out_.as<float>();
  return std::vector<float>(out, out + sh.N);
}

// ---- pool --------------------------------------------------------------------------------------

CudaHift::StatePtr CudaHift::acquire(int64_t max_frames) const {
  {
    std::lock_guard<std::mutex> lock(pool_mutex_);
    for (auto it = pool_.begin(); it != pool_.end(); ++it)
      if ((*it)->max_frames() == max_frames) {
        CudaHiftState* s = it->release();
        pool_.erase(it);
        return StatePtr(s, Release{this});
      }
  }
  return StatePtr(new CudaHiftState(*this, max_frames), Release{this});
}

void CudaHift::Release::operator()(CudaHiftState* s) const noexcept {
  if (s == nullptr) return;
  std::unique_ptr<CudaHiftState> own(s);
  try {
    std::lock_guard<std::mutex> lock(owner->pool_mutex_);
    if (owner->pool_.size() < kMaxPooled) owner->pool_.push_back(std::move(own));
  } catch (...) {  // not pooled: freed here
  }
}

}  // namespace cuda
}  // namespace minmo
