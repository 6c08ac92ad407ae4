"""CosyVoice2 checkpoint layout (public CosyVoice2-0.5B): ``llm.pt``, ``flow.pt``, ``hift.pt``,
``cosyvoice2.yaml`` and the Qwen2.5-0.5B text LM folder (``CosyVoice-BlankEN``: config.json +
tokenizer), optionally ``spk2info.pt`` (speaker embeddings / prompt tokens / prompt mel).

-> modules voice_lm (cascade text-to-speech), flow, hift. The ``.pt`` files are read with
``torch.load(weights_only=True)``; ``cosyvoice2.yaml`` (hyperpyyaml) is parsed with a safe YAML loader
that turns its ``!new:`` / ``!name:`` / ``!apply:`` / ``!ref`` tags into plain data: nothing named in
the file is imported or called.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any

import yaml

from ..reference import FlowConfig, HiftConfig, Qwen2Config, VoiceLMConfig
from ..reference.flow import Flow
from ..reference.hift import HiFT
from .common import CheckpointError, LoadedCheckpoint, LoadedModule, check_state_dict, find_state_dict, safe_torch_load, to_fp32
from .hf_qwen2 import hf_tokenizer_info

YAML_NAME = "cosyvoice2.yaml"
REQUIRED = ("llm.pt", "flow.pt", "hift.pt", YAML_NAME)
TEXT_LM_DIRS = ("CosyVoice-BlankEN", "qwen", "Qwen2.5-0.5B")
ENDOFPROMPT = "<|endofprompt|>"
#: Special tokens CosyVoice2's text frontend adds to the BlankEN tokenizer when it loads it (in this
#: order; those already present keep their ids, the others are appended after the vocabulary). The
#: published tokenizer.json does not contain them, so the loader adds them the same way.
COSYVOICE2_ADDED_SPECIALS = (
    "<|im_start|>", "<|im_end|>", ENDOFPROMPT, "[breath]", "<strong>", "</strong>", "[noise]", "[laughter]",
    "[cough]", "[clucking]", "[accent]", "[quick_breath]", "<laughter>", "</laughter>", "[hissing]", "[sigh]",
    "[vocalized-noise]", "[lipsmack]", "[mn]")


def is_cosyvoice2(path: str) -> bool:
    return all(os.path.isfile(os.path.join(path, f)) for f in REQUIRED)


# ----------------------------------------------------------------------------- safe hyperpyyaml

class _Tagged(dict):
    """A ``!new:`` / ``!name:`` / ``!apply:`` node: its target (a dotted name, never imported) and args."""


class _Ref(str):
    """A ``!ref <key>`` scalar, resolved after parsing."""


class HyperYamlLoader(yaml.SafeLoader):
    """SafeLoader that reads hyperpyyaml tags as data (see module doc)."""


def _tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node, kind: str):
    if isinstance(node, yaml.MappingNode):
        args = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        args = {"__args__": loader.construct_sequence(node, deep=True)}
    else:
        value = loader.construct_scalar(node)
        args = {"__args__": value} if value not in ("", None) else {}
    out = _Tagged(args)
    out.kind, out.target = kind, suffix
    return out


for _kind in ("new", "name", "apply", "copy"):
    HyperYamlLoader.add_multi_constructor(f"!{_kind}:", lambda l, s, n, k=_kind: _tagged(l, s, n, k))
HyperYamlLoader.add_constructor("!ref", lambda l, n: _Ref(l.construct_scalar(n)))


def _resolve(node: Any, top: dict, depth: int = 0) -> Any:
    if depth > 20:
        raise CheckpointError("cosyvoice2.yaml: !ref nesting too deep (cycle?)")
    if isinstance(node, _Ref):
        keys = re.findall(r"<([^<>]+)>", node)
        if re.fullmatch(r"\s*<[^<>]+>\s*", node):
            key = keys[0]
            if key not in top:
                raise CheckpointError(f"cosyvoice2.yaml: !ref to unknown key {key!r}")
            return _resolve(top[key], top, depth + 1)
        # "<a> * <b>": only products / sums of referenced numbers (no evaluation of anything else)
        m = re.fullmatch(r"\s*<([^<>]+)>\s*([*+])\s*<([^<>]+)>\s*", node)
        if m:
            a, b = (_resolve(top.get(k), top, depth + 1) for k in (m.group(1), m.group(3)))
            if isinstance(a, (int, float)) and isinstance(b, (int, float)):
                return a * b if m.group(2) == "*" else a + b
        return str(node)  # kept as text: not needed by the loader
    if isinstance(node, dict):
        out = type(node)({k: _resolve(v, top, depth + 1) for k, v in node.items()})
        if isinstance(node, _Tagged):
            out.kind, out.target = node.kind, node.target
        return out
    if isinstance(node, list):
        return [_resolve(v, top, depth + 1) for v in node]
    return node


def parse_hyperpyyaml(path: str) -> dict:
    """The YAML as plain data: tagged nodes become dicts (``.kind`` / ``.target``), refs resolved."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.load(f, Loader=HyperYamlLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise CheckpointError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: expected a mapping at the top level")
    return _resolve(raw, raw)


