"""Shared types and helpers of the checkpoint loaders."""
from __future__ import annotations

import pickletools
import zipfile
from dataclasses import dataclass, field
from typing import Any, Optional

import torch


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: unknown layout, missing file, unsafe or malformed content."""


@dataclass
class LoadedModule:
    """One runtime module taken from a checkpoint.

    name: bundle module name (frontend, encoder, projector, llm, duplex); arch: the reference
    architecture (kaldi_fbank, whisper_logmel, sensevoice_small, sensevoice_large, projector, qwen2,
    duplex); config: the reference config dict (``<Arch>Config.to_dict()``); state_dict: fp32 tensors
    under the reference module's names (frontends: their buffers); extra: anything else worth
    recording (source file names, notes)."""

    name: str
    arch: str
    config: dict
    state_dict: dict
    extra: dict = field(default_factory=dict)


@dataclass
class TokenizerInfo:
    """kind: "hf-tokenizers" | "sentencepiece"; path: the main file; extra_files: companions to copy
    (tokenizer_config.json); special: token -> id of the special tokens the runtime cares about;
    eos_id / vocab_size as read from the tokenizer (after the additions); added_special_tokens: special
    tokens the model's own frontend adds at load time (hf-tokenizers only), added to the stored copy."""

    kind: str
    path: str
    extra_files: list = field(default_factory=list)
    special: dict = field(default_factory=dict)
    eos_id: Optional[int] = None
    vocab_size: Optional[int] = None
    added_special_tokens: list = field(default_factory=list)


@dataclass
class LoadedCheckpoint:
    format: str
    path: str
    modules: list  # list[LoadedModule]
    tokenizer: Optional[TokenizerInfo] = None
    streaming: Optional[dict] = None  # ChunkSpec dict, when the checkpoint says
    prompt: Optional[dict] = None  # ChatML prompt pieces, when the checkpoint says
    speakers: Optional[dict] = None  # name -> {"embedding", optional "speech_token", "speech_feat"} (numpy)

    def module(self, name: str) -> LoadedModule:
        for m in self.modules:
            if m.name == name:
                return m
        raise KeyError(name)


def to_fp32(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"tensor {k!r} is a {type(v).__name__}, not a tensor")
        out[k] = v.detach().to(torch.float32).contiguous() if v.is_floating_point() else v.detach().contiguous()
    return out


def _pickle_globals(data: bytes) -> list[str]:
    """The GLOBAL / STACK_GLOBAL references of a pickle stream, without executing it."""
    found, strings = [], []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                strings.append(arg)
            elif op.name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # a malformed stream: report what was seen
        pass
    return found


def safe_torch_load(path: str) -> Any:
    """torch.load with ``weights_only=True`` (never executes code). A file that needs anything else
    is refused with a CheckpointError naming the offending globals."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError and friends
        names: list[str] = []
        try:
            if zipfile.is_zipfile(path):
                with zipfile.ZipFile(path) as z:
                    for n in z.namelist():
                        if n.endswith("data.pkl"):
                            names = _pickle_globals(z.read(n))
            else:
                with open(path, "rb") as f:
                    names = _pickle_globals(f.read())
        except Exception:
            pass
        detail = f" (it references {', '.join(sorted(set(names)))})" if names else ""
        raise CheckpointError(
            f"{path}: refused to load; it is not a plain tensor state dict that torch.load(weights_only=True) "
            f"accepts{detail}. Only tensor state dicts are loaded, so no code in the file can run. "
            f"Convert it to safetensors or a plain state dict. Loader said: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
        ) from None


def find_state_dict(obj: Any, path: str) -> dict:
    """A plain state dict, possibly nested under "state_dict" / "model" / "module"."""
    for _ in range(3):
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        if isinstance(obj, dict):
            for key in ("state_dict", "model", "module"):
                if key in obj and isinstance(obj[key], dict):
                    obj = obj[key]
                    break
            else:
                break
        else:
            break
    raise CheckpointError(f"{path}: expected a tensor state dict (or one under 'state_dict' / 'model'), "
                          f"found {type(obj).__name__}" + (f" with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, dict) else ""))


def check_state_dict(name: str, module: torch.nn.Module, sd: dict, source: str, ignore=(), optional=()) -> dict:
    """Compares a loaded state dict with the reference module's; raises naming missing / unexpected
    / mis-shaped tensors. ``ignore``: key suffixes dropped silently; ``optional``: may be absent."""
    ref = module.state_dict()
    sd = {k: v for k, v in sd.items() if not any(k.endswith(s) for s in ignore)}
    missing = [k for k in ref if k not in sd and k not in optional]
    unexpected = [k for k in sd if k not in ref]
    bad = [f"{k}: {tuple(sd[k].shape)} vs {tuple(ref[k].shape)}" for k in ref if k in sd and sd[k].shape != ref[k].shape]
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {missing[:4]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensors (e.g. {unexpected[:4]})")
        if bad:
            parts.append(f"wrong shapes: {bad[:4]}")
        raise CheckpointError(f"{source}: {name} weights do not match the {type(module).__name__} config: " + "; ".join(parts))
    return {k: sd[k] for k in ref if k in sd}


def frontend_buffers(module: torch.nn.Module) -> dict:
    """Every buffer of a reference frontend (persistent or not), fp32."""
    return {k: v.detach().to(torch.float32).contiguous() for k, v in module.named_buffers()}


def read_text(path: str) -> str:
    with open(path, "r", encoding="utf-8") as f:
        return f.read()
