// The BLAS the runtime links: OpenBLAS from the scipy-openblas32 wheel, whose symbols carry the
// prefix "scipy_" (scipy_cblas_sgemm, ...) and take 32-bit integer sizes. Include this header
// instead of <cblas.h> and call the unprefixed names below; only this file knows the prefix.
#pragma once

#include <cblas.h>

namespace minmo {
namespace blas {

inline void sgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha,
                  const float* A, int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  scipy_cblas_sgemm(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

inline void sgemv(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, int M, int N, float alpha, const float* A, int lda,
                  const float* x, int incx, float beta, float* y, int incy) {
  scipy_cblas_sgemv(order, ta, M, N, alpha, A, lda, x, incx, beta, y, incy);
}

inline void set_num_threads(int n) { scipy_openblas_set_num_threads(n); }

}  // namespace blas
}  // namespace minmo