# ----------------------------------------------------------------------------- configs

def _section(conf: dict, key: str, path: str) -> dict:
    v = conf.get(key)
    if not isinstance(v, dict):
        raise CheckpointError(f"{path}: no {key!r} section")
    return v


def voice_lm_config(conf: dict, qwen: Qwen2Config, path: str) -> VoiceLMConfig:
    llm = _section(conf, "llm", path)
    samp = llm.get("sampling") or {}
    mix = llm.get("mix_ratio") or [5, 15]
    if llm.get("llm_input_size", qwen.hidden_size) != qwen.hidden_size:
        raise CheckpointError(f"{path}: llm_input_size {llm.get('llm_input_size')} != text LM hidden_size {qwen.hidden_size}")
    return VoiceLMConfig(
        vocab_size=qwen.vocab_size, hidden_size=qwen.hidden_size, intermediate_size=qwen.intermediate_size,
        num_hidden_layers=qwen.num_hidden_layers, num_attention_heads=qwen.num_attention_heads,
        num_key_value_heads=qwen.num_key_value_heads, head_dim=qwen.head_dim, rope_theta=qwen.rope_theta,
        rms_norm_eps=qwen.rms_norm_eps, max_position_embeddings=qwen.max_position_embeddings,
        speech_token_size=int(llm.get("speech_token_size", 6561)), text_ratio=int(mix[0]), speech_ratio=int(mix[1]),
        top_p=float(samp.get("top_p", 0.8)), top_k=int(samp.get("top_k", 25)), win_size=int(samp.get("win_size", 10)),
        tau_r=float(samp.get("tau_r", 0.1)))


def flow_config(conf: dict, path: str) -> FlowConfig:
    flow = _section(conf, "flow", path)
    enc = flow.get("encoder") or {}
    dec = flow.get("decoder") or {}
    est = dec.get("estimator") or {}
    cfm = (dec.get("cfm_params") or {}).get("content") or dec.get("cfm_params") or {}
    channels = est.get("channels", [256])
    return FlowConfig(
        vocab_size=int(flow.get("vocab_size", 6561)), d_model=int(enc.get("output_size", flow.get("input_size", 512))),
        n_heads=int(enc.get("attention_heads", 8)), ffn_dim=int(enc.get("linear_units", 2048)),
        n_blocks=int(enc.get("num_blocks", 6)), n_up_blocks=int(enc.get("num_up_blocks", 4)),
        pre_lookahead=int(flow.get("pre_lookahead_len", 3)), mel_dim=int(flow.get("output_size", 80)),
        spk_dim=int(flow.get("spk_embed_dim", 192)), token_mel_ratio=int(flow.get("token_mel_ratio", 2)),
        est_channels=int(channels[0] if isinstance(channels, list) else channels),
        est_heads=int(est.get("num_heads", 8)), est_head_dim=int(est.get("attention_head_dim", 64)),
        n_transformer=int(est.get("n_blocks", 4)), n_mid_blocks=int(est.get("num_mid_blocks", 12)),
        cfg_rate=float(cfm.get("inference_cfg_rate", 0.7)))


