// `minmo_cuda_check decoder`: the runtime's Qwen2 decoder on a device, checked against the CPU
// backend and timed.
//
//   minmo_cuda_check decoder --bundle DIR [--module llm|voice_lm]
//                                             a bundle's LLM (any quant mode) or voice LM (body and
//                                             speech head); only the manifest and that module's
//                                             weights file need to be there
//   minmo_cuda_check decoder --size 7b|voice-0.5b|small
//                                             random fp32 weights in memory: Qwen2.5-7B (MinMo's LLM),
//                                             CosyVoice2-0.5B's voice LM (Qwen2.5-0.5B body and the
//                                             6564-wide speech head) or a small LLM
// Options: --device cuda|cuda-sim (default cuda), --prefill ROWS (9), --ctx 128,1024 (decode contexts),
// --steps N (decode steps timed per context, 32), --long-prefill ROWS (also time a prompt of that
// many rows: 64-row chunks through the prefill GEMM; 0: off, the default), --fused 0|1|both (decode-step kernels; default:
// the backend's choice, see CudaQwen2::fused_step; both: two device copies, each timed), --no-check,
// --blocks N (voice LM: interleave blocks timed per context, 20), --json OUT.
//
// Voice LM (voice_block): a 5:15 interleave block as a session runs it. At each context, the block's
// pending rows (a speech embedding + 5 text vectors) are prefilled and the 15 speech tokens drawn by
// the device loop (one graph replay: sample on the device, gather, decode step, head; VoiceLM::
// sample_block), timed as "block" (prefill + loop, host copies included) and "loop" (the replay
// alone); and the same block by the per-step path (15 x: decode-step graph, logits to the host,
// ras_sample) as "per_step". Check: the loop's 15 tokens and generator state equal the per-step
// path's on the same device (its CPU ras_sample on the device's logits); exit status 1 otherwise.
//
// Check: the same random embeddings (a prefill of --prefill rows in chunks, 2 decode steps, a chunk
// of 24 rows (the prefill GEMM), 2 decode steps) on
// the device and on the CPU backend; exit status 1 when the logits differ by more than 5% (relative
// L2), as bf16 activations allow. Timing: the prefill (end of speech -> first logits for a prompt
// suffix of that many rows) and decode steps at each context: each forward() call, host copies and
// synchronisation included, as a session sees it. Bytes per step: the device weights plus the KV
// cache read at that context.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tools/tools.h"

#include "backends/backend.h"
#include "backends/cuda/qwen2_cuda.h"
#include "core/manifest.h"
#include "core/safetensors.h"
#include "modules/voice_lm.h"

using minmo::Tensor;
using minmo::tools::fill_random;
using minmo::tools::rel_err;
using nlohmann::json;

