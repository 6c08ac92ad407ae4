"""Accuracy gate: word error rate and turn-taking F1 of a speech-to-text bundle on held-out synthetic
speech (minmo-tiny's espeak-ng generator, a seed the training never used), per engine:

- ``native``: the runtime's streaming session, audio pushed in microphone chunks, greedy decode;
- ``onnx``: the bundle's ONNX graphs in ONNX Runtime (frontend -> encoder -> projector -> LLM with
  KV cache -> duplex), greedy decode, offline on the whole turn.

Turn-taking is scored per audio token (80 ms): "respond" (p_turn > 0.5) against "the speech ended
at least 200 ms before the end of this token"."""
from __future__ import annotations

import os
import time
from typing import Callable, Optional

import numpy as np

from .bundleinfo import module_files
from .compare import _embedding_rows, _llm_feeds, _ort_session, _present


def heldout(seed: int, n: int) -> list[dict]:
    """``n`` utterances of ``seed`` rendered in memory: {wave, text, speech_end}."""
    from ..training import data as D

    if not D.espeak_available():
        raise FileNotFoundError("espeak-ng is not installed: the held-out set cannot be synthesized")
    phrases = D.load_phrases()
    out = []
    for i in range(n):
        spec = D.sample_spec(seed, i, phrases)
        wave, end = D.render(spec)
        out.append({"wave": wave, "text": spec.text, "speech_end": end, "voice": spec.voice})
    return out


def native_transcribe(rt, wave: np.ndarray, chunk_ms: float = 160.0, max_new_tokens: int = 48) -> tuple[str, list]:
    """Stream ``wave`` (16 kHz) through a runtime session: (transcript, p_turn per audio token)."""
    p_turn = []
    with rt.session(task="asr", max_new_tokens=max_new_tokens) as s:
        step = max(1, int(rt.sample_rate * chunk_ms / 1000))
        for start in range(0, len(wave), step):
            s.push(wave[start:start + step], rt.sample_rate)
            p_turn += [e.p_turn for e in s.events(generate=False) if e.kind == "duplex"]
        s.end_of_turn()
        for e in s.events():
            if e.kind == "duplex":
                p_turn.append(e.p_turn)
        return s.text, p_turn


class _NoRandomRows:
    """Stands in for the random generator of ``_embedding_rows``: accuracy needs the real table."""

    def standard_normal(self, *_):
        raise ValueError("the bundle's LLM embedding table is not stored as plain f32/f16/bf16 rows; "
                         "the ONNX path cannot embed token ids")


class OnnxPipeline:
    """Greedy speech-to-text with the ONNX graphs of a bundle."""

    def __init__(self, rt, threads: int = 1):
        self.rt = rt
        mods = rt.manifest.get("modules") or {}
        self.sessions = {}
        for name in ("frontend", "encoder", "projector", "llm", "duplex"):
            paths = module_files(rt.bundle_dir, rt.manifest, name, key="onnx")
            if not paths or not os.path.isfile(paths[0]):
                raise FileNotFoundError(f"bundle has no ONNX graph for {name!r} (build it without --no-onnx)")
            self.sessions[name] = _ort_session(paths[0], threads)
        self.llm_cfg = mods["llm"]["config"]
        self.prefix, self.suffix, self.stops = rt.prompt_ids("asr")
        self._rows: dict[int, np.ndarray] = {}

    def _run(self, name: str, x: np.ndarray) -> list:
        sess = self.sessions[name]
        return sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(x, np.float32)})

    def _embed(self, ids: list[int]) -> np.ndarray:
        missing = [i for i in set(ids) if i not in self._rows]
        if missing:
            rows = _embedding_rows(self.rt.bundle_dir, self.rt.manifest, missing, self.llm_cfg["hidden_size"],
                                   _NoRandomRows())
            self._rows.update(zip(missing, rows))
        return np.stack([self._rows[i] for i in ids])

    def _llm(self, embeds: np.ndarray, past):
        sess = self.sessions["llm"]
        out = sess.run(None, _llm_feeds(sess, embeds, self.llm_cfg, past))
        return out[0], out[1], _present(sess, out)

    def transcribe(self, wave: np.ndarray, max_new_tokens: int = 48) -> tuple[str, list]:
        feats = self._run("frontend", wave)[0]
        frames = self._run("encoder", feats)[0]
        audio = self._run("projector", frames)[0]
        _, _, past = self._llm(self._embed(self.prefix), None)
        _, hidden, past = self._llm(audio, past)
        p_turn = self._run("duplex", hidden)[0]
        logits, _, past = self._llm(self._embed(self.suffix), past)
        ids = []
        for _ in range(max_new_tokens):
            nxt = int(np.argmax(logits[-1]))
            if nxt in self.stops:
                break
            ids.append(nxt)
            logits, _, past = self._llm(self._embed([nxt]), past)
        return self.rt.tokenizer.decode(ids), [float(p) for p in p_turn]