def hift_config(conf: dict, path: str) -> HiftConfig:
    h = _section(conf, "hift", path)
    istft = h.get("istft_params") or {}
    f0 = h.get("f0_predictor") or {}
    d = HiftConfig()
    return HiftConfig(
        mel_dim=int(h.get("in_channels", 80)), base_channels=int(h.get("base_channels", 512)),
        nb_harmonics=int(h.get("nb_harmonics", 8)), sample_rate=int(h.get("sampling_rate", conf.get("sample_rate", 24000))),
        nsf_alpha=float(h.get("nsf_alpha", 0.1)), nsf_sigma=float(h.get("nsf_sigma", 0.003)),
        nsf_voiced_threshold=float(h.get("nsf_voiced_threshold", 10)),
        upsample_rates=list(h.get("upsample_rates", d.upsample_rates)),
        upsample_kernel_sizes=list(h.get("upsample_kernel_sizes", d.upsample_kernel_sizes)),
        n_fft=int(istft.get("n_fft", 16)), hop_len=int(istft.get("hop_len", 4)),
        resblock_kernel_sizes=list(h.get("resblock_kernel_sizes", d.resblock_kernel_sizes)),
        resblock_dilation_sizes=[list(x) for x in h.get("resblock_dilation_sizes", d.resblock_dilation_sizes)],
        source_resblock_kernel_sizes=list(h.get("source_resblock_kernel_sizes", d.source_resblock_kernel_sizes)),
        source_resblock_dilation_sizes=[list(x) for x in h.get("source_resblock_dilation_sizes", d.source_resblock_dilation_sizes)],
        lrelu_slope=float(h.get("lrelu_slope", 0.1)), audio_limit=float(h.get("audio_limit", 0.99)),
        f0_channels=int(f0.get("cond_channels", 512)))


# ----------------------------------------------------------------------------- loader

def text_lm_dir(path: str) -> str:
    for name in TEXT_LM_DIRS:
        d = os.path.join(path, name)
        if os.path.isfile(os.path.join(d, "config.json")):
            return d
    raise CheckpointError(f"{path}: no Qwen2.5 text LM folder (looked for {', '.join(TEXT_LM_DIRS)} with config.json)")


def voice_lm_state_dict(raw: dict, source: str) -> dict:
    """CosyVoice2 ``llm.pt`` names -> VoiceLM names: ``llm.model.model.*`` -> ``model.*``; the tied
    ``llm.model.lm_head.weight`` is dropped; ``llm_embedding``, ``speech_embedding``, ``llm_decoder`` kept."""
    out = {}
    for k, v in raw.items():
        if k.startswith("llm.model.model."):
            out["model." + k[len("llm.model.model."):]] = v
        elif k == "llm.model.lm_head.weight":
            continue
        elif k.split(".")[0] in ("llm_embedding", "speech_embedding", "llm_decoder"):
            out[k] = v
        else:
            raise CheckpointError(f"{source}: unexpected tensor {k!r} in a CosyVoice2 LM")
    return out


