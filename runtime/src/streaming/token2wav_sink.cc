// AudioSink over the bundle's flow + HiFT: a cached Token2WavStream per spoken response.
#include "modules/token2wav.h"
#include "streaming/models.h"
#include "streaming/speech_path.h"

namespace minmo {

namespace {

class Token2WavSink final : public AudioSink {
 public:
  Token2WavSink(const LoadedModels& m, Token2WavOptions o)
      : rate_(static_cast<int>(m.hift->config().sample_rate)), stream_(*m.flow, *m.hift, std::move(o)) {}
  std::vector<float> push(const int64_t* tokens, size_t n) override { return stream_.push(tokens, n); }
  std::vector<float> finish() override { return stream_.finish(); }
  int sample_rate() const override { return rate_; }

 private:
  int rate_;
  Token2WavStream stream_;
};

}  // namespace

std::unique_ptr<AudioSink> make_audio_sink(const LoadedModels& models, const SpeechOptions& opt) {
  if (!models.flow || !models.hift) return nullptr;
  MINMO_CHECK(!opt.speaker.empty(), ErrorCode::InvalidArgument,
              "a speaker embedding is required to make audio (" << models.flow->config().spk_dim << " values)");
  Token2WavOptions o;
  o.speaker = opt.speaker;
  o.prompt_tokens = opt.prompt_speech_tokens;
  o.prompt_mel = opt.prompt_mel;
  o.seed = opt.seed;
  o.lookahead = static_cast<int>(models.flow->config().pre_lookahead);
  return std::make_unique<Token2WavSink>(models, std::move(o));
}

}  // namespace minmo
