"""Per-module side-by-side: the native runtime vs ONNX Runtime (the bundle's ONNX files) vs
PyTorch eager (the reference modules), on the same inputs: one utterance of the bench audio.

Every number is the p50 over ``runs`` calls after ``warmup`` calls, timed from Python around one
module call (for the native runtime: ``Runtime.run_module``). The native one-token decode is the
streaming session's own "decode" p50 (the runtime has no offline call that takes a KV cache)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .bundleinfo import module_files, safetensors_header
from .stats import p50, time_calls

PIPELINE = ("frontend", "encoder", "projector", "llm", "duplex")


@dataclass
class Row:
    name: str
    native_ms: Optional[float] = None
    onnxruntime_ms: Optional[float] = None
    torch_ms: Optional[float] = None
    shape: str = ""
    notes: list = field(default_factory=list)

    @property
    def ratio(self) -> Optional[float]:
        if self.native_ms and self.onnxruntime_ms:
            return self.onnxruntime_ms / self.native_ms
        return None

    def to_json(self) -> dict:
        return {"native_ms": self.native_ms, "onnxruntime_ms": self.onnxruntime_ms, "torch_ms": self.torch_ms,
                "ratio": self.ratio, "shape": self.shape, "notes": list(self.notes)}


# -- inputs ------------------------------------------------------------------------------------

def encoder_is_small(manifest: dict) -> bool:
    entry = (manifest.get("modules") or {}).get("encoder") or {}
    for key in ("arch", "type", "kind", "architecture"):
        v = str(entry.get(key, "")).lower()
        if "small" in v:
            return True
        if "large" in v:
            return False
    cfg = entry.get("config") or {}
    return "input_dim" in cfg or "n_tp_blocks" in cfg or manifest.get("mode") == "asr-ctc"


def _embedding_rows(bundle: str, manifest: dict, ids: list[int], hidden: int, rng) -> np.ndarray:
    """Rows of the LLM embedding table for ``ids`` when it is stored as plain f32/f16/bf16;
    otherwise small random rows (timing does not depend on the values)."""
    if not ids:
        return np.zeros((0, hidden), np.float32)
    for path in module_files(bundle, manifest, "llm"):
        if not (path.endswith(".safetensors") and os.path.isfile(path)):
            continue
        try:
            header = safetensors_header(path)
        except Exception:
            continue
        base = 8 + len(_raw_header(path))
        for name, meta in header.items():
            if name == "__metadata__" or not name.endswith("embed_tokens.weight"):
                continue
            dtype = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}.get(meta.get("dtype"))
            shape = meta.get("shape") or []
            if dtype is None or len(shape) != 2 or shape[1] != hidden:
                break
            lo, _ = meta["data_offsets"]
            table = np.memmap(path, dtype=dtype, mode="r", offset=base + int(lo), shape=tuple(shape))
            rows = np.asarray(table[[i % shape[0] for i in ids]])
            if meta["dtype"] == "BF16":
                rows = (rows.astype(np.uint32) << 16).view(np.float32)
            return np.ascontiguousarray(rows, dtype=np.float32)
    return (0.02 * rng.standard_normal((len(ids), hidden))).astype(np.float32)


def _raw_header(path: str) -> bytes:
    import struct

    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return f.read(n)


@dataclass
class Inputs:
    """One utterance pushed through the native modules: each module's input for the others to reuse."""

    by_module: dict = field(default_factory=dict)   # module -> {input name: array}
    prefix_len: int = 0
    audio_tokens: int = 0
    small_encoder: bool = False


def native_inputs(rt, wave: np.ndarray) -> Inputs:
    """Chain the native modules offline on ``wave`` (16 kHz float32) to get realistic inputs."""
    manifest = rt.manifest
    mods = manifest.get("modules") or {}
    inp = Inputs(small_encoder=encoder_is_small(manifest))
    rng = np.random.default_rng(0)
    if "frontend" not in mods:
        return inp
    inp.by_module["frontend"] = {"waveform": wave}
    feats = rt.run_module("frontend", inp.by_module["frontend"])["features"]
    if "encoder" not in mods:
        return inp
    enc_in = {"features": np.ascontiguousarray(feats, np.float32)}
    if inp.small_encoder:
        from ..sensevoice_ids import sensevoice_query_ids

        enc_in["query_ids"] = np.asarray(sensevoice_query_ids("auto", False), np.int64)
    inp.by_module["encoder"] = enc_in
    enc_out = rt.run_module("encoder", enc_in)
    frames = enc_out["encoder_out"] if "encoder_out" in enc_out else next(iter(enc_out.values()))
    if inp.small_encoder and "query_ids" in enc_in:
        frames = frames[len(enc_in["query_ids"]):]  # the query positions are not audio frames
    if "projector" not in mods:
        return inp
    inp.by_module["projector"] = {"frames": np.ascontiguousarray(frames, np.float32)}
    tokens = rt.run_module("projector", inp.by_module["projector"])["tokens"]
    inp.audio_tokens = int(tokens.shape[0])
    if "llm" not in mods:
        return inp
    hidden = int(tokens.shape[1])
    try:
        prefix, suffix, _ = rt.prompt_ids("asr")
    except Exception:
        prefix, suffix = [], []
    inp.prefix_len = len(prefix)
    embeds = np.concatenate([_embedding_rows(rt.bundle_dir, manifest, list(prefix), hidden, rng),
                             np.asarray(tokens, np.float32),
                             _embedding_rows(rt.bundle_dir, manifest, list(suffix), hidden, rng)])
    inp.by_module["llm"] = {"embeds": np.ascontiguousarray(embeds, np.float32)}
    if "duplex" in mods:
        out = rt.run_module("llm", inp.by_module["llm"])
        h = out["hidden"][inp.prefix_len:inp.prefix_len + inp.audio_tokens]
        inp.by_module["duplex"] = {"hidden": np.ascontiguousarray(h, np.float32)}
    return inp