namespace {

json size_config(const std::string& size) {
  if (size == "7b")  // Qwen2.5-7B
    return {{"vocab_size", 152064}, {"hidden_size", 3584}, {"intermediate_size", 18944}, {"num_hidden_layers", 28},
            {"num_attention_heads", 28}, {"num_key_value_heads", 4}, {"head_dim", 128}, {"rope_theta", 1000000.0},
            {"tie_word_embeddings", false}, {"max_position_embeddings", 32768}};
  if (size == "voice-0.5b") return json::object();  // VoiceLMConfig's defaults: CosyVoice2-0.5B
  if (size == "small")
    return {{"vocab_size", 4096}, {"hidden_size", 512}, {"intermediate_size", 1376}, {"num_hidden_layers", 4},
            {"num_attention_heads", 8}, {"num_key_value_heads", 2}, {"head_dim", 64}, {"rope_theta", 10000.0},
            {"tie_word_embeddings", false}, {"max_position_embeddings", 4096}};
  MINMO_THROW(minmo::ErrorCode::InvalidArgument, "--size must be 7b, voice-0.5b or small, got " << size);
}

// A Qwen2 decoder's tensors; with `voice`, a voice LM's: the body without a text head, plus its
// sos/task table, speech embedding and speech head of n_speech rows.
minmo::WeightStore random_weights(const minmo::Qwen2Config& c, int64_t n_speech = 0) {
  minmo::tools::RandomTensors r("random weights", 1);
  auto add = [&r](const std::string& name, std::vector<int64_t> shape, float mean, float std) {
    r.add(name, std::move(shape), mean, std);
  };
  const int64_t H = c.hidden_size, I = c.intermediate_size, D = c.head_dim;
  const int64_t q = c.num_attention_heads * D, kv = c.num_key_value_heads * D;
  add("model.embed_tokens.weight", {c.vocab_size, H}, 0.f, c.tie_word_embeddings ? 0.05f : 1.f);
  add("model.norm.weight", {H}, 1.f, 0.1f);
  if (!c.tie_word_embeddings) add("lm_head.weight", {c.vocab_size, H}, 0.f, 0.02f);
  if (n_speech > 0) {
    add("llm_embedding.weight", {2, H}, 0.f, 1.f);
    add("speech_embedding.weight", {n_speech, H}, 0.f, 1.f);
    add("llm_decoder.weight", {n_speech, H}, 0.f, 0.02f);
    add("llm_decoder.bias", {n_speech}, 0.f, 0.1f);
  }
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {H}, 1.f, 0.1f);
    add(p + "post_attention_layernorm.weight", {H}, 1.f, 0.1f);
    add(p + "self_attn.q_proj.weight", {q, H}, 0.f, 0.02f);
    add(p + "self_attn.k_proj.weight", {kv, H}, 0.f, 0.02f);
    add(p + "self_attn.v_proj.weight", {kv, H}, 0.f, 0.02f);
    add(p + "self_attn.q_proj.bias", {q}, 0.f, 0.1f);
    add(p + "self_attn.k_proj.bias", {kv}, 0.f, 0.1f);
    add(p + "self_attn.v_proj.bias", {kv}, 0.f, 0.1f);
    add(p + "self_attn.o_proj.weight", {H, q}, 0.f, 0.02f);
    add(p + "mlp.gate_proj.weight", {I, H}, 0.f, 0.02f);
    add(p + "mlp.up_proj.weight", {I, H}, 0.f, 0.02f);
    add(p + "mlp.down_proj.weight", {H, I}, 0.f, 0.02f);
  }
  return r.store();
}

// Rows of schedule_logits after the prefill: 2 single steps, a chunk that takes the prefill GEMM
// (CudaQwen2::prefill_products), 2 single steps.
constexpr int64_t kGemmCheckRows = 24;
constexpr int64_t kAfterPrefill = 4 + kGemmCheckRows;

// The logits of a fixed schedule (prefill in chunks of 5 and the rest, then the rows above). Their
// width is the head's: vocab_size for an LLM, the speech head's for a voice LM's body.
Tensor schedule_logits(const minmo::Qwen2Decoder& m, const Tensor& embeds, int64_t prefill) {
  const int64_t H = m.hidden_size(), T = embeds.rows();
  auto s = m.new_state(static_cast<int>(T));
  Tensor out, lg;
  int64_t at = 0;
  for (int64_t n : {std::min<int64_t>(5, prefill), prefill - std::min<int64_t>(5, prefill), int64_t(1), int64_t(1),
                    kGemmCheckRows, int64_t(1), int64_t(1)}) {
    if (n == 0) continue;
    m.forward(*s, embeds.ptr() + at * H, n, nullptr, &lg, false);
    MINMO_CHECK(lg.shape.size() == 2 && lg.shape[0] == n, minmo::ErrorCode::Internal,
                "forward gave logits " << minmo::detail::shape_str(lg.shape) << " for " << n << " rows");
    const int64_t V = lg.shape[1];
    if (out.shape.empty()) out = Tensor({T, V});
    MINMO_CHECK(out.shape[1] == V, minmo::ErrorCode::Internal, "logits width changed: " << V << " vs " << out.shape[1]);
    std::memcpy(out.row(at), lg.ptr(), sizeof(float) * n * V);
    at += n;
  }
  return out;
}

// The module's decoder on `device` (null: CPU): the LLM, or a voice LM's body with its speech head
// (the returned pointer keeps the whole VoiceLM alive; *voice receives it).
std::shared_ptr<const minmo::Qwen2Decoder> load_decoder(const std::string& module, const minmo::WeightStore& w,
                                                        const json& config,
                                                        const std::shared_ptr<minmo::cuda::Device>& device,
                                                        std::shared_ptr<const minmo::VoiceLM>* voice = nullptr) {
  if (module == "llm") return minmo::load_qwen2_decoder(w, config, device);
  const auto lm = minmo::VoiceLM::load(w, config, device);
  if (voice) *voice = lm;
  return std::shared_ptr<const minmo::Qwen2Decoder>(lm, &lm->body());
}

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) out.push_back(std::stoll(item));
  return out;
}

