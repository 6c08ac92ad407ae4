#include "modules/hift.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backends/cpu/blas.h"
#include "backends/cpu/ops.h"
#include "backends/cuda/hift_cuda.h"
#include "minmo/status.h"
#include "modules/flow.h"

namespace minmo {

namespace {

void leaky_relu(std::vector<float>& x, float slope) {
  for (auto& v : x) v = v > 0.f ? v : slope * v;
}

// x[T, C] <- x + 1/(alpha + 1e-9) * sin(alpha x)^2 per channel.
void snake(const float* x, float* y, int64_t T, int64_t C, const float* alpha) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c) {
      const float v = x[t * C + c], s = std::sin(v * alpha[c]);
      y[t * C + c] = v + (1.f / (alpha[c] + 1e-9f)) * s * s;
    }
}

int64_t resblock_reach(const std::vector<int64_t>& dil, int64_t k) {  // sum of (k-1)d + (k-1)
  int64_t r = 0;
  for (int64_t d : dil) r += (k - 1) * d + (k - 1);
  return r;
}

}  // namespace

int64_t HiftConfig::samples_per_frame() const {
  int64_t p = hop_len;
  for (int64_t u : upsample_rates) p *= u;
  return p;
}

HiftConfig HiftConfig::from_json(const nlohmann::json& config) {
  ConfigReader r(config, "hift");
  HiftConfig c;
  c.mel_dim = r.get_int("mel_dim", c.mel_dim);
  c.base_channels = r.get_int("base_channels", c.base_channels);
  c.nb_harmonics = r.get_int("nb_harmonics", c.nb_harmonics);
  c.sample_rate = r.get_int("sample_rate", c.sample_rate);
  c.nsf_alpha = r.get_float("nsf_alpha", c.nsf_alpha);
  c.nsf_sigma = r.get_float("nsf_sigma", c.nsf_sigma);
  c.nsf_voiced_threshold = r.get_float("nsf_voiced_threshold", c.nsf_voiced_threshold);
  c.upsample_rates = r.get_int_list("upsample_rates", c.upsample_rates);
  c.upsample_kernel_sizes = r.get_int_list("upsample_kernel_sizes", c.upsample_kernel_sizes);
  c.n_fft = r.get_int("n_fft", c.n_fft);
  c.hop_len = r.get_int("hop_len", c.hop_len);
  c.resblock_kernel_sizes = r.get_int_list("resblock_kernel_sizes", c.resblock_kernel_sizes);
  c.resblock_dilation_sizes = r.get_int_lists("resblock_dilation_sizes", c.resblock_dilation_sizes);
  c.source_resblock_kernel_sizes = r.get_int_list("source_resblock_kernel_sizes", c.source_resblock_kernel_sizes);
  c.source_resblock_dilation_sizes = r.get_int_lists("source_resblock_dilation_sizes", c.source_resblock_dilation_sizes);
  c.lrelu_slope = r.get_float("lrelu_slope", c.lrelu_slope);
  c.audio_limit = r.get_float("audio_limit", c.audio_limit);
  c.f0_channels = r.get_int("f0_channels", c.f0_channels);
  c.f0_layers = r.get_int("f0_layers", c.f0_layers);
  r.finish();
  const size_t n = c.upsample_rates.size();
  bool ok = n >= 1 && c.upsample_kernel_sizes.size() == n && c.source_resblock_kernel_sizes.size() == n &&
            c.source_resblock_dilation_sizes.size() == n &&
            c.resblock_kernel_sizes.size() == c.resblock_dilation_sizes.size() && !c.resblock_kernel_sizes.empty() &&
            c.base_channels % (int64_t(1) << n) == 0 && c.n_fft % 2 == 0 && c.hop_len > 0 && c.n_fft % c.hop_len == 0 &&
            c.mel_dim > 0 && c.f0_layers >= 1 && c.f0_channels > 0 && c.sample_rate > 0 && c.nb_harmonics >= 0;
  for (size_t i = 0; ok && i < n; ++i)
    ok = c.upsample_rates[i] > 0 && c.upsample_kernel_sizes[i] >= c.upsample_rates[i] &&
         (c.upsample_kernel_sizes[i] - c.upsample_rates[i]) % 2 == 0;
  MINMO_CHECK(ok, ErrorCode::BundleError, "hift: invalid config " << config.dump());
  return c;
}

