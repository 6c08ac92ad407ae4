#include "core/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include <nlohmann/json.hpp>

namespace minmo {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      bits = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float bf16_to_float(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

struct DtypeInfo {
  const char* name;
  int size;
  bool is_float;
};

const DtypeInfo* find_dtype(const std::string& s) {
  static const DtypeInfo kTypes[] = {
      {"F32", 4, true}, {"F16", 2, true}, {"BF16", 2, true}, {"F64", 8, true}, {"I64", 8, false},
      {"I32", 4, false}, {"I16", 2, false}, {"I8", 1, false}, {"U8", 1, false}, {"BOOL", 1, false},
      {"F8_E4M3", 1, false},
  };
  for (const auto& t : kTypes)
    if (s == t.name) return &t;
  return nullptr;
}

struct Entry {
  std::string name;
  const DtypeInfo* dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

template <typename Src, typename Dst, typename Conv>
void convert(const std::vector<char>& raw, Dst* out, size_t n, Conv conv) {
  for (size_t i = 0; i < n; ++i) {
    Src v;
    std::memcpy(&v, raw.data() + i * sizeof(Src), sizeof(Src));
    out[i] = conv(v);
  }
}

}  // namespace

SafetensorsFile read_safetensors(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const uint64_t file_size = fs::file_size(path, ec);
  MINMO_CHECK(!ec, ErrorCode::BundleError, "cannot read weight file " << path << ": " << ec.message());
  std::ifstream in(path, std::ios::binary);
  MINMO_CHECK(in.good(), ErrorCode::BundleError, "cannot open weight file " << path);
  MINMO_CHECK(file_size >= 8, ErrorCode::BundleError,
              "weight file " << path << " is not a safetensors file (" << file_size << " bytes, too short for a header)");

  unsigned char len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  MINMO_CHECK(in.good(), ErrorCode::BundleError, "cannot read the header of weight file " << path);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  MINMO_CHECK(header_len > 0 && header_len <= kMaxHeaderBytes && header_len <= file_size - 8, ErrorCode::BundleError,
              "weight file " << path << " has a corrupt header: header length " << header_len << " does not fit in the "
                             << file_size << "-byte file");
  std::string header(static_cast<size_t>(header_len), '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  MINMO_CHECK(in.good(), ErrorCode::BundleError, "cannot read the header of weight file " << path);
  const uint64_t data_size = file_size - 8 - header_len;
  const uint64_t data_start = 8 + header_len;

  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header);
  } catch (const nlohmann::json::exception& e) {
    MINMO_THROW(ErrorCode::BundleError, "weight file " << path << " has a corrupt header (invalid JSON: " << e.what() << ")");
  }
  MINMO_CHECK(j.is_object(), ErrorCode::BundleError, "weight file " << path << " has a corrupt header (not a JSON object)");

  SafetensorsFile out;
  out.path = path;
  std::vector<Entry> entries;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const auto& v = it.value();
    if (name == "__metadata__") {
      MINMO_CHECK(v.is_object(), ErrorCode::BundleError, "weight file " << path << ": __metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        MINMO_CHECK(m.value().is_string(), ErrorCode::BundleError,
                    "weight file " << path << ": __metadata__ value of '" << m.key() << "' is not a string");
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = "weight file " + path + ", tensor '" + name + "'";
    MINMO_CHECK(v.is_object() && v.contains("dtype") && v.contains("shape") && v.contains("data_offsets"),
                ErrorCode::BundleError, where << ": entry needs dtype, shape and data_offsets");
    MINMO_CHECK(v["dtype"].is_string(), ErrorCode::BundleError, where << ": dtype is not a string");
    Entry e;
    e.name = name;
    const std::string dt = v["dtype"].get<std::string>();
    e.dtype = find_dtype(dt);
    MINMO_CHECK(e.dtype != nullptr, ErrorCode::BundleError, where << ": unsupported dtype " << dt);
    MINMO_CHECK(v["shape"].is_array(), ErrorCode::BundleError, where << ": shape is not a list");
    uint64_t numel = 1;
    for (const auto& d : v["shape"]) {
      MINMO_CHECK(d.is_number_integer() && d.get<int64_t>() >= 0, ErrorCode::BundleError,
                  where << ": shape has a non-integer or negative dimension");
      const uint64_t dim = d.get<uint64_t>();
      MINMO_CHECK(dim == 0 || numel <= std::numeric_limits<uint64_t>::max() / 16 / dim, ErrorCode::BundleError,
                  where << ": shape is too large");
      numel *= dim;
      e.shape.push_back(static_cast<int64_t>(dim));
    }
    const auto& off = v["data_offsets"];
    MINMO_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() && off[1].is_number_unsigned(),
                ErrorCode::BundleError, where << ": data_offsets must be two non-negative integers");
    e.begin = off[0].get<uint64_t>();
    e.end = off[1].get<uint64_t>();
    MINMO_CHECK(e.begin <= e.end && e.end <= data_size, ErrorCode::BundleError,
                where << ": data_offsets [" << e.begin << ", " << e.end << ") out of range (data section has "
                      << data_size << " bytes; file truncated or corrupt)");
    MINMO_CHECK(e.end - e.begin == numel * static_cast<uint64_t>(e.dtype->size), ErrorCode::BundleError,
                where << ": data_offsets span " << (e.end - e.begin) << " bytes but shape " << detail::shape_str(e.shape)
                      << " of " << dt << " needs " << numel * e.dtype->size);
    out.dtype[name] = dt;
    entries.push_back(std::move(e));
  }

