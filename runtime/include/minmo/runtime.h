// minmo-rt public C++ API: load a bundle, run modules, stream sessions.
//
// Threading: a Runtime is immutable after open() and may be shared by any number of threads;
// each Session is driven by one thread at a time. Errors are reported as minmo::Error
// (status.h) and leave the object usable unless stated otherwise.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "minmo/status.h"

namespace minmo {

struct Tensor;
struct LoadedModels;
using TensorMap = std::map<std::string, Tensor>;

// How a response is spoken (speech-to-speech Session with speak, and TtsSession).
struct SpeechOptions {
  std::vector<float> speaker;                 // speaker embedding (192-d for CosyVoice2 flow); required for audio
  std::vector<int64_t> prompt_speech_tokens;  // optional voice-imitation prompt (token2wav)
  std::vector<float> prompt_mel;              // optional prompt mel [n_frames * 80], 2 frames per prompt token
  uint64_t seed = 0;                          // voice LM sampling (and token2wav noise) seed
  std::string output = "audio";               // "audio": token2wav (needs flow + hift); "tokens": speech tokens only
  int voice_kv_capacity = 0;                  // voice LM positions; 0: min(max_position_embeddings, 4096)
};

// Options of one streaming session. The prompt arrives tokenized: the Python layer owns the
// tokenizer (Hugging Face `tokenizers` / SentencePiece), the runtime sees ids only.
struct SessionOptions {
  std::vector<int64_t> prefix_ids;   // prompt before the audio span (prefilled at session start)
  std::vector<int64_t> suffix_ids;   // prompt after the audio span, ending with the assistant header
  std::vector<int64_t> stop_ids;     // generation ends on any of these (not emitted as text)
  std::vector<int64_t> query_ids;    // SenseVoice CTC bundles: [language, event, emotion, itn]
  int max_new_tokens = 128;
  float temperature = 0.f;           // 0: greedy
  int top_k = 0;                     // 0: off
  float top_p = 1.f;                 // 1: off
  uint64_t seed = 0;
  int kv_capacity = 0;               // LLM positions reserved per turn; 0: min(max_position_embeddings, 4096)
  // Speak the response (MinMo mode: needs output_projector + voice_lm, and flow + hift for audio):
  // each generated text token -> semantic vector -> voice LM (5:15) -> token2wav -> Audio events
  // while the text is still being generated.
  bool speak = false;
  SpeechOptions speech;
};

enum class EventKind : int { Text = 0, Duplex = 1, Tag = 2, End = 3, Audio = 4, SpeechToken = 5 };

// Something a session produced. time_ms is stream time: milliseconds of turn audio the event
// refers to (the end of an audio token for Duplex; the end of speech for Text/Tag/End).
struct Event {
  Event(EventKind kind_, double time_ms_ = 0.0, int64_t token_ = -1) : kind(kind_), time_ms(time_ms_), token(token_) {}
  EventKind kind;
  double time_ms = 0.0;
  int64_t token = -1;      // Text / Tag: token id
  float p_turn = 0.f;      // Duplex: P(respond now)
  float p_barge = 0.f;     // Duplex: P(stop speaking, listen)
  std::vector<float> audio;  // Audio: float32 samples at sample_rate
  int sample_rate = 0;       // Audio
};

// Wall times of one pipeline stage, in milliseconds, one entry per call.
struct StageTimes {
  std::vector<double> ms;
};

class Runtime;

// A streaming conversation turn by turn: push audio, end the turn, step the response.
class Session {
 public:
  ~Session();
  // Appends 16 kHz mono float samples in [-1, 1]. Runs every stage whose input is complete
  // (frontend, chunked encoder, projector, LLM prefill, duplex predictor). Throws
  // InvalidArgument on non-finite samples and CacheFull when the turn would not fit the KV
  // cache; in both cases nothing is consumed. A push after a finished response starts a new turn.
  void push(const float* samples, size_t n);
  // End of user speech: flushes the audio pipeline, prefills the prompt suffix and samples the
  // first response token (or, for CTC bundles, decodes the whole transcript).
  void end_of_turn();
  // Generates one more response token; returns false when no response is in progress.
  bool step();
  // Takes the events produced since the last call.
  std::vector<Event> poll();
  // Stops the response in progress (if any) and frees its state; the next push starts a new turn.
  void cancel();
  // Frees all state. Every later call except closed()/close() throws Closed.
  void close();