HiftModel::HiftModel(const HiftConfig& config, const WeightStore& weights) : cfg_(config), weights_(weights) {
  const WeightStore& w = weights_;
  auto conv = [&](const std::string& name, int64_t ci, int64_t co, int64_t k, int64_t stride, int64_t pad, int64_t dil) {
    return load_conv(w, name, ci, co, k, stride, pad, dil);
  };
  auto resblock = [&](const std::string& p, int64_t ch, int64_t k, const std::vector<int64_t>& dils) {
    ResBlock r;
    for (size_t i = 0; i < dils.size(); ++i) {
      const std::string s = std::to_string(i);
      r.c1.push_back(conv(p + ".convs1." + s, ch, ch, k, 1, (k * dils[i] - dils[i]) / 2, dils[i]));
      r.c2.push_back(conv(p + ".convs2." + s, ch, ch, k, 1, (k - 1) / 2, 1));
      r.a1.push_back(load_tensor(w, p + ".activations1." + s + ".alpha", {ch}));
      r.a2.push_back(load_tensor(w, p + ".activations2." + s + ".alpha", {ch}));
    }
    return r;
  };
  for (int64_t i = 0; i < cfg_.f0_layers; ++i)
    f0_convs_.push_back(conv("f0_predictor.condnet." + std::to_string(2 * i), i == 0 ? cfg_.mel_dim : cfg_.f0_channels,
                             cfg_.f0_channels, 3, 1, 1, 1));
  f0_cls_ = load_linear(w, "f0_predictor.classifier", cfg_.f0_channels, 1);
  l_linear_ = load_linear(w, "m_source.l_linear", cfg_.nb_harmonics + 1, 1);
  const int64_t base = cfg_.base_channels, n_up = static_cast<int64_t>(cfg_.upsample_rates.size());
  conv_pre_ = conv("conv_pre", cfg_.mel_dim, base, 7, 1, 3, 1);
  for (int64_t i = 0; i < n_up; ++i) {
    const int64_t u = cfg_.upsample_rates[i], k = cfg_.upsample_kernel_sizes[i];
    ConvW c;
    c.cin = base >> i;
    c.cout = base >> (i + 1);
    c.k = k;
    c.stride = u;
    c.pad = (k - u) / 2;
    c.w = load_tensor(w, "ups." + std::to_string(i) + ".weight", {c.cin, c.cout, k});
    c.b = load_tensor(w, "ups." + std::to_string(i) + ".bias", {c.cout});
    ups_.push_back(c);
  }
  // source downsampling: cumulative rates of the reversed upsampling, reversed
  std::vector<int64_t> down(n_up, 1);
  for (int64_t i = n_up - 2; i >= 0; --i) down[i] = down[i + 1] * cfg_.upsample_rates[i + 1];
  for (int64_t i = 0; i < n_up; ++i) {
    const int64_t ch = base >> (i + 1), u = down[i];
    const std::string s = std::to_string(i);
    source_downs_.push_back(u == 1 ? conv("source_downs." + s, cfg_.n_fft + 2, ch, 1, 1, 0, 1)
                                   : conv("source_downs." + s, cfg_.n_fft + 2, ch, 2 * u, u, u / 2, 1));
    source_res_.push_back(resblock("source_resblocks." + s, ch, cfg_.source_resblock_kernel_sizes[i],
                                   cfg_.source_resblock_dilation_sizes[i]));
  }
  const int64_t nk = static_cast<int64_t>(cfg_.resblock_kernel_sizes.size());
  for (int64_t i = 0; i < n_up; ++i)
    for (int64_t j = 0; j < nk; ++j)
      res_.push_back(resblock("resblocks." + std::to_string(i * nk + j), base >> (i + 1), cfg_.resblock_kernel_sizes[j],
                              cfg_.resblock_dilation_sizes[j]));
  conv_post_ = conv("conv_post", base >> n_up, cfg_.n_fft + 2, 7, 1, 3, 1);
  for (int64_t n = 0; n < cfg_.n_fft; ++n)
    window_.push_back(static_cast<float>(0.5 - 0.5 * std::cos(2.0 * M_PI * n / cfg_.n_fft)));

  // receptive field in units of 1/(2S) frames (all terms are integers there); mirrors hift.receptive_field
  const int64_t S = cfg_.samples_per_frame(), unit = 2 * S;
  int64_t src = cfg_.f0_layers * unit + unit + cfg_.n_fft;  // f0 convs, phase interpolation, STFT window
  int64_t xl = 3 * unit, xr = 3 * unit;                    // conv_pre
  int64_t rate = 1;
  for (int64_t i = 0; i < n_up; ++i) {
    rate *= cfg_.upsample_rates[i];
    const int64_t per = S / rate;  // 1/rate frames = 2*per units
    const int64_t k = cfg_.upsample_kernel_sizes[i], p = (k - cfg_.upsample_rates[i]) / 2;
    xl += (k - 1 - p) * 2 * per;
    xr += p * 2 * per;
    if (i == n_up - 1) {
      xl += 2 * per;
      xr += 2 * per;
    }
    const int64_t du = down[i], dk = du == 1 ? 1 : 2 * du, dp = du == 1 ? 0 : du / 2;
    const int64_t sres = resblock_reach(cfg_.source_resblock_dilation_sizes[i], cfg_.source_resblock_kernel_sizes[i]) * per;
    const int64_t sl = src + dp * 2 * cfg_.hop_len + sres, sr = src + (dk - 1 - dp) * 2 * cfg_.hop_len + sres;
    xl = std::max(xl, sl);
    xr = std::max(xr, sr);
    int64_t best = 0;
    for (int64_t j = 0; j < nk; ++j)
      best = std::max(best, resblock_reach(cfg_.resblock_dilation_sizes[j], cfg_.resblock_kernel_sizes[j]) * per);
    xl += best;
    xr += best;
    if (i == n_up - 1) {
      xl += 3 * 2 * per + cfg_.n_fft;  // conv_post, iSTFT overlap
      xr += 3 * 2 * per + cfg_.n_fft;
    }
  }
  rf_ = {(xl + unit - 1) / unit + 1, (xr + unit - 1) / unit + 1};
}

