#include "core/manifest.h"

#include <openssl/evp.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <vector>

#include "minmo/status.h"

namespace minmo {
namespace fs = std::filesystem;
namespace {

bool path_within(const fs::path& root, const fs::path& p) {
  const fs::path rel = p.lexically_relative(root);
  return !rel.empty() && rel != "." && *rel.begin() != "..";
}

// Validates and resolves a manifest-relative path. `what` names the item for messages.
std::string resolve_in(const fs::path& dir, const std::string& rel, const std::string& what) {
  MINMO_CHECK(!rel.empty(), ErrorCode::BundleError, what << ": empty path");
  const fs::path p(rel);
  MINMO_CHECK(!p.is_absolute() && !p.has_root_name() && !p.has_root_directory() && rel.find('\\') == std::string::npos,
              ErrorCode::BundleError, what << ": path '" << rel << "' must be relative to the bundle");
  for (const auto& part : p)
    MINMO_CHECK(part != "..", ErrorCode::BundleError, what << ": path '" << rel << "' leaves the bundle ('..')");
  std::error_code ec;
  const fs::path root = fs::weakly_canonical(dir, ec);
  MINMO_CHECK(!ec, ErrorCode::BundleError, "cannot resolve bundle directory " << dir.string() << ": " << ec.message());
  const fs::path full = fs::weakly_canonical(root / p, ec);
  MINMO_CHECK(!ec, ErrorCode::BundleError, what << ": cannot resolve path '" << rel << "': " << ec.message());
  MINMO_CHECK(path_within(root, full), ErrorCode::BundleError,
              what << ": path '" << rel << "' leaves the bundle (resolves to " << full.string() << ")");
  return full.string();
}

std::string get_string(const nlohmann::json& obj, const char* key, const std::string& what, const std::string& dflt,
                       bool required) {
  if (!obj.contains(key)) {
    MINMO_CHECK(!required, ErrorCode::BundleError, what << ": missing \"" << key << "\"");
    return dflt;
  }
  MINMO_CHECK(obj[key].is_string(), ErrorCode::BundleError, what << ": \"" << key << "\" must be a string");
  return obj[key].get<std::string>();
}

bool parse_int(const std::string& s, int* out) {
  if (s.empty() || s.size() > 6) return false;
  int v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *out = v;
  return true;
}

}  // namespace

const ModuleEntry& Manifest::module(const std::string& name) const {
  auto it = modules.find(name);
  MINMO_CHECK(it != modules.end(), ErrorCode::NotFound, "bundle has no module '" << name << "'");
  return it->second;
}

std::string Manifest::resolve(const std::string& relative) const { return resolve_in(dir, relative, "bundle path"); }

Manifest parse_manifest(const nlohmann::json& j, const std::string& bundle_dir) {
  Manifest m;
  std::error_code ec;
  m.dir = fs::absolute(bundle_dir, ec).lexically_normal().string();
  MINMO_CHECK(!ec, ErrorCode::BundleError, "cannot resolve bundle directory " << bundle_dir);
  const std::string what = "bundle manifest " + (fs::path(m.dir) / "manifest.json").string();
  MINMO_CHECK(j.is_object(), ErrorCode::BundleError, what << " is not a JSON object");
  m.raw = j;

  const std::string format = get_string(j, "format", what, "", true);
  MINMO_CHECK(format == "minmo-bundle", ErrorCode::BundleError,
              what << ": format is '" << format << "', expected 'minmo-bundle' (not a minmo bundle)");
  MINMO_CHECK(j.contains("format_version"), ErrorCode::BundleError, what << ": missing \"format_version\"");
  std::string version;
  if (j["format_version"].is_string()) version = j["format_version"].get<std::string>();
  else if (j["format_version"].is_number_integer()) version = std::to_string(j["format_version"].get<int64_t>());
  else MINMO_THROW(ErrorCode::BundleError, what << ": \"format_version\" must be a string like \"1.0\"");
  {
    const size_t dot = version.find('.');
    const std::string maj = version.substr(0, dot);
    const std::string min = dot == std::string::npos ? "0" : version.substr(dot + 1);
    MINMO_CHECK(parse_int(maj, &m.major) && parse_int(min, &m.minor), ErrorCode::BundleError,
                what << ": malformed format_version '" << version << "' (expected MAJOR.MINOR)");
  }
  MINMO_CHECK(m.major == 1, ErrorCode::UnsupportedVersion,
              "bundle format version " << version << " is not supported by this runtime (supports 1.x)");

  m.mode = get_string(j, "mode", what, "", true);
  if (j.contains("sample_rate")) {
    MINMO_CHECK(j["sample_rate"].is_number_integer() && j["sample_rate"].get<int64_t>() > 0, ErrorCode::BundleError,
                what << ": \"sample_rate\" must be a positive integer");
    m.sample_rate = j["sample_rate"].get<int>();
  }
  m.streaming = j.contains("streaming") ? j["streaming"] : nlohmann::json::object();
  MINMO_CHECK(m.streaming.is_object(), ErrorCode::BundleError, what << ": \"streaming\" must be an object");

  // files
  MINMO_CHECK(j.contains("files") && j["files"].is_object(), ErrorCode::BundleError,
              what << ": missing or invalid \"files\" object");
  for (auto it = j["files"].begin(); it != j["files"].end(); ++it) {
    const std::string fwhat = what + ", file '" + it.key() + "'";
    const auto& v = it.value();
    FileEntry f;
    f.path = it.key();
    f.abs_path = resolve_in(m.dir, f.path, fwhat);
    MINMO_CHECK(v.is_object() && v.contains("size") && v["size"].is_number_unsigned(), ErrorCode::BundleError,
                fwhat << ": needs a non-negative integer \"size\"");
    f.size = v["size"].get<uint64_t>();
    f.sha256 = get_string(v, "sha256", fwhat, "", true);
    bool hex = f.sha256.size() == 64;
    for (char& c : f.sha256) {
      if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
      hex = hex && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
    }
    MINMO_CHECK(hex, ErrorCode::BundleError, fwhat << ": \"sha256\" must be 64 hex digits");
    m.files.emplace(f.path, std::move(f));
  }
  auto listed = [&](const std::string& rel, const std::string& w) {
    MINMO_CHECK(m.files.count(rel) > 0 || m.files.count(fs::path(rel).lexically_normal().string()) > 0,
                ErrorCode::BundleError, w << ": file '" << rel << "' is not listed in \"files\"");
  };

  // tokenizer
  if (j.contains("tokenizer") && !j["tokenizer"].is_null()) {
    m.tokenizer = j["tokenizer"];
    MINMO_CHECK(m.tokenizer.is_object(), ErrorCode::BundleError, what << ": \"tokenizer\" must be an object");
    const std::string file = get_string(m.tokenizer, "file", what + ", tokenizer", "", false);
    if (!file.empty()) {
      m.tokenizer_path = resolve_in(m.dir, file, what + ", tokenizer");
      listed(file, what + ", tokenizer");
    }
  }

  // modules
  MINMO_CHECK(j.contains("modules") && j["modules"].is_object(), ErrorCode::BundleError,
              what << ": missing or invalid \"modules\" object");
  for (auto it = j["modules"].begin(); it != j["modules"].end(); ++it) {
    const std::string mwhat = what + ", module '" + it.key() + "'";
    const auto& v = it.value();
    MINMO_CHECK(v.is_object(), ErrorCode::BundleError, mwhat << ": must be an object");
    ModuleEntry e;
    e.name = it.key();
    e.arch = get_string(v, "arch", mwhat, "", true);
    e.dtype = get_string(v, "dtype", mwhat, "float32", false);
    e.quant = get_string(v, "quant", mwhat, "none", false);
    MINMO_CHECK(e.quant == "none" || e.quant == "int8" || e.quant == "int4" || e.quant == "fp8", ErrorCode::BundleError,
                mwhat << ": unknown \"quant\" " << e.quant << " (expected none, int8, int4 or fp8)");
    e.config = v.contains("config") ? v["config"] : nlohmann::json::object();
    MINMO_CHECK(e.config.is_object(), ErrorCode::BundleError, mwhat << ": \"config\" must be an object");
    const std::string weights = get_string(v, "weights", mwhat, "", false);
    if (!weights.empty()) {
      e.weights_path = resolve_in(m.dir, weights, mwhat);
      listed(weights, mwhat);
    }
    const std::string onnx = get_string(v, "onnx", mwhat, "", false);
    if (!onnx.empty()) e.onnx_path = resolve_in(m.dir, onnx, mwhat);
    m.modules.emplace(e.name, std::move(e));
  }
  return m;
}

Manifest load_manifest(const std::string& bundle_dir, bool verify) {
  std::error_code ec;
  MINMO_CHECK(fs::is_directory(bundle_dir, ec), ErrorCode::BundleError, "bundle directory not found: " << bundle_dir);
  const fs::path mpath = fs::path(bundle_dir) / "manifest.json";
  MINMO_CHECK(fs::is_regular_file(mpath, ec), ErrorCode::BundleError,
              "bundle directory " << bundle_dir << " has no manifest.json (not a minmo bundle)");
  std::ifstream in(mpath, std::ios::binary);
  MINMO_CHECK(in.good(), ErrorCode::BundleError, "cannot read bundle manifest " << mpath.string());
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    MINMO_THROW(ErrorCode::BundleError, "bundle manifest " << mpath.string() << " is not valid JSON: " << e.what());
  }
  Manifest m = parse_manifest(j, bundle_dir);
  if (verify) m.verify_files();
  return m;
}

