"""Speech generation bench: voice LM per 15 speech tokens, token2wav per chunk, cost per chunk versus
chunk index (must stay flat: cached streaming), first audio after the first text token, RTF.

Runs a text-to-speech session over the bundle's voice LM with ``chunks`` x text_ratio text tokens
pushed one by one (bistream), stopping after ``chunks`` chunks of speech; and, for MinMo bundles,
one speech-to-speech turn for the semantic-vector stage and first-packet latency."""
from __future__ import annotations

import time
from typing import Optional

import numpy as np

from ..export.reference import VoiceLMConfig
from .stats import summarize


def _per_chunk(ms: list, per: int) -> list:
    return [float(sum(ms[i:i + per])) for i in range(0, len(ms) - per + 1, per)]


def flatness(costs: list) -> Optional[dict]:
    """Cost versus chunk index, chunk 1 left out (it has no left context and token2wav's first
    segment is shorter): least-squares slope (ms per chunk) over chunks 2..n, mean and median of
    chunks 2-11 and of the last 10, and the ratio of those medians (robust to a busy machine)."""
    if len(costs) < 21:
        return None
    c = np.asarray(costs[1:], np.float64)
    slope = float(np.polyfit(np.arange(2, len(c) + 2, dtype=np.float64), c, 1)[0])
    first, last = c[:10], c[-10:]
    return {"slope_ms_per_chunk": slope, "first10_mean_ms": float(first.mean()), "last10_mean_ms": float(last.mean()),
            "first10_median_ms": float(np.median(first)), "last10_median_ms": float(np.median(last)),
            "last10_over_first10": float(np.median(last) / np.median(first)) if np.median(first) > 0 else None}


def voice_lm_growth_model(cfg: dict, chunks: int = 50) -> dict:
    """The per-chunk growth of the voice LM that its architecture implies, with nothing recomputed.
    CosyVoice2's voice LM (and MinMo's) attends over its whole sequence, so the weight products of a
    step cost the same at every chunk while attention grows with the cached positions. For the 15
    decode steps of chunk k, text_ratio + speech_ratio positions per chunk, this returns the ratio of
    the median over the last 10 chunks to chunks 2-11 of (a) multiply-accumulates (compute-bound CPU)
    and (b) bytes read at 2 bytes per weight and per cached K/V value (bandwidth-bound GPU)."""
    layers, hidden = int(cfg["num_hidden_layers"]), int(cfg["hidden_size"])
    hq, hkv, hd = int(cfg["num_attention_heads"]), int(cfg["num_key_value_heads"]), int(cfg["head_dim"])
    weights = layers * (hidden * (hq + 2 * hkv) * hd + hq * hd * hidden + 3 * hidden * int(cfg["intermediate_size"]))
    weights += hidden * (int(cfg["speech_token_size"]) + 3)
    tr, sr = int(cfg.get("text_ratio", 5)), int(cfg.get("speech_ratio", 15))

    def per_chunk(k: int, per_position_macs: float, base: float) -> float:
        first = 2 + k * (tr + sr) + tr  # sos + task id, earlier chunks, this chunk's text
        return sum(base + per_position_macs * (first + j) for j in range(sr))

    def ratio(per_position: float, base: float) -> float:
        cost = [per_chunk(k, per_position, base) for k in range(chunks)]
        return float(np.median(cost[-10:]) / np.median(cost[1:11]))  # as flatness(): chunks 2-11 vs the last 10

    return {"macs_last10_over_first10": ratio(layers * 2 * hq * hd, weights),
            "bytes_last10_over_first10": ratio(layers * 2 * hkv * hd * 2, 2 * weights)}


