// fp32 CPU operators. All tensors are contiguous and row-major; shapes are given as [dims] with
// the last dimension fastest. Ops take raw pointers and sizes, allocate nothing on the heap in
// steady state (scratch buffers are thread-local and reused), and are OpenMP-parallel or use
// OpenBLAS (multi-threaded) for products. Arguments are checked (non-null, positive sizes,
// consistent dims); violations throw minmo::Error(InvalidArgument).
// Unless stated otherwise an output must not alias an input.
#pragma once

#include <cstdint>

namespace minmo {
namespace cpu {

// ---- products ---------------------------------------------------------------------------

// y[M, N] = x[M, K] @ W[N, K]^T + bias[N]  (W in PyTorch nn.Linear layout; bias may be null).
// M == 1 uses a matrix-vector product.
void linear(const float* x, const float* W, const float* bias, float* y, int64_t M, int64_t K, int64_t N);

// C[M, N] = A[M, K] @ B[K, N].
void matmul(const float* A, const float* B, float* C, int64_t M, int64_t K, int64_t N);

// ---- normalisation ----------------------------------------------------------------------

// y[M, D] = (x - mean) / sqrt(var + eps) * gamma + beta, per row (biased variance).
// gamma / beta may be null (1 / 0). y may alias x.
void layer_norm(const float* x, const float* gamma, const float* beta, float* y, int64_t M, int64_t D, float eps);

// y[M, D] = x * rsqrt(mean(x^2) + eps) * gamma, per row (Qwen2 RMSNorm; gamma may be null).
// y may alias x.
void rms_norm(const float* x, const float* gamma, float* y, int64_t M, int64_t D, float eps);

// Fused residual add + RMSNorm (the CPU twin of the CUDA kernel minmo_rmsnorm_residual_f32):
// residual[M, D] += x (x may be null); out = rms_norm(residual) * gamma. out may alias x.
void rms_norm_residual(const float* x, float* residual, const float* gamma, float* out, int64_t M, int64_t D,
                       float eps);

// ---- element-wise (in place over n elements) ------------------------------------------------

void relu(float* x, int64_t n);
// GELU (erf form): 0.5 x (1 + erf(x / sqrt 2)) = 0.5 x erfc(-x / sqrt 2), erfc by a vectorisable
// approximation (relative error below 2e-7).
void gelu(float* x, int64_t n);
// SiLU: x * sigmoid(x).
void silu(float* x, int64_t n);
// out[i] = silu(gate[i]) * up[i] (gated MLP). out may alias gate or up.
void silu_mul(const float* gate, const float* up, float* out, int64_t n);
// y[i] += x[i].
void add_inplace(float* y, const float* x, int64_t n);

// ---- softmax ------------------------------------------------------------------------------

// Row-wise over the last dim of x[M, N], in place; max-subtracted (stable for any finite input).
void softmax(float* x, int64_t M, int64_t N);
// Row-wise log-softmax over x[M, N], in place.
void log_softmax(float* x, int64_t M, int64_t N);

// ---- position encodings / lookup -----------------------------------------------------------

// Rotary embedding, in place, "rotate_half" (NeoX / Hugging Face Qwen2) convention, over
// x[T, H, Dh] (Dh even): for i < Dh/2, pair (x[i], x[i + Dh/2]) is rotated by angle
// positions[t] * theta^(-2i/Dh). cos/sin are computed in double and rounded to float.
void rope_neox(float* x, const int64_t* positions, int64_t T, int64_t H, int64_t Dh, double theta);

// out[T, D] = table[ids[t], :] for table[V, D]. Throws InvalidArgument on an id outside [0, V).
void embedding(const float* table, const int64_t* ids, float* out, int64_t T, int64_t V, int64_t D);

// ---- attention ----------------------------------------------------------------------------

// Which keys query i (0 <= i < Tq) may attend to.
struct AttnMask {
  enum class Kind { None, Causal, Ranges };
  Kind kind = Kind::None;
  // Causal: query i sits at absolute position q_offset + i and sees keys [0, q_offset + i + 1)
  // (clipped to Tk). Typical: q_offset = Tk - Tq (queries are the newest positions).
  int64_t q_offset = 0;
  // Ranges: query i sees keys [lo[i], hi[i]) (both arrays of length Tq, 0 <= lo <= hi <= Tk).
  const int64_t* lo = nullptr;
  const int64_t* hi = nullptr;

  static AttnMask none() { return AttnMask{}; }
  static AttnMask causal(int64_t q_offset) {
    AttnMask m;
    m.kind = Kind::Causal;
    m.q_offset = q_offset;
    return m;
  }
  static AttnMask ranges(const int64_t* lo, const int64_t* hi) {
    AttnMask m;
    m.kind = Kind::Ranges;
    m.lo = lo;
    m.hi = hi;
    return m;
  }
};

// Scaled dot-product attention with grouped KV heads:
//   out[i, h, :] = sum_j softmax_j(scale * q[i, h, :] . k[j, h / (Hq / Hkv), :]) v[j, h / (Hq / Hkv), :]
// over the keys j allowed by mask. q, out: [Tq, Hq, Dh]; k, v: [Tk, Hkv, Dh]; Hq % Hkv == 0.
// A query with no allowed key gets an all-zero output row.
void attention(const float* q, const float* k, const float* v, float* out, int64_t Tq, int64_t Tk, int64_t Hq,
               int64_t Hkv, int64_t Dh, float scale, const AttnMask& mask);

// ---- convolution --------------------------------------------------------------------------

// Output length of conv1d for input length T (0 if the padded input is shorter than the kernel).
int64_t conv1d_out_len(int64_t T, int64_t K, int64_t stride, int64_t pad_left, int64_t pad_right, int64_t dilation);

// 1-D convolution, TIME-MAJOR activations:
//   x[T, Cin] -> y[Tout, Cout], Tout = conv1d_out_len(T, K, stride, pad_left, pad_right, dilation)
//   weight[Cout, Cin / groups, K] (PyTorch Conv1d layout), bias[Cout] or null,
//   y[t, co] = bias[co] + sum_{ci in group(co), k} weight[co, ci, k] * x[t*stride - pad_left + k*dilation, ci]
// with zero padding outside [0, T). Cin and Cout must be divisible by groups; groups == Cin ==
// Cout is depthwise (own fast path).
void conv1d(const float* x, const float* weight, const float* bias, float* y, int64_t T, int64_t Cin, int64_t Cout,
            int64_t K, int64_t stride, int64_t pad_left, int64_t pad_right, int64_t groups, int64_t dilation = 1);

}  // namespace cpu
}  // namespace minmo
