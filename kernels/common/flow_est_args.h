// Argument checks of the flow-estimator kernels (minmo_kernels/flow_est.h), shared by the CUDA
// launch functions and their CPU twins so that both reject the same calls (internal header).
#ifndef MINMO_KERNELS_COMMON_FLOW_EST_ARGS_H_
#define MINMO_KERNELS_COMMON_FLOW_EST_ARGS_H_

#include "args.h"
#include "minmo_kernels/flow_est.h"

namespace minmo_args {

inline bool flow_im2col_ok(const float* x, const float* ctx, const float* ctx_next, const float* out, int64_t batch,
                           int64_t n, int64_t C, int32_t k, int64_t ld) {
  if (!x || !out || batch < 1 || n < 1 || C < 1 || k < 1 || ld < C * k) return false;
  const int64_t nx = 4 * batch * n * C, no = 4 * batch * n * ld, nc = 4 * batch * (k - 1) * C;
  if (k > 1 && (!ctx || !ctx_next || overlap(ctx_next, nc, x, nx) || overlap(ctx_next, nc, ctx, nc) ||
                overlap(ctx_next, nc, out, no) || overlap(out, no, ctx, nc)))
    return false;
  return !overlap(out, no, x, nx);
}

inline bool flow_norm_ok(const float* x, const float* gamma, const float* beta, const float* post_bias,
                         const float* add, const float* out, int64_t rows, int64_t C, int64_t ld, int32_t act) {
  if (!x || !gamma || !out || rows < 1 || C < 1 || ld < C) return false;
  if (act != MINMO_FLOW_ACT_NONE && act != MINMO_FLOW_ACT_MISH) return false;
  const int64_t nx = 4 * rows * C, no = 4 * rows * ld;
  if (out == x) return ld == C && !post_bias && !overlap(x, nx, gamma, 4 * C) && !overlap(x, nx, beta, 4 * C) &&
                       !overlap(x, nx, add, 4 * C);
  return !overlap(out, no, x, nx) && !overlap(out, no, gamma, 4 * C) && !overlap(out, no, beta, 4 * C) &&
         !overlap(out, no, add, 4 * C) && !overlap(out, no, post_bias, 4 * C) && !overlap(x, nx, post_bias, 4 * C);
}

inline bool flow_attention_ok(const float* qkv, const float* kc, const float* vc, const float* out, const int32_t* rows,
                              int64_t batch, int64_t n, int64_t heads, int64_t hd, int64_t cap) {
  if (!qkv || !kc || !vc || !out || !rows || batch < 1 || n < 1 || heads < 1 || heads > 65535 || hd < 1 ||
      hd > MINMO_FLOW_MAX_HEAD_DIM || cap < n || cap >= (int64_t{1} << 30))
    return false;
  const int64_t inner = heads * hd, no = 4 * batch * n * inner, nc = 4 * batch * cap * inner;
  return !overlap(out, no, qkv, 3 * no) && !overlap(out, no, kc, nc) && !overlap(out, no, vc, nc) &&
         !overlap(kc, nc, vc, nc) && !overlap(kc, nc, qkv, 3 * no) && !overlap(vc, nc, qkv, 3 * no);
}

inline bool flow_compact_ok(const float* caches, int64_t count, int64_t stride, int64_t width, int64_t first,
                            int64_t last, int64_t rows) {
  return caches && count >= 1 && width >= 1 && first >= 0 && first <= last && last <= rows && rows * width <= stride;
}

inline bool flow_copy_rows_ok(const float* src, int64_t lds, int64_t src_rows, const float* dst, int64_t ldd,
                              int64_t rows, int64_t cols) {
  return src && dst && src_rows >= 1 && rows >= 1 && cols >= 1 && cols <= lds && cols <= ldd &&
         !overlap(src, 4 * ((src_rows - 1) * lds + cols), dst, 4 * ((rows - 1) * ldd + cols));
}

}  // namespace minmo_args

#endif  // MINMO_KERNELS_COMMON_FLOW_EST_ARGS_H_