std::shared_ptr<const HiftModel> HiftModel::load(const WeightStore& weights, const nlohmann::json& config,
                                                 const std::shared_ptr<cuda::Device>& device, std::string* cpu_fallback) {
  auto m = std::make_shared<HiftModel>(HiftConfig::from_json(config), weights);
  if (device) {
    const std::string why = cuda::CudaHift::unsupported(m->cfg_);
    if (why.empty()) m->gpu_ = std::make_shared<const cuda::CudaHift>(*m, device);
    else if (cpu_fallback) *cpu_fallback = why;
    else MINMO_THROW(ErrorCode::BundleError, "hift on " << device->name() << ": " << why);
  }
  return m;
}

HiftModel::~HiftModel() = default;

std::string HiftModel::device() const { return gpu_ ? gpu_->device() : "cpu"; }

void HiftModel::conv(const ConvW& c, const float* x, int64_t T, std::vector<float>& y, int64_t& Tout) const {
  Tout = cpu::conv1d_out_len(T, c.k, c.stride, c.pad, c.pad, c.dil);
  y.assign(Tout * c.cout, 0.f);
  cpu::conv1d(x, c.w, c.b, y.data(), T, c.cin, c.cout, c.k, c.stride, c.pad, c.pad, 1, c.dil);
}

