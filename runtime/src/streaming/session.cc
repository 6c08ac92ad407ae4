// Session state machine: listening (audio path + incremental LLM prefill) -> responding
// (token-by-token decode) -> done; a push after done starts the next turn.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>
#include <sstream>

#include "backends/cuda/qwen2_cuda.h"
#include "minmo/runtime.h"
#include "streaming/audio_path.h"
#include "streaming/models.h"
#include "streaming/speech_path.h"

namespace minmo {
namespace {

constexpr int kSamplesPerAudioToken = 1280;  // 80 ms at 16 kHz
constexpr double kMsPerAudioToken = 80.0;

}  // namespace

struct Session::Impl {
  enum class Phase { Listening, Responding, Done };

  std::shared_ptr<const LoadedModels> models;
  SessionOptions opt;
  bool ctc_mode = false;
  int capacity = 0;

  std::unique_ptr<FeatureStream> features;
  std::unique_ptr<AudioTokenStream> audio;  // encoder + projector
  std::unique_ptr<DecoderState> llm_state;
  std::unique_ptr<DuplexState> duplex_state;
  std::unique_ptr<cuda::CudaDuplexState> duplex_device_state;  // the predictor on the LLM's device
  std::unique_ptr<SpeechPath> speech;  // speak mode: the response's speaking state
  std::unique_ptr<DecoderState> spare_voice_state;  // the last response's voice LM state, reused
  std::vector<int64_t> speech_tokens;  // speak mode: the last response's speech tokens once it ended
  std::vector<float> semantic;         // speak mode: one semantic vector (scratch)
  std::unique_ptr<cuda::CudaOutputProjectorState> semantic_state;  // the output projector on the device
  bool text_done = false;              // speak mode: the text of the response ended, speech goes on
  Tensor ctc_features;  // CTC bundles: the turn's features (the encoder runs at end of turn)

  Phase phase = Phase::Listening;
  bool turn_started = false;
  bool closed = false;
  int64_t turn_samples = 0;
  int64_t audio_tokens = 0;
  int64_t last_token = -1;
  std::vector<int64_t> response;
  std::vector<Event> events;
  std::mt19937_64 rng;
  std::map<std::string, StageTimes> times;
  double first_token_ms = -1.0;

  Impl(std::shared_ptr<const LoadedModels> m, const SessionOptions& o)
      : models(std::move(m)), opt(o), rng(o.seed) {
    ctc_mode = models->is_ctc();
    if (!ctc_mode) {
      MINMO_CHECK(models->llm != nullptr, ErrorCode::InvalidArgument,
                  "bundle has no LLM module: a speech-to-text session needs encoder, projector and llm");
      MINMO_CHECK(models->has_audio_path(), ErrorCode::InvalidArgument,
                  "bundle has no audio path (frontend, encoder, projector): cannot stream speech");
      int max_pos = models->max_positions();
      capacity = opt.kv_capacity > 0 ? opt.kv_capacity : std::min(max_pos, 4096);
      MINMO_CHECK(capacity <= max_pos, ErrorCode::InvalidArgument,
                  "kv_capacity " << capacity << " exceeds the model's maximum of " << max_pos << " positions");
      MINMO_CHECK(opt.prefix_ids.size() + opt.suffix_ids.size() + 2 <= static_cast<size_t>(capacity),
                  ErrorCode::CacheFull, "KV cache of " << capacity << " positions cannot hold the prompt");
      if (opt.speak) {
        MINMO_CHECK(models->output_projector != nullptr && models->voice_lm != nullptr, ErrorCode::InvalidArgument,
                    "speak=true needs the output_projector and voice_lm modules, which this bundle lacks");
        SpeechPath check(*models, opt.speech);  // refuses bad speech options now, not mid-response
        semantic.resize(static_cast<size_t>(models->output_projector->config().output_dim));
      }
    } else {
      MINMO_CHECK(opt.query_ids.size() == 4, ErrorCode::InvalidArgument,
                  "a CTC session needs 4 query ids [language, event, emotion, itn]");
    }
    start_turn();
  }

