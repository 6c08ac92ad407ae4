"""``minmo-export verify``: every module of a bundle in the C++ runtime vs the PyTorch reference
rebuilt from the same bundle, on random inputs.

I/O contract of ``minmo_rt.Runtime(bundle).run_module(name, inputs)`` (float32 numpy, ids int64):
frontend {waveform [N]} -> {features [T, D]}; encoder sensevoice_small {features [T, 560],
query_ids [4]} -> {encoder_out, ctc_logits}; encoder sensevoice_large {features [T, n_mels]} ->
{encoder_out}; projector {frames [T, enc]} -> {tokens}; llm {embeds [T, H]} -> {logits [T, V],
hidden [T, H]}; duplex {hidden [T, llm_hidden]} -> {p_turn [T], p_barge [T]}; output_projector {token_embeds [T, E],
hidden [T, llm_hidden]} -> {semantic [T, D]}; voice_lm {embeds [T, H]} -> {logits [T, S + 3]};
flow {tokens [N], speaker [spk_dim]} -> {mel [2N, 80]} (15-token chunks, 4 left chunks, seed 0);
hift {mel [T, 80]} -> {audio [T * 480]} (seed 0).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import torch

from .checkpoints.archs import MODULE_NAMES

# ||out - ref|| / ||ref|| allowed per module (fp32 runtime vs fp32 reference, different summation order).
# A quantized module is compared with the reference rebuilt from its dequantized weights, so the
# same tolerances apply.
TOLERANCES = {"frontend": 1e-4, "encoder": 1e-4, "projector": 1e-4, "llm": 1e-4, "duplex": 1e-4,
              "output_projector": 1e-4, "voice_lm": 1e-4, "flow": 1e-4, "hift": 1e-3}
# Quantized module vs the fp32 one (measured at export, manifest "quant_check", or simulated with
# --quant-modes): bounds on the logits' relative error that catch a broken quantization, not
# accuracy targets. The error depends on the weights: random-weight models (no outlier channels)
# are a worst case, e.g. hidden 1024 x 4 layers gives int8 0.03, fp8 0.10, int4 0.40; the 2-layer
# test MinMo int8 0.002, fp8 0.011, int4 0.026. Task accuracy (WER) is the real measure.
QUANT_TOLERANCES = {"int8": 0.1, "fp8": 0.25, "int4": 0.6}
# The bf16 floor (the CUDA backend's weights, rounded to bf16) against fp32: measured 0.002-0.004.
BF16_TOLERANCE = 0.02
FLOW_CHUNK_TOKENS, FLOW_LEFT_CHUNKS = 15, 4


@dataclass
class Row:
    module: str
    output: str
    max_abs_err: float
    rel_err: float
    tolerance: float
    ok: bool
    note: str = ""


def module_inputs(name: str, arch: str, cfg: dict, ref_module, rng: np.random.Generator) -> dict:
    """Random inputs of a module, named as run_module expects."""
    f32 = lambda *s, scale=1.0: (scale * rng.standard_normal(s)).astype(np.float32)  # noqa: E731
    if arch in ("kaldi_fbank", "whisper_logmel"):
        n = int(1.13 * cfg.get("sample_rate", 16000))
        t = np.arange(n) / cfg.get("sample_rate", 16000)
        wave = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(n)
        return {"waveform": wave.astype(np.float32)}
    if arch == "sensevoice_small":
        return {"features": f32(31, cfg["input_dim"]), "query_ids": np.array([4, 1, 2, 14], np.int64)}
    if arch == "sensevoice_large":
        return {"features": f32(93, cfg["n_mels"])}
    if arch == "projector":
        return {"frames": f32(23, cfg["encoder_dim"])}
    if arch == "qwen2":
        ids = torch.from_numpy(rng.integers(0, cfg["vocab_size"], size=6))
        with torch.no_grad():
            text = ref_module.embed(ids).numpy()
        return {"embeds": np.concatenate([text, f32(5, cfg["hidden_size"], scale=float(text.std()))]).astype(np.float32)}
    if arch == "duplex":
        return {"hidden": f32(13, cfg["llm_hidden"])}
    if arch == "output_projector":
        return {"token_embeds": f32(7, cfg["embed_dim"]), "hidden": f32(7, cfg["llm_hidden"])}
    if arch == "voice_lm":
        with torch.no_grad():
            rows = torch.cat([ref_module.sos(), ref_module.text_embed(rng.integers(0, cfg["vocab_size"], size=4)),
                              ref_module.task_id(), ref_module.speech_embed(rng.integers(0, cfg["speech_token_size"], size=6))])
        return {"embeds": rows.numpy().astype(np.float32)}
    if arch == "cosyvoice2_flow":
        return {"tokens": rng.integers(0, cfg["vocab_size"], size=37).astype(np.int64),
                "speaker": f32(cfg.get("spk_dim", 192))}
    if arch == "cosyvoice2_hift":
        return {"mel": (f32(41, cfg.get("mel_dim", 80)) - 4.0).astype(np.float32)}
    raise ValueError(f"no verify inputs for arch {arch!r}")


def reference_outputs(name: str, arch: str, module, inputs: dict) -> dict:
    t = {k: torch.from_numpy(v) for k, v in inputs.items()}
    with torch.no_grad():
        if arch in ("kaldi_fbank", "whisper_logmel"):
            out = {"features": module(t["waveform"])}
        elif arch == "sensevoice_small":
            enc, ctc = module(t["features"], t["query_ids"])
            out = {"encoder_out": enc, "ctc_logits": ctc}
        elif arch == "sensevoice_large":
            out = {"encoder_out": module(t["features"])}
        elif arch == "projector":
            out = {"tokens": module(t["frames"])}
        elif arch == "qwen2":
            logits, hidden, _ = module(t["embeds"])
            out = {"logits": logits, "hidden": hidden}
        elif arch == "duplex":
            p_turn, p_barge, _ = module(t["hidden"])
            out = {"p_turn": p_turn, "p_barge": p_barge}
        elif arch == "output_projector":
            out = {"semantic": module(t["token_embeds"], t["hidden"])}
        elif arch == "voice_lm":
            out = {"logits": module.step_logits(t["embeds"])[0]}
        elif arch == "cosyvoice2_flow":
            from .reference.token2wav import flow_offline

            out = {"mel": flow_offline(module, t["tokens"], t["speaker"], seed=0, chunk_tokens=FLOW_CHUNK_TOKENS,
                                       left_chunks=FLOW_LEFT_CHUNKS)}
        elif arch == "cosyvoice2_hift":
            out = {"audio": module(t["mel"], 0)}
        else:
            raise ValueError(arch)
    return {k: v.numpy() for k, v in out.items()}


def compare(out: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    o, r = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    if o.shape != r.shape:
        raise ValueError(f"shape {o.shape} vs reference {r.shape}")
    diff = o - r
    max_abs = float(np.max(np.abs(diff))) if diff.size else 0.0
    denom = float(np.linalg.norm(r))
    rel = float(np.linalg.norm(diff) / denom) if denom > 0 else float(np.linalg.norm(diff))
    if not np.all(np.isfinite(o)):
        rel = max_abs = float("inf")
    return max_abs, rel


def verify_bundle(bundle: str, seed: int = 0, tolerances: Optional[dict] = None) -> list[Row]:
    import minmo_rt

    from .bundle import build_reference_modules, load_manifest

    if not hasattr(getattr(minmo_rt, "Runtime", None), "run_module"):
        raise RuntimeError("this minmo_rt build has no Runtime.run_module; cannot run modules in the C++ runtime")
    tol = dict(TOLERANCES, **(tolerances or {}))
    manifest = load_manifest(bundle)
    rt = minmo_rt.Runtime(bundle)
    refs = build_reference_modules(bundle)
    rng = np.random.default_rng(seed)
    rows: list[Row] = []
    for name in [n for n in MODULE_NAMES if n in manifest["modules"]]:
        entry = manifest["modules"][name]
        rows += quant_rows(name, entry)
        inputs = module_inputs(name, entry["arch"], entry["config"], refs[name], rng)
        ref = reference_outputs(name, entry["arch"], refs[name], inputs)
        try:
            got = rt.run_module(name, inputs)
        except Exception as e:  # a module the runtime cannot run is a failed row, not a crash
            for key in ref:
                rows.append(Row(name, key, float("nan"), float("nan"), tol[name], False, f"{type(e).__name__}: {e}"[:200]))
            continue
        for key, r in ref.items():
            if key not in got:
                rows.append(Row(name, key, float("nan"), float("nan"), tol[name], False, "output missing from the runtime"))
                continue
            try:
                max_abs, rel = compare(got[key], r)
            except ValueError as e:
                rows.append(Row(name, key, float("nan"), float("nan"), tol[name], False, str(e)))
                continue
            rows.append(Row(name, key, max_abs, rel, tol[name], bool(rel <= tol[name])))
    return rows


def quant_rows(name: str, entry: dict) -> list[Row]:
    """A quantized module's error against fp32 as recorded at export (quant_check), one row per output."""
    mode, chk = entry.get("quant", "none"), entry.get("quant_check")
    if mode == "none":
        return []
    tol = QUANT_TOLERANCES[mode]
    if not chk:
        return [Row(name, f"{mode} vs fp32", float("nan"), float("nan"), tol, False, "no quant_check in the manifest")]
    return [Row(name, f"{out} ({mode} vs fp32, at export)", float("nan"), float(chk[f"{out}_rel_err"]), tol,
                bool(chk[f"{out}_rel_err"] <= tol), "quantization error") for out in ("logits", "hidden")]


