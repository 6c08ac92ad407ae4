// The modules of one loaded bundle, immutable and shared by every session of a Runtime.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "audio/fbank_frontend.h"
#include "backends/cuda/duplex_cuda.h"
#include "backends/cuda/output_projector_cuda.h"
#include "audio/whisper_frontend.h"
#include "core/manifest.h"
#include "modules/audio_common.h"
#include "modules/duplex.h"
#include "modules/flow.h"
#include "modules/hift.h"
#include "modules/projector.h"
#include "modules/qwen2.h"
#include "modules/sampling.h"
#include "modules/sensevoice_large.h"
#include "modules/sensevoice_small.h"
#include "modules/voice_lm.h"
#include "modules/flow.h"
#include "modules/hift.h"

namespace minmo {

struct LoadedModels {
  Manifest manifest;
  ChunkSpec chunk;
  std::shared_ptr<const FbankFrontend> fbank;
  std::shared_ptr<const WhisperFrontend> whisper;
  std::shared_ptr<const SenseVoiceSmallEncoder> small;
  std::shared_ptr<const SenseVoiceLargeEncoder> large;
  std::shared_ptr<const InputProjector> projector;
  std::shared_ptr<const Qwen2Decoder> llm;  // on the runtime's device (cpu, cuda)
  std::shared_ptr<const DuplexPredictor> duplex;
  // The predictor on the device, reading the CUDA LLM's hidden states there (null: it runs on the CPU).
  std::shared_ptr<const cuda::CudaDuplex> duplex_device;
  std::shared_ptr<const OutputProjector> output_projector;
  std::shared_ptr<const cuda::CudaOutputProjector> output_projector_device;  // null: it runs on the CPU
  std::shared_ptr<const VoiceLM> voice_lm;
  std::shared_ptr<const FlowModel> flow;   // token2wav
  std::shared_ptr<const HiftModel> hift;
  // Modules asked to run on the GPU that run on the CPU instead, and why (shapes the kernels lack).
  std::map<std::string, std::string> cpu_fallbacks;

  // A SenseVoice-Small encoder with its CTC head and no LLM: the cascade ASR path.
  bool is_ctc() const { return small != nullptr && llm == nullptr; }
  bool has_audio_path() const { return (fbank || whisper) && (small || large) && projector; }
  int max_positions() const { return llm ? static_cast<int>(llm->config().max_position_embeddings) : 0; }
};

// device: "cpu", or "cuda" / "cuda-sim": the LLM, the voice LM, the chunked encoder, the chunked input
// projector, the output projector, the duplex predictor (behind a device LLM) and HiFT's f0 predictor
// and decode on the CUDA backend (every other module, the flow included, on the CPU).
std::shared_ptr<const LoadedModels> load_models(const std::string& bundle_dir, bool verify_files,
                                                const std::string& device = "cpu");

}  // namespace minmo