void HiftModel::resblock(const ResBlock& r, std::vector<float>& x, int64_t T, int64_t C) const {
  std::vector<float> a(T * C), b, c;
  int64_t t1 = 0;
  for (size_t i = 0; i < r.c1.size(); ++i) {
    snake(x.data(), a.data(), T, C, r.a1[i]);
    conv(r.c1[i], a.data(), T, b, t1);
    snake(b.data(), b.data(), T, C, r.a2[i]);
    conv(r.c2[i], b.data(), T, c, t1);
    cpu::add_inplace(x.data(), c.data(), T * C);
  }
}

std::vector<float> HiftModel::f0(const float* mel, int64_t T) const {
  std::vector<float> x(mel, mel + T * cfg_.mel_dim), y;
  int64_t t = T;
  for (const auto& c : f0_convs_) {
    conv(c, x.data(), t, y, t);
    for (auto& v : y) v = v > 0.f ? v : std::expm1(v);
    x.swap(y);
  }
  std::vector<float> out(T);
  f0_cls_(x.data(), out.data(), T);
  for (auto& v : out) v = std::fabs(v);
  return out;
}

void HiftModel::phase_step(float f0, double* r) const {
  for (int64_t h = 0; h <= cfg_.nb_harmonics; ++h) {
    const double v = static_cast<double>(f0) * static_cast<double>(h + 1) / static_cast<double>(cfg_.sample_rate);
    r[h] = v - std::floor(v);
  }
}

std::vector<float> HiftModel::source(const float* f0, const double* q, const double* q_prev, int64_t T, int64_t a0,
                                     uint64_t seed) const {
  const int64_t S = cfg_.samples_per_frame(), H = cfg_.nb_harmonics + 1, N = S * T;
  std::vector<float> noise(N * H);
  counter_normal(seed, kHiftNoiseStream, static_cast<uint64_t>(a0 * S * H), N * H, noise.data());
  std::vector<double> r(T * H);
  for (int64_t k = 0; k < T; ++k) phase_step(f0[k], r.data() + k * H);
  std::vector<float> waves(N * H), out(N);
  for (int64_t n = 0; n < N; ++n) {
    double s = (static_cast<double>(n) + 0.5) / static_cast<double>(S) - 0.5;
    if (!q_prev) s = std::max(s, 0.0);
    int64_t k0 = std::min(static_cast<int64_t>(std::floor(s)), T - 1);
    const int64_t k1 = std::min(k0 + 1, T - 1);
    const double lam = k1 > k0 ? s - static_cast<double>(k0) : 0.0;
    const double* qk = k0 < 0 ? q_prev : q + k0 * H;
    const bool voiced = static_cast<double>(f0[n / S]) > cfg_.nsf_voiced_threshold;
    const double amp = voiced ? cfg_.nsf_sigma : cfg_.nsf_alpha / 3.0;
    for (int64_t h = 0; h < H; ++h) {
      double turns = qk[h] + lam * static_cast<double>(S) * r[k1 * H + h];
      turns -= std::floor(turns);
      const double sine = voiced ? cfg_.nsf_alpha * std::sin(2.0 * M_PI * turns) : 0.0;
      waves[n * H + h] = static_cast<float>(sine + amp * static_cast<double>(noise[n * H + h]));
    }
  }
  l_linear_(waves.data(), out.data(), N);
  for (auto& v : out) v = std::tanh(v);
  return out;
}

