"""Architecture registry: bundle arch name -> (module name, config class, reference module class)."""
from __future__ import annotations

from typing import Optional

import torch

from ..reference import (ChunkSpec, DuplexConfig, DuplexPredictor, FbankFrontendConfig, InputProjector,
                         KaldiFbankFrontend, OutputProjector, OutputProjectorConfig, ProjectorConfig, Qwen2Config,
                         Qwen2Decoder, SenseVoiceLargeConfig, SenseVoiceLargeEncoder, SenseVoiceSmallConfig,
                         SenseVoiceSmallEncoder, VoiceLM, VoiceLMConfig, WhisperFrontendConfig,
                         WhisperLogMelFrontend)
from ..reference.configs import FlowConfig, HiftConfig
from ..reference.flow import Flow
from ..reference.hift import HiFT

# arch -> (module slot, config class, module class, takes a ChunkSpec)
ARCHS = {
    "kaldi_fbank": ("frontend", FbankFrontendConfig, KaldiFbankFrontend, False),
    "whisper_logmel": ("frontend", WhisperFrontendConfig, WhisperLogMelFrontend, False),
    "sensevoice_small": ("encoder", SenseVoiceSmallConfig, SenseVoiceSmallEncoder, True),
    "sensevoice_large": ("encoder", SenseVoiceLargeConfig, SenseVoiceLargeEncoder, True),
    "projector": ("projector", ProjectorConfig, InputProjector, True),
    "qwen2": ("llm", Qwen2Config, Qwen2Decoder, False),
    "duplex": ("duplex", DuplexConfig, DuplexPredictor, False),
    "output_projector": ("output_projector", OutputProjectorConfig, OutputProjector, False),
    "voice_lm": ("voice_lm", VoiceLMConfig, VoiceLM, False),
    # token2wav: weights in bundles are plain (HiFT weight norm folded, see HiFT.plain_state_dict)
    "cosyvoice2_flow": ("flow", FlowConfig, Flow, False),
    "cosyvoice2_hift": ("hift", HiftConfig, HiFT, False),
}
MODULE_NAMES = ("frontend", "encoder", "projector", "llm", "duplex", "output_projector", "voice_lm", "flow", "hift")
FRONTEND_ARCHS = ("kaldi_fbank", "whisper_logmel")


def config_of(arch: str, config: dict):
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; known: {sorted(ARCHS)}")
    return ARCHS[arch][1].from_dict(dict(config))


def make_module(arch: str, config: dict, chunk: Optional[ChunkSpec] = None, meta: bool = False) -> torch.nn.Module:
    """A reference module of ``arch`` (random init; ``meta``: no storage, for shape checks)."""
    _, _, cls, chunked = ARCHS[arch] if arch in ARCHS else (None, None, None, None)
    cfg = config_of(arch, config)
    if meta and arch not in FRONTEND_ARCHS:
        with torch.device("meta"):
            return cls(cfg, chunk) if chunked else cls(cfg)
    return cls(cfg, chunk) if chunked else cls(cfg)


def expected_tensors(arch: str, config: dict) -> dict:
    """name -> shape of what a bundle's weights file holds for this module."""
    m = make_module(arch, config, meta=True)
    if arch in FRONTEND_ARCHS:
        return {k: tuple(v.shape) for k, v in m.named_buffers()}
    sd = m.state_dict()
    if arch == "qwen2" and config.get("tie_word_embeddings"):
        sd.pop("lm_head.weight", None)
    return {k: tuple(v.shape) for k, v in sd.items()}


def check_consistency(modules: dict) -> list[str]:
    """Cross-module shape agreements; returns human-readable problems (empty when fine).
    ``modules``: name -> (arch, config dict)."""
    problems = []
    get = lambda n: modules.get(n, (None, {}))  # noqa: E731
    fa, fc = get("frontend")
    ea, ec = get("encoder")
    pa, pc = get("projector")
    la, lc = get("llm")
    da, dc = get("duplex")
    oa, oc = get("output_projector")
    va, vc = get("voice_lm")
    for name, (arch, _) in modules.items():
        if arch not in ARCHS:
            problems.append(f"module {name!r}: unknown arch {arch!r}")
        elif ARCHS[arch][0] != name:
            problems.append(f"module {name!r} has arch {arch!r}, which belongs in module {ARCHS[arch][0]!r}")
    if fa == "kaldi_fbank" and ea == "sensevoice_small":
        d = fc.get("num_mel_bins", 80) * fc.get("lfr_m", 7)
        if d != ec.get("input_dim"):
            problems.append(f"frontend makes {d}-d features, encoder expects input_dim {ec.get('input_dim')}")
    if fa == "whisper_logmel" and ea == "sensevoice_large" and fc.get("n_mels") != ec.get("n_mels"):
        problems.append(f"frontend makes {fc.get('n_mels')} mels, encoder expects n_mels {ec.get('n_mels')}")
    if fa and ea and (fa, ea) in {("kaldi_fbank", "sensevoice_large"), ("whisper_logmel", "sensevoice_small")}:
        problems.append(f"frontend {fa} does not feed encoder {ea}")
    if ea and pa and ec.get("d_model") != pc.get("encoder_dim"):
        problems.append(f"encoder d_model {ec.get('d_model')} != projector encoder_dim {pc.get('encoder_dim')}")
    if pa and la and pc.get("output_dim") != lc.get("hidden_size"):
        problems.append(f"projector output_dim {pc.get('output_dim')} != llm hidden_size {lc.get('hidden_size')}")
    if da and la and dc.get("llm_hidden") != lc.get("hidden_size"):
        problems.append(f"duplex llm_hidden {dc.get('llm_hidden')} != llm hidden_size {lc.get('hidden_size')}")
    if oa and la:
        for key in ("embed_dim", "llm_hidden"):
            if oc.get(key) != lc.get("hidden_size"):
                problems.append(f"output_projector {key} {oc.get(key)} != llm hidden_size {lc.get('hidden_size')}")
    if oa and va and oc.get("output_dim") != vc.get("hidden_size"):
        problems.append(f"output_projector output_dim {oc.get('output_dim')} != voice_lm hidden_size {vc.get('hidden_size')}")
    return problems
