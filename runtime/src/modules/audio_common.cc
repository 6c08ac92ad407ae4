#include "modules/audio_common.h"

#include "backends/cpu/parallel.h"

#include <algorithm>
#include <cstring>

#include "backends/cpu/ops.h"
#include "minmo/status.h"

namespace minmo {

using nlohmann::json;

ConfigReader::ConfigReader(const json& config, std::string what) : config_(config), what_(std::move(what)) {
  MINMO_CHECK(config_.is_object() || config_.is_null(), ErrorCode::BundleError,
              what_ << ": config must be a JSON object, got " << config_.type_name());
}

const json* ConfigReader::find(const std::string& key) {
  known_.insert(key);
  if (!config_.is_object()) return nullptr;
  auto it = config_.find(key);
  return it == config_.end() ? nullptr : &*it;
}

int64_t ConfigReader::get_int(const std::string& key, int64_t def) {
  const json* v = find(key);
  if (!v) return def;
  if (v->is_number_integer()) return v->get<int64_t>();
  // An integral float (e.g. 16000.0) is accepted.
  if (v->is_number_float()) {
    const double d = v->get<double>();
    if (d == static_cast<double>(static_cast<int64_t>(d))) return static_cast<int64_t>(d);
  }
  MINMO_THROW(ErrorCode::BundleError, what_ << ": config key '" << key << "' must be an integer, got " << v->dump());
}

namespace {
std::vector<int64_t> int_list(const json& v, const std::string& what, const std::string& key) {
  MINMO_CHECK(v.is_array(), ErrorCode::BundleError, what << ": config key '" << key << "' must be a list of integers, got " << v.dump());
  std::vector<int64_t> out;
  for (const auto& e : v) {
    MINMO_CHECK(e.is_number_integer(), ErrorCode::BundleError,
                what << ": config key '" << key << "' must be a list of integers, got " << v.dump());
    out.push_back(e.get<int64_t>());
  }
  return out;
}
}  // namespace

std::vector<int64_t> ConfigReader::get_int_list(const std::string& key, const std::vector<int64_t>& def) {
  const json* v = find(key);
  return v ? int_list(*v, what_, key) : def;
}

std::vector<std::vector<int64_t>> ConfigReader::get_int_lists(const std::string& key,
                                                              const std::vector<std::vector<int64_t>>& def) {
  const json* v = find(key);
  if (!v) return def;
  MINMO_CHECK(v->is_array(), ErrorCode::BundleError, what_ << ": config key '" << key << "' must be a list of lists, got " << v->dump());
  std::vector<std::vector<int64_t>> out;
  for (const auto& e : *v) out.push_back(int_list(e, what_, key));
  return out;
}

double ConfigReader::get_float(const std::string& key, double def) {
  const json* v = find(key);
  if (!v) return def;
  MINMO_CHECK(v->is_number(), ErrorCode::BundleError,
              what_ << ": config key '" << key << "' must be a number, got " << v->dump());
  return v->get<double>();
}

bool ConfigReader::get_bool(const std::string& key, bool def) {
  const json* v = find(key);
  if (!v) return def;
  MINMO_CHECK(v->is_boolean(), ErrorCode::BundleError,
              what_ << ": config key '" << key << "' must be true or false, got " << v->dump());
  return v->get<bool>();
}

std::string ConfigReader::get_string(const std::string& key, const std::string& def) {
  const json* v = find(key);
  if (!v) return def;
  MINMO_CHECK(v->is_string(), ErrorCode::BundleError,
              what_ << ": config key '" << key << "' must be a string, got " << v->dump());
  return v->get<std::string>();
}

std::optional<double> ConfigReader::get_optional_float(const std::string& key, std::optional<double> def) {
  const json* v = find(key);
  if (!v) return def;
  if (v->is_null()) return std::nullopt;
  MINMO_CHECK(v->is_number(), ErrorCode::BundleError,
              what_ << ": config key '" << key << "' must be a number or null, got " << v->dump());
  return v->get<double>();
}

void ConfigReader::finish() const {
  if (!config_.is_object()) return;
  std::string unknown;
  for (auto it = config_.begin(); it != config_.end(); ++it)
    if (!known_.count(it.key())) unknown += (unknown.empty() ? "'" : ", '") + it.key() + "'";
  MINMO_CHECK(unknown.empty(), ErrorCode::BundleError, what_ << ": unknown config keys " << unknown);
}

ChunkSpec ChunkSpec::from_json(const json& streaming) {
  ConfigReader r(streaming, "streaming settings");
  ChunkSpec c;
  const std::string mode = r.get_string("encoder_attention", "full");
  c.chunk_frames = r.get_int("chunk_frames", 8);
  c.left_chunks = r.get_int("left_chunks", 4);
  r.finish();
  MINMO_CHECK(mode == "full" || mode == "chunked", ErrorCode::BundleError,
              "streaming settings: encoder_attention must be 'full' or 'chunked', not '" << mode << "'");
  MINMO_CHECK(c.chunk_frames >= 2 && c.chunk_frames % 2 == 0, ErrorCode::BundleError,
              "streaming settings: chunk_frames must be an even number >= 2, got " << c.chunk_frames);
  MINMO_CHECK(c.left_chunks >= 0, ErrorCode::BundleError,
              "streaming settings: left_chunks must be >= 0, got " << c.left_chunks);
  c.chunked = mode == "chunked";
  return c;
}

json ChunkSpec::to_json() const {
  return json{{"encoder_attention", chunked ? "chunked" : "full"},
              {"chunk_frames", chunk_frames},
              {"left_chunks", left_chunks}};
}

void chunk_key_ranges(const ChunkSpec& chunk, int64_t q0, int64_t n, int64_t k0, int64_t tk, int64_t total,
                      std::vector<int64_t>& lo, std::vector<int64_t>& hi) {
  lo.assign(static_cast<size_t>(n), 0);
  hi.assign(static_cast<size_t>(n), tk);
  if (!chunk.chunked) return;
  const int64_t C = chunk.chunk_frames;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = (q0 + i) / C;
    const int64_t a = std::max<int64_t>(0, (c - chunk.left_chunks) * C);
    const int64_t b = std::min((c + 1) * C, total);
    lo[static_cast<size_t>(i)] = std::clamp<int64_t>(a - k0, 0, tk);
    hi[static_cast<size_t>(i)] = std::clamp<int64_t>(b - k0, 0, tk);
  }
}

