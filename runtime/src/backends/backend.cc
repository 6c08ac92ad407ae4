#include "backends/backend.h"

#include "backends/cuda/qwen2_cuda.h"
#include "modules/qwen2.h"

namespace minmo {

std::shared_ptr<cuda::Device> open_device(const std::string& name) {
  if (name == "cpu") return nullptr;
  return cuda::Device::open(name);
}

std::shared_ptr<const Qwen2Decoder> load_qwen2_decoder(const WeightStore& weights, const nlohmann::json& config,
                                                       const std::shared_ptr<cuda::Device>& device,
                                                       const Qwen2Head& head, std::string* cpu_fallback,
                                                       const cuda::SampleLoop* loop) {
  if (device && cpu_fallback) {
    *cpu_fallback = cuda::CudaQwen2::unsupported(Qwen2Config::from_json(config));
    if (!cpu_fallback->empty()) return Qwen2Model::load(weights, config, head);
  }
  if (device) return cuda::CudaQwen2::load(weights, config, device, head, loop);
  return Qwen2Model::load(weights, config, head);
}

}  // namespace minmo
