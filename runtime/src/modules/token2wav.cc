#include "modules/token2wav.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <utility>

#include "minmo/status.h"

namespace minmo {

Token2WavStream::Token2WavStream(const FlowModel& flow, const HiftModel& hift, Token2WavOptions opts)
    : flow_(flow), hift_(hift), opts_(std::move(opts)), vocoder_(hift, opts_.seed) {
  const FlowConfig& fc = flow_.config();
  MINMO_CHECK(opts_.chunk_tokens >= 1, ErrorCode::InvalidArgument,
              "token2wav: chunk_tokens must be >= 1, got " << opts_.chunk_tokens);
  MINMO_CHECK(opts_.lookahead == fc.pre_lookahead, ErrorCode::InvalidArgument,
              "token2wav: lookahead " << opts_.lookahead << " differs from the flow's pre_lookahead " << fc.pre_lookahead);
  MINMO_CHECK(hift_.config().mel_dim == fc.mel_dim, ErrorCode::InvalidArgument,
              "token2wav: flow makes " << fc.mel_dim << "-bin mel, hift expects " << hift_.config().mel_dim);
  const int64_t P = static_cast<int64_t>(opts_.prompt_tokens.size());
  MINMO_CHECK(opts_.prompt_mel.empty() || static_cast<int64_t>(opts_.prompt_mel.size()) == 2 * P * fc.mel_dim,
              ErrorCode::InvalidArgument,
              "token2wav: prompt mel has " << opts_.prompt_mel.size() << " values; [2 * " << P << " prompt tokens, "
                                           << fc.mel_dim << "] = " << 2 * P * fc.mel_dim << " are required");
  for (float v : opts_.prompt_mel)
    MINMO_CHECK(std::isfinite(v), ErrorCode::InvalidArgument, "token2wav: prompt mel has a NaN or Inf value");
  for (int64_t id : opts_.prompt_tokens)
    MINMO_CHECK(id >= 0 && id < fc.vocab_size, ErrorCode::InvalidArgument,
                "token2wav: prompt token id " << id << " is outside [0, " << fc.vocab_size << ")");
  state_ = flow_.new_state(opts_.speaker, P > 0, opts_.left_chunks);
  {  // device buffers for the prompt and the chunks, and the caches a chunk sees (8 chunks when unbounded)
    const int64_t chunk = opts_.chunk_tokens, left = opts_.left_chunks >= 0 ? opts_.left_chunks : 7;
    flow_.reserve(state_, std::max<int64_t>(P, chunk), P + (left + 1) * chunk);
  }
  tokens_ = opts_.prompt_tokens;
  prompt_len_ = P;
}

std::vector<float> Token2WavStream::push(const int64_t* tokens, size_t n) {
  MINMO_CHECK(!done_, ErrorCode::Closed, "token2wav: push after finish()");
  MINMO_CHECK(n == 0 || tokens != nullptr, ErrorCode::InvalidArgument, "token2wav: null tokens");
  const int64_t V = flow_.config().vocab_size;
  for (size_t i = 0; i < n; ++i)
    MINMO_CHECK(tokens[i] >= 0 && tokens[i] < V, ErrorCode::InvalidArgument,
                "token2wav: speech token id " << tokens[i] << " is outside [0, " << V << ")");
  tokens_.insert(tokens_.end(), tokens, tokens + n);
  return run_ready(false);
}

std::vector<float> Token2WavStream::finish() {
  MINMO_CHECK(!done_, ErrorCode::Closed, "token2wav: finish() called twice");
  MINMO_CHECK(tokens_pushed() > 0, ErrorCode::InvalidArgument, "token2wav: no speech tokens to synthesise");
  std::vector<float> out = run_ready(true);
  std::vector<float> rest = vocoder_.finish();
  out.insert(out.end(), rest.begin(), rest.end());
  done_ = true;
  return out;
}

std::vector<float> Token2WavStream::run_ready(bool final) {
  const int64_t total = static_cast<int64_t>(tokens_.size()), L = flow_.config().pre_lookahead;
  const int64_t mel = flow_.config().mel_dim;
  std::vector<float> audio;
  while (next_ < total) {
    const int64_t end = next_ < prompt_len_ ? prompt_len_ : std::min(next_ + opts_.chunk_tokens, total);
    const bool full = next_ < prompt_len_ || end - next_ == opts_.chunk_tokens;
    if (!final && (!full || total < end + L)) break;
    const int64_t n_look = std::min(L, total - end);
    std::vector<float> cond;
    if (next_ < prompt_len_ && !opts_.prompt_mel.empty())
      cond.assign(opts_.prompt_mel.begin(), opts_.prompt_mel.end());
    else
      cond.assign(2 * (end - next_) * mel, 0.f);
    const auto t0 = std::chrono::steady_clock::now();
    Tensor m = flow_.segment(state_, tokens_.data() + next_, end - next_, tokens_.data() + end, n_look, cond.data(),
                             opts_.seed);
    if (next_ >= prompt_len_) {
      mel_out_.insert(mel_out_.end(), m.data.begin(), m.data.end());
      mel_frames_ += m.rows();
      const auto t1 = std::chrono::steady_clock::now();
      std::vector<float> a = vocoder_.push(m.ptr(), m.rows());
      const auto t2 = std::chrono::steady_clock::now();
      times_.push_back({std::chrono::duration<double, std::milli>(t1 - t0).count(),
                        std::chrono::duration<double, std::milli>(t2 - t1).count()});
      audio.insert(audio.end(), a.begin(), a.end());
    }
    next_ = end;
  }
  return audio;
}

}  // namespace minmo
