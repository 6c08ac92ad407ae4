// Argument checks shared by the CUDA launch functions and their CPU twins (internal header), so
// both reject exactly the same calls.
#ifndef MINMO_KERNELS_COMMON_ARGS_H_
#define MINMO_KERNELS_COMMON_ARGS_H_

#include <algorithm>
#include <cstdint>

#include "minmo_kernels.h"

namespace minmo_args {

// [a, a + na) and [b, b + nb) (in bytes) overlap.
inline bool overlap(const void* a, int64_t na, const void* b, int64_t nb) {
  const auto pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
  return a && b && pa < pb + static_cast<uintptr_t>(nb) && pb < pa + static_cast<uintptr_t>(na);
}

// minmo_sample_ras_loop_*: the logits, loop state and outputs, the reference sampler's parameters,
// a history ring at least one window long.
inline bool ras_loop_ok(const void* logits, int64_t n, const void* history, int64_t cap, const void* state,
                        const minmo_ras_params& p, const void* token_out) {
  return logits && history && state && token_out && n >= 1 && n < (int64_t{1} << 31) && p.top_k >= 1 &&
         p.top_k <= MINMO_SAMPLING_MAX_TOP_K && p.top_p > 0.0 && p.top_p <= 1.0 && p.win_size >= 1 &&
         p.tau_r >= 0.0 && cap >= p.win_size && cap < (int64_t{1} << 31);
}

inline bool gemv_ok(const void* x, const void* w, const void* y, int64_t batch, int64_t n, int64_t k) {
  return x && w && y && batch >= 1 && batch <= MINMO_GEMV_MAX_BATCH && n >= 1 && k >= 1 && n < (int64_t{1} << 30) &&
         k < (int64_t{1} << 31) &&
         !overlap(x, batch * k * 2, y, batch * n * 2);
}

inline bool int4_ok(int64_t k, int64_t group_size) {
  return group_size >= 32 && group_size % 32 == 0 && k % group_size == 0;
}

// Head dims of the attention kernels: 32, 64, 128, 192, 256.
inline bool head_dim_ok(int64_t head_dim) {
  return head_dim == 32 || (head_dim >= 64 && head_dim <= 256 && head_dim % 64 == 0);
}

// Shapes common to the attention kernels.
inline bool attention_ok(int64_t tokens, int64_t heads_q, int64_t heads_kv, int64_t head_dim, int64_t max_seq) {
  return tokens >= 1 && heads_kv >= 1 && heads_q >= heads_kv && heads_q % heads_kv == 0 &&
         heads_q / heads_kv <= 32 && head_dim_ok(head_dim) && max_seq >= 1 &&
         max_seq <= (int64_t{1} << 30) && tokens <= (int64_t{1} << 30) && heads_q <= 65535;
}

// The window attention and the QKV append also run the wide heads 320 .. 512 (multiples of 64).
inline bool window_head_dim_ok(int64_t head_dim) {
  return head_dim_ok(head_dim) || (head_dim >= 320 && head_dim <= 512 && head_dim % 64 == 0);
}
inline bool window_shape_ok(int64_t tokens, int64_t heads_q, int64_t heads_kv, int64_t head_dim, int64_t max_seq) {
  return attention_ok(tokens, heads_q, heads_kv, 64, max_seq) && window_head_dim_ok(head_dim);
}

inline int64_t decode_splits(int64_t max_seq, int64_t split_size) { return (max_seq + split_size - 1) / split_size; }

// minmo_decode_attention_fused_bf16: dynamic shared memory bytes (K tile of 32 rows padded by 16
// bytes, V tile, the group's q rows); with the kernel's 16 static bytes it must fit the 48 KiB a
// kernel gets without opting in.
inline int64_t decode_fused_smem(int64_t heads_q, int64_t heads_kv, int64_t head_dim) {
  return 64 * (2 * head_dim + 8) + (heads_q / heads_kv) * head_dim * 2;
}
inline bool decode_fused_ok(int64_t heads_q, int64_t heads_kv, int64_t head_dim, int64_t max_seq,
                            int64_t max_splits) {
  return attention_ok(1, heads_q, heads_kv, head_dim, max_seq) && max_splits >= 1 && max_splits <= (1 << 20) &&
         decode_fused_smem(heads_q, heads_kv, head_dim) + 16 <= 48 * 1024;
}

// Fused products (minmo_kernels/fused.h): batch 1, N and K as for the plain products.
inline bool gemv1_ok(const void* x, const void* w, int64_t n, int64_t k) {
  return x && w && n >= 1 && k >= 1 && n < (int64_t{1} << 30) && k < (int64_t{1} << 31);
}
inline bool gemv_norm_ok(const void* x, const void* w, const float* residual, const void* gamma, const void* out,
                         int64_t n, int64_t k) {
  return gemv1_ok(x, w, n, k) && residual && gamma && out && !overlap(out, n * 2, x, k * 2) &&
         !overlap(out, n * 2, residual, n * 4) && !overlap(residual, n * 4, x, k * 2);
}
inline bool gemv_qkv_ok(const void* x, const void* w, const void* pos, const void* q_out, const void* k_cache,
                        const void* v_cache, int64_t heads_q, int64_t heads_kv, int64_t head_dim, int64_t max_seq,
                        int64_t k, float theta) {
  return attention_ok(1, heads_q, heads_kv, head_dim, max_seq) &&
         gemv1_ok(x, w, (heads_q + 2 * heads_kv) * head_dim, k) && pos && q_out && k_cache && v_cache && theta > 0 &&
         !overlap(q_out, heads_q * head_dim * 2, x, k * 2);
}

// minmo_layernorm_residual_bf16: residual / gamma / out required (x, beta nullable); out (bf16
// [rows, dim]) must not overlap the fp32 residual, x must not overlap it either (out may alias x).
inline bool layernorm_ok(const void* x, const float* residual, const void* gamma, const void* out, int64_t rows,
                         int64_t dim) {
  return residual && gamma && out && rows >= 0 && rows <= 0x7fffffff && dim >= 1 && dim < (int64_t{1} << 31) &&
         rows <= (int64_t{1} << 40) / dim &&
         !overlap(out, rows * dim * 2, residual, rows * dim * 4) &&
         !overlap(x, rows * dim * 2, residual, rows * dim * 4);
}

// Encoder epilogues (minmo_kernels/mlp.h): y [rows, n] bf16, bias [n] bf16 (nullable) must not
// overlap y (in place) or the residual; act one of MINMO_ACT_*.
inline bool bias_act_ok(const void* y, const void* bias, int64_t rows, int64_t n, int act) {
  return y && rows >= 0 && n >= 1 && n < (int64_t{1} << 38) && rows <= (int64_t{1} << 40) / n &&
         act >= MINMO_ACT_NONE && act <= MINMO_ACT_RELU && !overlap(bias, n * 2, y, rows * n * 2);
}
inline bool bias_residual_ok(const void* y, const void* bias, const float* residual, int64_t rows, int64_t n) {
  return bias_act_ok(y, bias, rows, n, MINMO_ACT_NONE) && residual &&
         !overlap(y, rows * n * 2, residual, rows * n * 4) && !overlap(bias, n * 2, residual, rows * n * 4);
}

// minmo_f32_to_bf16: n >= 0 values, x and y non-null and apart.
inline bool f32_to_bf16_ok(const float* x, const void* y, int64_t n) {
  return x && y && n >= 0 && !overlap(x, n * 4, y, n * 2);
}

// minmo_window_attention_bf16: the prefill shapes, plus the window start pointer; out must not
// overlap q.
inline bool window_attention_ok(const void* q, const void* k_cache, const void* v_cache, const int32_t* pos,
                                const int32_t* lo, const void* out, int64_t tokens, int64_t heads_q, int64_t heads_kv,
                                int64_t head_dim, int64_t max_seq) {
  return q && k_cache && v_cache && pos && lo && out && window_shape_ok(tokens, heads_q, heads_kv, head_dim, max_seq) &&
         tokens * (heads_q / heads_kv) <= 0x7ffffff0 &&
         !overlap(q, tokens * heads_q * head_dim * 2, out, tokens * heads_q * head_dim * 2);
}

// minmo_im2col_k3s2_bf16 (minmo_kernels/conv.h): input rows [t_in0, t_in0 + n_in) of an input of
// total_in rows, output rows [t_out0, t_out0 + n_out) of the conv1d_out_len(total_in) = (total_in +
// 1) / 2 outputs; every input row that those outputs read inside [0, total_in) must be in x.
inline bool im2col_k3s2_ok(const void* x, const void* out, int64_t t_out0, int64_t n_out, int64_t t_in0,
                           int64_t n_in, int64_t channels, int64_t total_in) {
  constexpr int64_t kMax = int64_t{1} << 31;
  if (!x || !out || t_out0 < 0 || n_out < 0 || t_in0 < 0 || n_in < 0 || channels < 1 || total_in < 0 ||
      channels > kMax / 3 || total_in > kMax || n_out > kMax || t_out0 > kMax || t_in0 > kMax || n_in > kMax ||
      t_in0 + n_in > total_in ||
      t_out0 + n_out > (total_in + 1) / 2 || n_out * channels * 3 > (int64_t{1} << 40))
    return false;
  if (n_out == 0) return true;
  const int64_t need_lo = std::max<int64_t>(2 * t_out0 - 1, 0), need_hi = std::min(2 * (t_out0 + n_out), total_in);
  if (need_lo < need_hi && (need_lo < t_in0 || need_hi > t_in0 + n_in)) return false;
  return !overlap(x, n_in * channels * 2, out, n_out * channels * 6);
}

// HiFT filter network (minmo_kernels/hift_net.h).
inline bool conv1d_im2col_ok(const float* x, const float* out, int64_t t_in, int64_t channels, int64_t t_out,
                             int64_t ld, int32_t kernel, int32_t stride, int32_t pad, int32_t dilation, int32_t act) {
  if (!x || !out || t_in < 1 || channels < 1 || t_out < 1 || kernel < 1 || stride < 1 || pad < 0 || dilation < 1 ||
      act < MINMO_CONV_ACT_NONE || act > MINMO_CONV_ACT_ELU || ld < channels * kernel)
    return false;
  const int64_t full = (t_in + 2 * int64_t{pad} - int64_t{dilation} * (kernel - 1) - 1) / stride + 1;
  return t_in + 2 * int64_t{pad} >= int64_t{dilation} * (kernel - 1) + 1 && t_out <= full &&
         !overlap(x, t_in * channels * 4, out, t_out * ld * 4);
}
inline int64_t conv_transpose1d_len(int64_t t_in, int32_t kernel, int32_t stride, int32_t pad) {
  return (t_in - 1) * stride + kernel - 2 * int64_t{pad};
}
inline bool col2im_ok(const float* z, const float* y, int64_t t_in, int64_t channels, int32_t kernel, int32_t stride,
                      int32_t pad, int32_t reflect) {
  if (!z || !y || t_in < 1 || channels < 1 || kernel < 1 || stride < 1 || kernel < stride || pad < 0 || reflect < 0)
    return false;
  const int64_t L = conv_transpose1d_len(t_in, kernel, stride, pad);
  return L >= 1 && reflect < L && !overlap(z, t_in * channels * kernel * 4, y, (L + reflect) * channels * 4);
}
inline bool hift_stft_ok(const float* x, const float* spec, int64_t n, int32_t n_fft, int32_t hop) {
  return x && spec && n_fft >= 2 && n_fft % 2 == 0 && n_fft <= MINMO_HIFT_MAX_NFFT && hop >= 1 && n > n_fft / 2 &&
         !overlap(x, n * 4, spec, (n / hop + 1) * (n_fft + 2) * 4);
}
inline bool axpby_ok(const float* x, const float* y, int64_t n) {
  return x && y && n >= 1 && (x == y || !overlap(x, n * 4, y, n * 4));
}


// Flow encoder (minmo_kernels/rel_attention.h).
inline bool rel_attention_ok(const float* q, int64_t ldq, const float* k, const float* v, int64_t ldkv,
                             const int32_t* key_rows, const int32_t* key_pe, int64_t keys, const float* p, int64_t ldp,
                             const float* bu, const float* bv, const float* out, int64_t ldo, int64_t rows,
                             int32_t heads, int32_t head_dim) {
  if (!q || !k || !v || !key_rows || !key_pe || !p || !bu || !bv || !out || keys < 1 || rows < 1 || heads < 1 ||
      head_dim < 1 || head_dim > MINMO_REL_ATTN_MAX_HEAD_DIM || keys >= (int64_t{1} << 31))
    return false;
  const int64_t w = int64_t{heads} * head_dim, bytes = ((rows - 1) * ldo + w) * 4;
  return ldq >= w && ldkv >= w && ldp >= w && ldo >= w && !overlap(out, bytes, q, ((rows - 1) * ldq + w) * 4) &&
         !overlap(out, bytes, bu, w * 4) && !overlap(out, bytes, bv, w * 4);
}
inline bool rel_pos_enc_ok(const int32_t* dist, int64_t count, int64_t dim, const float* pe) {
  return dist && pe && count >= 1 && dim >= 2 && dim % 2 == 0 && !overlap(dist, count * 4, pe, count * dim * 4);
}
inline bool layernorm_f32_ok(const float* x, int64_t ldx, const float* g, const float* b, const float* out,
                             int64_t ldo, int64_t rows, int64_t dim) {
  if (!x || !g || !b || !out || rows < 1 || dim < 1 || ldx < dim || ldo < dim) return false;
  const int64_t nx = ((rows - 1) * ldx + dim) * 4, no = ((rows - 1) * ldo + dim) * 4;
  return (x == out ? ldx == ldo : !overlap(x, nx, out, no)) && !overlap(out, no, g, dim * 4) &&
         !overlap(out, no, b, dim * 4);
}
inline bool silu_rows_ok(const float* y, int64_t rows, int64_t n, int64_t ld) {
  return y && rows >= 1 && n >= 1 && ld >= n;
}
inline bool embedding_rows_ok(const float* table, const int32_t* ids, const float* out, int64_t rows, int64_t vocab,
                              int64_t dim, int64_t ldo) {
  return table && ids && out && rows >= 1 && vocab >= 1 && dim >= 1 && ldo >= dim &&
         !overlap(out, ((rows - 1) * ldo + dim) * 4, table, vocab * dim * 4) &&
         !overlap(out, ((rows - 1) * ldo + dim) * 4, ids, rows * 4);
}
inline bool repeat_rows_ok(const float* ctx, int64_t ctx_rows, const float* x, int64_t rows, int64_t dim,
                           int32_t repeat, const float* out) {
  if (!x || !out || rows < 1 || dim < 1 || repeat < 1 || ctx_rows < 0 || (ctx_rows > 0 && !ctx)) return false;
  const int64_t no = repeat * (ctx_rows + rows) * dim * 4;
  return !overlap(out, no, x, rows * dim * 4) && !overlap(out, no, ctx, ctx_rows * dim * 4);
}

// HiFT NSF source (minmo_kernels/hift.h).
inline bool hift_nsf_ok(const minmo_hift_nsf& n) {
  return n.harmonics >= 1 && n.harmonics <= MINMO_HIFT_MAX_HARMONICS && n.samples_per_frame >= 1 &&
         n.sample_rate > 0.0;
}
inline bool hift_phase_ok(const float* f0_raw, const minmo_hift_window* window, const float* f0_hist,
                          const double* q_hist, int64_t cap, const float* f0, const double* q, int64_t frames,
                          const minmo_hift_nsf& nsf) {
  if (!f0_raw || !window || !f0_hist || !q_hist || !f0 || !q || frames < 1 || cap < frames + 1 || !hift_nsf_ok(nsf) ||
      cap > (int64_t{1} << 40))
    return false;
  const int64_t H = nsf.harmonics;
  const struct {
    const void* p;
    int64_t bytes;
  } b[] = {{f0_raw, frames * 4}, {window, int64_t{sizeof(minmo_hift_window)}}, {f0_hist, cap * 4},
           {q_hist, cap * H * 8}, {f0, frames * 4}, {q, (frames + 1) * H * 8}};
  for (size_t i = 0; i < 6; ++i)
    for (size_t j = i + 1; j < 6; ++j)
      if (overlap(b[i].p, b[i].bytes, b[j].p, b[j].bytes)) return false;
  return true;
}
inline bool hift_source_ok(const float* f0, const double* q, const minmo_hift_window* window, const float* lin_w,
                           const float* out, int64_t frames, const minmo_hift_nsf& nsf) {
  if (!f0 || !q || !window || !lin_w || !out || frames < 1 || !hift_nsf_ok(nsf) ||
      frames > (int64_t{1} << 40) / nsf.samples_per_frame)
    return false;
  const int64_t n = frames * nsf.samples_per_frame;
  return !overlap(out, n * 4, f0, frames * 4) && !overlap(out, n * 4, q, (frames + 1) * nsf.harmonics * 8) &&
         !overlap(out, n * 4, window, int64_t{sizeof(minmo_hift_window)}) && !overlap(out, n * 4, lin_w, nsf.harmonics * 4);
}

}  // namespace minmo_args

#endif  // MINMO_KERNELS_COMMON_ARGS_H_
