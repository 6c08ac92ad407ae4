// Runtime: bundle loading (manifest -> modules) and offline module execution.
#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>

#include "backends/backend.h"
#include "backends/cuda/qwen2_cuda.h"
#include "core/safetensors.h"
#include "core/tensor.h"
#include "minmo/runtime.h"
#include "streaming/models.h"

namespace minmo {

std::unique_ptr<Session> make_session(std::shared_ptr<const LoadedModels> models, const SessionOptions& opt);
std::unique_ptr<TtsSession> make_tts_session(std::shared_ptr<const LoadedModels> models, const TtsOptions& opt);

namespace {

WeightStore weights_of(const ModuleEntry& e) {
  MINMO_CHECK(!e.weights_path.empty(), ErrorCode::BundleError, "module '" << e.name << "' names no weights file");
  return WeightStore::open(e.weights_path);
}

const Tensor& input(const TensorMap& in, const std::string& module, const char* key) {
  auto it = in.find(key);
  MINMO_CHECK(it != in.end(), ErrorCode::InvalidArgument,
              "module '" << module << "' needs input '" << key << "'");
  return it->second;
}

void expect_matrix(const Tensor& t, const char* key, int64_t width) {
  MINMO_CHECK(t.ndim() == 2 && t.dim(1) == width, ErrorCode::InvalidArgument,
              "input '" << key << "' must have shape [T, " << width << "], got " << t.shape_str());
}

Tensor as_vector(const std::vector<float>& v) { return Tensor({static_cast<int64_t>(v.size())}, v); }

}  // namespace

std::shared_ptr<const LoadedModels> load_models(const std::string& bundle_dir, bool verify_files,
                                                const std::string& device) {
  // The device is opened first: a missing GPU fails before anything is read.
  const std::shared_ptr<cuda::Device> gpu = open_device(device);
  auto m = std::make_shared<LoadedModels>();
  m->manifest = load_manifest(bundle_dir, verify_files);
  m->chunk = ChunkSpec::from_json(m->manifest.streaming);
  const ModuleEntry* duplex_entry = nullptr;
  for (const auto& [name, e] : m->manifest.modules) {
    const std::string& a = e.arch;
    // Weight-only quantized linears (int8 / int4 / fp8) are read by load_linear; only the Qwen2
    // LLM's are quantized by the exporter.
    MINMO_CHECK(e.dtype == "float32" && (e.quant == "none" || a == "qwen2"), ErrorCode::BundleError,
                "module '" << name << "': dtype " << e.dtype << " / quant " << e.quant
                           << " is not supported by the CPU backend (float32; quantized: qwen2 only)");
    if (a == "kaldi_fbank") m->fbank = FbankFrontend::load(weights_of(e), e.config);
    else if (a == "whisper_logmel") m->whisper = WhisperFrontend::load(weights_of(e), e.config);
    else if (a == "sensevoice_small") m->small = SenseVoiceSmallEncoder::load(weights_of(e), e.config, m->manifest.streaming);
    else if (a == "sensevoice_large")
      m->large = SenseVoiceLargeEncoder::load(weights_of(e), e.config, m->manifest.streaming, gpu,
                                              &m->cpu_fallbacks[name]);
    else if (a == "projector")
      m->projector = InputProjector::load(weights_of(e), e.config, m->manifest.streaming, gpu, &m->cpu_fallbacks[name]);
    else if (a == "qwen2") m->llm = load_qwen2_decoder(weights_of(e), e.config, gpu, {}, &m->cpu_fallbacks[name]);
    else if (a == "duplex") {
      m->duplex = DuplexPredictor::load(weights_of(e), e.config);
      duplex_entry = &e;
    }
    else if (a == "output_projector") {
      const WeightStore w = weights_of(e);
      if (gpu)  // first: the CPU module repacks the weights in place
        m->output_projector_device = cuda::CudaOutputProjector::load(w, OutputProjectorConfig::from_json(e.config), gpu);
      m->output_projector = OutputProjector::load(w, e.config);
    }
    else if (a == "voice_lm") m->voice_lm = VoiceLM::load(weights_of(e), e.config, gpu, &m->cpu_fallbacks[name]);
    else if (a == "cosyvoice2_flow") m->flow = FlowModel::load(weights_of(e), e.config, gpu, &m->cpu_fallbacks[name]);
    else if (a == "cosyvoice2_hift") m->hift = HiftModel::load(weights_of(e), e.config, gpu, &m->cpu_fallbacks[name]);
    else MINMO_THROW(ErrorCode::BundleError, "module '" << name << "' has unknown architecture '" << a << "'");
  }
  // The duplex predictor follows the LLM, whose hidden states it reads where they are: on the device
  // when the LLM runs there (uploaded from a fresh view of its file: the CPU predictor repacked its own).
  if (gpu && duplex_entry) {
    std::string& why = m->cpu_fallbacks[duplex_entry->name];
    why = cuda::CudaDuplex::unsupported(m->duplex->config());
    if (why.empty() && !dynamic_cast<const cuda::CudaQwen2*>(m->llm.get()))
      why = "the LLM runs on the CPU (the device predictor reads the LLM's hidden states on the device)";
    if (why.empty()) m->duplex_device = cuda::CudaDuplex::load(weights_of(*duplex_entry), m->duplex->config(), gpu);
  }
  for (auto it = m->cpu_fallbacks.begin(); it != m->cpu_fallbacks.end();)
    it = it->second.empty() ? m->cpu_fallbacks.erase(it) : std::next(it);
  return m;
}

struct Runtime::Impl {
  std::shared_ptr<const LoadedModels> models;
};

Runtime::Runtime(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
Runtime::~Runtime() = default;

std::shared_ptr<Runtime> Runtime::open(const std::string& bundle_dir, const std::string& device, bool verify_files) {
  auto impl = std::make_shared<Impl>();
  impl->models = load_models(bundle_dir, verify_files, device);
  return std::shared_ptr<Runtime>(new Runtime(impl));
}

std::string Runtime::manifest_json() const { return impl_->models->manifest.raw.dump(); }

std::map<std::string, std::string> Runtime::cpu_fallbacks() const { return impl_->models->cpu_fallbacks; }

std::map<std::string, std::string> Runtime::module_devices() const {
  const LoadedModels& m = *impl_->models;
  std::map<std::string, std::string> out;
  for (const auto& [name, e] : m.manifest.modules) {
    if (e.arch == "qwen2" && m.llm) out[name] = m.llm->device();
    else if (e.arch == "voice_lm" && m.voice_lm) out[name] = m.voice_lm->body().device();
    else if (e.arch == "sensevoice_large" && m.large) out[name] = m.large->device();
    else if (e.arch == "projector" && m.projector) out[name] = m.projector->device();
    else if (e.arch == "duplex" && m.duplex_device) out[name] = m.duplex_device->device();
    else if (e.arch == "output_projector" && m.output_projector_device) out[name] = m.output_projector_device->device();
    else if (e.arch == "cosyvoice2_hift" && m.hift) out[name] = m.hift->device();
    else if (e.arch == "cosyvoice2_flow" && m.flow) out[name] = m.flow->device();
    else out[name] = "cpu";
  }
  return out;
}

std::vector<std::string> Runtime::module_names() const {
  std::vector<std::string> out;
  for (const auto& kv : impl_->models->manifest.modules) out.push_back(kv.first);
  return out;
}

TensorMap Runtime::run_module(const std::string& name, const TensorMap& in) const {
  const LoadedModels& m = *impl_->models;
  const ModuleEntry& e = m.manifest.module(name);
  TensorMap out;
  if (e.arch == "kaldi_fbank" || e.arch == "whisper_logmel") {
    const Tensor& w = input(in, name, "waveform");
    MINMO_CHECK(w.ndim() == 1, ErrorCode::InvalidArgument, "input 'waveform' must be 1-D, got " << w.shape_str());
    out["features"] = m.fbank ? m.fbank->compute(w.ptr(), w.numel()) : m.whisper->compute(w.ptr(), w.numel());
  } else if (e.arch == "sensevoice_small") {
    const Tensor& f = input(in, name, "features");
    const Tensor& q = input(in, name, "query_ids");
    std::vector<int64_t> ids(q.data.begin(), q.data.end());
    auto r = m.small->run(f, ids);
    out["encoder_out"] = std::move(r.encoder_out);
    out["ctc_logits"] = std::move(r.ctc_logits);
  } else if (e.arch == "sensevoice_large") {
    out["encoder_out"] = m.large->run(input(in, name, "features"));
  } else if (e.arch == "projector") {
    out["tokens"] = m.projector->run(input(in, name, "frames"));
  } else if (e.arch == "qwen2") {
    const Tensor& x = input(in, name, "embeds");
    expect_matrix(x, "embeds", m.llm->hidden_size());
    auto state = m.llm->new_state(static_cast<int>(x.rows()));
    Tensor hidden, logits;
    m.llm->forward(*state, x, &hidden, &logits, false);
    out["logits"] = std::move(logits);
    out["hidden"] = std::move(hidden);
  } else if (e.arch == "duplex") {
    const Tensor& h = input(in, name, "hidden");
    expect_matrix(h, "hidden", m.duplex->config().llm_hidden);
    const int64_t cap = std::max<int64_t>(1, h.rows());
    std::vector<float> pt, pb;
    if (m.duplex_device) m.duplex_device->new_state(cap)->push(h.ptr(), h.rows(), h.dim(1), &pt, &pb);
    else m.duplex->push(*m.duplex->new_state(cap), h, &pt, &pb);
    out["p_turn"] = as_vector(pt);
    out["p_barge"] = as_vector(pb);
  } else if (e.arch == "output_projector") {
    const Tensor& embeds = input(in, name, "token_embeds");
    const Tensor& hidden = input(in, name, "hidden");
    out["semantic"] = m.output_projector_device ? m.output_projector_device->run(embeds, hidden)
                                                : m.output_projector->run(embeds, hidden);
  } else if (e.arch == "voice_lm") {
    const Tensor& x = input(in, name, "embeds");
    expect_matrix(x, "embeds", m.voice_lm->hidden_size());
    auto state = m.voice_lm->body().new_state(static_cast<int>(std::max<int64_t>(1, x.rows())));
    Tensor logits;
    m.voice_lm->forward(*state, x.ptr(), x.rows(), logits, false);
    out["logits"] = std::move(logits);
  } else if (e.arch == "cosyvoice2_flow") {
    // offline mel with the streaming semantics the sessions use (15-token chunks, 4 left chunks, seed 0)
    const Tensor& t = input(in, name, "tokens");
    const Tensor& spk = input(in, name, "speaker");
    std::vector<int64_t> ids;
    for (float v : t.data) {
      MINMO_CHECK(v == std::floor(v), ErrorCode::InvalidArgument, "input 'tokens' must hold integer ids");
      ids.push_back(static_cast<int64_t>(v));
    }
    out["mel"] = m.flow->offline(ids, spk.data, {}, {}, 0, 15, 4);
  } else if (e.arch == "cosyvoice2_hift") {
    const Tensor& mel = input(in, name, "mel");
    expect_matrix(mel, "mel", m.hift->config().mel_dim);
    out["audio"] = as_vector(m.hift->synthesize(mel.ptr(), mel.rows(), 0));
  } else {
    MINMO_THROW(ErrorCode::NotFound, "module '" << name << "' (" << e.arch << ") cannot be run");
  }
  return out;
}

std::unique_ptr<Session> Runtime::new_session(const SessionOptions& options) const {
  return make_session(impl_->models, options);
}

std::unique_ptr<TtsSession> Runtime::new_tts_session(const TtsOptions& options) const {
  return make_tts_session(impl_->models, options);
}

}  // namespace minmo
