/* HiFT vocoder tail (CosyVoice2): magnitude/phase -> inverse STFT -> clamp, and the Hamming
 * cross-fade between streamed chunks. See minmo_kernels.h for the shared conventions. */
#ifndef MINMO_KERNELS_HIFT_H_
#define MINMO_KERNELS_HIFT_H_

#include "../minmo_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MINMO_HIFT_MAX_NFFT 32

/* spec: [n_fft + 2, F] channel-major (conv_post output): rows 0..n_fft/2 are log-magnitudes,
 * rows n_fft/2+1..n_fft+1 phase pre-activations. With B = n_fft / 2 + 1:
 *   mag = min(exp(spec[k, f]), 100), phase = sin(spec[B + k, f]),
 *   X[k, f] = mag * (cos(phase) + i sin(phase))
 *   audio = torch.istft(X, n_fft, hop, win_length=n_fft, window=periodic hann, center=True)
 *   audio = clamp(audio, -audio_limit, audio_limit)            (skipped when audio_limit <= 0)
 * out: [hop * (F - 1)]. The imaginary parts of the DC and Nyquist bins are ignored (as by irfft).
 * Requires n_fft even, 2 <= n_fft <= MINMO_HIFT_MAX_NFFT, 1 <= hop <= n_fft / 2 (so the
 * window envelope never vanishes), F >= 2. */
int minmo_hift_istft_f32(const float* spec, float* out, int64_t frames, int32_t n_fft, int32_t hop,
                         float audio_limit, cudaStream_t stream);
int minmo_hift_istft_f32_cpu(const float* spec, float* out, int64_t frames, int32_t n_fft, int32_t hop,
                             float audio_limit);

/* Cross-fade of a new chunk's head with the previous chunk's tail (CosyVoice2 fade_in_out), in
 * place over the first `overlap` samples (3840 in CosyVoice2: 8 mel frames * 480):
 *   w = np.hamming(2 * overlap)   (symmetric: 0.54 - 0.46 cos(2 pi j / (2 overlap - 1)))
 *   chunk[i] = chunk[i] * w[i] + prev_tail[i] * w[overlap + i],   0 <= i < overlap
 * chunk: [>= overlap]; prev_tail: [overlap] (the last `overlap` samples of the previous chunk). */
int minmo_hamming_crossfade_f32(float* chunk, const float* prev_tail, int64_t overlap, cudaStream_t stream);
int minmo_hamming_crossfade_f32_cpu(float* chunk, const float* prev_tail, int64_t overlap);

#ifdef __cplusplus
}
#endif

#endif /* MINMO_KERNELS_HIFT_H_ */
