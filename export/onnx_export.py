"""One ONNX file per bundle module, exported from the reference modules with dynamic time axes and
validated against them with ONNX Runtime.

Exporter: ``torch.onnx.export(..., dynamo=True)`` (torch.export based; the TorchScript exporter is
deprecated since torch 2.9) with opset 18. Where a reference module has Python control flow on a
shape or a loop over frames, an export wrapper computes the same function with tensor ops
(documented per wrapper); the validation below proves the equivalence on random inputs.

Graph I/O (names are what the runtime's ``run_module`` uses):
- frontend: waveform [N] float32 -> features [T, D]
- encoder sensevoice_small: features [T, 560], query_ids [4] int64 -> encoder_out [T+4, d], ctc_logits [T+4, V]
- encoder sensevoice_large: features [T, n_mels] -> encoder_out [T', d]  (the bundle's streaming mask, offline)
- projector: frames [T, enc] -> tokens [(T+1)//2, H]
- llm (KV-cache step): embeds [T, H], past_key / past_value [L, P, kv, hd] (P may be 0) ->
  logits [T, V], hidden [T, H], present_key / present_value [L, P+T, kv, hd]
- duplex: hidden [T, llm_hidden] -> p_turn [T], p_barge [T]
- flow (``onnx``, the encoder): tokens [T] int64, token_mask [T, T] bool -> mu [2T, 80]
  (True = may attend; token2wav.stream_masks gives the streaming one; mel frames use it expanded 2x)
- flow ``onnx_parts.estimator``: x, mu, cond [B, T, 80], t [B], spk [B, 80], mel_mask [T, T] bool -> dphi [B, T, 80]
- hift (``onnx``, the filter network + iSTFT): mel [T, 80], source [S*T] -> audio [S*T]
- hift ``onnx_parts.f0``: mel [T, 80] -> f0 [T]  (the NSF source between the two is float64 phase
  accumulation + seeded noise, hift.source_from_f0)
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .reference import KVCache
from .reference.layers import chunk_attention_mask

OPSET = 18
TOLERANCE = 1e-4
EXTERNAL_DATA_BYTES = int(1.5 * 2**30)


# ----------------------------------------------------------------------------- export wrappers

def _dft_matrices(n_in: int, n_fft: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary rfft of a length-n_in frame zero-padded to n_fft, as [n_in, n_fft//2+1]
    matrices (float64): rfft(x, n_fft) = x @ (C - iS)."""
    k = np.arange(n_fft // 2 + 1, dtype=np.float64)
    n = np.arange(n_in, dtype=np.float64)
    ang = 2.0 * np.pi * np.outer(n, k) / n_fft
    return torch.from_numpy(np.cos(ang)), torch.from_numpy(np.sin(ang))


class KaldiFbankExport(nn.Module):
    """KaldiFbankFrontend with framing / LFR as index gathers and rfft as a DFT matmul (float64).
    Needs at least one frame (N >= window)."""

    def __init__(self, ref):
        super().__init__()
        self.cfg, self.win, self.hop = ref.cfg, ref.win, ref.hop
        cos, sin = _dft_matrices(ref.win, ref.padded)
        self.register_buffer("dft_cos", cos)
        self.register_buffer("dft_sin", sin)
        self.register_buffer("window", ref.window.to(torch.float64).clone())
        self.register_buffer("mel_banks_t", ref.mel_banks.to(torch.float64).T.contiguous())
        self.register_buffer("cmvn_shift", ref.cmvn_shift.to(torch.float32).clone())
        self.register_buffer("cmvn_scale", ref.cmvn_scale.to(torch.float32).clone())

    def forward(self, waveform):
        cfg = self.cfg
        x = waveform.to(torch.float64) * cfg.waveform_scale
        n = (x.shape[0] - self.win) // self.hop + 1
        idx = torch.arange(n)[:, None] * self.hop + torch.arange(self.win)[None, :]
        frames = x[idx]
        frames = frames - frames.mean(dim=1, keepdim=True)
        prev = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
        frames = (frames - cfg.preemphasis * prev) * self.window
        power = (frames @ self.dft_cos) ** 2 + (frames @ self.dft_sin) ** 2
        eps = float(np.finfo(np.float32).eps)
        feats = torch.log(torch.clamp(power @ self.mel_banks_t, min=eps)).to(torch.float32)
        # LFR: output i stacks frames clamp(i*n + j - (m-1)//2, 0, T-1), j < m
        m, step = cfg.lfr_m, cfg.lfr_n
        t_lfr = (n + step - 1) // step
        src = torch.arange(t_lfr)[:, None] * step + torch.arange(m)[None, :] - (m - 1) // 2
        src = torch.clamp(src, min=0)
        src = torch.minimum(src, (n - 1) + torch.zeros_like(src))
        out = feats[src].reshape(t_lfr, m * cfg.num_mel_bins)
        if cfg.apply_cmvn:
            out = (out + self.cmvn_shift) * self.cmvn_scale
        return out


class WhisperLogMelExport(nn.Module):
    """WhisperLogMelFrontend with framing as an index gather and rfft as a DFT matmul (float64).
    Needs N > n_fft // 2 samples."""

    def __init__(self, ref):
        super().__init__()
        self.cfg = ref.cfg
        cos, sin = _dft_matrices(ref.cfg.n_fft, ref.cfg.n_fft)
        self.register_buffer("dft_cos", cos)
        self.register_buffer("dft_sin", sin)
        self.register_buffer("window", ref.window.to(torch.float64).clone())
        self.register_buffer("mel_filters_t", ref.mel_filters.to(torch.float64).T.contiguous())

    def forward(self, waveform):
        cfg = self.cfg
        x = waveform.to(torch.float64)
        n = x.shape[0] // cfg.hop_length
        half = cfg.n_fft // 2
        padded = F.pad(x[None, None], (half, half), mode="reflect")[0, 0]
        idx = torch.arange(n)[:, None] * cfg.hop_length + torch.arange(cfg.n_fft)[None, :]
        frames = padded[idx] * self.window
        power = (frames @ self.dft_cos) ** 2 + (frames @ self.dft_sin) ** 2
        log_spec = torch.log10(torch.clamp(power @ self.mel_filters_t, min=1e-10))
        ceiling = log_spec.max() if cfg.log_ceiling is None else torch.tensor(cfg.log_ceiling, dtype=torch.float64)
        log_spec = torch.maximum(log_spec, ceiling - 8.0)
        return ((log_spec + 4.0) / 4.0).to(torch.float32)


class ProjectorExport(nn.Module):
    """InputProjector with the odd-length padding as a shape expression instead of a Python branch."""

    def __init__(self, ref):
        super().__init__()
        self.ref = ref

    def forward(self, frames):
        ref = self.ref
        t, d = frames.shape
        frames = F.pad(frames, (0, 0, 0, t % 2))
        x = frames.reshape(-1, 2 * d)
        x = ref.linear2(torch.relu(ref.linear1(x)))
        mask = chunk_attention_mask(x.shape[0], ref.chunk, ref.chunk.chunk_frames // 2 if ref.chunk else None)
        for block in ref.blocks:
            x = block(x, mask)
        return x


class Qwen2StepExport(nn.Module):
    """One KV-cache step of Qwen2Decoder with the cache as two stacked tensors [L, P, kv, hd]."""

    def __init__(self, ref):
        super().__init__()
        self.ref = ref

    def forward(self, embeds, past_key, past_value):
        n = self.ref.cfg.num_hidden_layers
        cache = KVCache([(past_key[i], past_value[i]) for i in range(n)])
        logits, hidden, new = self.ref(embeds, cache)
        return (logits, hidden, torch.stack([k for k, _ in new.layers]), torch.stack([v for _, v in new.layers]))


class VoiceLMStepExport(nn.Module):
    """One KV-cache step of the voice LM: speech logits instead of text logits."""

    def __init__(self, ref):
        super().__init__()
        self.ref = ref

    def forward(self, embeds, past_key, past_value):
        n = self.ref.cfg.num_hidden_layers
        logits, new = self.ref.step_logits(embeds, KVCache([(past_key[i], past_value[i]) for i in range(n)]))
        return logits, torch.stack([k for k, _ in new.layers]), torch.stack([v for _, v in new.layers])


class OutputProjectorExport(nn.Module):
    def __init__(self, ref):
        super().__init__()
        self.ref = ref

    def forward(self, token_embeds, hidden):
        return self.ref(token_embeds, hidden)


class DuplexExport(nn.Module):
    def __init__(self, ref):
        super().__init__()
        self.ref = ref

    def forward(self, hidden):
        p_turn, p_barge, _ = self.ref(hidden)
        return p_turn, p_barge


class SmallEncoderExport(nn.Module):
    def __init__(self, ref):
        super().__init__()
        self.ref = ref

    def forward(self, features, query_ids):
        return self.ref(features, query_ids)


class LargeEncoderExport(nn.Module):
    def __init__(self, ref):
        super().__init__()
        self.ref = ref

    def forward(self, features):
        return self.ref(features)


class FlowEncoderExport(nn.Module):
    def __init__(self, ref):
        super().__init__()
        self.ref = ref

    def forward(self, tokens, token_mask):
        """Flow.encode without its host-side id range check; mel frame f belongs to token f // 2, so the
        mel-rate mask is the token mask expanded."""
        ref = self.ref
        idx = torch.arange(2 * tokens.shape[0]) // 2
        mel_mask = token_mask.index_select(0, idx).index_select(1, idx)
        return ref.encoder_proj(ref.encoder(ref.input_embedding(tokens), token_mask, mel_mask))


class FlowEstimatorExport(nn.Module):
    def __init__(self, ref):
        super().__init__()
        self.est = ref.decoder.estimator

    def forward(self, x, mu, t, spk, cond, mel_mask):
        return self.est(x, mu, t, spk, cond, mel_mask)


class HiftDecodeExport(nn.Module):
    def __init__(self, ref):
        super().__init__()
        self.ref = ref

    def forward(self, mel, source):
        return self.ref.decode(mel, source)


class HiftF0Export(nn.Module):
    def __init__(self, ref):
        super().__init__()
        self.ref = ref

    def forward(self, mel):
        return self.ref.f0(mel)


# Modules exported as several graphs: arch -> parts; the first is the module's "onnx" file, the
# others go to "onnx_parts" (onnx/<module>_<part>.onnx).
ONNX_PARTS = {"cosyvoice2_flow": ["encoder", "estimator"], "cosyvoice2_hift": ["decode", "f0"]}


def _t2w_masks(t: int, chunk: int):
    from .reference.token2wav import stream_masks

    tm, mm = stream_masks(0, t, chunk, 2)
    return tm.numpy(), mm.numpy()


# ----------------------------------------------------------------------------- per-arch specs

def example_inputs(arch: str, module: nn.Module, seed: int = 0, length: Optional[int] = None) -> dict:
    """Random inputs (numpy, the graph's input names) for a module of ``arch``."""
    rng = np.random.default_rng(seed)
    cfg = module.cfg
    f32 = lambda *s, scale=1.0: (scale * rng.standard_normal(s)).astype(np.float32)  # noqa: E731
    if arch == "kaldi_fbank":
        n = length or int(0.93 * cfg.sample_rate)
        return {"waveform": f32(n, scale=0.1)}
    if arch == "whisper_logmel":
        n = length or int(0.93 * cfg.sample_rate)
        return {"waveform": f32(n, scale=0.1)}
    if arch == "sensevoice_small":
        return {"features": f32(length or 23, cfg.input_dim), "query_ids": np.array([0, 1, 2, 15], np.int64)}
    if arch == "sensevoice_large":
        return {"features": f32(length or 77, cfg.n_mels)}
    if arch == "projector":
        return {"frames": f32(length or 21, cfg.encoder_dim)}
    if arch == "qwen2":
        t, p = (length or 7), 5
        shape = (cfg.num_hidden_layers, p, cfg.num_key_value_heads, cfg.head_dim)
        return {"embeds": f32(t, cfg.hidden_size), "past_key": f32(*shape), "past_value": f32(*shape)}
    if arch == "duplex":
        return {"hidden": f32(length or 9, cfg.llm_hidden)}
    if arch == "voice_lm":
        t, p = (length or 7), 5
        shape = (cfg.num_hidden_layers, p, cfg.num_key_value_heads, cfg.head_dim)
        return {"embeds": f32(t, cfg.hidden_size), "past_key": f32(*shape), "past_value": f32(*shape)}
    if arch == "output_projector":
        t = length or 7
        return {"token_embeds": f32(t, cfg.embed_dim), "hidden": f32(t, cfg.llm_hidden)}
    if arch == "cosyvoice2_flow:encoder":
        t = length or 11
        tm, _ = _t2w_masks(t, 4)
        return {"tokens": rng.integers(0, cfg.vocab_size, t).astype(np.int64), "token_mask": tm}
    if arch == "cosyvoice2_flow:estimator":
        t = 2 * (length or 11)
        _, mm = _t2w_masks(t // 2, 4)
        return {"x": f32(2, t, cfg.mel_dim), "mu": f32(2, t, cfg.mel_dim), "t": np.array([0.3, 0.3], np.float32),
                "spk": f32(2, cfg.mel_dim), "cond": f32(2, t, cfg.mel_dim), "mel_mask": mm}
    if arch == "cosyvoice2_hift:decode":
        t = length or 9
        return {"mel": f32(t, cfg.mel_dim), "source": f32(t * cfg.samples_per_frame, scale=0.1)}
    if arch == "cosyvoice2_hift:f0":
        return {"mel": f32(length or 9, cfg.mel_dim)}
    raise ValueError(f"no ONNX export for arch {arch!r}")


def export_spec(arch: str, module: nn.Module):
    """(wrapper, input names, output names, dynamic_shapes) of an arch."""
    T = torch.export.Dim("T", min=1, max=1 << 20)
    if arch == "kaldi_fbank":
        return KaldiFbankExport(module), ["waveform"], ["features"], {"waveform": {0: torch.export.Dim("N", min=module.win, max=1 << 26)}}
    if arch == "whisper_logmel":
        return (WhisperLogMelExport(module), ["waveform"], ["features"],
                {"waveform": {0: torch.export.Dim("N", min=module.cfg.n_fft // 2 + 1, max=1 << 26)}})
    if arch == "sensevoice_small":
        return SmallEncoderExport(module), ["features", "query_ids"], ["encoder_out", "ctc_logits"], {"features": {0: T}, "query_ids": None}
    if arch == "sensevoice_large":
        return LargeEncoderExport(module), ["features"], ["encoder_out"], {"features": {0: T}}
    if arch == "projector":
        return ProjectorExport(module), ["frames"], ["tokens"], {"frames": {0: T}}
    if arch == "qwen2":
        P = torch.export.Dim("P", min=0, max=1 << 20)
        return (Qwen2StepExport(module), ["embeds", "past_key", "past_value"], ["logits", "hidden", "present_key", "present_value"],
                {"embeds": {0: T}, "past_key": {1: P}, "past_value": {1: P}})
    if arch == "duplex":
        return DuplexExport(module), ["hidden"], ["p_turn", "p_barge"], {"hidden": {0: T}}
    if arch == "voice_lm":
        P = torch.export.Dim("P", min=0, max=1 << 20)
        return (VoiceLMStepExport(module), ["embeds", "past_key", "past_value"], ["logits", "present_key", "present_value"],
                {"embeds": {0: T}, "past_key": {1: P}, "past_value": {1: P}})
    if arch == "output_projector":
        return OutputProjectorExport(module), ["token_embeds", "hidden"], ["semantic"], {"token_embeds": {0: T}, "hidden": {0: T}}
    if arch == "cosyvoice2_flow:encoder":
        T2 = torch.export.Dim("T", min=2, max=1 << 20)  # the exporter cannot specialise T=1 here; validated at 5..40
        return (FlowEncoderExport(module), ["tokens", "token_mask"], ["mu"], {"tokens": {0: T2}, "token_mask": {0: T2, 1: T2}})
    if arch == "cosyvoice2_flow:estimator":
        B = torch.export.Dim("B", min=1, max=64)
        M = torch.export.Dim("M", min=1, max=1 << 20)
        return (FlowEstimatorExport(module), ["x", "mu", "t", "spk", "cond", "mel_mask"], ["dphi"],
                {"x": {0: B, 1: M}, "mu": {0: B, 1: M}, "t": {0: B}, "spk": {0: B}, "cond": {0: B, 1: M}, "mel_mask": {0: M, 1: M}})
    if arch == "cosyvoice2_hift:decode":
        return (HiftDecodeExport(module), ["mel", "source"], ["audio"],
                {"mel": {0: T}, "source": {0: module.cfg.samples_per_frame * T}})
    if arch == "cosyvoice2_hift:f0":
        return HiftF0Export(module), ["mel"], ["f0"], {"mel": {0: T}}
    raise ValueError(f"no ONNX export for arch {arch!r}")


@contextlib.contextmanager
def _quiet():
    """The exporter prints progress lines and warnings; keep them out of the CLI output."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript", "torch.fx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _rel_err(out: np.ndarray, ref: np.ndarray) -> float:
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    denom = np.linalg.norm(ref)
    return float(np.linalg.norm(out - ref) / denom) if denom > 0 else float(np.linalg.norm(out - ref))


def reference_outputs(arch: str, module: nn.Module, inputs: dict) -> tuple:
    """The reference module itself (not the export wrapper) on numpy inputs named as in the graph."""
    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}
    with torch.no_grad():
        if arch in ("kaldi_fbank", "whisper_logmel"):
            return (module(t["waveform"]),)
        if arch == "sensevoice_small":
            return module(t["features"], t["query_ids"])
        if arch == "sensevoice_large":
            return (module(t["features"]),)
        if arch == "projector":
            return (module(t["frames"]),)
        if arch == "qwen2":
            pk, pv = t["past_key"], t["past_value"]
            cache = KVCache([(pk[i], pv[i]) for i in range(pk.shape[0])]) if pk.shape[1] else None
            logits, hidden, new = module(t["embeds"], cache)
            return logits, hidden, torch.stack([k for k, _ in new.layers]), torch.stack([v for _, v in new.layers])
        if arch == "duplex":
            return module(t["hidden"])[:2]
        if arch == "voice_lm":
            pk, pv = t["past_key"], t["past_value"]
            cache = KVCache([(pk[i], pv[i]) for i in range(pk.shape[0])]) if pk.shape[1] else None
            logits, new = module.step_logits(t["embeds"], cache)
            return logits, torch.stack([k for k, _ in new.layers]), torch.stack([v for _, v in new.layers])
        if arch == "output_projector":
            return (module(t["token_embeds"], t["hidden"]),)
        if arch == "cosyvoice2_flow:encoder":
            idx = torch.arange(2 * t["tokens"].shape[0]) // 2
            return (module.encode(t["tokens"], t["token_mask"], t["token_mask"][idx][:, idx]),)
        if arch == "cosyvoice2_flow:estimator":
            return (module.decoder.estimator(t["x"], t["mu"], t["t"], t["spk"], t["cond"], t["mel_mask"]),)
        if arch == "cosyvoice2_hift:decode":
            return (module.decode(t["mel"], t["source"]),)
        if arch == "cosyvoice2_hift:f0":
            return (module.f0(t["mel"]),)
    raise ValueError(f"no reference call for arch {arch!r}")


def validate(path: str, arch: str, module: nn.Module, inputs_list: list, output_names: list,
             tolerance: float = TOLERANCE) -> dict:
    """Runs the ONNX file with ONNX Runtime and the reference module with PyTorch on each input set;
    returns the worst errors per output."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])
    worst = {n: {"max_abs_err": 0.0, "rel_err": 0.0} for n in output_names}
    shapes = []
    for inputs in inputs_list:
        got = sess.run(output_names, inputs)
        ref = reference_outputs(arch, module, inputs)
        for n, g, r in zip(output_names, got, ref):
            r = r.detach().numpy()
            if g.shape != r.shape:
                raise RuntimeError(f"{os.path.basename(path)}: output {n} has shape {g.shape}, reference {r.shape}")
            w = worst[n]
            w["max_abs_err"] = max(w["max_abs_err"], float(np.max(np.abs(g.astype(np.float64) - r))) if r.size else 0.0)
            w["rel_err"] = max(w["rel_err"], _rel_err(g, r))
        shapes.append({k: list(v.shape) for k, v in inputs.items()})
    ok = all(w["rel_err"] <= tolerance for w in worst.values())
    return {"opset": OPSET, "tolerance": tolerance, "ok": ok, "inputs": {"shapes": shapes}, "outputs": worst}


def export_module(arch: str, module: nn.Module, path: str, seed: int = 0, tolerance: float = TOLERANCE,
                  part: Optional[str] = None) -> dict:
    """Exports ``module`` (a reference module of ``arch``; ``part`` one of ONNX_PARTS[arch] for modules
    exported as several graphs) to ``path`` and validates it; returns the validation record stored in
    the manifest as ``onnx_check``. Raises RuntimeError on a mismatch."""
    module = module.eval()
    if arch in ONNX_PARTS:
        part = part or ONNX_PARTS[arch][0]
        if part not in ONNX_PARTS[arch]:
            raise ValueError(f"{arch} has ONNX parts {ONNX_PARTS[arch]}, not {part!r}")
        arch = f"{arch}:{part}"
    elif part is not None:
        raise ValueError(f"{arch} is exported as one graph")
    wrapper, in_names, out_names, dyn = export_spec(arch, module)
    wrapper.eval()
    ex = example_inputs(arch, module, seed)
    args = tuple(torch.from_numpy(v) for v in ex.values())
    with _quiet(), torch.no_grad():
        prog = torch.onnx.export(wrapper, args, None, dynamo=True, input_names=in_names, output_names=out_names,
                                 dynamic_shapes=dyn, opset_version=OPSET, verbose=False, optimize=True)
        n_bytes = sum(p.numel() * p.element_size() for p in wrapper.parameters()) + \
            sum(b.numel() * b.element_size() for b in wrapper.buffers())
        prog.save(path, external_data=n_bytes > EXTERNAL_DATA_BYTES)
    # validate on the example and on other lengths (the time axes must really be dynamic)
    checks = [ex]
    if arch in ("qwen2", "voice_lm"):
        empty = example_inputs(arch, module, seed + 1, length=3)
        empty["past_key"] = empty["past_key"][:, :0].copy()
        empty["past_value"] = empty["past_value"][:, :0].copy()
        checks += [empty, example_inputs(arch, module, seed + 2, length=1)]
    elif arch in ("kaldi_fbank", "whisper_logmel"):
        checks.append(example_inputs(arch, module, seed + 1, length=int(0.41 * module.cfg.sample_rate) + 37))
    else:
        checks += [example_inputs(arch, module, seed + 1, length=5), example_inputs(arch, module, seed + 2, length=40)]
    rec = validate(path, arch, module, checks, out_names, tolerance)
    if not rec["ok"]:
        errs = ", ".join(f"{k} rel {v['rel_err']:.2e}" for k, v in rec["outputs"].items())
        raise RuntimeError(f"ONNX export of {arch} does not match the reference (tolerance {tolerance:g}): {errs}")
    return rec