  std::vector<const Entry*> order;
  for (const auto& e : entries) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  for (size_t i = 1; i < order.size(); ++i) {
    MINMO_CHECK(order[i]->begin >= order[i - 1]->end, ErrorCode::BundleError,
                "weight file " << path << ": tensors '" << order[i - 1]->name << "' and '" << order[i]->name
                               << "' overlap in the data section");
  }

  std::vector<char> raw;
  for (const Entry* e : order) {
    const size_t nbytes = static_cast<size_t>(e->end - e->begin);
    const size_t n = nbytes / static_cast<size_t>(e->dtype->size);
    in.seekg(static_cast<std::streamoff>(data_start + e->begin));
    const std::string dt = e->dtype->name;
    auto read_into = [&](char* dst) {
      if (nbytes == 0) return;
      in.read(dst, static_cast<std::streamsize>(nbytes));
      MINMO_CHECK(in.good(), ErrorCode::BundleError, "weight file " << path << ": cannot read tensor '" << e->name << "'");
    };
    if (e->dtype->is_float) {
      Tensor t(e->shape);
      if (dt == "F32") {
        read_into(reinterpret_cast<char*>(t.ptr()));
      } else {
        raw.resize(nbytes);
        read_into(raw.data());
        if (dt == "F16") convert<uint16_t>(raw, t.ptr(), n, half_to_float);
        else if (dt == "BF16") convert<uint16_t>(raw, t.ptr(), n, bf16_to_float);
        else convert<double>(raw, t.ptr(), n, [](double x) { return static_cast<float>(x); });
      }
      out.floats.emplace(e->name, std::move(t));
    } else if (dt == "I8" || dt == "U8" || dt == "F8_E4M3") {
      TensorU8 t(e->shape);
      read_into(reinterpret_cast<char*>(t.ptr()));
      out.bytes.emplace(e->name, std::move(t));
    } else {
      TensorI64 t(e->shape);
      if (dt == "I64") {
        read_into(reinterpret_cast<char*>(t.ptr()));
      } else {
        raw.resize(nbytes);
        read_into(raw.data());
        auto wide = [](auto x) { return static_cast<int64_t>(x); };
        if (dt == "I32") convert<int32_t>(raw, t.ptr(), n, wide);
        else if (dt == "I16") convert<int16_t>(raw, t.ptr(), n, wide);
        else convert<uint8_t>(raw, t.ptr(), n, wide);  // BOOL
      }
      out.ints.emplace(e->name, std::move(t));
    }
  }
  return out;
}

std::unordered_map<std::string, Tensor> load_safetensors(const std::string& path) {
  SafetensorsFile f = read_safetensors(path);
  std::unordered_map<std::string, Tensor> out;
  for (auto& kv : f.floats) out.emplace(kv.first, std::move(kv.second));
  return out;
}

WeightStore WeightStore::open(const std::string& path) { return WeightStore(read_safetensors(path)); }

WeightStore::WeightStore(SafetensorsFile contents)
    : file_(std::make_shared<SafetensorsFile>(std::move(contents))) {}

bool WeightStore::has(const std::string& name) const {
  if (!file_) return false;
  const std::string full = prefix_ + name;
  return file_->floats.count(full) > 0 || file_->ints.count(full) > 0 || file_->bytes.count(full) > 0;
}

bool WeightStore::has_bytes(const std::string& name) const { return file_ && file_->bytes.count(prefix_ + name) > 0; }