def simulate_quant_rows(bundle: str, modes, seed: int = 0) -> list[Row]:
    """For a bundle's fp32 Qwen2 llm: quantize it in memory with each mode (as ``build --quant``
    would, int4 calibrated on the bundle's own audio path) and report the logits / hidden error
    against fp32 and against the same model with bf16 weights (the CUDA backend's bf16 path, also
    reported against fp32), on random inputs."""
    from types import SimpleNamespace

    from safetensors.torch import load_file

    from .bundle import BundleError, load_manifest, resolve_in_bundle
    from .quantize import calibration_embeds, check_mode, logits_error, quantize_qwen2
    from .reference import ChunkSpec

    manifest = load_manifest(bundle)
    llm = manifest["modules"].get("llm")
    if not llm or llm["arch"] != "qwen2":
        raise BundleError(f"{bundle}: --quant-modes needs a qwen2 llm module")
    if llm.get("quant", "none") != "none":
        raise BundleError(f"{bundle}: the llm is already quantized ({llm['quant']}); --quant-modes needs an fp32 bundle")
    plan = {n: (SimpleNamespace(arch=e["arch"], config=e["config"], state_dict=load_file(resolve_in_bundle(bundle, e["weights"]))), None)
            for n, e in manifest["modules"].items()}
    lm = plan["llm"][0]
    g = torch.Generator().manual_seed(seed)
    emb = lm.state_dict["model.embed_tokens.weight"].to(torch.float32)
    ids = torch.randint(0, emb.shape[0], (24,), generator=g)
    test_in = torch.cat([emb[ids], torch.randn(8, emb.shape[1], generator=g) * float(emb.std())])
    def err_rows(err: dict, label: str, tol: float) -> list[Row]:
        return [Row("llm", f"{out} ({label}, simulated)", float("nan"), err[f"{out}_rel_err"], tol,
                    bool(err[f"{out}_rel_err"] <= tol), "quantization error") for out in ("logits", "hidden")]

    # bf16 weights: every tensor the CUDA backend stores as bf16 (all but the embedding table).
    bf16 = {k: v.to(torch.bfloat16) if v.is_floating_point() and k != "model.embed_tokens.weight" else v
            for k, v in lm.state_dict.items()}
    rows = err_rows(logits_error(lm.state_dict, bf16, lm.config, test_in), "bf16 weights vs fp32", BF16_TOLERANCE)
    for mode in modes:
        check_mode(mode)
        calib = calibration_embeds(plan, ChunkSpec.from_dict(manifest["streaming"]), seed=seed) if mode == "int4" else None
        quantized = quantize_qwen2(lm.state_dict, lm.config, mode, calib)[0]
        tol = QUANT_TOLERANCES[mode]
        rows += err_rows(logits_error(lm.state_dict, quantized, lm.config, test_in), f"{mode} vs fp32", tol)
        rows += err_rows(logits_error(bf16, quantized, lm.config, test_in), f"{mode} vs bf16", tol)
    return rows


