// The bundle manifest (manifest.json), the only contract between the exporter and the runtime.
//
// Schema (format_version 1.x):
//   {"format": "minmo-bundle", "format_version": "1.0", "mode": "minmo" | "asr-ctc" | "llm",
//    "sample_rate": 16000,
//    "streaming": {"encoder_attention": "full" | "chunked", "chunk_frames": int, "left_chunks": int},
//    "tokenizer": {"kind": "hf-tokenizers" | "sentencepiece", "file": "tokenizer/tokenizer.json", ...},
//    "modules": {"<name>": {"arch": str, "config": {...}, "dtype": "float32", "quant": "none" | "int8" | "int4" | "fp8",
//                           "weights": "weights/<name>.safetensors", "onnx": "onnx/<name>.onnx"?}},
//    "files": {"<relative path>": {"size": int, "sha256": "<64 hex>"}}}
//
// Rules enforced by parse_manifest / load_manifest:
//   - format == "minmo-bundle"; format_version "MAJOR.MINOR" with MAJOR == 1, otherwise
//     UnsupportedVersion (other minors are accepted: unknown keys are ignored).
//   - every path ("files" keys, module "weights"/"onnx", tokenizer "file") is relative, has no
//     ".." component and, after resolving symlinks, stays inside the bundle directory.
//   - every module's weights file and the tokenizer file are listed in "files".
// Violations throw Error(BundleError) with a message naming the item.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

namespace minmo {

struct ModuleEntry {
  std::string name;
  std::string arch;
  std::string dtype;          // "float32" if absent
  std::string quant;          // "none" if absent; else int8 / int4 / fp8 (weight-only; see LinearW)
  nlohmann::json config;      // the module's architecture config (object; {} if absent)
  std::string weights_path;   // absolute, resolved path of the weights file ("" if none)
  std::string onnx_path;      // absolute, resolved path of the ONNX file ("" if none)
};

struct FileEntry {
  std::string path;      // as written in the manifest (relative)
  std::string abs_path;  // resolved absolute path inside the bundle
  uint64_t size = 0;
  std::string sha256;    // lowercase hex
};

struct Manifest {
  nlohmann::json raw;    // the whole manifest.json as read
  std::string dir;       // absolute bundle directory
  int major = 0, minor = 0;
  std::string mode;
  int sample_rate = 16000;
  nlohmann::json streaming;  // object ({} if absent)
  nlohmann::json tokenizer;  // object, or null if absent
  std::string tokenizer_path;  // absolute path of tokenizer["file"] ("" if none)
  std::map<std::string, ModuleEntry> modules;
  std::map<std::string, FileEntry> files;

  bool has_module(const std::string& name) const { return modules.count(name) > 0; }
  // The module entry; throws NotFound ("bundle has no module 'x'").
  const ModuleEntry& module(const std::string& name) const;
  // Absolute path of a manifest-relative path after the containment checks; throws BundleError.
  std::string resolve(const std::string& relative) const;
  // Checks every listed file: exists, size matches, SHA-256 matches. Throws BundleError:
  //   "bundle file weights/llm.safetensors is missing"
  //   "bundle file weights/llm.safetensors is truncated (123 of 456 bytes)"
  //   "bundle file weights/llm.safetensors has the wrong size (500 bytes, manifest says 456)"
  //   "bundle file weights/llm.safetensors: SHA-256 mismatch (file was modified)"
  void verify_files() const;
};

// Parses an already loaded manifest of the bundle at `bundle_dir` (validation as above; no file
// contents are read).
Manifest parse_manifest(const nlohmann::json& manifest, const std::string& bundle_dir);
// Reads <bundle_dir>/manifest.json, parses it and, if verify, runs verify_files().
// Throws BundleError (missing directory / manifest, invalid JSON, schema violations) or
// UnsupportedVersion.
Manifest load_manifest(const std::string& bundle_dir, bool verify = true);

// Lowercase hex SHA-256 of a file's contents. Throws BundleError if unreadable.
std::string sha256_file(const std::string& path);

}  // namespace minmo