std::vector<float> transpose_fsmn(const float* weight, int64_t D, int64_t K) {
  std::vector<float> wt(static_cast<size_t>(K * D));
  for (int64_t d = 0; d < D; ++d)
    for (int64_t t = 0; t < K; ++t) wt[static_cast<size_t>(t * D + d)] = weight[d * K + t];
  return wt;
}

void fsmn_memory(const float* ctx, int64_t nctx, const float* v, int64_t n, int64_t D, const float* weight_t, int64_t K,
                 int64_t left_pad, int64_t q0, int64_t total, const ChunkSpec& chunk, float* out) {
  MINMO_CHECK(nctx >= std::min(left_pad, q0), ErrorCode::Internal,
              "fsmn_memory: " << nctx << " context rows, need " << std::min(left_pad, q0));
  if (n == 0) return;
#pragma omp parallel for schedule(static) if (cpu::parallel_macs(n * D * K))
  for (int64_t i = 0; i < n; ++i) {
    const int64_t pos = q0 + i;
    const int64_t limit = chunk_limit(chunk, pos, total);
    float* o = out + i * D;
    std::fill(o, o + D, 0.f);
    for (int64_t t = 0; t < K; ++t) {
      const int64_t a = pos - left_pad + t;
      if (a < 0 || a >= limit) continue;
      const float* src = a >= q0 ? v + (a - q0) * D : ctx + (nctx - (q0 - a)) * D;
      const float* w = weight_t + t * D;
      for (int64_t d = 0; d < D; ++d) o[d] += w[d] * src[d];
    }
    const float* vi = v + i * D;
    for (int64_t d = 0; d < D; ++d) o[d] += vi[d];
  }
}

void copy_columns(const float* x, int64_t rows, int64_t ld, int64_t col, int64_t width, float* out) {
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(out + r * width, x + r * ld + col, static_cast<size_t>(width) * sizeof(float));
}

void LinearW::operator()(const float* x, float* y, int64_t M) const {
  if (M == 0) return;
  if (qw.kind != cpu::WeightQuant::None) return cpu::linear_quant(x, qw, b, y, M, in, out);
  cpu::linear(x, w, b, y, M, in, out);
}