def _shape_note(arrays: dict) -> str:
    return ", ".join(f"{k}{list(v.shape)}" for k, v in arrays.items())


# -- ONNX Runtime ------------------------------------------------------------------------------

_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32,
               "tensor(float16)": np.float16, "tensor(double)": np.float64, "tensor(bool)": np.bool_}


def _ort_session(path: str, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])


def _zeros_for(meta, fill_dim: int = 0) -> np.ndarray:
    shape = [d if isinstance(d, int) and d >= 0 else fill_dim for d in (meta.shape or [])]
    return np.zeros(shape, dtype=_ORT_DTYPES.get(meta.type, np.float32))


def _generic_feed(sess, arrays: dict) -> dict:
    """Match the graph's inputs to ``arrays`` by name, then by order; unknown extra inputs (e.g. an
    empty past state) get zeros with every symbolic dimension 0."""
    metas = sess.get_inputs()
    unused = [k for k in arrays if k not in {m.name for m in metas}]
    feed = {}
    for m in metas:
        if m.name in arrays:
            a = arrays[m.name]
        elif unused:
            a = arrays[unused.pop(0)]
        else:
            feed[m.name] = _zeros_for(m)
            continue
        feed[m.name] = np.ascontiguousarray(a, dtype=_ORT_DTYPES.get(m.type, a.dtype))
    return feed


def _llm_feeds(sess, embeds: np.ndarray, cfg: dict, past: Optional[tuple] = None) -> dict:
    """Feed of the KV-cache step graph: embeds [T, H], past_key/past_value [L, P, kv, hd]."""
    metas = sess.get_inputs()
    layers, kv, hd = (int(cfg.get("num_hidden_layers", 0)), int(cfg.get("num_key_value_heads", 0)),
                      int(cfg.get("head_dim", 0)))
    p_len = 0 if past is None else past[0].shape[1]
    feed = {}
    for m in metas:
        n = m.name.lower()
        dt = _ORT_DTYPES.get(m.type, np.float32)
        if "key" in n or "value" in n:
            which = 0 if "key" in n else 1
            if past is not None:
                feed[m.name] = np.ascontiguousarray(past[which], dtype=dt)
            else:
                static = list(m.shape or [])
                shape = [layers, 0, kv, hd]
                for i, d in enumerate(static[:4]):
                    if isinstance(d, int) and i != 1:
                        shape[i] = d
                feed[m.name] = np.zeros(shape, dtype=dt)
        elif "embed" in n or (m.type == "tensor(float)" and len(m.shape or []) == 2):
            feed[m.name] = np.ascontiguousarray(embeds, dtype=dt)
        elif "position" in n:
            feed[m.name] = np.arange(p_len, p_len + embeds.shape[0], dtype=dt)
        elif "mask" in n:
            feed[m.name] = np.ones(p_len + embeds.shape[0], dtype=dt)
        else:
            feed[m.name] = _zeros_for(m)
    return feed


def _present(sess, outputs: list) -> tuple:
    names = [o.name.lower() for o in sess.get_outputs()]
    key = next(o for n, o in zip(names, outputs) if "key" in n)
    value = next(o for n, o in zip(names, outputs) if "value" in n)
    return key, value


# -- the comparison ----------------------------------------------------------------------------