  void start_turn() {
    features = make_feature_stream(*models);
    turn_samples = 0;
    audio_tokens = 0;
    last_token = -1;
    response.clear();
    drop_speech();
    speech_tokens.clear();
    text_done = false;
    first_token_ms = -1.0;
    phase = Phase::Listening;
    turn_started = false;
    if (ctc_mode) {
      ctc_features = Tensor();
      return;
    }
    if (audio) audio->reset();  // the session's audio path serves every turn (a GPU encoder keeps its buffers)
    else audio = make_audio_token_stream(*models);
    if (llm_state) llm_state->reset();  // the session's KV cache serves every turn
    else llm_state = models->llm->new_state(capacity);
    if (models->duplex_device) {  // the device state serves every turn, like the LLM's
      if (duplex_device_state) duplex_device_state->reset();
      else duplex_device_state = models->duplex_device->new_state(capacity);
    } else {
      duplex_state = models->duplex ? models->duplex->new_state(capacity) : nullptr;
    }
    if (!opt.prefix_ids.empty()) {
      StageTimer t(times, "prompt_prefill");
      Tensor emb = models->llm->embed(opt.prefix_ids.data(), opt.prefix_ids.size());
      models->llm->forward(*llm_state, emb, nullptr, nullptr, false);
    }
  }

  void check_open() const { MINMO_CHECK(!closed, ErrorCode::Closed, "session is closed"); }

  int64_t positions_needed(int64_t samples) const {
    int64_t audio = (samples + kSamplesPerAudioToken - 1) / kSamplesPerAudioToken + 1;
    return static_cast<int64_t>(opt.prefix_ids.size() + opt.suffix_ids.size()) + audio + 1;
  }

  void push(const float* x, size_t n) {
    check_open();
    if (phase != Phase::Listening) start_turn();
    if (n == 0) return;
    for (size_t i = 0; i < n; ++i)
      MINMO_CHECK(std::isfinite(x[i]), ErrorCode::InvalidArgument,
                  "audio sample " << i << " is NaN or Inf; nothing was consumed");
    if (!ctc_mode) {
      int64_t need = positions_needed(turn_samples + static_cast<int64_t>(n));
      MINMO_CHECK(need <= capacity, ErrorCode::CacheFull,
                  "KV cache full: this turn would need " << need << " positions ("
                  << (turn_samples + static_cast<int64_t>(n)) / 16 << " ms of audio) but the cache holds "
                  << capacity << "; nothing was consumed (end the turn sooner or raise kv_capacity)");
    }
    turn_started = true;
    turn_samples += static_cast<int64_t>(n);
    Tensor feats;
    {
      StageTimer t(times, "frontend");
      features->push(x, n);
      feats = features->take_ready();
    }
    consume_features(feats, false);
  }

  // Runs the stages after the frontend on new feature rows (and flushes them at end of turn).
  void consume_features(const Tensor& feats, bool final) {
    if (ctc_mode) {
      append_rows(ctc_features, feats);
      return;
    }
    Tensor toks = audio->push(feats, final, times);
    if (toks.rows() == 0) return;
    Tensor hidden;
    std::vector<float> p_turn, p_barge;
    if (duplex_device_state) {
      // The LLM's hidden states stay on the device: the predictor reads each prefill chunk's rows
      // there (its "duplex" time is also inside llm_prefill).
      const auto& llm = static_cast<const cuda::CudaQwen2&>(*models->llm);  // duplex_device implies it
      std::vector<float> pt, pb;
      StageTimer t(times, "llm_prefill");
      llm.forward_hidden_device(*llm_state, toks.ptr(), toks.rows(), [&](const minmo_bf16* rows, int64_t n) {
        StageTimer td(times, "duplex");
        duplex_device_state->push_device(rows, n, &pt, &pb);
        p_turn.insert(p_turn.end(), pt.begin(), pt.end());
        p_barge.insert(p_barge.end(), pb.begin(), pb.end());
      });
    } else {
      {
        StageTimer t(times, "llm_prefill");
        models->llm->forward(*llm_state, toks, duplex_state ? &hidden : nullptr, nullptr, false);
      }
      if (duplex_state) {
        StageTimer t(times, "duplex");
        models->duplex->push(*duplex_state, hidden, &p_turn, &p_barge);
      }
    }
    for (size_t i = 0; i < p_turn.size(); ++i) {
      Event e{EventKind::Duplex};
      e.time_ms = kMsPerAudioToken * static_cast<double>(audio_tokens + 1 + static_cast<int64_t>(i));
      e.p_turn = p_turn[i];
      e.p_barge = p_barge[i];
      events.push_back(e);
    }
    audio_tokens += toks.rows();
  }

