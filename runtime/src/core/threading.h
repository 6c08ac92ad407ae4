// Compute threads. CPU ops parallelise with OpenMP; matrix products run in OpenBLAS's own
// thread pool. set_num_threads sets both, so that they do not oversubscribe the cores.
#pragma once

namespace minmo {

// n >= 1: use n threads; n == 0: one per available core. Throws InvalidArgument for n < 0.
// Process-wide; call it before starting work (not while ops run on other threads).
void set_num_threads(int n);
// Threads OpenMP regions currently use.
int num_threads();

}  // namespace minmo