std::vector<float> HiftModel::decode(const float* mel, int64_t T, const float* source) const {
  const int64_t S = cfg_.samples_per_frame(), N = S * T, nfft = cfg_.n_fft, hop = cfg_.hop_len, nb = nfft / 2 + 1;
  const int64_t half = nfft / 2, F = N / hop + 1;
  MINMO_CHECK(N > half, ErrorCode::InvalidArgument, "hift: too few samples for the STFT");
  // STFT of the source (center, reflect padding): spec [F, 2*nb] = [real | imag]
  std::vector<float> spec(F * 2 * nb);
  {
    auto at = [&](int64_t i) {  // reflect-padded sample
      int64_t j = i - half;
      if (j < 0) j = -j;
      if (j >= N) j = 2 * (N - 1) - j;
      return source[j];
    };
    for (int64_t m = 0; m < F; ++m)
      for (int64_t k = 0; k < nb; ++k) {
        double re = 0.0, im = 0.0;
        for (int64_t n = 0; n < nfft; ++n) {
          const double v = static_cast<double>(at(m * hop + n)) * window_[n];
          const double ang = 2.0 * M_PI * static_cast<double>(k * n) / static_cast<double>(nfft);
          re += v * std::cos(ang);
          im -= v * std::sin(ang);
        }
        spec[m * 2 * nb + k] = static_cast<float>(re);
        spec[m * 2 * nb + nb + k] = static_cast<float>(im);
      }
  }
  std::vector<float> x, y, si, tmp;
  int64_t t = T, ts = 0;
  conv(conv_pre_, mel, T, x, t);
  const int64_t n_up = static_cast<int64_t>(ups_.size()), nk = static_cast<int64_t>(cfg_.resblock_kernel_sizes.size());
  for (int64_t i = 0; i < n_up; ++i) {
    const ConvW& u = ups_[i];
    leaky_relu(x, static_cast<float>(cfg_.lrelu_slope));
    // transposed convolution: Z[t, co*k + j] = x[t, :] . w[:, co, j]; y[t*stride - pad + j] += Z
    std::vector<float> z(t * u.cout * u.k);
    blas::sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, t, u.cout * u.k, u.cin, 1.f, x.data(), u.cin, u.w,
                u.cout * u.k, 0.f, z.data(), u.cout * u.k);
    const int64_t tout = (t - 1) * u.stride + u.k - 2 * u.pad;
    y.assign(tout * u.cout, 0.f);
    for (int64_t r = 0; r < tout; ++r) std::memcpy(y.data() + r * u.cout, u.b, sizeof(float) * u.cout);
    for (int64_t ti = 0; ti < t; ++ti)
      for (int64_t j = 0; j < u.k; ++j) {
        const int64_t o = ti * u.stride - u.pad + j;
        if (o < 0 || o >= tout) continue;
        float* yr = y.data() + o * u.cout;
        const float* zr = z.data() + ti * u.cout * u.k + j;
        for (int64_t co = 0; co < u.cout; ++co) yr[co] += zr[co * u.k];
      }
    t = tout;
    if (i == n_up - 1) {  // reflection pad (1, 0)
      std::vector<float> p((t + 1) * u.cout);
      std::memcpy(p.data(), y.data() + u.cout, sizeof(float) * u.cout);
      std::memcpy(p.data() + u.cout, y.data(), sizeof(float) * y.size());
      y.swap(p);
      t += 1;
    }
    conv(source_downs_[i], spec.data(), F, si, ts);
    MINMO_CHECK(ts == t, ErrorCode::Internal, "hift: source branch has " << ts << " frames, filter branch " << t);
    resblock(source_res_[i], si, t, u.cout);
    cpu::add_inplace(y.data(), si.data(), t * u.cout);
    std::vector<float> acc(t * u.cout, 0.f);
    for (int64_t j = 0; j < nk; ++j) {
      tmp = y;
      resblock(res_[i * nk + j], tmp, t, u.cout);
      cpu::add_inplace(acc.data(), tmp.data(), t * u.cout);
    }
    for (auto& v : acc) v /= static_cast<float>(nk);
    x.swap(acc);
  }
  leaky_relu(x, 0.01f);
  conv(conv_post_, x.data(), t, y, t);
  MINMO_CHECK(t == F, ErrorCode::Internal, "hift: " << t << " spectral frames, expected " << F);
  // iSTFT (center, periodic Hann, onesided: imaginary parts of DC and Nyquist ignored)
  const int64_t len = (F - 1) * hop + nfft;
  std::vector<double> ola(len, 0.0), env(len, 0.0);
  std::vector<double> re(nb), im(nb);
  for (int64_t m = 0; m < F; ++m) {
    const float* row = y.data() + m * 2 * nb;
    for (int64_t k = 0; k < nb; ++k) {
      const double mag = std::min(std::exp(static_cast<double>(row[k])), 100.0);
      const double ph = std::sin(static_cast<double>(row[nb + k]));
      re[k] = static_cast<double>(static_cast<float>(static_cast<float>(mag) * std::cos(static_cast<float>(ph))));
      im[k] = static_cast<double>(static_cast<float>(static_cast<float>(mag) * std::sin(static_cast<float>(ph))));
    }
    for (int64_t n = 0; n < nfft; ++n) {
      double v = 0.0;
      for (int64_t k = 0; k < nb; ++k) {
        const double c = (k == 0 || k == nb - 1) ? 1.0 : 2.0;
        const double ang = 2.0 * M_PI * static_cast<double>(k * n) / static_cast<double>(nfft);
        v += c * re[k] * std::cos(ang);
        if (k != 0 && k != nb - 1) v -= c * im[k] * std::sin(ang);
      }
      ola[m * hop + n] += v / static_cast<double>(nfft) * window_[n];
      env[m * hop + n] += static_cast<double>(window_[n]) * window_[n];
    }
  }
  std::vector<float> out(N);
  const float lim = static_cast<float>(cfg_.audio_limit);
  for (int64_t i = 0; i < N; ++i) {
    const float v = static_cast<float>(ola[i + half] / env[i + half]);
    out[i] = std::min(std::max(v, -lim), lim);
  }
  return out;
}