std::string sha256_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MINMO_CHECK(in.good(), ErrorCode::BundleError, "cannot read " << path);
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  MINMO_CHECK(ctx && EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1, ErrorCode::Internal,
              "SHA-256 initialisation failed");
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const std::streamsize got = in.gcount();
    if (got > 0) EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<size_t>(got));
  }
  MINMO_CHECK(in.eof(), ErrorCode::BundleError, "error while reading " << path);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), digest, &len);
  static const char* kHex = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < len; ++i) {
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 15];
  }
  return hex;
}

void Manifest::verify_files() const {
  for (const auto& kv : files) {
    const FileEntry& f = kv.second;
    std::error_code ec;
    MINMO_CHECK(fs::is_regular_file(f.abs_path, ec), ErrorCode::BundleError, "bundle file " << f.path << " is missing");
    const uint64_t size = fs::file_size(f.abs_path, ec);
    MINMO_CHECK(!ec, ErrorCode::BundleError, "bundle file " << f.path << " cannot be read: " << ec.message());
    MINMO_CHECK(size >= f.size, ErrorCode::BundleError,
                "bundle file " << f.path << " is truncated (" << size << " of " << f.size << " bytes)");
    MINMO_CHECK(size == f.size, ErrorCode::BundleError,
                "bundle file " << f.path << " has the wrong size (" << size << " bytes, manifest says " << f.size << ")");
    MINMO_CHECK(sha256_file(f.abs_path) == f.sha256, ErrorCode::BundleError,
                "bundle file " << f.path << ": SHA-256 mismatch (file was modified)");
  }
}

}  // namespace minmo