def compare(rt, inputs: Inputs, *, runs: int, warmup: int, threads: int, native_decode_ms: Optional[float],
            use_onnx: bool, use_torch: bool) -> list[Row]:
    """One Row per module call (llm split into prefill and one-token decode); what could not be
    measured is said in the row's notes."""
    manifest = rt.manifest
    mods = manifest.get("modules") or {}
    rows: dict[str, Row] = {}
    order = [m for m in PIPELINE if m in inputs.by_module]
    for name in order:
        label = "llm_prefill" if name == "llm" else name
        rows[label] = Row(label, shape=_shape_note(inputs.by_module[name]))
        if name == "llm":
            rows["llm_decode"] = Row("llm_decode", native_ms=native_decode_ms,
                                     shape=f"embeds[1, H], past {inputs.by_module['llm']['embeds'].shape[0]}",
                                     notes=["native: streaming session decode p50"])

    # native
    for name in order:
        arrays = inputs.by_module[name]
        label = "llm_prefill" if name == "llm" else name
        rows[label].native_ms = p50(time_calls(lambda: rt.run_module(name, arrays), runs, warmup))

    # ONNX Runtime
    if not use_onnx:
        for r in rows.values():
            r.notes.append("onnxruntime: skipped (--no-onnx)")
    else:
        try:
            import onnxruntime  # noqa: F401
            have_ort = True
        except ImportError:
            have_ort = False
        for name in order:
            label = "llm_prefill" if name == "llm" else name
            targets = [rows[label]] + ([rows["llm_decode"]] if name == "llm" else [])
            paths = module_files(rt.bundle_dir, manifest, name, key="onnx")
            if not have_ort:
                for r in targets:
                    r.notes.append("onnxruntime: skipped, not installed")
                continue
            if not paths or not os.path.isfile(paths[0]):
                msg = ("onnxruntime: skipped, the bundle has no onnx file for this module" if not paths
                       else f"onnxruntime: skipped, missing {os.path.relpath(paths[0], rt.bundle_dir)}")
                for r in targets:
                    r.notes.append(msg)
                continue
            try:
                sess = _ort_session(paths[0], threads)
                arrays = inputs.by_module[name]
                if name == "llm":
                    cfg = mods["llm"].get("config") or {}
                    feed = _llm_feeds(sess, arrays["embeds"], cfg)
                    rows[label].onnxruntime_ms = p50(time_calls(lambda: sess.run(None, feed), runs, warmup))
                    past = _present(sess, sess.run(None, feed))
                    dfeed = _llm_feeds(sess, arrays["embeds"][-1:], cfg, past)
                    rows["llm_decode"].onnxruntime_ms = p50(time_calls(lambda: sess.run(None, dfeed), runs, warmup))
                else:
                    feed = _generic_feed(sess, arrays)
                    rows[label].onnxruntime_ms = p50(time_calls(lambda: sess.run(None, feed), runs, warmup))
            except Exception as e:  # a broken graph is a finding, not a crash of the bench
                for r in targets:
                    r.notes.append(f"onnxruntime error: {type(e).__name__}: {str(e)[:200]}")

    # PyTorch eager on the reference modules
    if use_torch:
        try:
            _torch_rows(rt, inputs, rows, order, runs, warmup, threads)
        except ImportError as e:
            for r in rows.values():
                r.notes.append(f"torch: skipped, not available ({e})")
        except Exception as e:
            for r in rows.values():
                if r.torch_ms is None:
                    r.notes.append(f"torch error: {type(e).__name__}: {str(e)[:200]}")
    else:
        for r in rows.values():
            r.notes.append("torch: skipped (--no-torch)")
    return list(rows.values())


def _torch_rows(rt, inputs: Inputs, rows: dict, order: list, runs: int, warmup: int, threads: int) -> None:
    import torch

    from ..export.bundle import build_reference_modules

    prev = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        ref = build_reference_modules(rt.bundle_dir)
        for m in ref.values():
            if hasattr(m, "eval"):
                m.eval()
        t = {name: {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.by_module[name].items()}
             for name in order}
        calls = {
            "frontend": lambda: ref["frontend"](t["frontend"]["waveform"]),
            "encoder": (lambda: ref["encoder"](t["encoder"]["features"], t["encoder"]["query_ids"]))
            if "query_ids" in t.get("encoder", {}) else (lambda: ref["encoder"](t["encoder"]["features"])),
            "projector": lambda: ref["projector"](t["projector"]["frames"]),
            "llm": lambda: ref["llm"](t["llm"]["embeds"]),
            "duplex": lambda: ref["duplex"](t["duplex"]["hidden"]),
        }
        with torch.no_grad():
            for name in order:
                if name not in ref:
                    continue
                label = "llm_prefill" if name == "llm" else name
                rows[label].torch_ms = p50(time_calls(calls[name], runs, warmup))
                if name == "llm":
                    _, _, cache = ref["llm"](t["llm"]["embeds"])
                    last = t["llm"]["embeds"][-1:]
                    rows["llm_decode"].torch_ms = p50(time_calls(lambda: ref["llm"](last, cache), runs, warmup))
    finally:
        torch.set_num_threads(prev)