std::vector<float> HiftModel::synthesize(const float* mel, int64_t T, uint64_t seed) const {
  MINMO_CHECK(T > 0, ErrorCode::InvalidArgument, "hift: no mel frames to synthesise");
  if (gpu_) {  // utterance-sized state: not pooled
    cuda::CudaHiftState state(*gpu_, T);
    return gpu_->window(state, mel, T, 0, 0, T, seed);
  }
  const int64_t H = cfg_.nb_harmonics + 1, S = cfg_.samples_per_frame();
  std::vector<float> f = f0(mel, T);
  std::vector<double> q(T * H), r(H), acc(H, 0.0);
  for (int64_t k = 0; k < T; ++k) {
    phase_step(f[k], r.data());
    for (int64_t h = 0; h < H; ++h) {
      acc[h] += static_cast<double>(S) * r[h];
      acc[h] -= std::floor(acc[h]);
      q[k * H + h] = acc[h];
    }
  }
  std::vector<float> src = source(f.data(), q.data(), nullptr, T, 0, seed);
  return decode(mel, T, src.data());
}

// ------------------------------------------------------------------------------------------ stream

struct HiftStream::GpuState {
  cuda::CudaHift::StatePtr state;
  int64_t max_step;
};

HiftStream::HiftStream(const HiftModel& model, uint64_t seed)
    : m_(model), seed_(seed), H_(model.config().nb_harmonics + 1) {
  if (const cuda::CudaHift* g = m_.gpu()) {
    const auto [L, R] = m_.receptive_field();
    gpu_.reset(new GpuState{g->acquire(L + R + cuda::CudaHift::kMaxStep), cuda::CudaHift::kMaxStep});
  }
}

HiftStream::~HiftStream() = default;

std::vector<float> HiftStream::emit_steps(int64_t e1) {
  if (!gpu_) return emit(e1);
  std::vector<float> out;
  while (e0_ < e1) {
    std::vector<float> a = emit(std::min(e1, e0_ + gpu_->max_step));
    out.insert(out.end(), a.begin(), a.end());
  }
  return out;
}

std::vector<float> HiftStream::push(const float* mel, int64_t n) {
  const int64_t M = m_.config().mel_dim;
  for (int64_t i = 0; i < n * M; ++i)
    MINMO_CHECK(std::isfinite(mel[i]), ErrorCode::InvalidArgument, "hift: mel has a NaN or Inf value");
  mel_.insert(mel_.end(), mel, mel + n * M);
  total_ += n;
  const int64_t e1 = total_ - m_.receptive_field().second;
  return e1 > e0_ ? emit_steps(e1) : std::vector<float>{};
}

