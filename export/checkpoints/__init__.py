"""Loaders of the checkpoint formats the exporter reads.

``detect_format(path)`` names the layout of a checkpoint directory; ``load_checkpoint(path)`` returns
a :class:`LoadedCheckpoint` (a list of :class:`LoadedModule` plus tokenizer / streaming / prompt
info). Formats:

- ``hf-qwen2``: Hugging Face Qwen2 / Qwen2.5 (config.json, *.safetensors, tokenizer.json) -> llm
- ``funasr-sensevoice``: FunASR SenseVoice-Small (model.pt, config.yaml, am.mvn, *.bpe.model)
  -> frontend (kaldi_fbank) + encoder (sensevoice_small)
- ``cosyvoice2``: CosyVoice2-0.5B (llm.pt, flow.pt, hift.pt, cosyvoice2.yaml, CosyVoice-BlankEN/)
  -> voice_lm + flow + hift (cascade text-to-speech)
- ``minmo``: the MinMo layout described in README.md (minmo.json + <module>.safetensors)

Pickles are only read through ``torch.load(weights_only=True)``; anything else is refused.
"""
from __future__ import annotations

import os

from .cosyvoice2 import is_cosyvoice2, load_cosyvoice2, load_speakers
from .common import CheckpointError, LoadedCheckpoint, LoadedModule, TokenizerInfo, safe_torch_load
from .funasr_sensevoice import is_funasr_sensevoice, load_funasr_sensevoice, parse_am_mvn
from .hf_qwen2 import is_hf_qwen2, load_hf_qwen2
from .minmo import is_minmo, load_minmo

FORMATS = {
    "minmo": (is_minmo, load_minmo, "minmo.json"),
    "hf-qwen2": (is_hf_qwen2, load_hf_qwen2, "config.json with model_type 'qwen2' (+ *.safetensors, tokenizer.json)"),
    "funasr-sensevoice": (is_funasr_sensevoice, load_funasr_sensevoice, "model.pt + config.yaml (+ am.mvn, *.bpe.model)"),
    "cosyvoice2": (is_cosyvoice2, load_cosyvoice2, "llm.pt + flow.pt + hift.pt + cosyvoice2.yaml + the Qwen2.5 text LM folder"),
}


def detect_format(path: str) -> str:
    """"hf-qwen2" | "funasr-sensevoice" | "minmo" | "cosyvoice2"; raises CheckpointError listing what was looked for."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path} is not a directory (a checkpoint is a folder)")
    for name, (probe, _, _) in FORMATS.items():
        if probe(path):
            return name
    looked = "; ".join(f"{name}: {what}" for name, (_, _, what) in FORMATS.items())
    present = sorted(os.listdir(path))[:12]
    raise CheckpointError(f"cannot tell the format of checkpoint {path}. Looked for: {looked}. Found: {present or 'nothing'}")


def load_checkpoint(path: str) -> LoadedCheckpoint:
    return FORMATS[detect_format(path)][1](path)


__all__ = ["CheckpointError", "LoadedCheckpoint", "LoadedModule", "TokenizerInfo", "detect_format",
           "load_checkpoint", "load_hf_qwen2", "load_cosyvoice2", "load_speakers", "load_funasr_sensevoice", "load_minmo", "parse_am_mvn",
           "safe_torch_load", "FORMATS"]