def score(samples: list[dict], transcribe: Callable[[np.ndarray], tuple[str, list]], examples: int = 5) -> dict:
    """WER and turn-taking F1 of ``transcribe`` over ``samples``; wall time per utterance."""
    from ..training.data import turn_labels
    from ..training.evaluate import normalize, turn_f1, wer, word_errors

    hyps, probs, labels, errs = [], [], [], []
    t0 = time.perf_counter()
    for s in samples:
        text, p_turn = transcribe(s["wave"])
        hyps.append(text)
        probs.append(p_turn)
        labels.append(turn_labels(len(p_turn), s["speech_end"]))
        errs.append(word_errors(normalize(s["text"]), normalize(text)))
    elapsed = time.perf_counter() - t0
    refs = [s["text"] for s in samples]
    bad = [{"ref": r, "hyp": h} for r, h, e in zip(refs, hyps, errs) if e][:examples]
    return {"utterances": len(samples), "words": sum(len(normalize(r)) for r in refs), "wer": wer(refs, hyps),
            "sentence_error_rate": sum(1 for e in errs if e) / max(1, len(errs)),
            "turn_taking": turn_f1(probs, labels), "ms_per_utterance": 1000 * elapsed / max(1, len(samples)),
            "errors": bad}


def evaluate_bundle(bundle: str, samples: list[dict], *, engines=("native", "onnx"), chunk_ms: float = 160.0,
                    threads: Optional[int] = None, device: str = "cpu", log=print) -> dict:
    """{engine: score} for one bundle (its streaming mode and LLM quantization are whatever it was
    built with); ``device``: the native engine's runtime device."""
    from .. import Runtime

    rt = Runtime(bundle, device=device, num_threads=threads)
    if rt.mode == "asr-ctc" or "llm" not in rt.manifest.get("modules", {}):
        raise ValueError(f"{bundle}: the WER gate needs a speech-to-text bundle with an LLM")
    mode = ((rt.manifest.get("streaming") or {}).get("encoder_attention")) or "full"
    quant = rt.manifest["modules"]["llm"].get("quant", "none")
    label = mode if quant == "none" else f"{mode}/{quant}"
    out = {"bundle": rt.bundle_dir, "encoder_attention": mode, "quant": quant, "device": device,
           "module_devices": rt.module_devices, "engines": {}}
    for engine in engines:
        if engine == "native":
            fn = lambda w: native_transcribe(rt, w, chunk_ms)  # noqa: E731
        elif engine == "onnx":
            fn = OnnxPipeline(rt, threads or 1).transcribe
        else:
            raise ValueError(f"unknown engine {engine!r}")
        r = score(samples, fn)
        out["engines"][engine] = r
        log(f"  {label:13s} {engine:7s} WER {100 * r['wer']:6.2f}%  sentence errors {100 * r['sentence_error_rate']:5.1f}%"
            f"  turn-taking F1 {r['turn_taking']['f1']:.3f}  ({r['ms_per_utterance']:.0f} ms/utt)")
        for e in r["errors"][:3]:
            log(f"           ref: {e['ref']}\n           hyp: {e['hyp']}")
    return out


def default_checkpoint() -> str:
    from .. import __file__ as pkg_file

    return os.path.join(os.path.dirname(pkg_file), "assets", "minmo_tiny")


def build_mode_bundles(checkpoint: str, workdir: str, onnx: bool = True, quant_modes=(), log=print) -> dict:
    """One bundle per encoder mode (full, chunked) from ``checkpoint``, and one per (mode, quant
    mode) for ``quant_modes`` (LLM weight-only int8 / int4 / fp8; no ONNX files)."""
    from ..export import cli as export_cli

    out = {}
    for quant in (None,) + tuple(quant_modes):
        for mode in ("full", "chunked"):
            name = mode if quant is None else f"{mode}_{quant}"
            path = os.path.join(workdir, f"bundle_{name}")
            args = ["build", checkpoint, "-o", path, "--streaming", mode, "--force", "-q"]
            args += ([] if onnx and quant is None else ["--no-onnx"]) + ([] if quant is None else ["--quant", quant])
            if export_cli.main(args):
                raise RuntimeError(f"building the {name} bundle from {checkpoint} failed")
            out[name] = path
    return out


def run_wer(*, bundle: Optional[str], checkpoint: Optional[str], workdir: str, seed: int, n: int,
            engines=("native", "onnx"), chunk_ms: float = 160.0, threads: Optional[int] = None,
            quant_modes=(), device: str = "cpu", log=print) -> dict:
    """The whole gate: the given bundle, or both encoder modes of ``checkpoint`` (default: the
    shipped minmo-tiny), each also with its LLM quantized in ``quant_modes`` (native engine only:
    what quantization costs in WER)."""
    t0 = time.perf_counter()
    samples = heldout(seed, n)
    log(f"minmo-bench --wer: {n} held-out utterances (espeak-ng, seed {seed}), "
        f"{sum(len(s['text'].split()) for s in samples)} words")
    if bundle:
        bundles = {"bundle": bundle}
    else:
        checkpoint = checkpoint or default_checkpoint()
        log(f"  building full and chunked bundles of {checkpoint} in {workdir}")
        bundles = build_mode_bundles(checkpoint, workdir, onnx="onnx" in engines, quant_modes=quant_modes)
    results = []
    for name, b in bundles.items():
        quantized = "_" in name
        results.append(evaluate_bundle(b, samples, engines=("native",) if quantized else engines, chunk_ms=chunk_ms,
                                       threads=threads, device=device, log=log))
    return {"seed": seed, "utterances": n, "checkpoint": checkpoint, "chunk_ms": chunk_ms, "device": device,
            "results": results, "elapsed_s": time.perf_counter() - t0}
