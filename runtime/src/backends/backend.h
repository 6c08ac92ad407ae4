// Which backend runs a module: the device names a Runtime accepts and the loaders that pick the
// CPU or the CUDA implementation of a module for a device.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "backends/cuda/device.h"
#include "core/safetensors.h"
#include "modules/qwen2_decoder.h"

namespace minmo {
namespace cuda {
struct SampleLoop;
}

// null for "cpu"; the CUDA backend's device for "cuda" and "cuda-sim" (cuda::Device::open).
// Throws InvalidArgument on an unknown name, DeviceError when the device is unusable.
std::shared_ptr<cuda::Device> open_device(const std::string& name);

// The Qwen2 decoder on `device` (null: the CPU model) with its logits head. A shape the CUDA
// kernels do not run (cuda::CudaQwen2::unsupported) is a BundleError, or, when `cpu_fallback` is
// given, loads on the CPU and stores the reason there. loop: on the CUDA backend, a device sample
// loop for the model (cuda::CudaQwen2::load); ignored on the CPU.
std::shared_ptr<const Qwen2Decoder> load_qwen2_decoder(const WeightStore& weights, const nlohmann::json& config,
                                                       const std::shared_ptr<cuda::Device>& device,
                                                       const Qwen2Head& head = {}, std::string* cpu_fallback = nullptr,
                                                       const cuda::SampleLoop* loop = nullptr);

}  // namespace minmo