const float* load_tensor(const WeightStore& w, const std::string& name, const std::vector<int64_t>& shape) {
  return w.get(name, shape).ptr();
}

ConvW load_conv(const WeightStore& w, const std::string& name, int64_t cin, int64_t cout, int64_t k, int64_t stride,
                int64_t pad, int64_t dil) {
  ConvW c;
  c.w = load_tensor(w, name + ".weight", {cout, cin, k});
  c.b = load_tensor(w, name + ".bias", {cout});
  c.cin = cin;
  c.cout = cout;
  c.k = k;
  c.stride = stride;
  c.pad = pad;
  c.dil = dil;
  return c;
}

// A quantized weight is recognised by its `<name>.weight_scale` tensor; the dtype of
// `<name>.weight` gives the format (I8: int8, F8_E4M3: fp8, U8 + `<name>.weight_zero`: int4).
static cpu::QuantWeight load_quant_weight(const WeightStore& w, const std::string& name, int64_t in, int64_t out) {
  cpu::QuantWeight q;
  const std::string full = w.current_prefix() + name + ".weight";
  MINMO_CHECK(w.has(name + ".weight"), ErrorCode::NotFound,
              "weight '" << full << "' not found in " << w.path() << " (its weight_scale is there)");
  MINMO_CHECK(w.has_bytes(name + ".weight"), ErrorCode::BundleError,
              "weight '" << full << "' in " << w.path() << " has a weight_scale but is not a quantized (I8, U8, F8_E4M3) tensor");
  std::string dtype;
  if (w.has(name + ".weight_zero")) {  // int4, group-wise
    MINMO_CHECK(in % 2 == 0, ErrorCode::BundleError, "int4 weight '" << full << "': input width " << in << " is odd");
    q.q = w.get_bytes(name + ".weight", {out, in / 2}, &dtype).ptr();
    MINMO_CHECK(dtype == "U8", ErrorCode::BundleError, "int4 weight '" << full << "' must be U8, got " << dtype);
    const Tensor& sc = w.get(name + ".weight_scale");
    MINMO_CHECK(sc.ndim() == 2 && sc.shape[0] == out && sc.shape[1] >= 1 && in % sc.shape[1] == 0 &&
                    (in / sc.shape[1]) % 2 == 0,
                ErrorCode::BundleError,
                "int4 weight '" << full << "': weight_scale has shape " << sc.shape_str() << ", expected [" << out
                                << ", " << in << " / group] with an even group size");
    q.group = in / sc.shape[1];
    q.scale = sc.ptr();
    std::string zdt;
    q.zero = w.get_bytes(name + ".weight_zero", sc.shape, &zdt).ptr();
    MINMO_CHECK(zdt == "U8", ErrorCode::BundleError, "int4 weight_zero of '" << full << "' must be U8, got " << zdt);
    q.kind = cpu::WeightQuant::Int4;
    return q;
  }
  q.q = w.get_bytes(name + ".weight", {out, in}, &dtype).ptr();
  q.scale = load_tensor(w, name + ".weight_scale", {out});
  if (dtype == "I8") q.kind = cpu::WeightQuant::Int8;
  else if (dtype == "F8_E4M3") q.kind = cpu::WeightQuant::Fp8;
  else MINMO_THROW(ErrorCode::BundleError, "quantized weight '" << full << "' has dtype " << dtype
                                                                 << " (int8 needs I8, fp8 F8_E4M3, int4 U8 + weight_zero)");
  return q;
}

LinearW load_linear(const WeightStore& w, const std::string& name, int64_t in, int64_t out, bool bias) {
  LinearW l;
  l.in = in;
  l.out = out;
  if (w.has(name + ".weight_scale")) {
    l.qw = load_quant_weight(w, name, in, out);
  } else {
    l.w = load_tensor(w, name + ".weight", {out, in});
  }
  if (bias) l.b = load_tensor(w, name + ".bias", {out});
  return l;
}

NormW load_norm(const WeightStore& w, const std::string& name, int64_t dim) {
  NormW n;
  n.dim = dim;
  n.g = load_tensor(w, name + ".weight", {dim});
  n.b = load_tensor(w, name + ".bias", {dim});
  return n;
}

}  // namespace minmo
