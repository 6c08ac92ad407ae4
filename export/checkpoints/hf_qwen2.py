"""Hugging Face Qwen2 / Qwen2.5 directory: config.json, model.safetensors (or shards with
model.safetensors.index.json), tokenizer.json (+ tokenizer_config.json)."""
from __future__ import annotations

import json
import os

import torch
from safetensors.torch import load_file

from ..reference import Qwen2Config, Qwen2Decoder
from .common import CheckpointError, LoadedCheckpoint, LoadedModule, TokenizerInfo, check_state_dict, to_fp32

CHATML_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|audio_bos|>", "<|audio_eos|>")


def is_hf_qwen2(path: str) -> bool:
    cfg = os.path.join(path, "config.json")
    if not os.path.isfile(cfg):
        return False
    try:
        with open(cfg) as f:
            return json.load(f).get("model_type") == "qwen2"
    except (OSError, ValueError):
        return False


def safetensors_files(path: str) -> list[str]:
    index = os.path.join(path, "model.safetensors.index.json")
    single = os.path.join(path, "model.safetensors")
    if os.path.isfile(index):
        with open(index) as f:
            weight_map = json.load(f).get("weight_map") or {}
        files = sorted(set(weight_map.values()))
        for name in files:
            if os.path.basename(name) != name:
                raise CheckpointError(f"{index}: shard name {name!r} must be a plain file name")
        missing = [n for n in files if not os.path.isfile(os.path.join(path, n))]
        if missing:
            raise CheckpointError(f"{path}: shards listed in model.safetensors.index.json are missing: {missing}")
        if not files:
            raise CheckpointError(f"{index}: empty weight_map")
        return [os.path.join(path, n) for n in files]
    if os.path.isfile(single):
        return [single]
    raise CheckpointError(f"{path}: no model.safetensors or model.safetensors.index.json "
                          "(only safetensors weights are loaded; *.bin pickles are not)")


def hf_tokenizer_info(tok_path: str, config_path: str | None = None) -> TokenizerInfo:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tok_path)
    special = {t: tok.token_to_id(t) for t in CHATML_SPECIALS if tok.token_to_id(t) is not None}
    eos_token = None
    extra = []
    if config_path and os.path.isfile(config_path):
        extra.append(config_path)
        with open(config_path) as f:
            tc = json.load(f)
        eos = tc.get("eos_token")
        eos_token = eos.get("content") if isinstance(eos, dict) else eos
    if eos_token is None:
        eos_token = "<|im_end|>" if "<|im_end|>" in special else "<|endoftext|>"
    return TokenizerInfo(kind="hf-tokenizers", path=tok_path, extra_files=extra, special=special,
                         eos_id=tok.token_to_id(eos_token) if eos_token else None,
                         vocab_size=tok.get_vocab_size(with_added_tokens=True))


def load_hf_qwen2(path: str) -> LoadedCheckpoint:
    with open(os.path.join(path, "config.json")) as f:
        hf = json.load(f)
    unsupported = []
    if hf.get("use_sliding_window"):
        unsupported.append("use_sliding_window: true")
    if hf.get("rope_scaling") and (hf["rope_scaling"].get("rope_type") or hf["rope_scaling"].get("type")) not in (None, "default"):
        unsupported.append(f"rope_scaling {hf['rope_scaling']}")
    if hf.get("hidden_act", "silu") != "silu":
        unsupported.append(f"hidden_act {hf.get('hidden_act')!r}")
    if unsupported:
        raise CheckpointError(f"{path}/config.json: not supported by the Qwen2 reference: {', '.join(unsupported)}")
    try:
        cfg = Qwen2Config.from_hf(hf)
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}/config.json: not a usable Qwen2 config: {e}") from None
    sd = {}
    for file in safetensors_files(path):
        part = load_file(file)
        dup = set(part) & set(sd)
        if dup:
            raise CheckpointError(f"{file}: tensors also found in another shard: {sorted(dup)[:4]}")
        sd.update(part)
    with torch.device("meta"):
        ref = Qwen2Decoder(cfg)
    optional = ("lm_head.weight",) if cfg.tie_word_embeddings else ()
    if cfg.tie_word_embeddings:
        sd.pop("lm_head.weight", None)  # tied: the embedding is the head; never stored twice
    sd = check_state_dict("llm", ref, to_fp32(sd), path, ignore=("rotary_emb.inv_freq",), optional=optional)
    tok_path = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(tok_path):
        raise CheckpointError(f"{path}: no tokenizer.json (the Hugging Face fast-tokenizer file is required)")
    tok = hf_tokenizer_info(tok_path, os.path.join(path, "tokenizer_config.json"))
    if tok.vocab_size and tok.vocab_size > cfg.vocab_size:
        raise CheckpointError(f"{path}: tokenizer has {tok.vocab_size} tokens but the model's vocab_size is {cfg.vocab_size}")
    prompt = None
    if "<|audio_bos|>" in tok.special and "<|audio_eos|>" in tok.special:
        prompt = {"audio_bos": "<|audio_bos|>", "audio_eos": "<|audio_eos|>"}
    mod = LoadedModule("llm", "qwen2", cfg.to_dict(), sd, {"source": "hf-qwen2", "hf_architectures": hf.get("architectures")})
    return LoadedCheckpoint("hf-qwen2", path, [mod], tokenizer=tok, prompt=prompt)
