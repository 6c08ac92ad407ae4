// The speaking half of a session: text vectors (MinMo semantic vectors or cascade text
// embeddings) -> voice LM interleave stream (modules/voice_lm.h) -> speech tokens -> token2wav in
// chunks -> audio events. Shared by the speech-to-speech Session and the text-to-speech
// TtsSession; owns all per-response speaking state (dropping it frees everything at once).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "minmo/runtime.h"
#include "modules/voice_lm.h"

namespace minmo {

struct LoadedModels;

// Speech tokens -> float audio (token2wav). push() returns the audio that became final.
class AudioSink {
 public:
  virtual ~AudioSink() = default;
  virtual std::vector<float> push(const int64_t* tokens, size_t n) = 0;
  virtual std::vector<float> finish() = 0;
  virtual int sample_rate() const = 0;
};

// A token2wav sink for the bundle's flow + HiFT modules; null when the bundle has none.
std::unique_ptr<AudioSink> make_audio_sink(const LoadedModels& models, const SpeechOptions& opt);

class SpeechPath {
 public:
  // Throws InvalidArgument when the bundle cannot speak as asked (no voice_lm; no flow/hift for
  // audio output; a speaker embedding of the wrong size). voice_state: an earlier response's voice
  // LM state to reuse (release_voice_state()), or null.
  SpeechPath(const LoadedModels& models, const SpeechOptions& opt, std::unique_ptr<DecoderState> voice_state = nullptr);
  // The voice LM state, for the next response's SpeechPath; this one cannot advance after it.
  std::unique_ptr<DecoderState> release_voice_state() { return stream_.release_state(); }
  // Appends text vectors [n, voice hidden]; CacheFull when the text is too long to speak.
  void push_text(const float* rows, int64_t n);
  void end_text();
  // Runs voice LM steps until it needs more text, has made max_tokens tokens, or ends; passes the
  // tokens to token2wav and appends SpeechToken / Audio events (time_ms as given). At the end,
  // flushes token2wav. Returns the number of LM steps run.
  int advance(int max_tokens, double time_ms, std::vector<Event>& events, std::map<std::string, StageTimes>& times);
  bool ended() const { return ended_; }   // speech finished and flushed
  bool text_ended() const { return stream_.text_ended(); }
  const std::vector<int64_t>& tokens() const { return stream_.tokens(); }
  int64_t audio_samples() const { return audio_samples_; }

 private:
  void emit_audio(std::vector<float> samples, double time_ms, std::vector<Event>& events);
  VoiceTokenStream stream_;
  std::unique_ptr<AudioSink> sink_;
  bool ended_ = false;
  int64_t audio_samples_ = 0;
};

}  // namespace minmo
