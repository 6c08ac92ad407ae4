// Text-to-speech session (cascade mode): text ids -> the voice LM's text embeddings -> SpeechPath.
#include <chrono>

#include "minmo/runtime.h"
#include "streaming/models.h"
#include "streaming/speech_path.h"

namespace minmo {

struct TtsSession::Impl {
  std::shared_ptr<const LoadedModels> models;
  TtsOptions opt;
  std::unique_ptr<SpeechPath> speech;
  std::vector<int64_t> tokens;  // speech tokens, kept after the speech state is freed
  std::vector<Event> events;
  std::map<std::string, StageTimes> times;
  int64_t text_tokens = 0;
  bool closed = false, finished = false, cancelled = false;

  Impl(std::shared_ptr<const LoadedModels> m, const TtsOptions& o) : models(std::move(m)), opt(o) {
    speech = std::make_unique<SpeechPath>(*models, opt.speech);
    if (!opt.instruction_ids.empty()) push_ids(opt.instruction_ids.data(), opt.instruction_ids.size());
  }

  void check_open() const { MINMO_CHECK(!closed, ErrorCode::Closed, "TTS session is closed"); }
  void check_live(const char* what) const {
    check_open();
    MINMO_CHECK(!cancelled, ErrorCode::InvalidArgument, what << " after cancel(): the speech was stopped");
    MINMO_CHECK(!finished, ErrorCode::InvalidArgument, what << " after the speech ended");
  }

  // Text ids -> the voice LM's text embeddings -> the speech path. A bad id (InvalidArgument) or
  // too long a text (CacheFull) changes nothing.
  void push_ids(const int64_t* ids, size_t n) {
    Tensor emb = models->voice_lm->text_embed(ids, n);
    speech->push_text(emb.ptr(), static_cast<int64_t>(n));
  }

  void finish() {
    tokens = speech->tokens();
    speech.reset();
    finished = true;
    events.push_back(Event{EventKind::End, 0.0});
  }
};

TtsSession::TtsSession(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TtsSession::~TtsSession() = default;

void TtsSession::push_text(const int64_t* ids, size_t n) {
  impl_->check_live("push_text()");
  MINMO_CHECK(!impl_->speech->text_ended(), ErrorCode::InvalidArgument, "push_text() after end_text()");
  if (n == 0) return;
  impl_->push_ids(ids, n);
  impl_->text_tokens += static_cast<int64_t>(n);
}

void TtsSession::end_text() {
  impl_->check_live("end_text()");
  MINMO_CHECK(!impl_->speech->text_ended(), ErrorCode::InvalidArgument, "end_text() called twice");
  MINMO_CHECK(impl_->text_tokens > 0, ErrorCode::InvalidArgument, "end_text() with no text pushed: nothing to speak");
  impl_->speech->end_text();
}

bool TtsSession::step() {
  impl_->check_open();
  if (!impl_->speech) return false;
  const int chunk = static_cast<int>(impl_->models->voice_lm->config().speech_ratio);
  const int steps = impl_->speech->advance(chunk, 0.0, impl_->events, impl_->times);
  if (impl_->speech->ended()) {
    impl_->finish();
    return true;
  }
  return steps > 0;
}

std::vector<Event> TtsSession::poll() {
  impl_->check_open();
  std::vector<Event> out;
  out.swap(impl_->events);
  return out;
}

void TtsSession::cancel() {
  impl_->check_open();
  MINMO_CHECK(!impl_->cancelled, ErrorCode::InvalidArgument, "cancel() called twice");
  impl_->cancelled = true;
  if (impl_->speech) impl_->tokens = impl_->speech->tokens();
  impl_->speech.reset();
  impl_->events.clear();
}

void TtsSession::close() {
  impl_->closed = true;
  impl_->speech.reset();
  impl_->events.clear();
}

bool TtsSession::closed() const { return impl_->closed; }
bool TtsSession::finished() const { return impl_->finished || impl_->cancelled; }
std::vector<int64_t> TtsSession::speech_tokens() const {
  return impl_->speech ? impl_->speech->tokens() : impl_->tokens;
}
std::map<std::string, StageTimes> TtsSession::stage_times() const { return impl_->times; }

std::unique_ptr<TtsSession> make_tts_session(std::shared_ptr<const LoadedModels> models, const TtsOptions& opt) {
  return std::unique_ptr<TtsSession>(new TtsSession(std::make_unique<TtsSession::Impl>(std::move(models), opt)));
}

}  // namespace minmo
