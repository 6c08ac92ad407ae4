#include "backends/backend.h"

#include "backends/cuda/qwen2_cuda.h"
#include "modules/qwen2.h"

namespace minmo {

std::shared_ptr<cuda::Device> open_device(const std::string& name) {
  if (name == "cpu") return nullptr;
  return cuda::Device::open(name);
}

std::shared_ptr<const Qwen2Decoder> load_qwen2_decoder(const WeightStore& weights, const nlohmann::json& config,
                                                       const std::shared_ptr<cuda::Device>& device) {
  if (device) return cuda::CudaQwen2::load(weights, config, device);
  return Qwen2Model::load(weights, config);
}

}  // namespace minmo
