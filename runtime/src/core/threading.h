// Compute threads: one pool, OpenMP's. CPU ops parallelise with OpenMP and matrix products run
// single-threaded OpenBLAS calls on column slices in the same team (backends/cpu/blas.h).
#pragma once

namespace minmo {

// n >= 1: use n threads; n == 0: one per available core. Throws InvalidArgument for n < 0.
// Process-wide; call it before starting work (not while ops run on other threads).
void set_num_threads(int n);
// Threads OpenMP regions currently use.
int num_threads();

}  // namespace minmo
