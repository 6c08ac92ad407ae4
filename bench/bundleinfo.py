"""What the bundle says about itself: manifest summary and the bytes decode streams per token."""
from __future__ import annotations

import json
import os
import struct
from typing import Optional


def safetensors_header(path: str) -> dict:
    """The JSON header of a safetensors file: {name: {dtype, shape, data_offsets}} (+ __metadata__)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > 100 * (1 << 20):
            raise ValueError(f"{path}: implausible safetensors header size {n}")
        return json.loads(f.read(n))


def _as_list(x) -> list:
    if x is None:
        return []
    if isinstance(x, (list, tuple)):
        return list(x)
    if isinstance(x, dict):
        return [v for v in x.values() if isinstance(v, str)]
    return [x]


def module_files(bundle: str, manifest: dict, name: str, key: str = "weights") -> list[str]:
    entry = (manifest.get("modules") or {}).get(name) or {}
    return [os.path.join(bundle, p) for p in _as_list(entry.get(key))]


def decode_bytes_per_token(bundle: str, manifest: dict) -> Optional[dict]:
    """Bytes of LLM weights one decode step reads: the llm weight files minus the embedding table
    (one row is gathered per token, the table is not streamed). A tied embedding is the LM head
    too and is read in full, so it is not subtracted. None when the bundle has no llm."""
    files = [p for p in module_files(bundle, manifest, "llm") if os.path.isfile(p)]
    if not files:
        return None
    cfg = ((manifest.get("modules") or {}).get("llm") or {}).get("config") or {}
    tied = bool(cfg.get("tie_word_embeddings", False))
    total = sum(os.path.getsize(p) for p in files)
    embed = 0
    for p in files:
        if not p.endswith(".safetensors"):
            continue
        try:
            header = safetensors_header(p)
        except (OSError, ValueError, struct.error):
            continue
        for tname, meta in header.items():
            if tname == "__metadata__" or not isinstance(meta, dict):
                continue
            if "embed_tokens." in tname or tname.startswith("embed_tokens"):
                lo, hi = meta["data_offsets"]
                embed += int(hi) - int(lo)
    streamed = total if tied else total - embed
    return {"llm_weight_bytes": int(total), "embedding_bytes": int(embed), "tied_embedding": tied,
            "bytes_per_token": int(streamed)}


def manifest_summary(bundle: str, manifest: dict) -> dict:
    """The parts of the manifest that say what was measured (not the file hashes)."""
    mods = {}
    for name, entry in (manifest.get("modules") or {}).items():
        entry = entry or {}
        files = module_files(bundle, manifest, name)
        info = {k: entry[k] for k in ("arch", "type", "kind", "dtype", "quantization", "quant", "params") if k in entry}
        info["weight_bytes"] = int(sum(os.path.getsize(p) for p in files if os.path.isfile(p)))
        info["onnx"] = bool(entry.get("onnx"))
        mods[name] = info
    keep = ("format", "format_version", "created_by", "family", "model_family", "mode", "sample_rate", "streaming", "target", "quantization")
    out = {k: manifest[k] for k in keep if k in manifest}
    out["modules"] = mods
    return out
