#include "streaming/speech_path.h"

#include <algorithm>
#include <chrono>

#include "streaming/models.h"

namespace minmo {

namespace {
double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

int voice_capacity(const LoadedModels& m, const SpeechOptions& opt) {
  const int max_pos = static_cast<int>(m.voice_lm->config().body.max_position_embeddings);
  const int cap = opt.voice_kv_capacity > 0 ? opt.voice_kv_capacity : std::min(max_pos, 4096);
  MINMO_CHECK(cap <= max_pos, ErrorCode::InvalidArgument,
              "voice_kv_capacity " << cap << " exceeds the voice LM's maximum of " << max_pos << " positions");
  return cap;
}

std::shared_ptr<const VoiceLM> require_voice_lm(const LoadedModels& m) {
  MINMO_CHECK(m.voice_lm != nullptr, ErrorCode::InvalidArgument,
              "bundle has no voice_lm module: it cannot speak (build it from a checkpoint with a voice decoder)");
  return m.voice_lm;
}
}  // namespace

SpeechPath::SpeechPath(const LoadedModels& models, const SpeechOptions& opt, std::unique_ptr<DecoderState> voice_state)
    : stream_(require_voice_lm(models), opt.seed, voice_capacity(models, opt), std::move(voice_state)) {
  MINMO_CHECK(opt.output == "audio" || opt.output == "tokens", ErrorCode::InvalidArgument,
              "speech output must be 'audio' or 'tokens', not '" << opt.output << "'");
  if (opt.output == "audio") {
    sink_ = make_audio_sink(models, opt);
    MINMO_CHECK(sink_ != nullptr, ErrorCode::InvalidArgument,
                "bundle has no token2wav modules (flow, hift): it cannot make audio; "
                "use speech output 'tokens' for the speech tokens only");
  }
}

void SpeechPath::push_text(const float* rows, int64_t n) { stream_.push_text(rows, n); }

void SpeechPath::end_text() { stream_.end_text(); }

void SpeechPath::emit_audio(std::vector<float> samples, double time_ms, std::vector<Event>& events) {
  if (samples.empty()) return;
  Event e{EventKind::Audio, time_ms};
  e.sample_rate = sink_->sample_rate();
  audio_samples_ += static_cast<int64_t>(samples.size());
  e.audio = std::move(samples);
  events.push_back(std::move(e));
}

int SpeechPath::advance(int max_tokens, double time_ms, std::vector<Event>& events,
                        std::map<std::string, StageTimes>& times) {
  if (ended_) return 0;
  int steps = 0;
  std::vector<int64_t> fresh;
  while (steps < max_tokens) {
    auto t0 = std::chrono::steady_clock::now();
    const int64_t tok = stream_.step();
    if (tok == VoiceTokenStream::kNeedText) break;
    ++steps;
    if (tok == VoiceTokenStream::kEnded) break;
    times["voice_lm_step"].ms.push_back(ms_since(t0));
    fresh.push_back(tok);
    Event e{EventKind::SpeechToken, time_ms};
    e.token = tok;
    events.push_back(e);
    if (stream_.ended()) break;
  }
  if (sink_ && !fresh.empty()) {
    auto t0 = std::chrono::steady_clock::now();
    std::vector<float> audio = sink_->push(fresh.data(), fresh.size());
    const double dt = ms_since(t0);
    if (!audio.empty()) times["token2wav_chunk"].ms.push_back(dt);
    emit_audio(std::move(audio), time_ms, events);
  }
  if (stream_.ended()) {
    if (sink_) {
      auto t0 = std::chrono::steady_clock::now();
      std::vector<float> tail = sink_->finish();
      times["token2wav_finish"].ms.push_back(ms_since(t0));
      emit_audio(std::move(tail), time_ms, events);
    }
    ended_ = true;
  }
  return steps;
}

}  // namespace minmo