  double stream_ms() const { return static_cast<double>(turn_samples) / 16.0; }

  void end_of_turn() {
    check_open();
    MINMO_CHECK(phase == Phase::Listening, ErrorCode::InvalidArgument,
                "end_of_turn() called while no turn is open (push audio first)");
    MINMO_CHECK(turn_started, ErrorCode::InvalidArgument, "end_of_turn() with no audio pushed in this turn");
    auto t0 = std::chrono::steady_clock::now();
    Tensor feats;
    {
      StageTimer t(times, "frontend");
      feats = features->finish();
    }
    consume_features(feats, true);
    if (ctc_mode) {
      decode_ctc();
      return;
    }
    Tensor logits, hidden;
    {
      StageTimer t(times, "suffix_prefill");
      Tensor emb = models->llm->embed(opt.suffix_ids.data(), opt.suffix_ids.size());
      models->llm->forward(*llm_state, emb, opt.speak ? &hidden : nullptr, &logits, true);
    }
    phase = Phase::Responding;
    if (opt.speak) speech = std::make_unique<SpeechPath>(*models, opt.speech, std::move(spare_voice_state));
    emit_sampled(logits, hidden);
    first_token_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    times["first_token"].ms.push_back(first_token_ms);
  }

  void decode_ctc() {
    StageTimer t(times, "ctc");
    Tensor logits = models->small->run(ctc_features, opt.query_ids).ctc_logits;
    const int64_t vocab = logits.dim(1);
    int64_t prev = -1;
    for (int64_t r = 0; r < logits.rows(); ++r) {
      const float* row = logits.data.data() + r * vocab;
      int64_t best = std::max_element(row, row + vocab) - row;
      if (r < 4) {
        events.push_back(Event{EventKind::Tag, stream_ms(), best});
        continue;
      }
      if (best != prev && best != 0) {
        events.push_back(Event{EventKind::Text, stream_ms(), best});
        response.push_back(best);
      }
      prev = best;
    }
    events.push_back(Event{EventKind::End, stream_ms()});
    phase = Phase::Done;
  }

  // Samples from the last logits row and emits a Text event, or ends the text. hidden: the rows
  // whose last one produced the logits (speak mode: paired with the token for its semantic vector).
  void emit_sampled(const Tensor& logits, const Tensor& hidden) {
    const int64_t vocab = logits.dim(logits.shape.size() - 1);
    const float* last = logits.data.data() + (logits.numel() - vocab);
    SamplingParams sp;
    sp.temperature = opt.temperature;
    sp.top_k = opt.top_k;
    sp.top_p = opt.top_p;
    int64_t tok = sample_token(last, static_cast<size_t>(vocab), sp, rng);
    bool stop = std::find(opt.stop_ids.begin(), opt.stop_ids.end(), tok) != opt.stop_ids.end();
    if (stop) {
      end_text();
      return;
    }
    response.push_back(tok);
    last_token = tok;
    events.push_back(Event{EventKind::Text, stream_ms(), tok});
    if (speech) {
      StageTimer t(times, "semantic_vectors");
      const int64_t H = models->llm->hidden_size();
      Tensor emb = models->llm->embed(&tok, 1);
      const float* h = hidden.ptr() + (hidden.rows() - 1) * H;
      if (models->output_projector_device) {
        if (!semantic_state) semantic_state = models->output_projector_device->new_state();
        models->output_projector_device->run_row(*semantic_state, emb.ptr(), h, semantic.data());
      } else {
        models->output_projector->run_row(emb.ptr(), h, semantic.data());
      }
      speech->push_text(semantic.data(), 1);
    }
    if (static_cast<int>(response.size()) >= opt.max_new_tokens) end_text();
  }