json time_decoder(const minmo::Qwen2Decoder& m, const Tensor& embeds, int64_t prefill, int64_t steps,
                  const std::vector<int64_t>& ctxs, int64_t long_prefill);
json voice_block(const minmo::VoiceLM& lm, const Tensor& embeds, int64_t blocks, const std::vector<int64_t>& ctxs,
                 int& rc);

}  // namespace

namespace minmo {
namespace tools {

int decoder_check(int argc, char** argv) {
  std::string bundle, size, module = "llm", device = "cuda", json_out;
  int64_t prefill = 9, steps = 32, long_prefill = 0, blocks = 20;
  std::vector<int64_t> ctxs = {128, 1024};
  bool check = true;
  std::string fused;
  Args args(argc, argv);
  while (args.more()) {
    const std::string a = args.flag();
    auto next = [&] { return args.value(a); };
    if (a == "--bundle") bundle = next();
    else if (a == "--size") size = next();
    else if (a == "--module") module = next();
    else if (a == "--device") device = next();
    else if (a == "--prefill") prefill = std::stoll(next());
    else if (a == "--steps") steps = std::stoll(next());
    else if (a == "--long-prefill") long_prefill = std::stoll(next());
    else if (a == "--blocks") blocks = std::stoll(next());
    else if (a == "--ctx") ctxs = parse_list(next());
    else if (a == "--json") json_out = next();
    else if (a == "--no-check") check = false;
    else if (a == "--fused") fused = next();
    else MINMO_THROW(minmo::ErrorCode::InvalidArgument, "unknown argument " << a << " (see the file's header)");
  }
  MINMO_CHECK(bundle.empty() != size.empty(), minmo::ErrorCode::InvalidArgument, "give --bundle DIR or --size S");
  MINMO_CHECK(prefill >= 1 && steps >= 1 && blocks >= 1 && long_prefill >= 0, minmo::ErrorCode::InvalidArgument,
              "--prefill, --steps and --blocks must be >= 1, --long-prefill >= 0");
  MINMO_CHECK(fused.empty() || fused == "0" || fused == "1" || fused == "both", minmo::ErrorCode::InvalidArgument,
              "--fused must be 0, 1 or both");

  const auto dev = minmo::open_device(device);
  MINMO_CHECK(dev != nullptr, minmo::ErrorCode::InvalidArgument, "--device must be cuda or cuda-sim");
  MINMO_CHECK(module == "llm" || module == "voice_lm", minmo::ErrorCode::InvalidArgument,
              "--module must be llm or voice_lm");
  json config;
  minmo::WeightStore weights;
  double t0 = now_ms();
  if (!bundle.empty()) {
    const minmo::Manifest man = minmo::load_manifest(bundle, false);  // only one module's file is needed
    const minmo::ModuleEntry& e = man.module(module);
    config = e.config;
    weights = minmo::WeightStore::open(e.weights_path);
  } else {
    config = size_config(size);
    if (size == "voice-0.5b") {
      module = "voice_lm";
      const minmo::VoiceLMConfig vc = minmo::VoiceLMConfig::from_json(config);
      weights = random_weights(vc.body, vc.speech_token_size + 3);
    } else {
      module = "llm";
      weights = random_weights(minmo::Qwen2Config::from_json(config));
    }
  }
  const double t_weights = now_ms() - t0;
  t0 = now_ms();
  // The device models first: the CPU model repacks the fp32 weights in place when it loads. A voice
  // LM is checked through its body with the speech head (VoiceLM::body()).
  std::vector<std::shared_ptr<const minmo::Qwen2Decoder>> variants;
  std::vector<std::shared_ptr<const minmo::VoiceLM>> voices;  // module voice_lm: the LM of each variant
  for (const char* f : {"0", "1"}) {
    if (fused != "both" && fused != f && !(fused.empty() && variants.empty())) continue;
    if (!fused.empty()) setenv("MINMO_CUDA_FUSED", fused == "both" ? f : fused.c_str(), 1);
    voices.emplace_back();
    variants.push_back(load_decoder(module, weights, config, dev, &voices.back()));
    if (fused != "both") break;
  }
  const auto& gpu = variants.front();
  const double t_upload = (now_ms() - t0) / static_cast<double>(variants.size());
  const auto& cq = dynamic_cast<const minmo::cuda::CudaQwen2&>(*gpu);
  const minmo::Qwen2Config& c = gpu->config();
  const int64_t H = c.hidden_size;
  std::cerr << "decoder: " << c.num_hidden_layers << " layers, hidden " << H << ", " << cq.weight_format()
            << (cq.fused_step() ? ", fused" : ", unfused") << " decode step, prefill products: "
            << cq.prefill_products() << ", "
            << (cq.weight_bytes() / 1e9) << " GB on " << dev->description() << " (load " << t_weights / 1e3
            << " s, upload " << t_upload / 1e3 << " s)\n";

  json report = {{"device", device}, {"device_info", dev->description()}, {"config", c.to_json()},
                 {"weight_format", cq.weight_format()}, {"weight_bytes", cq.weight_bytes()},
                 {"prefill_products", cq.prefill_products()},
                 {"source", bundle.empty() ? "random weights (" + size + ")" : bundle + " (" + module + ")"},
                 {"upload_s", t_upload / 1e3}};
  const int64_t max_ctx = *std::max_element(ctxs.begin(), ctxs.end());
  Tensor embeds({std::max<int64_t>({max_ctx + steps, prefill + kAfterPrefill, long_prefill}), H});
  fill_random(embeds, 99, 0.f, 1.f);

  int rc = 0;
  if (check) {  // every variant against the CPU backend
    const int64_t rows = prefill + kAfterPrefill;
    const Tensor sub({rows, H}, std::vector<float>(embeds.data.begin(), embeds.data.begin() + rows * H));
    std::vector<Tensor> got;
    for (const auto& v : variants) got.push_back(schedule_logits(*v, sub, prefill));
    const auto cpu = load_decoder(module, weights, config, nullptr);
    const Tensor want = schedule_logits(*cpu, sub, prefill);
    for (size_t i = 0; i < variants.size(); ++i) {
      const std::string key = dynamic_cast<const minmo::cuda::CudaQwen2&>(*variants[i]).fused_step() ? "fused" : "unfused";
      const double err = rel_err(got[i], want);
      report["check"][key] = {{"logits_rel_err_vs_cpu", err}, {"tolerance", 0.05}, {"rows", rows}};
      std::cerr << "check (" << key << ") vs CPU backend: logits rel err " << err << (err <= 0.05 ? " (ok)\n" : " (FAILED)\n");
      if (!(err <= 0.05)) rc = 1;
    }
  }

  for (const auto& v : variants) {
    const std::string key = dynamic_cast<const minmo::cuda::CudaQwen2&>(*v).fused_step() ? "fused" : "unfused";
    std::cerr << key << " decode step:\n";
    report["timings"][key] = time_decoder(*v, embeds, prefill, steps, ctxs, long_prefill);
  }
  for (size_t i = 0; i < voices.size() && voices[i]; ++i) {
    const std::string key = dynamic_cast<const minmo::cuda::CudaQwen2&>(*variants[i]).fused_step() ? "fused" : "unfused";
    std::cerr << key << " voice block:\n";
    report["voice_block"][key] = voice_block(*voices[i], embeds, blocks, ctxs, rc);
  }
  write_report(report, json_out);
  return rc;
}

}  // namespace tools
}  // namespace minmo

