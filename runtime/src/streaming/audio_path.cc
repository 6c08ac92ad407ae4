#include "streaming/audio_path.h"

#include "backends/cuda/encoder_cuda.h"
#include "streaming/models.h"

namespace minmo {
namespace {

bool has_rows(const Tensor& t) { return !t.shape.empty() && t.rows() > 0; }

template <class Stream, class Frontend>
class FrontendFeatures final : public FeatureStream {
 public:
  explicit FrontendFeatures(std::shared_ptr<const Frontend> f) : stream_(std::move(f)) {}
  void push(const float* x, size_t n) override { stream_.push(x, n); }
  Tensor take_ready() override { return stream_.take_ready(); }
  Tensor finish() override { return stream_.finish(); }

 private:
  Stream stream_;
};

// Full-context stage: keeps its input until the end of turn, then runs the module once.
template <class Fn>
class WholeTurn final : public FrameStream, public TokenStream {
 public:
  explicit WholeTurn(Fn fn) : fn_(std::move(fn)) {}
  Tensor push(const Tensor& rows) override {
    append_rows(buffer_, rows);
    return Tensor();
  }
  Tensor finish() override {
    if (!has_rows(buffer_)) return Tensor();
    Tensor out = fn_(buffer_);
    buffer_ = Tensor();
    return out;
  }
  void reset() override { buffer_ = Tensor(); }

 private:
  Fn fn_;
  Tensor buffer_;
};

template <class Stream, class Base>
class Chunked final : public Base {
 public:
  template <class M>
  explicit Chunked(M model) : stream_(std::move(model)) {}
  Tensor push(const Tensor& rows) override { return has_rows(rows) ? stream_.push(rows) : Tensor(); }
  Tensor finish() override { return stream_.finish(); }
  void reset() override { stream_.reset(); }

 private:
  Stream stream_;
};

// The encoder's and the projector's streams one after the other on the host.
class HostAudioTokens final : public AudioTokenStream {
 public:
  explicit HostAudioTokens(const LoadedModels& m) : frames_(make_frame_stream(m)), tokens_(make_token_stream(m)) {}
  Tensor push(const Tensor& feats, bool final, std::map<std::string, StageTimes>& times) override {
    Tensor enc, toks;
    if (has_rows(feats) || final) {
      StageTimer t(times, "encoder");
      enc = frames_->push(feats);
      if (final) append_rows(enc, frames_->finish());
    }
    if (has_rows(enc) || final) {
      StageTimer t(times, "projector");
      toks = tokens_->push(enc);
      if (final) append_rows(toks, tokens_->finish());
    }
    return toks;
  }
  void reset() override {
    frames_->reset();
    tokens_->reset();
  }

 private:
  std::unique_ptr<FrameStream> frames_;
  std::unique_ptr<TokenStream> tokens_;
};

// The encoder's blocks and the projector in one device graph per chunk (LargeEncoderStream chained).
class DeviceAudioTokens final : public AudioTokenStream {
 public:
  explicit DeviceAudioTokens(const LoadedModels& m) : stream_(m.large, m.projector->device_projector()) {}
  Tensor push(const Tensor& feats, bool final, std::map<std::string, StageTimes>& times) override {
    if (!has_rows(feats) && !final) return Tensor();
    StageTimer t(times, "encoder");
    Tensor toks = has_rows(feats) ? stream_.push(feats) : Tensor();
    if (final) append_rows(toks, stream_.finish());
    return toks;
  }
  void reset() override { stream_.reset(); }

 private:
  LargeEncoderStream stream_;
};

}  // namespace

void append_rows(Tensor& dst, const Tensor& src) {
  if (!has_rows(src)) return;
  if (!has_rows(dst)) {
    dst = src;
    return;
  }
  MINMO_CHECK(dst.dim(1) == src.dim(1), ErrorCode::Internal, "row width mismatch in the audio path");
  dst.data.insert(dst.data.end(), src.data.begin(), src.data.end());
  dst.shape[0] += src.shape[0];
}

std::unique_ptr<FeatureStream> make_feature_stream(const LoadedModels& m) {
  if (m.fbank) return std::make_unique<FrontendFeatures<FbankFrontendStream, FbankFrontend>>(m.fbank);
  MINMO_CHECK(m.whisper != nullptr, ErrorCode::InvalidArgument, "bundle has no frontend module");
  return std::make_unique<FrontendFeatures<WhisperFrontendStream, WhisperFrontend>>(m.whisper);
}

std::unique_ptr<FrameStream> make_frame_stream(const LoadedModels& m) {
  MINMO_CHECK(m.large != nullptr, ErrorCode::InvalidArgument,
              "speech-to-text sessions need a sensevoice_large encoder (a sensevoice_small encoder runs as CTC ASR)");
  if (m.chunk.chunked) return std::make_unique<Chunked<LargeEncoderStream, FrameStream>>(m.large);
  auto enc = m.large;
  auto fn = [enc](const Tensor& mel) { return enc->run(mel); };
  return std::make_unique<WholeTurn<decltype(fn)>>(fn);
}

std::unique_ptr<TokenStream> make_token_stream(const LoadedModels& m) {
  MINMO_CHECK(m.projector != nullptr, ErrorCode::InvalidArgument, "bundle has no projector module");
  if (m.chunk.chunked) return std::make_unique<Chunked<ProjectorStream, TokenStream>>(m.projector);
  auto proj = m.projector;
  auto fn = [proj](const Tensor& frames) { return proj->run(frames); };
  return std::make_unique<WholeTurn<decltype(fn)>>(fn);
}

std::unique_ptr<AudioTokenStream> make_audio_token_stream(const LoadedModels& m) {
  const bool fused = m.large && m.projector && m.large->device_blocks() && m.projector->device_projector() &&
                     m.projector->device_projector()->device_ptr() == m.large->device_blocks()->device_ptr();
  if (fused) return std::make_unique<DeviceAudioTokens>(m);
  return std::make_unique<HostAudioTokens>(m);
}

}  // namespace minmo