  // The response text ended: the response ends, or (speak) its speech goes on to the end.
  void end_text() {
    if (!speech) {
      finish_response();
      return;
    }
    speech->end_text();
    text_done = true;
  }

  // Runs the voice LM (speak mode): while the text goes on, as far as the text allows; after it,
  // one chunk of speech tokens per call. Ends the response when the speech has ended.
  void speak_some() {
    const int chunk = static_cast<int>(models->voice_lm->config().speech_ratio);
    speech->advance(text_done ? chunk : (1 << 30), stream_ms(), events, times);
    if (speech->ended()) finish_response();
  }

  // Frees the response's speaking state, keeping its voice LM state for the next response.
  void drop_speech() {
    if (speech) spare_voice_state = speech->release_voice_state();
    speech.reset();
  }

  void finish_response() {
    if (speech) speech_tokens = speech->tokens();
    drop_speech();
    events.push_back(Event{EventKind::End, stream_ms()});
    phase = Phase::Done;
  }

  bool step() {
    check_open();
    if (phase != Phase::Responding) return false;
    if (text_done) {
      speak_some();
      return true;
    }
    if (llm_state->length() + 1 > capacity) {
      finish_response();
      MINMO_THROW(ErrorCode::CacheFull, "KV cache full: the response reached " << capacity
                  << " positions after " << response.size() << " tokens; it was ended there "
                  << "(raise kv_capacity for longer responses)");
    }
    Tensor logits, hidden;
    {
      StageTimer t(times, "decode");
      Tensor emb = models->llm->embed(&last_token, 1);
      models->llm->forward(*llm_state, emb, speech ? &hidden : nullptr, &logits, true);
    }
    emit_sampled(logits, hidden);
    if (speech) speak_some();
    return true;
  }

};

Session::Session(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Session::~Session() = default;

void Session::push(const float* samples, size_t n) { impl_->push(samples, n); }
void Session::end_of_turn() { impl_->end_of_turn(); }
bool Session::step() { return impl_->step(); }

std::vector<Event> Session::poll() {
  impl_->check_open();
  std::vector<Event> out;
  out.swap(impl_->events);
  return out;
}

void Session::cancel() {
  impl_->check_open();
  if (impl_->phase == Impl::Phase::Responding) impl_->finish_response();  // frees the speech state
  impl_->phase = Impl::Phase::Done;
}

void Session::close() {
  if (impl_->closed) return;
  impl_->closed = true;
  impl_->features.reset();
  impl_->audio.reset();
  impl_->semantic_state.reset();
  impl_->llm_state.reset();
  impl_->duplex_state.reset();
  impl_->duplex_device_state.reset();
  impl_->speech.reset();
  impl_->spare_voice_state.reset();
  impl_->events.clear();
  impl_->ctc_features = Tensor();
}

bool Session::closed() const { return impl_->closed; }
bool Session::responding() const { return !impl_->closed && impl_->phase == Impl::Phase::Responding; }
int64_t Session::turn_samples() const { return impl_->turn_samples; }
std::vector<int64_t> Session::response_tokens() const { return impl_->response; }
std::vector<int64_t> Session::speech_tokens() const {
  return impl_->speech ? impl_->speech->tokens() : impl_->speech_tokens;
}
std::map<std::string, StageTimes> Session::stage_times() const { return impl_->times; }

std::map<std::string, double> Session::counters() const {
  return {{"audio_ms", impl_->stream_ms()},
          {"audio_tokens", static_cast<double>(impl_->audio_tokens)},
          {"generated_tokens", static_cast<double>(impl_->response.size())},
          {"first_token_ms", impl_->first_token_ms}};
}

std::unique_ptr<Session> make_session(std::shared_ptr<const LoadedModels> models, const SessionOptions& opt) {
  return std::unique_ptr<Session>(new Session(std::make_unique<Session::Impl>(std::move(models), opt)));
}

}  // namespace minmo
