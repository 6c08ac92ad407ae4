"""MinMo checkpoint layout (see README.md in this folder): minmo.json + <module>.safetensors + tokenizer.json."""
from __future__ import annotations

import json
import os

from safetensors.torch import load_file

from ..reference import ChunkSpec
from .archs import ARCHS, FRONTEND_ARCHS, MODULE_NAMES, check_consistency, make_module
from .common import CheckpointError, LoadedCheckpoint, LoadedModule, check_state_dict, frontend_buffers, to_fp32
from .hf_qwen2 import hf_tokenizer_info

MINMO_FORMAT, MINMO_VERSION = "minmo-checkpoint", 1


def is_minmo(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "minmo.json"))


def load_minmo(path: str) -> LoadedCheckpoint:
    mpath = os.path.join(path, "minmo.json")
    try:
        with open(mpath) as f:
            meta = json.load(f)
    except ValueError as e:
        raise CheckpointError(f"{mpath}: not valid JSON: {e}") from None
    if meta.get("format") != MINMO_FORMAT:
        raise CheckpointError(f"{mpath}: format is {meta.get('format')!r}, expected {MINMO_FORMAT!r}")
    if meta.get("version") != MINMO_VERSION:
        raise CheckpointError(f"{mpath}: version {meta.get('version')!r} is not supported (this exporter reads {MINMO_VERSION})")
    mods = meta.get("modules")
    if not isinstance(mods, dict) or not mods:
        raise CheckpointError(f"{mpath}: no modules")
    streaming = meta.get("streaming")
    chunk = None
    if streaming is not None:
        try:
            chunk = ChunkSpec.from_dict(streaming)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{mpath}: bad streaming spec: {e}") from None
    described = {}
    for name, entry in mods.items():
        if name not in MODULE_NAMES:
            raise CheckpointError(f"{mpath}: unknown module {name!r}; known: {list(MODULE_NAMES)}")
        if not isinstance(entry, dict) or entry.get("arch") not in ARCHS:
            raise CheckpointError(f"{mpath}: module {name!r} needs an arch out of {sorted(ARCHS)}")
        described[name] = (entry["arch"], entry.get("config") or {})
    problems = check_consistency(described)
    if problems:
        raise CheckpointError(f"{mpath}: inconsistent modules: " + "; ".join(problems))
    loaded = []
    for name, (arch, config) in described.items():
        try:
            ref = make_module(arch, config, chunk, meta=arch not in FRONTEND_ARCHS)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{mpath}: module {name!r}: {e}") from None
        wfile = os.path.join(path, f"{name}.safetensors")
        if arch in FRONTEND_ARCHS:
            sd = frontend_buffers(ref)
            if os.path.isfile(wfile):  # stored buffers (e.g. CMVN statistics) override the computed ones
                stored = to_fp32(load_file(wfile))
                unknown = sorted(set(stored) - set(sd))
                if unknown:
                    raise CheckpointError(f"{wfile}: unknown frontend tensors {unknown}")
                for k, v in stored.items():
                    if v.shape != sd[k].shape:
                        raise CheckpointError(f"{wfile}: {k} has shape {tuple(v.shape)}, expected {tuple(sd[k].shape)}")
                    sd[k] = v
        else:
            if not os.path.isfile(wfile):
                raise CheckpointError(f"{path}: module {name!r} has no weights file {name}.safetensors")
            sd = to_fp32(load_file(wfile))
            optional = ()
            if arch == "qwen2" and config.get("tie_word_embeddings"):
                sd.pop("lm_head.weight", None)
                optional = ("lm_head.weight",)
            sd = check_state_dict(name, ref, sd, wfile, optional=optional)
        loaded.append(LoadedModule(name, arch, ref.cfg.to_dict(), sd, {"source": "minmo"}))
    tok = None
    tok_path = os.path.join(path, "tokenizer.json")
    if os.path.isfile(tok_path):
        tok = hf_tokenizer_info(tok_path, os.path.join(path, "tokenizer_config.json"))
    elif "llm" in described:
        raise CheckpointError(f"{path}: has an llm but no tokenizer.json")
    return LoadedCheckpoint("minmo", path, loaded, tokenizer=tok, streaming=chunk.to_dict() if chunk else None,
                            prompt=meta.get("prompt"))
