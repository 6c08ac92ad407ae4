// The device the CUDA backend runs on, and its memory.
//
// Two kinds behind one class, so that the backend's code (buffer layouts, weight formats, launch
// sequences, graph capture) is the same on both:
//   - "cuda": the CUDA runtime (statically linked): device memory, pinned host buffers, one
//     stream per Device object, CUDA graphs. Needs a build with CUDA (MINMO_WITH_CUDA) and a GPU.
//   - "cuda-sim": host memory and every kernel replaced by its CPU twin (kernels/cpu). Work is
//     asynchronous as on a GPU: kernels, copies and memsets are queued with their argument values
//     and run in order at the stream's sync() (a failure surfaces there, as DeviceError), so host
//     code that reads a result or rewrites a staging buffer before synchronising sees what it would
//     see on a GPU. A captured graph records the enqueue function and replays it. For testing the
//     backend on a machine without a GPU: slow, and it says nothing about the CUDA kernels
//     themselves (kernels/tests checks those on a GPU). It does enforce the rules that a real GPU
//     enforces and plain host memory would hide, throwing Internal naming the call: every pointer
//     a kernel receives lies in a device allocation; a copy's device side lies in device memory
//     and its host side does not; a graph's work uses pinned host buffers, does not synchronise,
//     and is the same at every replay (a CUDA graph freezes the arguments it captured).
// Kernels are called through MINMO_DEVICE_CALL(stream, name, args...), which enqueues minmo_<name>
// on the stream (throwing on a non-zero launch status) or queues minmo_<name>_cpu on the sim's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "minmo/status.h"
#include "minmo_kernels.h"

namespace minmo {
namespace cuda {

enum class DeviceKind { Cuda, Sim };

class Device;

enum class MemoryKind {
  Device,      // cudaMalloc (host memory for the sim)
  PinnedHost,  // cudaMallocHost: page-locked staging buffers, so that host <-> device copies run
               // asynchronously and can be captured in a graph (plain host memory for the sim)
};

// One allocation, freed with the object (which keeps its Device alive).
class Allocation {
 public:
  Allocation() = default;
  // Throws DeviceError when out of memory.
  Allocation(std::shared_ptr<Device> device, size_t bytes, MemoryKind kind);
  ~Allocation();
  Allocation(Allocation&& o) noexcept;
  Allocation& operator=(Allocation&& o) noexcept;
  Allocation(const Allocation&) = delete;
  Allocation& operator=(const Allocation&) = delete;
  void* data() const { return ptr_; }
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  void release() noexcept;
  std::shared_ptr<Device> device_;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  MemoryKind kind_ = MemoryKind::Device;
};

// Sub-buffers of one device Allocation: add() or place() every buffer first (offsets aligned to 256
// bytes), then commit() allocates once; pointers are valid from then on. No allocation after commit().
class Arena {
 public:
  static constexpr size_t kAlign = 256;
  // Reserves `bytes` and returns the buffer's offset. Throws Internal after commit().
  size_t add(size_t bytes);
  template <typename T>
  size_t add_array(int64_t n) { return add(sizeof(T) * static_cast<size_t>(n)); }
  // Reserves n values of T; commit() sets *ptr to their address (ptr must stay valid until then).
  template <typename T>
  void place(T** ptr, int64_t n) {
    places_.push_back({reinterpret_cast<void**>(ptr), add_array<T>(n)});
  }
  void commit(const std::shared_ptr<Device>& device);
  template <typename T>
  T* at(size_t offset) const { return reinterpret_cast<T*>(static_cast<char*>(memory_.data()) + offset); }
  size_t bytes() const { return size_; }

 private:
  struct Place {
    void** ptr;
    size_t offset;
  };
  size_t size_ = 0;
  std::vector<Place> places_;
  Allocation memory_;
};

// A recorded sequence of device work (a CUDA graph, or the sim's enqueue function), replayed by
// Stream::launch.
class Graph {
 public:
  Graph() = default;
  ~Graph();
  Graph(Graph&& o) noexcept;
  Graph& operator=(Graph&& o) noexcept;
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  bool empty() const { return exec_ == nullptr && !replay_; }

 private:
  friend class Stream;
  void release();
  void* exec_ = nullptr;          // cudaGraphExec_t
  std::function<void()> replay_;  // sim
  mutable std::vector<uint64_t> trace_;  // sim: hashes of the first replay's calls
};

class Device : public std::enable_shared_from_this<Device> {
 public:
  // "cuda" (first visible GPU) or "cuda-sim". Throws DeviceError when CUDA is not built in or
  // no device is usable, InvalidArgument on another name.
  static std::shared_ptr<Device> open(const std::string& name);

  bool simulated() const { return kind_ == DeviceKind::Sim; }
  // "cuda" or "cuda-sim".
  std::string name() const { return simulated() ? "cuda-sim" : "cuda"; }
  // e.g. "NVIDIA H100 80GB HBM3, sm_90, 79.1 GiB" or "CPU twins of the CUDA kernels (cuda-sim)".
  const std::string& description() const { return description_; }
  // Whether the fp8 products run (sm_89+ device and library; always in the sim).
  bool fp8_supported() const;
  // Streaming multiprocessors (8 for the sim): sizes split-K grids.
  int sm_count() const { return sm_count_; }
  // Sim only: whether p lies inside a live allocation of this kind (always true on "cuda").
  bool holds(const void* p, MemoryKind kind) const;

