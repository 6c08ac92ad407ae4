#include "audio/whisper_frontend.h"

#include <algorithm>
#include <cmath>

#include "minmo/status.h"
#include "modules/audio_common.h"

namespace minmo {

WhisperFrontendConfig WhisperFrontendConfig::from_json(const nlohmann::json& config) {
  ConfigReader r(config, "whisper_logmel frontend");
  WhisperFrontendConfig c;
  c.sample_rate = r.get_int("sample_rate", c.sample_rate);
  c.n_fft = r.get_int("n_fft", c.n_fft);
  c.hop_length = r.get_int("hop_length", c.hop_length);
  c.n_mels = r.get_int("n_mels", c.n_mels);
  c.log_ceiling = r.get_optional_float("log_ceiling", c.log_ceiling);
  r.finish();
  MINMO_CHECK(c.sample_rate > 0 && c.n_fft >= 2 && c.hop_length > 0 && c.n_mels > 0, ErrorCode::BundleError,
              "whisper_logmel frontend: sample_rate, hop_length, n_mels must be positive and n_fft >= 2");
  return c;
}

WhisperFrontend::WhisperFrontend(const WhisperFrontendConfig& config, const WeightStore& weights)
    : cfg_(config), floor_(0.0), spectrum_(config.n_fft, config.n_fft) {
  MINMO_CHECK(cfg_.log_ceiling.has_value(), ErrorCode::InvalidArgument,
              "whisper_logmel frontend: log_ceiling is null (clamp to the utterance maximum), which needs the whole "
              "utterance and is not streamable; export the bundle with a numeric log_ceiling");
  floor_ = *cfg_.log_ceiling - 8.0;
  const int64_t bins = cfg_.n_fft / 2 + 1;
  mel_ = audio::MelProjection(load_tensor(weights, "mel_filters", {cfg_.n_mels, bins}), cfg_.n_mels, bins);
  const float* w = load_tensor(weights, "window", {cfg_.n_fft});
  window_.assign(w, w + cfg_.n_fft);
}

std::shared_ptr<const WhisperFrontend> WhisperFrontend::load(const WeightStore& weights, const nlohmann::json& config) {
  return std::make_shared<const WhisperFrontend>(WhisperFrontendConfig::from_json(config), weights);
}

void WhisperFrontend::frames(const float* buf, int64_t base, int64_t num_samples, int64_t first, int64_t count,
                             float* out) const {
  const int64_t n_fft = cfg_.n_fft, hop = cfg_.hop_length, half = n_fft / 2, nmel = cfg_.n_mels;
  const int64_t N = num_samples;
#pragma omp parallel if (count >= 8)  // a frame is a few microseconds of work
  {
    std::vector<double> x(static_cast<size_t>(n_fft)), power(static_cast<size_t>(spectrum_.n_bins())),
        mel(static_cast<size_t>(nmel));
#pragma omp for schedule(static)
    for (int64_t i = 0; i < count; ++i) {
      const int64_t start = (first + i) * hop - half;
      for (int64_t j = 0; j < n_fft; ++j) {
        int64_t a = start + j;
        if (a < 0) a = -a;              // left reflect pad
        else if (a >= N) a = 2 * N - 2 - a;  // right reflect pad
        x[static_cast<size_t>(j)] = static_cast<double>(buf[a - base]) * window_[static_cast<size_t>(j)];
      }
      spectrum_.compute(x.data(), power.data());
      mel_.apply(power.data(), mel.data());
      float* o = out + i * nmel;
      for (int64_t b = 0; b < nmel; ++b) {
        const double l = std::max(std::log10(std::max(mel[static_cast<size_t>(b)], 1e-10)), floor_);
        o[b] = static_cast<float>((l + 4.0) / 4.0);
      }
    }
  }
}

Tensor WhisperFrontend::compute(const float* samples, size_t n) const {
  WhisperFrontendStream s(std::shared_ptr<const WhisperFrontend>(std::shared_ptr<const WhisperFrontend>(), this));
  s.push(samples, n);
  return s.finish();
}

// ---------------------------------------------------------------------------------- stream

WhisperFrontendStream::WhisperFrontendStream(std::shared_ptr<const WhisperFrontend> frontend)
    : fe_(std::move(frontend)) {
  MINMO_CHECK(fe_ != nullptr, ErrorCode::InvalidArgument, "WhisperFrontendStream: no frontend");
}

void WhisperFrontendStream::reset() {
  samples_.clear();
  samples_base_ = total_samples_ = frames_done_ = 0;
  finished_ = false;
}

void WhisperFrontendStream::push(const float* samples, size_t n) {
  MINMO_CHECK(!finished_, ErrorCode::InvalidArgument, "whisper frontend stream: push after finish() (call reset())");
  if (n == 0) return;
  MINMO_CHECK(samples != nullptr, ErrorCode::InvalidArgument, "whisper frontend stream: null samples");
  samples_.insert(samples_.end(), samples, samples + n);
  total_samples_ += static_cast<int64_t>(n);
}

Tensor WhisperFrontendStream::compute_frames(int64_t end, bool final) {
  (void)final;
  const WhisperFrontend& fe = *fe_;
  const int64_t count = std::max<int64_t>(0, end - frames_done_);
  Tensor out({count, fe.output_dim()});
  if (count > 0) fe.frames(samples_.data(), samples_base_, total_samples_, frames_done_, count, out.ptr());
  frames_done_ += count;
  const int64_t half = fe.config().n_fft / 2;
  const int64_t keep_from = std::clamp<int64_t>(frames_done_ * fe.config().hop_length - half, 0, total_samples_);
  if (keep_from > samples_base_) {
    samples_.erase(samples_.begin(), samples_.begin() + (keep_from - samples_base_));
    samples_base_ = keep_from;
  }
  return out;
}

Tensor WhisperFrontendStream::take_ready() {
  MINMO_CHECK(!finished_, ErrorCode::InvalidArgument,
              "whisper frontend stream: take_ready after finish() (call reset())");
  const int64_t N = total_samples_, hop = fe_->config().hop_length, half = fe_->config().n_fft / 2;
  int64_t end = 0;
  // Frame f needs samples up to f*hop + half - 1, and frame 0 reads sample `half` for the left
  // reflect pad; frames past N // hop never exist.
  if (N > half) end = std::min(N / hop, (N - half) / hop + 1);
  return compute_frames(end, false);
}

Tensor WhisperFrontendStream::finish() {
  MINMO_CHECK(!finished_, ErrorCode::InvalidArgument, "whisper frontend stream: finish() called twice (call reset())");
  const int64_t N = total_samples_, hop = fe_->config().hop_length, half = fe_->config().n_fft / 2;
  const int64_t end = N / hop;
  MINMO_CHECK(end == 0 || N > half, ErrorCode::InvalidArgument,
              "whisper frontend needs more than " << half << " samples for its reflect padding, got " << N);
  Tensor out = compute_frames(end, true);
  finished_ = true;
  return out;
}

}  // namespace minmo
