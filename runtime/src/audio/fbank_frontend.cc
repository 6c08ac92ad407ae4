#include "audio/fbank_frontend.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "minmo/status.h"
#include "modules/audio_common.h"

namespace minmo {

namespace {

int64_t round_half_even(double x) { return static_cast<int64_t>(std::nearbyint(x)); }

int64_t next_pow2(int64_t n) {
  int64_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

}  // namespace

FbankFrontendConfig FbankFrontendConfig::from_json(const nlohmann::json& config) {
  ConfigReader r(config, "kaldi_fbank frontend");
  FbankFrontendConfig c;
  c.sample_rate = r.get_int("sample_rate", c.sample_rate);
  c.num_mel_bins = r.get_int("num_mel_bins", c.num_mel_bins);
  c.frame_length_ms = r.get_float("frame_length_ms", c.frame_length_ms);
  c.frame_shift_ms = r.get_float("frame_shift_ms", c.frame_shift_ms);
  c.preemphasis = r.get_float("preemphasis", c.preemphasis);
  c.low_freq = r.get_float("low_freq", c.low_freq);
  c.high_freq = r.get_float("high_freq", c.high_freq);
  c.lfr_m = r.get_int("lfr_m", c.lfr_m);
  c.lfr_n = r.get_int("lfr_n", c.lfr_n);
  c.apply_cmvn = r.get_bool("apply_cmvn", c.apply_cmvn);
  c.waveform_scale = r.get_float("waveform_scale", c.waveform_scale);
  r.finish();
  MINMO_CHECK(c.sample_rate > 0 && c.num_mel_bins > 0 && c.lfr_m > 0 && c.lfr_n > 0, ErrorCode::BundleError,
              "kaldi_fbank frontend: sample_rate, num_mel_bins, lfr_m and lfr_n must be positive");
  MINMO_CHECK(c.frame_length_ms > 0 && c.frame_shift_ms > 0, ErrorCode::BundleError,
              "kaldi_fbank frontend: frame_length_ms and frame_shift_ms must be positive");
  return c;
}

FbankFrontend::FbankFrontend(const FbankFrontendConfig& config, const WeightStore& weights)
    : cfg_(config),
      win_(round_half_even(config.sample_rate * config.frame_length_ms / 1000.0)),
      hop_(round_half_even(config.sample_rate * config.frame_shift_ms / 1000.0)),
      padded_(next_pow2(win_)),
      spectrum_(win_ > 0 ? win_ : 1, padded_ > 0 ? padded_ : 1) {
  MINMO_CHECK(win_ > 0 && hop_ > 0, ErrorCode::BundleError,
              "kaldi_fbank frontend: frame length " << win_ << " / shift " << hop_ << " samples must be positive");
  const int64_t bins = padded_ / 2 + 1;
  mel_ = audio::MelProjection(load_tensor(weights, "mel_banks", {cfg_.num_mel_bins, bins}), cfg_.num_mel_bins, bins);
  const float* w = load_tensor(weights, "window", {win_});
  window_.assign(w, w + win_);
  if (cfg_.apply_cmvn) {
    const float* sh = load_tensor(weights, "cmvn_shift", {cfg_.output_dim()});
    const float* sc = load_tensor(weights, "cmvn_scale", {cfg_.output_dim()});
    cmvn_shift_.assign(sh, sh + cfg_.output_dim());
    cmvn_scale_.assign(sc, sc + cfg_.output_dim());
  }
}

std::shared_ptr<const FbankFrontend> FbankFrontend::load(const WeightStore& weights, const nlohmann::json& config) {
  return std::make_shared<const FbankFrontend>(FbankFrontendConfig::from_json(config), weights);
}

int64_t FbankFrontend::num_frames(int64_t num_samples) const {
  return num_samples < win_ ? 0 : 1 + (num_samples - win_) / hop_;
}

void FbankFrontend::frames(const float* samples, int64_t count, float* out) const {
  const int64_t bins = spectrum_.n_bins(), nmel = cfg_.num_mel_bins;
  const double eps = static_cast<double>(FLT_EPSILON);
#pragma omp parallel if (count >= 8)  // a frame is a few microseconds of work
  {
    std::vector<double> x(static_cast<size_t>(win_)), power(static_cast<size_t>(bins)), mel(static_cast<size_t>(nmel));
#pragma omp for schedule(static)
    for (int64_t f = 0; f < count; ++f) {
      const float* s = samples + f * hop_;
      double mean = 0.0;
      for (int64_t j = 0; j < win_; ++j) {
        x[j] = static_cast<double>(s[j]) * cfg_.waveform_scale;
        mean += x[j];
      }
      mean /= static_cast<double>(win_);
      for (int64_t j = 0; j < win_; ++j) x[j] -= mean;
      for (int64_t j = win_ - 1; j >= 1; --j) x[j] -= cfg_.preemphasis * x[j - 1];
      x[0] -= cfg_.preemphasis * x[0];
      for (int64_t j = 0; j < win_; ++j) x[j] *= window_[j];
      spectrum_.compute(x.data(), power.data());
      mel_.apply(power.data(), mel.data());
      float* o = out + f * nmel;
      for (int64_t b = 0; b < nmel; ++b) o[b] = static_cast<float>(std::log(std::max(mel[b], eps)));
    }
  }
}

Tensor FbankFrontend::fbank(const float* samples, size_t n) const {
  const int64_t count = num_frames(static_cast<int64_t>(n));
  Tensor out({count, cfg_.num_mel_bins});
  if (count > 0) frames(samples, count, out.ptr());
  return out;
}

Tensor FbankFrontend::compute(const float* samples, size_t n) const {
  // Same code path as streaming: one push, then finish.
  FbankFrontendStream s(std::shared_ptr<const FbankFrontend>(std::shared_ptr<const FbankFrontend>(), this));
  s.push(samples, n);
  return s.finish();
}

// ---------------------------------------------------------------------------------- stream

FbankFrontendStream::FbankFrontendStream(std::shared_ptr<const FbankFrontend> frontend) : fe_(std::move(frontend)) {
  MINMO_CHECK(fe_ != nullptr, ErrorCode::InvalidArgument, "FbankFrontendStream: no frontend");
}

void FbankFrontendStream::reset() {
  samples_.clear();
  frames_.clear();
  frame0_.clear();
  samples_base_ = total_samples_ = frames_base_ = frames_done_ = rows_emitted_ = 0;
  finished_ = false;
}

void FbankFrontendStream::push(const float* samples, size_t n) {
  MINMO_CHECK(!finished_, ErrorCode::InvalidArgument, "fbank frontend stream: push after finish() (call reset())");
  if (n == 0) return;
  MINMO_CHECK(samples != nullptr, ErrorCode::InvalidArgument, "fbank frontend stream: null samples");
  samples_.insert(samples_.end(), samples, samples + n);
  total_samples_ += static_cast<int64_t>(n);
}

void FbankFrontendStream::compute_frames() {
  const FbankFrontend& fe = *fe_;
  const int64_t nmel = fe.cfg_.num_mel_bins, hop = fe.hop_;
  const int64_t count = fe.num_frames(total_samples_) - frames_done_;
  if (count > 0) {
    const size_t old = frames_.size();
    frames_.resize(old + static_cast<size_t>(count * nmel));
    fe.frames(samples_.data() + (frames_done_ * hop - samples_base_), count, frames_.data() + old);
    if (frames_done_ == 0) frame0_.assign(frames_.begin(), frames_.begin() + nmel);
    frames_done_ += count;
  }
  // Samples before the next frame's start are no longer needed.
  const int64_t keep_from = std::min(frames_done_ * hop, total_samples_);
  if (keep_from > samples_base_) {
    samples_.erase(samples_.begin(), samples_.begin() + (keep_from - samples_base_));
    samples_base_ = keep_from;
  }
}

Tensor FbankFrontendStream::emit(bool final) {
  const FbankFrontend& fe = *fe_;
  const int64_t m = fe.cfg_.lfr_m, n = fe.cfg_.lfr_n, nmel = fe.cfg_.num_mel_bins, dim = fe.output_dim();
  const int64_t left = (m - 1) / 2;
  const int64_t T = frames_done_;
  int64_t rows_end;
  if (final) {
    rows_end = (T + n - 1) / n;
  } else {
    // Row r stacks frames up to r*n + m - 1 - left; final once that frame exists.
    const int64_t reach = m - 1 - left;
    rows_end = T - 1 - reach < 0 ? 0 : (T - 1 - reach) / n + 1;
  }
  const int64_t count = std::max<int64_t>(0, rows_end - rows_emitted_);
  Tensor out({count, dim});
  for (int64_t r = 0; r < count; ++r) {
    const int64_t row = rows_emitted_ + r;
    float* o = out.row(r);
    for (int64_t k = 0; k < m; ++k) {
      int64_t j = row * n + k - left;
      if (j >= T) j = T - 1;  // tail (only reachable when final)
      const float* src = j < 0 ? frame0_.data() : frames_.data() + (j - frames_base_) * nmel;
      std::memcpy(o + k * nmel, src, static_cast<size_t>(nmel) * sizeof(float));
    }
    if (fe.cfg_.apply_cmvn)
      for (int64_t i = 0; i < dim; ++i) o[i] = (o[i] + fe.cmvn_shift_[i]) * fe.cmvn_scale_[i];
  }
  rows_emitted_ += count;
  // Frames before the next row's first stacked frame are no longer needed.
  const int64_t keep_from = std::min(std::max<int64_t>(0, rows_emitted_ * n - left), T);
  if (keep_from > frames_base_) {
    frames_.erase(frames_.begin(), frames_.begin() + (keep_from - frames_base_) * nmel);
    frames_base_ = keep_from;
  }
  return out;
}

Tensor FbankFrontendStream::take_ready() {
  MINMO_CHECK(!finished_, ErrorCode::InvalidArgument, "fbank frontend stream: take_ready after finish() (call reset())");
  compute_frames();
  return emit(false);
}

Tensor FbankFrontendStream::finish() {
  MINMO_CHECK(!finished_, ErrorCode::InvalidArgument, "fbank frontend stream: finish() called twice (call reset())");
  compute_frames();
  Tensor out = emit(true);
  finished_ = true;
  return out;
}

}  // namespace minmo
