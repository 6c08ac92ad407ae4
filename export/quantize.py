"""Weight-only quantization of the Qwen2 LLM's linear layers at export (``minmo-export build --quant``).

Formats (those of the CUDA products in kernels/include/minmo_kernels/gemv.h; the C++ CPU runtime
reads the same tensors), for a linear ``<name>`` with fp32 weight W [N, K]:

  int8  ``<name>.weight`` I8 [N, K], ``<name>.weight_scale`` F32 [N]:
        symmetric per output channel, scale = max|W[n]| / 127, w = scale[n] * q.
  fp8   ``<name>.weight`` F8_E4M3 [N, K], ``<name>.weight_scale`` F32 [N]:
        per output channel, scale = max|W[n]| / 448, w = scale[n] * float(q).
  int4  ``<name>.weight`` U8 [N, K / 2] (two 4-bit codes per byte, low nibble = even k),
        ``<name>.weight_scale`` BF16 [N, K / G], ``<name>.weight_zero`` U8 [N, K / G]:
        asymmetric per group of G = 128 input channels (64 or 32 when K is not a multiple of
        128), w = scale[n, g] * (q - zero[n, g]), q and zero in 0..15.

int4 uses activation-aware scaling (AWQ, Lin et al. 2023), the simple variant: per group of
linears that read the same input, a per-input-channel factor s = mean|x|^alpha (normalised to
geometric mean 1 of its extremes) with alpha on a grid 0, 0.1, .., 1 chosen to minimise the
output error ||x W^T - (x / s) Q(W s)^T||^2 on calibration activations; 1/s is folded exactly
into the op before (input RMSNorm weight for q/k/v, post-attention RMSNorm weight for gate/up,
the rows of up_proj for down_proj), so the bundle stays a plain Qwen2 with quantized linears.
o_proj gets no scaling (its input is not produced by a per-channel op here). Calibration
activations are recorded once from the fp32 reference (not layer by layer through the
quantized model). The embeddings, lm_head and norms stay fp32.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

QUANT_MODES = ("int8", "int4", "fp8")
INT4_GROUP = 128
FP8_MAX = 448.0
AWQ_GRID = [i / 10 for i in range(11)]
LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


class QuantError(ValueError):
    pass


def check_mode(mode: str) -> str:
    if mode not in QUANT_MODES:
        raise QuantError(f"unknown quantization mode {mode!r}; choose one of {', '.join(QUANT_MODES)}")
    return mode


def int4_group_size(k: int) -> Optional[int]:
    """Group size for an input width k: 128, else 64 or 32 when they divide k; None if none does."""
    for g in (INT4_GROUP, 64, 32):
        if k % g == 0:
            return g
    return None


# ---------------------------------------------------------------------------- per-tensor formats

def quantize_weight(w: torch.Tensor, mode: str) -> dict:
    """fp32 W [N, K] -> {"weight", "weight_scale"[, "weight_zero"]} in the bundle format."""
    w = w.detach().to(torch.float32)
    if w.ndim != 2:
        raise QuantError(f"expected a 2-D weight, got shape {tuple(w.shape)}")
    if mode == "int8":
        scale = w.abs().amax(1).clamp_min(1e-12) / 127.0
        q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
        return {"weight": q.contiguous(), "weight_scale": scale.contiguous()}
    if mode == "fp8":
        scale = w.abs().amax(1).clamp_min(1e-12) / FP8_MAX
        q = (w / scale[:, None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
        return {"weight": q.contiguous(), "weight_scale": scale.contiguous()}
    if mode == "int4":
        n, k = w.shape
        g = int4_group_size(k)
        if g is None:
            raise QuantError(f"int4 needs an input width that is a multiple of 32, got {k}")
        wg = w.view(n, k // g, g)
        lo, hi = wg.amin(-1).clamp(max=0.0), wg.amax(-1).clamp(min=0.0)
        # bf16 scale rounded up (bf16 keeps 8 significant bits), so 15 steps span [lo, hi] and no
        # weight is clamped by more than half a step
        scale = (((hi - lo) / 15.0).clamp_min(1e-8) * (1 + 2.0 ** -7)).to(torch.bfloat16)
        s = scale.to(torch.float32)
        zero = torch.round(-lo / s).clamp(0, 15)
        q = torch.round(wg / s[..., None] + zero[..., None]).clamp(0, 15).to(torch.uint8).view(n, k)
        packed = (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous()
        return {"weight": packed, "weight_scale": scale.contiguous(), "weight_zero": zero.to(torch.uint8).contiguous()}
    raise QuantError(f"unknown quantization mode {mode!r}")


def quant_mode_of(parts: dict) -> str:
    dt = parts["weight"].dtype
    if dt == torch.int8:
        return "int8"
    if dt == torch.float8_e4m3fn:
        return "fp8"
    if dt == torch.uint8 and "weight_zero" in parts:
        return "int4"
    raise QuantError(f"weight of dtype {dt} is not a known quantized format")


def dequantize_weight(parts: dict) -> torch.Tensor:
    """Inverse of :func:`quantize_weight`: the fp32 weight the runtime computes with."""
    mode = quant_mode_of(parts)
    q, scale = parts["weight"], parts["weight_scale"].to(torch.float32)
    if mode in ("int8", "fp8"):
        return q.to(torch.float32) * scale[:, None]
    n = q.shape[0]
    codes = torch.stack([q & 0xF, q >> 4], dim=-1).view(n, -1).to(torch.float32)
    g = codes.shape[1] // scale.shape[1]
    zero = parts["weight_zero"].to(torch.float32)
    return ((codes.view(n, -1, g) - zero[..., None]) * scale[..., None]).view(n, -1)


def dequantize_state_dict(sd: dict) -> dict:
    """A bundle state dict with quantized linears -> plain fp32 state dict (unchanged otherwise)."""
    out = {}
    for k, v in sd.items():
        if k.endswith(".weight_scale") or k.endswith(".weight_zero"):
            continue
        base = k[: -len(".weight")] if k.endswith(".weight") else None
        if base is not None and base + ".weight_scale" in sd:
            parts = {"weight": v, "weight_scale": sd[base + ".weight_scale"]}
            if base + ".weight_zero" in sd:
                parts["weight_zero"] = sd[base + ".weight_zero"]
            out[k] = dequantize_weight(parts)
        else:
            out[k] = v
    return out


def roundtrip(w: torch.Tensor, mode: str) -> torch.Tensor:
    return dequantize_weight(quantize_weight(w, mode))


# ---------------------------------------------------------------------------- AWQ (int4)

def awq_search(x: torch.Tensor, weights: list, mode: str = "int4") -> tuple[torch.Tensor, float, float]:
    """Per-input-channel factor s [K] for linears `weights` ([N_i, K]) reading activations x [n, K].
    Returns (s, alpha, relative output error with s); alpha 0 means s = 1 (no scaling)."""
    x = x.to(torch.float32)
    xmean = x.abs().mean(0).clamp_min(1e-6)
    refs = [x @ w.T for w in weights]
    ref_sq = sum(float((r * r).sum()) for r in refs) or 1.0
    best = (None, 0.0, math.inf)
    for alpha in AWQ_GRID:
        s = xmean.pow(alpha)
        s = s / (s.max() * s.min()).sqrt()
        xs = x / s
        err = sum(float(((xs @ roundtrip(w * s, mode).T) - r).pow(2).sum()) for w, r in zip(weights, refs))
        if err < best[2]:
            best = (s, alpha, err)
    return best[0], best[1], math.sqrt(best[2] / ref_sq)


def record_linear_inputs(model, embeds: torch.Tensor) -> dict:
    """Runs the reference Qwen2Decoder on embeds and returns {"<layer>.<linear>": input [T, K]}."""
    acts, hooks = {}, []
    for i, layer in enumerate(model.model.layers):
        for name in LINEARS:
            mod = layer.get_submodule(name)
            key = f"model.layers.{i}.{name}"
            hooks.append(mod.register_forward_pre_hook(lambda m, a, key=key: acts.__setitem__(key, a[0].detach().clone())))
    try:
        with torch.no_grad():
            model(embeds)
    finally:
        for h in hooks:
            h.remove()
    return acts


# ---------------------------------------------------------------------------- the LLM

def quantize_qwen2(state_dict: dict, config: dict, mode: str, calib_embeds: Optional[torch.Tensor] = None) -> tuple[dict, dict]:
    """fp32 Qwen2 state dict -> (bundle tensors with the layers' linears quantized, manifest info).

    calib_embeds [n, hidden] (int4 / AWQ only): activations to record the linear inputs from."""
    from .reference import Qwen2Config
    from .reference.qwen2 import Qwen2Decoder

    check_mode(mode)
    sd = {k: v.detach().to(torch.float32).clone() if v.is_floating_point() else v for k, v in state_dict.items()}
    n_layers = int(config["num_hidden_layers"])
    info: dict = {"method": "weight-only", "linears": [f"model.layers.*.{n}" for n in LINEARS], "skipped": []}
    if mode == "int4":
        if calib_embeds is None:
            raise QuantError("int4 quantization needs calibration activations")
        model = Qwen2Decoder(Qwen2Config.from_dict(config))
        model.load_state_dict(sd, strict=False)
        acts = record_linear_inputs(model.eval(), calib_embeds)
        alphas = {}
        for i in range(n_layers):
            p = f"model.layers.{i}."
            w = lambda n: sd[p + n + ".weight"]  # noqa: E731
            # down_proj first: its 1/s goes into up_proj's rows, which gate/up's search then sees.
            groups = [("mlp.down_proj", ["mlp.down_proj"], None),
                      ("mlp.gate_proj", ["mlp.gate_proj", "mlp.up_proj"], "post_attention_layernorm.weight"),
                      ("self_attn.q_proj", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], "input_layernorm.weight")]
            for first, names, norm in groups:
                if int4_group_size(w(names[0]).shape[1]) is None:
                    continue
                s, alpha, _ = awq_search(acts[p + first], [w(n) for n in names], mode)
                alphas[p + first] = alpha
                for n in names:
                    sd[p + n + ".weight"] = w(n) * s
                if norm is None:  # fold into up_proj's output rows (silu(gate) * up is linear in up)
                    sd[p + "mlp.up_proj.weight"] = sd[p + "mlp.up_proj.weight"] / s[:, None]
                else:
                    sd[p + norm] = sd[p + norm] / s
        info["group_size"] = INT4_GROUP
        info["awq"] = {"grid": AWQ_GRID, "calibration_rows": int(calib_embeds.shape[0]),
                       "mean_alpha": float(np.mean(list(alphas.values()))) if alphas else 0.0}
    out = dict(sd)
    for i in range(n_layers):
        for n in LINEARS:
            key = f"model.layers.{i}.{n}"
            w = sd[key + ".weight"]
            if mode == "int4" and int4_group_size(w.shape[1]) is None:
                info["skipped"].append(key)  # stays fp32
                continue
            for suffix, t in quantize_weight(w, mode).items():
                out[f"{key}.{suffix}"] = t
    return out, info


def logits_error(state_dict: dict, quantized: dict, config: dict, embeds: torch.Tensor) -> dict:
    """Relative error of the dequantized model's logits and hidden states against the fp32 one."""
    from .reference import Qwen2Config
    from .reference.qwen2 import Qwen2Decoder

    def run(sd):
        m = Qwen2Decoder(Qwen2Config.from_dict(config))
        m.load_state_dict(sd, strict=False)
        with torch.no_grad():
            logits, hidden, _ = m.eval()(embeds)
        return logits, hidden

    ref, deq = run({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state_dict.items()}), \
        run(dequantize_state_dict(quantized))
    rel = lambda a, b: float((a - b).norm() / b.norm().clamp_min(1e-30))  # noqa: E731
    return {"logits_rel_err": rel(deq[0], ref[0]), "hidden_rel_err": rel(deq[1], ref[1]), "rows": int(embeds.shape[0])}


def calibration_embeds(plan_modules: dict, chunk, seed: int = 0, text_rows: int = 64) -> torch.Tensor:
    """LLM input rows for calibration: embeddings of random token ids and, when the bundle has the
    audio path (frontend, encoder, projector), the projector's output on 4 s of synthetic speech-like
    audio (harmonic tones with a moving pitch, amplitude modulation and noise) run through the
    reference modules."""
    from .checkpoints.archs import make_module
    from .verify import reference_outputs

    rng = np.random.default_rng(seed)
    lm, _ = plan_modules["llm"]
    ref = {}

    def module(name):
        if name not in ref:
            m = plan_modules[name][0]
            mod = make_module(m.arch, m.config, chunk)
            sd = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in m.state_dict.items()}
            if m.arch in ("kaldi_fbank", "whisper_logmel"):
                bufs = dict(mod.named_buffers())
                with torch.no_grad():
                    for k, v in sd.items():
                        bufs[k].copy_(v.to(bufs[k].dtype))
            else:
                mod.load_state_dict(sd, strict=False)
            ref[name] = mod.eval()
        return ref[name]

    llm = module("llm")
    ids = torch.from_numpy(rng.integers(0, int(lm.config["vocab_size"]), size=text_rows))
    with torch.no_grad():
        rows = [llm.embed(ids)]
    if all(n in plan_modules for n in ("frontend", "encoder", "projector")):
        sr = int(plan_modules["frontend"][0].config.get("sample_rate", 16000))
        t = np.arange(4 * sr) / sr
        f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
        phase = 2 * np.pi * np.cumsum(f0) / sr
        wave = sum(np.sin(h * phase) / h for h in range(1, 6)) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
        wave = (0.2 * wave + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
        fe = plan_modules["frontend"][0]
        feats = reference_outputs("frontend", fe.arch, module("frontend"), {"waveform": wave})["features"]
        enc = plan_modules["encoder"][0]
        inputs = {"features": feats}
        if enc.arch == "sensevoice_small":
            inputs["query_ids"] = np.array([4, 1, 2, 14], np.int64)
        enc_out = reference_outputs("encoder", enc.arch, module("encoder"), inputs)["encoder_out"]
        pr = plan_modules["projector"][0]
        tokens = reference_outputs("projector", pr.arch, module("projector"), {"frames": enc_out})["tokens"]
        rows.append(torch.from_numpy(tokens))
    return torch.cat(rows).to(torch.float32)
