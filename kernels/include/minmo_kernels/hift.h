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

/* ---- NSF source (export/reference/hift.py source_from_f0; runtime HiftModel::source) ----------
 *
 * Per window of T mel frames a0 .. a0+T-1 of an utterance (a stream's windows overlap; offline
 * synthesis is one window with a0 = e0 = 0, e1 = T), H = nb_harmonics + 1 harmonics, S samples per
 * frame, rates sr:
 *   r[k, h] = frac(f0[k] (h + 1) / sr)                         (phase advance of one sample, turns)
 *   q[k, h] = frac(q[k - 1, h] + S r[k, h]),  q[-1, h] = 0     (accumulated phase, float64)
 * Frames before e0 are final from earlier windows: their f0 and q come from a history ring in
 * device memory (frame k in slot k % cap); frames [e0, e1) become final in this window and are
 * written to the ring; later frames of the window are provisional (computed, not kept). The window's
 * position is read through a device pointer, so a captured CUDA graph replays for every window of
 * the same length. */

#define MINMO_HIFT_MAX_HARMONICS 64

/* Where a window lies in its utterance (device memory). Requires 0 <= a0 <= e0 <= e1 <= a0 + T and
 * the ring to hold frames max(a0 - 1, 0) .. e0 - 1; otherwise the kernels write NaN (f0, q, source)
 * and leave the ring alone. */
typedef struct minmo_hift_window {
  int64_t a0;    /* first frame of the window */
  int64_t e0;    /* frames [a0, e0) come from the history ring */
  int64_t e1;    /* frames [e0, e1) are final after this window (written to the ring) */
  uint64_t seed; /* noise seed (minmo_counter_normal with noise_stream) */
} minmo_hift_window;

/* The source's constants (HiftConfig; doubles as the reference computes in float64). */
typedef struct minmo_hift_nsf {
  int32_t harmonics;         /* H, 1 .. MINMO_HIFT_MAX_HARMONICS */
  int32_t samples_per_frame; /* S >= 1 */
  double sample_rate;        /* > 0 */
  double alpha, sigma, voiced_threshold;
  uint64_t noise_stream;     /* counter_normal stream of the noise (the runtime's kHiftNoiseStream) */
} minmo_hift_nsf;

/* f0 and accumulated phases of a window: f0_raw [T] (the f0 predictor's classifier output; its
 * absolute value is the f0), ring f0_hist [cap], q_hist [cap, H] ->
 *   f0[i] = f0_hist[a0 + i] for a0 + i < e0, else |f0_raw[i]|                      [T]
 *   q[0, h] = q_hist[a0 - 1, h] (0 when a0 == 0);  q[1 + i, h] = q[a0 + i, h]       [T + 1, H]
 * with the phases of frames >= e0 continued from q[e0 - 1] (0 when e0 == 0); f0 and q of frames
 * [e0, e1) are stored in the ring. The prefix sum runs in float64 as a block scan per harmonic
 * (each thread folds a run of frames, the runs' totals are scanned mod 1, each run is folded again
 * from its offset); the twin runs the same order, so the two agree to the last bit unless the host
 * compiler contracts a multiply-add. Requires T >= 1, cap >= T + 1, nsf.harmonics in range,
 * S >= 1, sr > 0, no overlap between the outputs, the ring and the input. */
int minmo_hift_phase_f64(const float* f0_raw, const minmo_hift_window* window, float* f0_hist, double* q_hist,
                         int64_t cap, float* f0, double* q, int64_t frames, minmo_hift_nsf nsf, cudaStream_t stream);
int minmo_hift_phase_f64_cpu(const float* f0_raw, const minmo_hift_window* window, float* f0_hist, double* q_hist,
                             int64_t cap, float* f0, double* q, int64_t frames, minmo_hift_nsf nsf);

/* The source samples of the window, out [S T], from minmo_hift_phase_f64's f0 and q: sample n sits
 * at s = (n + 1/2) / S - 1/2 frames (clamped to >= 0 when a0 == 0), k0 = min(floor(s), T - 1),
 * k1 = min(k0 + 1, T - 1), lam = s - k0 if k1 > k0 else 0; per harmonic (float64)
 *   turns = frac(q[k0, h] + lam S r[k1, h])                   (q[-1] = row 0 of q)
 *   wave[h] = float(voiced ? alpha sin(2 pi turns) + sigma z : alpha / 3 z)
 *   z = minmo_counter_normal(seed, noise_stream, (a0 S + n) H + h)
 * voiced = f0[n / S] > voiced_threshold; out[n] = tanh(sum_h lin_w[h] wave[h] + lin_b) (l_linear;
 * lin_b may be null). Requires what minmo_hift_phase_f64 does, lin_w non-null, out not overlapping
 * the inputs. */
int minmo_hift_source_f32(const float* f0, const double* q, const minmo_hift_window* window, const float* lin_w,
                          const float* lin_b, float* out, int64_t frames, minmo_hift_nsf nsf, cudaStream_t stream);
