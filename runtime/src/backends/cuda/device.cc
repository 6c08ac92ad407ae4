#include "backends/cuda/device.h"

#if MINMO_WITH_CUDA
#include <cuda_runtime.h>
#endif

#include <cstdlib>
#include <cstring>
#include <sstream>

namespace minmo {
namespace cuda {

namespace {

#if MINMO_WITH_CUDA
// Throws DeviceError "<what>: <CUDA error name>: <description>" when rc is not cudaSuccess.
void check_cuda(cudaError_t rc, const char* what) {
  if (rc == cudaSuccess) return;
  MINMO_THROW(ErrorCode::DeviceError, "cuda: " << what << ": " << cudaGetErrorName(rc) << ": " << cudaGetErrorString(rc));
}
#endif

void* host_alloc(size_t bytes) {
  void* p = std::aligned_alloc(Arena::kAlign, (bytes + Arena::kAlign - 1) / Arena::kAlign * Arena::kAlign);
  MINMO_CHECK(p != nullptr, ErrorCode::DeviceError, "cuda-sim: cannot allocate " << bytes << " bytes of host memory");
  return p;
}

}  // namespace

bool cuda_built() { return MINMO_WITH_CUDA != 0; }

// ---- Device ------------------------------------------------------------------------------------

Device::Device(DeviceKind kind) : kind_(kind) {}

std::shared_ptr<Device> Device::open(const std::string& name) {
  if (name == "cuda-sim") {
    std::shared_ptr<Device> d(new Device(DeviceKind::Sim));
    d->description_ = "CPU twins of the CUDA kernels (cuda-sim)";
    return d;
  }
  MINMO_CHECK(name == "cuda", ErrorCode::InvalidArgument,
              "unknown device '" << name << "' (expected 'cpu', 'cuda' or 'cuda-sim')");
#if MINMO_WITH_CUDA
  int count = 0;
  const cudaError_t rc = cudaGetDeviceCount(&count);
  MINMO_CHECK(rc == cudaSuccess && count > 0, ErrorCode::DeviceError,
              "device 'cuda': no usable CUDA device ("
                  << (rc == cudaSuccess ? "none visible" : cudaGetErrorString(rc))
                  << "); use device='cpu', or 'cuda-sim' to test the CUDA backend on the CPU");
  std::shared_ptr<Device> d(new Device(DeviceKind::Cuda));
  int ordinal = 0;
  check_cuda(cudaGetDevice(&ordinal), "cudaGetDevice");
  cudaDeviceProp prop{};
  check_cuda(cudaGetDeviceProperties(&prop, ordinal), "cudaGetDeviceProperties");
  const int cc = prop.major * 10 + prop.minor;
  d->sm_count_ = prop.multiProcessorCount;
  MINMO_CHECK(cc >= 80, ErrorCode::DeviceError,
              "device 'cuda': " << prop.name << " is sm_" << cc << "; the kernels need bf16 (sm_80 or newer)");
  std::ostringstream desc;
  desc << prop.name << ", sm_" << cc << ", " << (static_cast<double>(prop.totalGlobalMem) / (1 << 30)) << " GiB";
  d->description_ = desc.str();
  return d;
#else
  MINMO_THROW(ErrorCode::DeviceError,
              "device 'cuda' is not available: this build of minmo-rt has no CUDA backend (build with the CUDA "
              "toolkit, MINMO_CUDA=ON); use device='cpu', or 'cuda-sim' to test the CUDA backend on the CPU");
#endif
}

bool Device::fp8_supported() const {
#if MINMO_WITH_CUDA
  if (!simulated()) return minmo_fp8_supported() != 0;
#endif
  return true;
}

bool Device::holds(const void* p, MemoryKind kind) const {
  if (!simulated()) return true;
  const auto addr = reinterpret_cast<uintptr_t>(p);
  std::lock_guard<std::mutex> lock(live_mutex_);
  auto it = live_.upper_bound(addr);
  if (it == live_.begin()) return false;
  --it;
  return addr < it->first + it->second.first && it->second.second == kind;
}

void* Device::allocate(size_t bytes, MemoryKind kind) const {
  const bool pinned = kind == MemoryKind::PinnedHost;
  if (bytes == 0) bytes = 1;
  if (simulated()) {
    void* p = host_alloc(bytes);
    std::lock_guard<std::mutex> lock(live_mutex_);
    live_[reinterpret_cast<uintptr_t>(p)] = {bytes, kind};
    return p;
  }
#if MINMO_WITH_CUDA
  void* p = nullptr;
  const cudaError_t rc = pinned ? cudaMallocHost(&p, bytes) : cudaMalloc(&p, bytes);
  if (rc != cudaSuccess) {
    cudaGetLastError();  // an allocation failure is not sticky: clear it so later calls work
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    MINMO_THROW(ErrorCode::DeviceError, "cuda: cannot allocate " << (static_cast<double>(bytes) / (1 << 20)) << " MiB of "
                                                                 << (pinned ? "pinned host" : "device") << " memory ("
                                                                 << (static_cast<double>(free_b) / (1 << 20))
                                                                 << " MiB free): " << cudaGetErrorString(rc));
  }
  return p;
#else
  (void)pinned;
  return nullptr;
#endif
}

void Device::free(void* ptr, MemoryKind kind) const noexcept {
  const bool pinned = kind == MemoryKind::PinnedHost;
  if (!ptr) return;
  if (simulated()) {
    {
      std::lock_guard<std::mutex> lock(live_mutex_);
      live_.erase(reinterpret_cast<uintptr_t>(ptr));
    }
    std::free(ptr);
    return;
  }
#if MINMO_WITH_CUDA
  if (pinned) cudaFreeHost(ptr);
  else cudaFree(ptr);
#else
  (void)pinned;
#endif
}

void Stream::require_device(const char* what, int index, const void* p) const {
  MINMO_CHECK(device_->holds(p, MemoryKind::Device), ErrorCode::Internal,
              "cuda-sim: " << what << (index >= 0 ? " argument " : "") << (index >= 0 ? std::to_string(index) : "")
                           << " is not device memory (" << p << "); a GPU would fault on it");
}

void Stream::record(const char* what, std::initializer_list<uint64_t> values) const {
  if (trace_ == nullptr) return;
  uint64_t h = 1469598103934665603ULL;  // FNV-1a over the name and the values
  for (const char* c = what; *c; ++c) h = (h ^ static_cast<uint8_t>(*c)) * 1099511628211ULL;
  for (uint64_t v : values) h = (h ^ v) * 1099511628211ULL;
  trace_->push_back(h);
}

void Stream::copy(void* dst, const void* src, size_t bytes, Copy kind) const {
  if (bytes == 0) return;
  if (simulated()) {
    record("copy", {reinterpret_cast<uintptr_t>(dst), reinterpret_cast<uintptr_t>(src), bytes,
                    static_cast<uint64_t>(kind)});
    const void* host = kind == Copy::ToDevice ? src : kind == Copy::ToHost ? dst : nullptr;
    if (kind != Copy::ToHost) require_device("copy destination", -1, dst);
    if (kind != Copy::ToDevice) require_device("copy source", -1, src);
    if (host != nullptr) {
      const bool pinned = device_->holds(host, MemoryKind::PinnedHost);
      MINMO_CHECK(pinned || !device_->holds(host, MemoryKind::Device), ErrorCode::Internal,
                  "cuda-sim: the host side of a copy is device memory (" << host << ")");
      MINMO_CHECK(pinned || !capturing_, ErrorCode::Internal,
                  "cuda-sim: a copy inside a graph capture uses pageable host memory (" << host
                      << "); CUDA cannot capture it: stage it in a pinned buffer");
    }
    queue_.push_back([dst, src, bytes] { std::memmove(dst, src, bytes); });
    return;
  }
#if MINMO_WITH_CUDA
  const cudaMemcpyKind k = kind == Copy::ToDevice ? cudaMemcpyHostToDevice
                           : kind == Copy::ToHost ? cudaMemcpyDeviceToHost
                                                  : cudaMemcpyDeviceToDevice;
  check_cuda(cudaMemcpyAsync(dst, src, bytes, k, stream_), "copy");
#else
  (void)kind;
#endif
}

void Stream::memset(void* dst, int value, size_t bytes) const {
  if (bytes == 0) return;
  if (simulated()) {
    record("memset", {reinterpret_cast<uintptr_t>(dst), static_cast<uint64_t>(value), bytes});
    require_device("memset", -1, dst);
    queue_.push_back([dst, value, bytes] { std::memset(dst, value, bytes); });
    return;
  }
#if MINMO_WITH_CUDA
  check_cuda(cudaMemsetAsync(dst, value, bytes, stream_), "memset");
#endif
}

void Stream::sync() const {
  MINMO_CHECK(!capturing_, ErrorCode::Internal,
              "cuda backend: stream synchronise inside a graph capture (CUDA invalidates the capture)");
  if (simulated()) {
    drain();
    return;
  }
#if MINMO_WITH_CUDA
  check_cuda(cudaStreamSynchronize(stream_), "stream synchronize");
#endif
}

void Stream::drain() const {
  std::vector<std::function<void()>> work;
  work.swap(queue_);  // a failing task drops what follows it, like a faulted CUDA stream
  for (const auto& task : work) task();
}

Graph Stream::capture(const std::function<void()>& enqueue) const {
  Graph g;
  if (simulated()) {
    g.replay_ = enqueue;
    return g;
  }
#if MINMO_WITH_CUDA
  check_cuda(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "begin graph capture");
  try {
    enqueue();
  } catch (...) {
    cudaGraph_t broken = nullptr;
    cudaStreamEndCapture(stream_, &broken);
    if (broken) cudaGraphDestroy(broken);
    cudaGetLastError();
    throw;
  }
  cudaGraph_t graph = nullptr;
  check_cuda(cudaStreamEndCapture(stream_, &graph), "end graph capture");
  cudaGraphExec_t exec = nullptr;
  const cudaError_t rc = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  check_cuda(rc, "instantiate graph");
  g.exec_ = exec;
#endif
  return g;
}

void Stream::launch(const Graph& graph) const {
  MINMO_CHECK(!graph.empty(), ErrorCode::Internal, "cuda backend: launch of an empty graph");
  if (simulated()) {
    // A replay runs the recorded enqueue under the rules of a capture, and must enqueue exactly
    // what the first replay did: a CUDA graph replays the captured arguments, so an argument
    // computed on the host per call would be frozen on a GPU.
    std::vector<uint64_t> trace;
    capturing_ = true;
    trace_ = &trace;
    try {
      graph.replay_();
    } catch (...) {
      capturing_ = false;
      trace_ = nullptr;
      throw;
    }
    capturing_ = false;
    trace_ = nullptr;
    if (graph.trace_.empty()) {
      graph.trace_ = std::move(trace);
      return;
    }
    size_t i = 0;
    while (i < trace.size() && i < graph.trace_.size() && trace[i] == graph.trace_[i]) ++i;
    MINMO_CHECK(i == trace.size() && i == graph.trace_.size(), ErrorCode::Internal,
                "cuda-sim: a graph replay enqueued different work than its first replay (call "
                    << i << " of " << graph.trace_.size() << " differs); a CUDA graph would replay the first "
                    << "arguments: pass per-call values through device memory");
    return;
  }
#if MINMO_WITH_CUDA
  check_cuda(cudaGraphLaunch(static_cast<cudaGraphExec_t>(graph.exec_), stream_), "graph launch");
#endif
}

void Stream::check_kernel(const char* kernel, int status) const {
  if (status == MINMO_KERNEL_OK) return;
  MINMO_THROW(ErrorCode::DeviceError, device_->name() << ": kernel minmo_" << kernel << " failed: "
                                             << minmo_kernel_status_string(status));
}

// ---- Stream ------------------------------------------------------------------------------------

Stream::Stream(std::shared_ptr<Device> device) : device_(std::move(device)) {
#if MINMO_WITH_CUDA
  if (!simulated()) check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "create stream");
#endif
}

Stream::~Stream() {
  // The sim drops work nobody synchronised on: its buffers may already be freed (a GPU finishes it,
  // as cudaFree waits for the device, but no one can read its results any more).
  queue_.clear();
#if MINMO_WITH_CUDA
  if (stream_) {
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }
#endif
}

// ---- Graph -------------------------------------------------------------------------------------

Graph::~Graph() { release(); }
Graph::Graph(Graph&& o) noexcept : exec_(o.exec_), replay_(std::move(o.replay_)), trace_(std::move(o.trace_)) {
  o.exec_ = nullptr;
}
Graph& Graph::operator=(Graph&& o) noexcept {
  if (this != &o) {
    release();
    exec_ = o.exec_;
    replay_ = std::move(o.replay_);
    trace_ = std::move(o.trace_);
    o.exec_ = nullptr;
  }
  return *this;
}
void Graph::release() {
#if MINMO_WITH_CUDA
  if (exec_) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
#endif
  exec_ = nullptr;
  replay_ = nullptr;
  trace_.clear();
}

// ---- memory ------------------------------------------------------------------------------------

Allocation::Allocation(std::shared_ptr<Device> device, size_t bytes, MemoryKind kind)
    : device_(std::move(device)), ptr_(device_->allocate(bytes, kind)), bytes_(bytes), kind_(kind) {}
Allocation::~Allocation() { release(); }
Allocation::Allocation(Allocation&& o) noexcept
    : device_(std::move(o.device_)), ptr_(o.ptr_), bytes_(o.bytes_), kind_(o.kind_) {
  o.ptr_ = nullptr;
  o.bytes_ = 0;
}
Allocation& Allocation::operator=(Allocation&& o) noexcept {
  if (this != &o) {
    release();
    device_ = std::move(o.device_);
    ptr_ = o.ptr_;
    bytes_ = o.bytes_;
    kind_ = o.kind_;
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}
void Allocation::release() noexcept {
  if (device_ && ptr_) device_->free(ptr_, kind_);
  ptr_ = nullptr;
}

size_t Arena::add(size_t bytes) {
  MINMO_CHECK(memory_.data() == nullptr, ErrorCode::Internal, "cuda backend: Arena::add after commit");
  const size_t offset = size_;
  size_ += (bytes + kAlign - 1) / kAlign * kAlign;
  return offset;
}

void Arena::commit(const std::shared_ptr<Device>& device) {
  memory_ = Allocation(device, size_, MemoryKind::Device);
  for (const Place& p : places_) *p.ptr = at<void>(p.offset);
  places_.clear();
}

}  // namespace cuda
}  // namespace minmo