def tts_chunks(rt, chunks: int = 50, seed: int = 0, speaker=None) -> dict:
    """Voice LM (and token2wav when the bundle has it) cost per chunk for chunk index 1..chunks."""
    cfg = rt.manifest["modules"]["voice_lm"]["config"]
    text_ratio, speech_ratio = int(cfg.get("text_ratio", 5)), int(cfg.get("speech_ratio", 15))
    audio = "flow" in rt.modules and "hift" in rt.modules and speaker is not None
    vocab = int(cfg["vocab_size"])
    ids = [int(i) for i in np.random.default_rng(seed).integers(0, min(vocab, 300), size=chunks * text_ratio)]
    cap = int(min(cfg.get("max_position_embeddings", 32768),
                  4 + len(ids) * (1 + cfg.get("max_token_text_ratio", 20.0))))
    s = rt.tts_session(seed=seed, speaker=speaker, speech_output="audio" if audio else "tokens", voice_kv_capacity=cap)
    t0 = time.perf_counter()
    n_speech, samples, rate = 0, 0, None
    try:
        for i in ids:
            s.push_text([i])
            for e in s.events():
                n_speech += e.kind == "speech_token"
                if e.kind == "audio":
                    samples, rate = samples + e.samples.size, e.sample_rate
            if n_speech >= chunks * speech_ratio:
                break
        wall = time.perf_counter() - t0
        stats = s.stats()
    finally:
        s.close()
    lm_chunks = _per_chunk((stats.get("voice_lm_step") or {}).get("ms", []), speech_ratio)[:chunks]
    t2w_chunks = list((stats.get("token2wav_chunk") or {}).get("ms", []))[:chunks]
    both = [a + b for a, b in zip(lm_chunks, t2w_chunks)]
    full_size = VoiceLMConfig().to_dict()
    out = {
        "chunks": len(lm_chunks), "speech_tokens": n_speech, "voice_kv_capacity_needed": cap,
        "voice_lm_per_chunk_ms": lm_chunks, "voice_lm_per_chunk": summarize(lm_chunks), "voice_lm_flatness": flatness(lm_chunks),
        "token2wav_per_chunk_ms": t2w_chunks, "token2wav_per_chunk": summarize(t2w_chunks),
        "token2wav_flatness": flatness(t2w_chunks),
        "chunk_total_per_chunk_ms": both, "chunk_total_flatness": flatness(both),
        "voice_lm_growth_model": {"this_bundle": voice_lm_growth_model(cfg, chunks),
                                  "cosyvoice2_0p5b": voice_lm_growth_model(full_size, chunks)},
        "wall_s": wall, "audio_s": samples / rate if samples else None,
        "speech_s": n_speech / 25.0,
        "rtf": wall / (n_speech / 25.0) if n_speech else None,
    }
    return out


def speak_turn(rt, audio: np.ndarray, rate: int, max_new_tokens: int = 40, speaker=None) -> dict:
    """One speech-to-speech turn: semantic vector cost, voice LM per 15 tokens, first speech / audio
    after the first text token (wall time seen from Python)."""
    audio_out = "flow" in rt.modules and "hift" in rt.modules and speaker is not None
    s = rt.session(max_new_tokens=max_new_tokens, speak=True, speaker=speaker,
                   speech_output="audio" if audio_out else "tokens")
    try:
        s.push(audio, rate)
        s.end_of_turn()
        t_text = t_speech = t_audio = None
        for e in s.events():
            now = time.perf_counter()
            if e.kind == "text" and t_text is None:
                t_text = now
            elif e.kind == "speech_token" and t_speech is None:
                t_speech = now
            elif e.kind == "audio" and t_audio is None:
                t_audio = now
        stats = s.stats()["stages"]
    finally:
        s.close()
    sem = (stats.get("semantic_vectors") or {}).get("ms", [])
    lm = _per_chunk((stats.get("voice_lm_step") or {}).get("ms", []), 15)
    ms = lambda t: None if t is None or t_text is None else 1000.0 * (t - t_text)  # noqa: E731
    return {"semantic_vectors": summarize(sem), "voice_lm_per_15_tokens": summarize(lm),
            "first_speech_token_after_first_text_ms": ms(t_speech),
            "first_audio_after_first_text_ms": ms(t_audio), "audio_output": audio_out}