int minmo_hift_source_f32_cpu(const float* f0, const double* q, const minmo_hift_window* window, const float* lin_w,
                              const float* lin_b, float* out, int64_t frames, minmo_hift_nsf nsf);

/* out[i] = minmo_counter_normal(seed, noise_stream, start + i), i < count (the runtime's
 * counter_normal on the device). */
int minmo_counter_normal_f32(uint64_t seed, uint64_t noise_stream, uint64_t start, int64_t count, float* out,
                             cudaStream_t stream);
int minmo_counter_normal_f32_cpu(uint64_t seed, uint64_t noise_stream, uint64_t start, int64_t count, float* out);

#ifdef __cplusplus
}
#endif

/* Shared by the CUDA kernels and the CPU twins. */
#include <math.h>

/* a * b, and a + b, rounded once and never fused into an fma by the compiler. */
MINMO_HD double minmo_dmul(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

/* SplitMix64's output function. */
MINMO_HD uint64_t minmo_mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* Key of (seed, stream) for minmo_counter_normal_at. */
MINMO_HD uint64_t minmo_counter_key(uint64_t seed, uint64_t stream) {
  return minmo_mix64(seed + 0x9E3779B97F4A7C15ull * (stream + 1));
}

/* Standard normal number `index` of a key: splitmix64 hashes of the counter, Box-Muller in float64,
 * rounded to float (export/reference/flow.py counter_normal; runtime counter_normal in
 * modules/flow.h). Equal on host and device up to the libm rounding of log / cos. */
MINMO_HD float minmo_counter_normal_at(uint64_t key, uint64_t index) {
  const uint64_t h1 = minmo_mix64(key + (2 * index) * 0x9E3779B97F4A7C15ull);
  const uint64_t h2 = minmo_mix64(key + (2 * index + 1) * 0x9E3779B97F4A7C15ull);
  const double u1 = ((double)(h1 >> 11) + 1.0) * 0x1.0p-53;
  const double u2 = (double)(h2 >> 11) * 0x1.0p-53;
  return (float)(sqrt(-2.0 * log(u1)) * cos(minmo_dmul(2.0 * 3.14159265358979323846, u2)));
}

/* Phase advance of one sample in turns, harmonic h (0 = the fundamental): frac(f0 (h + 1) / sr). */
MINMO_HD double minmo_hift_phase_step(float f0, int h, double sample_rate) {
  const double v = minmo_dmul((double)f0, (double)(h + 1)) / sample_rate;
  return v - floor(v);
}

/* frac(a + b) for the phase accumulation. */
MINMO_HD double minmo_frac_add(double a, double b) {
  const double v = a + b;
  return v - floor(v);
}

/* Threads of minmo_hift_phase_f64's block scan (the twin folds runs of the same length). */
#define MINMO_HIFT_SCAN_THREADS 256

/* Whether a window is usable for T frames (see minmo_hift_window). */
MINMO_HD int minmo_hift_window_ok(const minmo_hift_window* w, int64_t frames) {
  return w->a0 >= 0 && w->a0 <= w->e0 && w->e0 <= w->e1 && w->e1 <= w->a0 + frames;
}

/* One source sample (minmo_hift_source_f32), n < S T. */
MINMO_HD float minmo_hift_source_sample(const float* f0, const double* q, int64_t frames, int64_t n,
                                        const minmo_hift_window* w, const float* lin_w, const float* lin_b,
                                        const minmo_hift_nsf* nsf) {
  const int H = nsf->harmonics;
  const int64_t S = nsf->samples_per_frame;
  double s = ((double)n + 0.5) / (double)S - 0.5;
  if (w->a0 == 0 && s < 0.0) s = 0.0;
  int64_t k0 = (int64_t)floor(s);
  if (k0 > frames - 1) k0 = frames - 1;
  const int64_t k1 = k0 + 1 < frames - 1 ? k0 + 1 : frames - 1;
  const double lam_s = minmo_dmul(k1 > k0 ? s - (double)k0 : 0.0, (double)S);
  const double* qk = q + (k0 + 1) * H;
  const int voiced = (double)f0[n / S] > nsf->voiced_threshold;
  const double amp = voiced ? nsf->sigma : nsf->alpha / 3.0;
  const uint64_t key = minmo_counter_key(w->seed, nsf->noise_stream);
  const uint64_t first = ((uint64_t)w->a0 * (uint64_t)S + (uint64_t)n) * (uint64_t)H;
  double acc = lin_b ? (double)lin_b[0] : 0.0;
  for (int h = 0; h < H; ++h) {
    double turns = qk[h] + minmo_dmul(lam_s, minmo_hift_phase_step(f0[k1], h, nsf->sample_rate));
    turns -= floor(turns);
    const double sine = voiced ? nsf->alpha * sin(minmo_dmul(2.0 * 3.14159265358979323846, turns)) : 0.0;
    const float wave = (float)(sine + minmo_dmul(amp, (double)minmo_counter_normal_at(key, first + (uint64_t)h)));
    acc += minmo_dmul((double)lin_w[h], (double)wave);
  }
  return tanhf((float)acc);
}

#endif /* MINMO_KERNELS_HIFT_H_ */
