// Cached streaming Token2Wav: speech tokens -> 24 kHz audio, one utterance per stream.
//
// Semantics (export/reference/token2wav.py): the flow runs segment by segment (the prompt, then
// chunks of chunk_tokens generated tokens, each final once `lookahead` more tokens are known) with
// its K/V and causal-conv caches (FlowState); its mel goes through an exact HiftStream. The audio
// equals token2wav_offline(..., chunk_tokens, left_chunks) for any push schedule (within float
// rounding), and with left_chunks >= 0 each chunk costs the same however long the utterance.
// Differences from the public CosyVoice2 streaming (which re-runs the flow over all tokens so far
// and cross-fades vocoder windows): no re-run (the mel is the same for the same chunking), and the
// vocoder is exact instead of cross-faded, holding back receptive_field().second mel frames
// (~22 for CosyVoice2 sizes) of audio until the following chunk or finish().
#pragma once

#include <cstdint>
#include <vector>

#include "modules/flow.h"
#include "modules/hift.h"

namespace minmo {

struct Token2WavOptions {
  std::vector<float> speaker;         // spk_dim (192) values; L2-normalised inside
  std::vector<int64_t> prompt_tokens;  // optional voice-imitation prompt
  std::vector<float> prompt_mel;       // [2 * prompt_tokens, 80] row-major, optional (empty: zeros)
  uint64_t seed = 0;                   // CFM and vocoder noise
  int chunk_tokens = 15;               // tokens per flow segment (0.6 s)
  int lookahead = 3;                   // must equal the flow's pre_lookahead
  int left_chunks = 4;                 // attention context in chunks (< 0: all; not flat in cost)
};

class Token2WavStream {  // one utterance; state is cached, cost per chunk is flat
 public:
  // Throws InvalidArgument on a wrong speaker size, NaN/Inf, a prompt mel of the wrong size,
  // chunk_tokens < 1, a lookahead other than the flow's or mismatched flow/hift mel sizes.
  Token2WavStream(const FlowModel& flow, const HiftModel& hift, Token2WavOptions opts);
  // Appends tokens (ids checked: InvalidArgument, nothing consumed); returns the 24 kHz audio that
  // became final (may be empty). Closed after finish().
  std::vector<float> push(const int64_t* tokens, size_t n);
  // Flushes the rest; the stream is done. InvalidArgument when no token was pushed; Closed twice.
  std::vector<float> finish();

  bool finished() const { return done_; }
  int64_t tokens_pushed() const { return static_cast<int64_t>(tokens_.size()) - prompt_len_; }
  int64_t mel_frames_out() const { return mel_frames_; }
  // The mel of the segments run so far (the generated frames only) [mel_frames_out(), 80].
  const std::vector<float>& mel() const { return mel_out_; }

 private:
  // Runs every segment that is ready (final: the rest, with zero lookahead at the end).
  std::vector<float> run_ready(bool final);

  const FlowModel& flow_;
  const HiftModel& hift_;
  Token2WavOptions opts_;
  FlowState state_;
  HiftStream vocoder_;
  std::vector<int64_t> tokens_;  // prompt + generated
  int64_t prompt_len_ = 0, next_ = 0, mel_frames_ = 0;
  std::vector<float> mel_out_;
  bool done_ = false;
};

}  // namespace minmo