std::vector<float> HiftStream::finish() {
  MINMO_CHECK(total_ > 0, ErrorCode::InvalidArgument, "hift: no mel frames to synthesise");
  return total_ > e0_ ? emit_steps(total_) : std::vector<float>{};
}

// Finalises frames [e0_, e1) from the window [e0_ - L, e1 + R) clipped to the mel known (at the
// end, e1 == total_, the window ends at total_).
std::vector<float> HiftStream::emit(int64_t e1) {
  const auto [L, R] = m_.receptive_field();
  const int64_t M = m_.config().mel_dim, H = H_;
  const int64_t a0 = std::max<int64_t>(0, e0_ - L), a1 = std::min(total_, e1 + R), T = a1 - a0;
  const float* win = mel_.data() + (a0 - mel_base_) * M;
  std::vector<float> out;
  if (gpu_) {  // f0, source and decode on the device; f0 / phase history in the state's ring
    out = m_.gpu()->window(*gpu_->state, win, T, a0, e0_, e1, seed_);
  } else {
    out = emit_cpu(win, T, a0, e1);
  }
  e0_ = e1;
  // keep what the next window reads: mel from e1 - L, history from e1 - L - 1
  const int64_t keep_hist = std::max<int64_t>(0, e1 - L - 1);
  if (!gpu_ && keep_hist > hist_base_) {
    f0_hist_.erase(f0_hist_.begin(), f0_hist_.begin() + (keep_hist - hist_base_));
    q_hist_.erase(q_hist_.begin(), q_hist_.begin() + (keep_hist - hist_base_) * H);
    hist_base_ = keep_hist;
  }
  const int64_t keep_mel = std::max<int64_t>(0, e1 - L);
  if (keep_mel > mel_base_) {
    mel_.erase(mel_.begin(), mel_.begin() + (keep_mel - mel_base_) * M);
    mel_base_ = keep_mel;
  }
  return out;
}

// The host path of emit(): f0 on the CPU, the source from the host history, decode on the CPU.
std::vector<float> HiftStream::emit_cpu(const float* win, int64_t T, int64_t a0, int64_t e1) {
  const int64_t S = m_.config().samples_per_frame(), H = H_, a1 = a0 + T;
  std::vector<float> fw = m_.f0(win, T);
  std::vector<double> q(T * H), r(H), acc(H, 0.0);
  if (e0_ > 0) std::copy_n(q_hist_.begin() + (e0_ - 1 - hist_base_) * H, H, acc.begin());
  for (int64_t k = a0; k < a1; ++k) {
    const int64_t i = k - a0;
    if (k < e0_) {
      fw[i] = f0_hist_[k - hist_base_];
      std::copy_n(q_hist_.begin() + (k - hist_base_) * H, H, q.begin() + i * H);
    } else {
      m_.phase_step(fw[i], r.data());
      for (int64_t h = 0; h < H; ++h) {
        acc[h] += static_cast<double>(S) * r[h];
        acc[h] -= std::floor(acc[h]);
        q[i * H + h] = acc[h];
      }
    }
  }
  const double* q_prev = a0 > 0 ? q_hist_.data() + (a0 - 1 - hist_base_) * H : nullptr;
  std::vector<float> src = m_.source(fw.data(), q.data(), q_prev, T, a0, seed_);
  std::vector<float> audio = m_.decode(win, T, src.data());
  for (int64_t k = e0_; k < e1; ++k) {
    f0_hist_.push_back(fw[k - a0]);
    q_hist_.insert(q_hist_.end(), q.begin() + (k - a0) * H, q.begin() + (k - a0 + 1) * H);
  }
  return std::vector<float>(audio.begin() + (e0_ - a0) * S, audio.begin() + (e1 - a0) * S);
}

}  // namespace minmo