const TensorU8& WeightStore::get_bytes(const std::string& name, const std::vector<int64_t>& expected_shape,
                                       std::string* dtype) const {
  const std::string full = prefix_ + name;
  MINMO_CHECK(file_ != nullptr, ErrorCode::NotFound, "weight '" << full << "' not found (no weight file loaded)");
  auto it = file_->bytes.find(full);
  if (it == file_->bytes.end()) {
    MINMO_CHECK(file_->dtype.count(full) == 0, ErrorCode::BundleError,
                "weight '" << full << "' in " << file_->path << " has dtype " << file_->dtype.at(full)
                           << ", expected a one-byte dtype (I8, U8, F8_E4M3)");
    MINMO_THROW(ErrorCode::NotFound, "weight '" << full << "' not found in " << file_->path);
  }
  MINMO_CHECK(it->second.shape == expected_shape, ErrorCode::BundleError,
              "weight '" << full << "' in " << file_->path << " has shape " << it->second.shape_str() << ", expected "
                         << detail::shape_str(expected_shape));
  if (dtype) *dtype = file_->dtype.at(full);
  return it->second;
}

bool WeightStore::has_int(const std::string& name) const { return file_ && file_->ints.count(prefix_ + name) > 0; }

const Tensor& WeightStore::get(const std::string& name) const {
  const std::string full = prefix_ + name;
  MINMO_CHECK(file_ != nullptr, ErrorCode::NotFound, "weight '" << full << "' not found (no weight file loaded)");
  auto it = file_->floats.find(full);
  if (it != file_->floats.end()) {
    MINMO_CHECK(file_->repacked.count(full) == 0, ErrorCode::Internal,
                "weight '" << full << "' in " << file_->path << " was repacked into a module's private layout");
    return it->second;
  }
  MINMO_CHECK(file_->ints.count(full) == 0 && file_->bytes.count(full) == 0, ErrorCode::BundleError,
              "weight '" << full << "' in " << file_->path << " has integer dtype " << file_->dtype.at(full)
                         << ", expected a floating dtype");
  MINMO_THROW(ErrorCode::NotFound, "weight '" << full << "' not found in " << file_->path);
}

const Tensor& WeightStore::get(const std::string& name, const std::vector<int64_t>& expected_shape) const {
  const Tensor& t = get(name);
  MINMO_CHECK(t.shape == expected_shape, ErrorCode::BundleError,
              "weight '" << prefix_ + name << "' in " << file_->path << " has shape " << t.shape_str() << ", expected "
                         << detail::shape_str(expected_shape));
  return t;
}

float* WeightStore::repack(const std::string& name, const std::vector<int64_t>& shape,
                           const std::function<void(float*, int64_t)>& permute) const {
  get(name, shape);  // NotFound / BundleError (dtype, shape) / Internal (already repacked)
  Tensor& t = file_->floats.at(prefix_ + name);
  file_->repacked.insert(prefix_ + name);
  permute(t.ptr(), t.numel());
  return t.ptr();
}

const TensorI64& WeightStore::get_int(const std::string& name) const {
  const std::string full = prefix_ + name;
  MINMO_CHECK(file_ != nullptr, ErrorCode::NotFound, "weight '" << full << "' not found (no weight file loaded)");
  auto it = file_->ints.find(full);
  if (it != file_->ints.end()) return it->second;
  MINMO_CHECK(file_->floats.count(full) == 0, ErrorCode::BundleError,
              "weight '" << full << "' in " << file_->path << " has floating dtype " << file_->dtype.at(full)
                         << ", expected an integer dtype");
  MINMO_THROW(ErrorCode::NotFound, "weight '" << full << "' not found in " << file_->path);
}

WeightStore WeightStore::prefix(const std::string& p) const {
  WeightStore w = *this;
  w.prefix_ += p;
  return w;
}

std::vector<std::string> WeightStore::names() const {
  std::vector<std::string> out;
  if (!file_) return out;
  for (const auto& kv : file_->dtype)
    if (kv.first.compare(0, prefix_.size(), prefix_) == 0) out.push_back(kv.first.substr(prefix_.size()));
  return out;
}

const std::string& WeightStore::path() const {
  static const std::string kEmpty;
  return file_ ? file_->path : kEmpty;
}

const std::map<std::string, std::string>& WeightStore::metadata() const {
  static const std::map<std::string, std::string> kEmpty;
  return file_ ? file_->metadata : kEmpty;
}

}  // namespace minmo