 private:
  explicit Device(DeviceKind kind);
  friend class Allocation;
  void* allocate(size_t bytes, MemoryKind kind) const;
  void free(void* ptr, MemoryKind kind) const noexcept;

  DeviceKind kind_;
  int sm_count_ = 8;
  std::string description_;
  // Sim: live allocations by start address -> (bytes, kind), for holds().
  mutable std::mutex live_mutex_;
  mutable std::map<uintptr_t, std::pair<size_t, MemoryKind>> live_;
};

// An in-order queue of device work (a cudaStream_t; the sim runs everything at once). Each
// decoder state owns one, so sessions (and a session's listening and speaking models) run
// concurrently; a Stream is used by one thread at a time.
class Stream {
 public:
  explicit Stream(std::shared_ptr<Device> device);  // throws DeviceError
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  const Device& device() const { return *device_; }
  bool simulated() const { return device_->simulated(); }
  cudaStream_t get() const { return stream_; }

  // Copies in order with the kernels (asynchronous for pinned host memory).
  void upload(void* dst, const void* src, size_t bytes) const { copy(dst, src, bytes, Copy::ToDevice); }
  void download(void* dst, const void* src, size_t bytes) const { copy(dst, src, bytes, Copy::ToHost); }
  void copy_on_device(void* dst, const void* src, size_t bytes) const { copy(dst, src, bytes, Copy::OnDevice); }
  void memset(void* dst, int value, size_t bytes) const;
  // Waits for the stream; throws DeviceError on a failure reported by earlier asynchronous work.
  void sync() const;

  // Records what `enqueue` puts on this stream (cudaStreamBeginCapture .. EndCapture, then
  // instantiate); in the sim, keeps `enqueue` to run at each launch. Nothing runs now.
  Graph capture(const std::function<void()>& enqueue) const;
  void launch(const Graph& graph) const;

  // Throws DeviceError naming the kernel when status != 0 (used by MINMO_DEVICE_CALL).
  void check_kernel(const char* kernel, int status) const;
  // Sim (MINMO_DEVICE_CALL): checks that every non-null pointer argument is in a device
  // allocation (else Internal naming the kernel and the argument), records the call in a
  // replay's trace, and queues twin(args...) with the argument values as they are now.
  template <typename Twin, typename... Args>
  void enqueue_twin(const char* kernel, Twin twin, Args... args) const {
    int index = 0;
    (check_kernel_pointer(kernel, index++, args), ...);
    if (trace_ != nullptr) record(kernel, {arg_bits(args)...});
    queue_.push_back([this, kernel, twin, args...] { check_kernel(kernel, twin(args...)); });
  }

 private:
  enum class Copy { ToDevice, ToHost, OnDevice };
  void copy(void* dst, const void* src, size_t bytes, Copy kind) const;
  // Sim: appends a hash of the call to the running replay's trace (no-op outside a replay).
  void record(const char* what, std::initializer_list<uint64_t> values) const;
  // An argument's value as 64 bits for the trace (a struct: a hash of its bytes).
  template <typename T>
  static uint64_t arg_bits(const T& arg) {
    static_assert(std::is_trivially_copyable_v<T>, "kernel arguments are plain values");
    if constexpr (std::is_pointer_v<T>) {
      return reinterpret_cast<uintptr_t>(arg);
    } else if constexpr (std::is_integral_v<T> || std::is_enum_v<T>) {
      return static_cast<uint64_t>(arg);
    } else {
      uint64_t h = 1469598103934665603ULL;
      const auto* b = reinterpret_cast<const unsigned char*>(&arg);
      for (size_t i = 0; i < sizeof(T); ++i) h = (h ^ b[i]) * 1099511628211ULL;
      return h;
    }
  }
  template <typename T>
  void check_kernel_pointer(const char* kernel, int index, const T& arg) const {
    if constexpr (std::is_pointer_v<T>) {
      if (arg != nullptr) require_device(kernel, index, arg);
    }
  }
  // Throws Internal unless p is in a device allocation ("kernel <name> argument <index>").
  void require_device(const char* what, int index, const void* p) const;
  // Sim: runs the queued work in order (the queue is empty afterwards, also when a task throws).
  void drain() const;
  std::shared_ptr<Device> device_;
  cudaStream_t stream_ = nullptr;
  mutable std::vector<std::function<void()>> queue_;  // sim: work not run yet
  mutable bool capturing_ = false;                  // sim: inside a graph replay
  mutable std::vector<uint64_t>* trace_ = nullptr;  // sim: the running replay's trace
};

// Whether this build has the CUDA backend (compiled with the CUDA toolkit).
bool cuda_built();

}  // namespace cuda
}  // namespace minmo

#if MINMO_WITH_CUDA
#define MINMO_DEVICE_CALL(stream, name, ...)                                        \
  ((stream).simulated() ? (stream).enqueue_twin(#name, &minmo_##name##_cpu, __VA_ARGS__) \
                        : (stream).check_kernel(#name, minmo_##name(__VA_ARGS__, (stream).get())))
#else
#define MINMO_DEVICE_CALL(stream, name, ...) (stream).enqueue_twin(#name, &minmo_##name##_cpu, __VA_ARGS__)
#endif
