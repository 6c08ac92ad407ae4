// The BLAS the runtime links: OpenBLAS from the scipy-openblas32 wheel, whose symbols carry the
// prefix "scipy_" (scipy_cblas_sgemm, ...) and take 32-bit integer sizes. Include this header
// instead of <cblas.h> and call the unprefixed names below; only this file knows the prefix.
//
// Threading: the runtime has ONE thread pool, OpenMP's. OpenBLAS is kept single-threaded
// (core/threading.cc) and parallel products are split into column slices, one per OpenMP thread
// (sgemm_parallel). Two pools on the same cores made OpenMP threads spinning between regions
// starve BLAS threads (a 2-core decode step ran ~10x slower).
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

// Sets OpenBLAS to one thread, once per process (it starts with one per core); every product
// entry point of the runtime calls it first.
void ensure_single_threaded();

// Row-major C[M, N] = alpha * A[M, K] @ op(B) + beta * C, op(B) = B[K, N] (tb = NoTrans) or
// B[N, K]^T (tb = Trans), split over the OpenMP team by slices of N (multiples of 16 columns)
// when the product is large enough and the caller is not already in a parallel region. Each
// element is computed by the same single-threaded BLAS call pattern whatever the team size.
void sgemm_parallel(CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B,
                    int ldb, float beta, float* C, int ldc);

}  // namespace blas
}  // namespace minmo