  bool closed() const;
  bool responding() const;
  int64_t turn_samples() const;
  std::vector<int64_t> response_tokens() const;
  std::vector<int64_t> speech_tokens() const;  // the spoken response's speech tokens so far
  std::map<std::string, StageTimes> stage_times() const;
  std::map<std::string, double> counters() const;

 private:
  friend std::unique_ptr<Session> make_session(std::shared_ptr<const LoadedModels>, const SessionOptions&);
  struct Impl;
  explicit Session(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Text-to-speech (cascade mode, CosyVoice2 bistream): text token ids arrive one by one (with an
// optional instruction prefix for style), speech tokens and audio stream out.
struct TtsOptions {
  std::vector<int64_t> instruction_ids;  // instruct mode: instruction text + <|endofprompt|>, tokenized
  SpeechOptions speech;
};

class TtsSession {
 public:
  ~TtsSession();
  // Appends text token ids (ids of the voice LM's text vocabulary). InvalidArgument on a bad id or
  // after end_text(); CacheFull when the text gets too long to speak. Nothing is consumed then.
  void push_text(const int64_t* ids, size_t n);
  // No more text. InvalidArgument when no text was pushed or the text already ended.
  void end_text();
  // Runs the voice LM up to one chunk of speech tokens; false when nothing more can happen now
  // (needs text, or finished).
  bool step();
  std::vector<Event> poll();
  // Stops speaking at once and frees the speech state; a second cancel throws InvalidArgument.
  void cancel();
  void close();
  bool closed() const;
  bool finished() const;  // the speech ended (End event emitted) or was cancelled
  std::vector<int64_t> speech_tokens() const;
  std::map<std::string, StageTimes> stage_times() const;

 private:
  friend std::unique_ptr<TtsSession> make_tts_session(std::shared_ptr<const LoadedModels>, const TtsOptions&);
  struct Impl;
  explicit TtsSession(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class Runtime {
 public:
  // Loads a bundle directory. device: "cpu"; "cuda" runs the LLM, the voice LM and the chunked
  // SenseVoice-Large encoder's blocks on the CUDA backend (the first visible GPU; the other
  // modules stay on the CPU), "cuda-sim" the same code with the kernels'
  // CPU twins (testing without a GPU). verify_files: check every file's size and SHA-256 against
  // the manifest first. Throws BundleError / UnsupportedVersion with the reason, DeviceError when
  // the device is missing or lacks memory.
  static std::shared_ptr<Runtime> open(const std::string& bundle_dir, const std::string& device,
                                       bool verify_files);
  ~Runtime();

  std::string manifest_json() const;
  std::vector<std::string> module_names() const;
  // Where each module runs: "cpu", "cuda" or "cuda-sim".
  std::map<std::string, std::string> module_devices() const;
  // Modules the device could not run (a shape its kernels lack) that run on the CPU instead: name -> reason.
  std::map<std::string, std::string> cpu_fallbacks() const;
  // Offline execution of one module on whole inputs, as the reference module computes it.
  // Input/output names per module: see docs in bindings (and `minmo-export verify`).
  TensorMap run_module(const std::string& name, const TensorMap& inputs) const;
  std::unique_ptr<Session> new_session(const SessionOptions& options) const;
  // Throws InvalidArgument when the bundle has no voice_lm (or no flow/hift for audio output).
  std::unique_ptr<TtsSession> new_tts_session(const TtsOptions& options) const;

  struct Impl;

 private:
  explicit Runtime(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace minmo
