// The session's audio path as three streaming stages with one contract each, so that the
// session logic is the same for full-context and chunked encoders (and for any backend).
//
// Every stage takes rows as they become available and returns the rows of its output that are
// final; finish() returns the rest at end of turn. Concatenating the outputs of any push
// schedule equals the offline module run on the whole turn.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "core/tensor.h"
#include "minmo/runtime.h"

namespace minmo {

struct LoadedModels;

// waveform (16 kHz float) -> feature rows [T, feature_dim]
class FeatureStream {
 public:
  virtual ~FeatureStream() = default;
  virtual void push(const float* samples, size_t n) = 0;
  virtual Tensor take_ready() = 0;
  virtual Tensor finish() = 0;
};

// feature rows -> encoder frames [T, encoder_dim]
class FrameStream {
 public:
  virtual ~FrameStream() = default;
  virtual Tensor push(const Tensor& features) = 0;
  virtual Tensor finish() = 0;
  // Ready for a new turn, keeping what it allocated (device buffers of a GPU encoder).
  virtual void reset() = 0;
};

// encoder frames -> audio tokens [T, llm_hidden]
class TokenStream {
 public:
  virtual ~TokenStream() = default;
  virtual Tensor push(const Tensor& frames) = 0;
  virtual Tensor finish() = 0;
  virtual void reset() = 0;
};

// Adds the wall time from construction to destruction to times[stage].
class StageTimer {
 public:
  StageTimer(std::map<std::string, StageTimes>& times, const char* stage)
      : times_(times), stage_(stage), t0_(std::chrono::steady_clock::now()) {}
  ~StageTimer() {
    times_[stage_].ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0_).count());
  }
  StageTimer(const StageTimer&) = delete;
  StageTimer& operator=(const StageTimer&) = delete;

 private:
  std::map<std::string, StageTimes>& times_;
  const char* stage_;
  std::chrono::steady_clock::time_point t0_;
};

// feature rows -> audio tokens: the encoder, then the projector (a session's listening path after
// the frontend). push() returns the tokens that became final; final: end of turn (flushes). Each
// stage's time goes to times["encoder"] and times["projector"]; when both run on the device as
// one graph per chunk (the frames never leave it), their time is all under "encoder".
class AudioTokenStream {
 public:
  virtual ~AudioTokenStream() = default;
  virtual Tensor push(const Tensor& features, bool final, std::map<std::string, StageTimes>& times) = 0;
  // Ready for a new turn, keeping what it allocated.
  virtual void reset() = 0;
};

// Appends the rows of src [n, w] below dst [m, w] (either may be empty).
void append_rows(Tensor& dst, const Tensor& src);

std::unique_ptr<FeatureStream> make_feature_stream(const LoadedModels& models);
std::unique_ptr<FrameStream> make_frame_stream(const LoadedModels& models);
std::unique_ptr<TokenStream> make_token_stream(const LoadedModels& models);
// The encoder and projector fused on the device when both run there, else the two stages above.
std::unique_ptr<AudioTokenStream> make_audio_token_stream(const LoadedModels& models);

}  // namespace minmo