namespace {

using minmo::tools::now_ms;
using minmo::tools::stats;

constexpr double kOrinBytesPerS = 204.8e9;  // Jetson AGX Orin 64GB memory bandwidth (LPDDR5)

// Prefill of `prefill` rows from an empty state, then `steps` decode steps at each context; wall
// times of forward() as a session calls it.
json time_decoder(const minmo::Qwen2Decoder& m, const Tensor& embeds, int64_t prefill, int64_t steps,
                  const std::vector<int64_t>& ctxs, int64_t long_prefill) {
  const auto& cq = dynamic_cast<const minmo::cuda::CudaQwen2&>(m);
  const minmo::Qwen2Config& c = m.config();
  const int64_t H = c.hidden_size;
  const int64_t max_ctx = *std::max_element(ctxs.begin(), ctxs.end());
  json report;
  auto state = m.new_state(static_cast<int>(std::max(max_ctx + steps + prefill, long_prefill)));
  Tensor logits, hidden;
  std::vector<double> pre;
  for (int r = 0; r < 1 + std::max<int64_t>(5, steps / 4); ++r) {
    state->reset();
    const double a = now_ms();
    m.forward(*state, embeds.ptr(), prefill, &hidden, &logits, true);
    if (r > 0) pre.push_back(now_ms() - a);  // the first run captures nothing but loads the kernels
  }
  report["prefill"] = stats(pre);
  report["prefill"]["rows"] = prefill;
  std::cerr << "prefill " << prefill << " rows: p50 " << report["prefill"]["p50_ms"].get<double>() << " ms\n";
  if (long_prefill > 0) {  // a prompt: chunks of 64 rows through the prefill GEMM
    std::vector<double> lp;
    for (int r = 0; r < 4; ++r) {
      state->reset();
      const double a = now_ms();
      m.forward(*state, embeds.ptr(), long_prefill, nullptr, &logits, true);
      if (r > 0) lp.push_back(now_ms() - a);
    }
    json l = stats(lp);
    l["rows"] = long_prefill;
    l["tokens_per_s_at_p50"] = static_cast<double>(long_prefill) / (l["p50_ms"].get<double>() / 1e3);
    report["long_prefill"] = l;
    std::cerr << "prefill " << long_prefill << " rows: p50 " << l["p50_ms"].get<double>() << " ms ("
              << l["tokens_per_s_at_p50"].get<double>() << " tokens/s)\n";
  }
  const size_t kv_row = static_cast<size_t>(c.num_hidden_layers * 2 * c.num_key_value_heads * c.head_dim * 2);
  for (int64_t ctx : ctxs) {
    state->reset();
    for (int64_t at = 0; at < ctx; at += 8)
      m.forward(*state, embeds.ptr() + at * H, std::min<int64_t>(8, ctx - at), nullptr, nullptr);
    std::vector<double> ms;
    for (int64_t i = 0; i <= steps; ++i) {
      const double a = now_ms();
      m.forward(*state, embeds.ptr() + (ctx + i) * H, 1, &hidden, &logits, true);
      if (i > 0) ms.push_back(now_ms() - a);  // step 0 captures the graph
    }
    json s = stats(ms);
    const double bytes = static_cast<double>(cq.weight_bytes()) + static_cast<double>(kv_row) * (ctx + steps / 2);
    s["bytes_per_step"] = bytes;
    s["gb_per_s_at_p50"] = bytes / (s["p50_ms"].get<double>() / 1e3) / 1e9;
    s["orin_floor_ms"] = bytes / kOrinBytesPerS * 1e3;  // reading those bytes once at Jetson AGX Orin's peak
    report["decode"][std::to_string(ctx)] = s;
    std::cerr << "decode at ctx " << ctx << ": p50 " << s["p50_ms"].get<double>() << " ms, p99 "
              << s["p99_ms"].get<double>() << " ms, " << s["gb_per_s_at_p50"].get<double>() << " GB/s; Orin floor "
              << s["orin_floor_ms"].get<double>() << " ms\n";
  }
  return report;
}

// One interleave block at the state's end: 6 pending rows (a speech embedding, 5 text vectors from
// embeds) prefilled, then the 15 tokens by the device loop (device) or per step on the host.
struct BlockRun {
  std::vector<int64_t> tokens;
  uint64_t rng;
  double block_ms, loop_ms;
};

BlockRun run_block(const minmo::VoiceLM& lm, minmo::DecoderState& state, const Tensor& embeds, int64_t row0,
                   std::vector<int64_t> history, uint64_t seed, bool device) {
  const minmo::VoiceLMConfig& c = lm.config();
  const int64_t H = lm.hidden_size(), S = c.speech_ratio;
  std::vector<float> pending(lm.speech_embedding(history.empty() ? 0 : history.back()),
                             lm.speech_embedding(history.empty() ? 0 : history.back()) + H);
  pending.insert(pending.end(), embeds.row(row0), embeds.row(row0) + c.text_ratio * H);
  minmo::SplitMix64 rng(seed);
  Tensor logits;
  BlockRun r;
  r.tokens.resize(static_cast<size_t>(S));
  const double a = now_ms();
  lm.forward(state, pending.data(), static_cast<int64_t>(pending.size()) / H, logits, true);
  const double b = now_ms();
  if (device) {
    lm.sample_block(state, rng, history, r.tokens.data());
  } else {
    for (int64_t i = 0; i < S; ++i) {
      if (i > 0) lm.forward(state, lm.speech_embedding(r.tokens[i - 1]), 1, logits, true);
      r.tokens[i] = minmo::ras_sample(logits.ptr(), c.speech_token_size, history, c, rng);
      history.push_back(r.tokens[i]);
    }
  }
  r.block_ms = now_ms() - a;
  r.loop_ms = now_ms() - b;
  r.rng = rng.state();
  return r;
}

json voice_block(const minmo::VoiceLM& lm, const Tensor& embeds, int64_t blocks, const std::vector<int64_t>& ctxs,
                 int& rc) {
  json report;
  if (!lm.block_on_device()) {
    report["skipped"] = "no device loop: " + lm.block_loop_note();
    std::cerr << "voice block: " << report["skipped"].get<std::string>() << "\n";
    return report;
  }
  const minmo::VoiceLMConfig& c = lm.config();
  const int64_t H = lm.hidden_size(), max_ctx = *std::max_element(ctxs.begin(), ctxs.end());
  auto state = lm.body().new_state(static_cast<int>(max_ctx + 2 * (c.text_ratio + c.speech_ratio)));
  int mismatches = 0;
  for (int64_t ctx : ctxs) {
    std::vector<double> block_ms, loop_ms, step_ms;
    for (int64_t r = 0; r <= blocks; ++r) {
      // history: recent tokens with repeats, so that RAS redraws happen as in speech
      std::vector<int64_t> history;
      for (int64_t i = 0; i < c.win_size; ++i) history.push_back((r * 7 + i % 3) % c.speech_token_size);
      BlockRun runs[2];
      for (int device = 1; device >= 0; --device) {
        state->reset();
        for (int64_t at = 0; at < ctx; at += 8)  // the context: prefilled in chunks, not timed
          lm.body().forward(*state, embeds.ptr() + at * H, std::min<int64_t>(8, ctx - at), nullptr, nullptr);
        runs[device] = run_block(lm, *state, embeds, (ctx + r) % (embeds.rows() - c.text_ratio), history,
                                 1000 + static_cast<uint64_t>(r), device == 1);
      }
      const bool same = runs[1].tokens == runs[0].tokens && runs[1].rng == runs[0].rng;
      mismatches += !same;
      if (!same && mismatches <= 3) {
        std::cerr << "voice block at ctx " << ctx << ", run " << r << ": device loop tokens differ from per-step:";
        for (size_t i = 0; i < runs[1].tokens.size(); ++i) std::cerr << " " << runs[1].tokens[i] << "/" << runs[0].tokens[i];
        std::cerr << "\n";
      }
      if (r == 0) continue;  // warm-up
      block_ms.push_back(runs[1].block_ms);
      loop_ms.push_back(runs[1].loop_ms);
      step_ms.push_back(runs[0].block_ms);
    }
    json s = {{"block", stats(block_ms)}, {"loop", stats(loop_ms)}, {"per_step", stats(step_ms)}};
    report[std::to_string(ctx)] = s;
    std::cerr << "voice block (" << c.speech_ratio << " tokens) at ctx " << ctx << ": p50 "
              << s["block"]["p50_ms"].get<double>() << " ms (loop " << s["loop"]["p50_ms"].get<double>()
              << " ms), per-step path " << s["per_step"]["p50_ms"].get<double>() << " ms\n";
  }
  const int64_t total = static_cast<int64_t>(ctxs.size()) * (blocks + 1);
  report["check"] = {{"blocks", total}, {"token_mismatches", mismatches}};
  std::cerr << "check voice block: device loop vs per-step tokens, " << mismatches << " of " << total
            << " blocks differ" << (mismatches == 0 ? " (ok)\n" : " (FAILED)\n");
  if (mismatches) rc = 1;
  return report;
}

}  // namespace
