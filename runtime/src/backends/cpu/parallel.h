// When CPU ops fork an OpenMP team. A parallel region costs microseconds to start and, when the
// machine is busy, a thread of the team may be descheduled while the others wait at the barrier,
// so small work runs on the calling thread. Regions open only above these amounts of work.
#pragma once

#include <cstdint>

namespace minmo {
namespace cpu {

// Element-wise work (norms, activations, softmax, RoPE, copies): elements touched.
constexpr int64_t kParallelMinElements = int64_t{1} << 16;
// Multiply-accumulate work (products, attention, convolutions): multiply-adds.
constexpr int64_t kParallelMinMacs = int64_t{1} << 20;

inline bool parallel_elements(int64_t n) { return n >= kParallelMinElements; }
inline bool parallel_macs(int64_t n) { return n >= kParallelMinMacs; }

}  // namespace cpu
}  // namespace minmo