def wer_rows(bundle: str, n: int, seed: int = 1000, max_wer: float = 0.05, device: str = "cpu") -> list[Row]:
    """Word error rate of the bundle's streaming session (native engine, greedy) on ``n`` held-out
    synthetic utterances (minmo-tiny's espeak-ng domain, ``seed`` unused by training): the accuracy a
    quantization mode really costs. Needs espeak-ng; the bundle must be a speech-to-text one."""
    from ..bench.wer import evaluate_bundle, heldout

    r = evaluate_bundle(bundle, heldout(seed, n), engines=("native",), device=device, log=lambda *_: None)
    score = r["engines"]["native"]
    label = "fp32" if r["quant"] == "none" else r["quant"]
    return [Row("pipeline", f"WER native ({label}, {device})", float("nan"), float(score["wer"]), max_wer,
                bool(score["wer"] <= max_wer), f"{score['words']} words, {n} utterances, seed {seed}")]


def format_table(rows: list[Row]) -> str:
    head = ["module", "output", "max abs err", "rel err", "tolerance", "ok"]
    body = [[r.module, r.output, f"{r.max_abs_err:.3e}", f"{r.rel_err:.3e}", f"{r.tolerance:.2g}",
             ("ok" if r.ok else "FAIL") + (f"  ({r.note})" if r.note else "")] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)] if body else [len(h) for h in head]
    line = lambda cells: " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), "-+-".join("-" * w for w in widths)] + [line(b) for b in body])


def rows_json(bundle: str, seed: int, rows: list[Row]) -> dict:
    def clean(v):
        return None if isinstance(v, float) and not np.isfinite(v) else v
    return {"bundle": bundle, "seed": seed, "ok": all(r.ok for r in rows) and bool(rows),
            "rows": [{k: clean(v) for k, v in asdict(r).items()} for r in rows]}


def write_json(path: str, payload: dict) -> None:
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
