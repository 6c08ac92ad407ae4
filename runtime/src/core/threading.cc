#include "core/threading.h"

#include "backends/cpu/blas.h"
#include <omp.h>

#include "minmo/status.h"

namespace minmo {

void set_num_threads(int n) {
  MINMO_CHECK(n >= 0, ErrorCode::InvalidArgument, "number of threads must be >= 0 (0: all cores), got " << n);
  if (n == 0) n = omp_get_num_procs();
  omp_set_num_threads(n);
  blas::set_num_threads(1);
}

int num_threads() { return omp_get_max_threads(); }

}  // namespace minmo