def load_cosyvoice2(path: str) -> LoadedCheckpoint:
    ypath = os.path.join(path, YAML_NAME)
    conf = parse_hyperpyyaml(ypath)
    tdir = text_lm_dir(path)
    with open(os.path.join(tdir, "config.json")) as f:
        try:
            qwen = Qwen2Config.from_hf(json.load(f))
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{tdir}/config.json: {e}") from None
    try:
        vcfg, fcfg, hcfg = voice_lm_config(conf, qwen, ypath), flow_config(conf, ypath), hift_config(conf, ypath)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{ypath}: {e}") from None
    from ..reference.voice_decoder import VoiceLM
    import torch

    def checked(name: str, arch: str, file: str, cls, cfg, fix=lambda sd, src: sd) -> LoadedModule:
        src = os.path.join(path, file)
        sd = fix(to_fp32(find_state_dict(safe_torch_load(src), src)), src)
        with torch.device("meta"):
            ref = cls(cfg)
        return LoadedModule(name, arch, cfg.to_dict(), check_state_dict(name, ref, sd, src), {"source": "cosyvoice2"})

    modules = [checked("voice_lm", "voice_lm", "llm.pt", VoiceLM, vcfg, voice_lm_state_dict),
               checked("flow", "cosyvoice2_flow", "flow.pt", Flow, fcfg)]
    src = os.path.join(path, "hift.pt")
    sd = to_fp32(find_state_dict(safe_torch_load(src), src))
    try:
        hift = HiFT.from_state_dict(hcfg, sd)
    except RuntimeError as e:
        raise CheckpointError(f"{src}: hift weights do not match the config: {str(e).splitlines()[0][:300]}") from None
    modules.append(LoadedModule("hift", "cosyvoice2_hift", hcfg.to_dict(), {k: v.float() for k, v in hift.plain_state_dict().items()},
                                {"source": "cosyvoice2"}))
    tok_path = os.path.join(tdir, "tokenizer.json")
    tok = None
    if os.path.isfile(tok_path):
        tok = voice_lm_tokenizer(tok_path, os.path.join(tdir, "tokenizer_config.json"), vcfg.vocab_size)
    modules[0].extra["tokenizer"] = tok
    speakers = load_speakers(path) if os.path.isfile(os.path.join(path, "spk2info.pt")) else None
    return LoadedCheckpoint("cosyvoice2", path, modules, tokenizer=tok, speakers=speakers)


def voice_lm_tokenizer(tok_path: str, config_path: str, embed_rows: int):
    """The BlankEN tokenizer as CosyVoice2 uses it: with :data:`COSYVOICE2_ADDED_SPECIALS` added
    (the bundle stores the augmented tokenizer.json). Its ids must fit the voice LM's text embedding."""
    from tokenizers import Tokenizer

    info = hf_tokenizer_info(tok_path, config_path)
    t = Tokenizer.from_file(tok_path)
    t.add_special_tokens(list(COSYVOICE2_ADDED_SPECIALS))
    info.added_special_tokens = list(COSYVOICE2_ADDED_SPECIALS)
    info.vocab_size = t.get_vocab_size(with_added_tokens=True)
    if info.vocab_size > embed_rows:
        raise CheckpointError(f"{tok_path}: {info.vocab_size} tokens with CosyVoice2's special tokens, but the voice LM "
                              f"embeds only {embed_rows} text tokens")
    for name in ("<|im_start|>", "<|im_end|>", ENDOFPROMPT):
        info.special[name] = t.token_to_id(name)
    return info


def load_speakers(path: str) -> dict:
    """``spk2info.pt`` of a CosyVoice2 folder (or the file itself): name -> {"embedding" [192],
    optional "speech_token" [n] int64, "speech_feat" [2n, 80]} as numpy arrays."""
    f = os.path.join(path, "spk2info.pt") if os.path.isdir(path) else path
    raw = safe_torch_load(f)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{f}: expected a dict of speakers")
    out = {}
    for name, info in raw.items():
        if not isinstance(info, dict) or "embedding" not in info:
            raise CheckpointError(f"{f}: speaker {name!r} has no 'embedding'")
        entry = {"embedding": info["embedding"].float().reshape(-1).numpy()}
        if "speech_token" in info:
            entry["speech_token"] = info["speech_token"].long().reshape(-1).numpy()
        if "speech_feat" in info:
            entry["speech_feat"] = info["speech_feat"].float().reshape(-1, info["speech_feat"].shape[-1]).numpy()
        out[str(name)] = entry
    return out
