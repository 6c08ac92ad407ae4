"""Streaming latency: sessions fed like a microphone, per-stage times from ``session.stats()``."""
from __future__ import annotations

import time
from typing import Optional

import numpy as np

from .stats import summarize

#: Stages in the order the audio flows through them (the order of the printed table).
STAGE_ORDER = ("frontend", "encoder", "projector", "llm_prefill", "duplex", "ctc", "first_token", "decode")
#: Stages that run while audio arrives; their total over the audio duration is the real-time factor.
AUDIO_PATH = ("frontend", "encoder", "projector", "llm_prefill", "duplex", "ctc")


def _stage_ms(stage: dict) -> list[float]:
    ms = stage.get("ms")
    if ms is not None:
        return [float(x) for x in ms]
    # Older runtimes: only aggregates. Spread the total evenly (p50/p99 then equal the mean).
    n = int(stage.get("count", 0))
    return [float(stage.get("total_ms", 0.0)) / n] * n if n else []


def one_session(rt, audio: np.ndarray, rate: int, chunk_ms: float, max_new_tokens: int) -> dict:
    """Push ``audio`` in ``chunk_ms`` pieces (as fast as the runtime takes them), end the turn,
    generate; return the session's stats plus the wall time end_of_turn -> first text event."""
    ctc = rt.mode == "asr-ctc"
    s = rt.session(max_new_tokens=max_new_tokens) if ctc else rt.session(task="asr", max_new_tokens=max_new_tokens)
    try:
        step = max(1, int(round(rate * chunk_ms / 1000.0)))
        for start in range(0, audio.size, step):
            s.push(audio[start:start + step], rate)
            for _ in s.events(generate=False):
                pass
        t0 = time.perf_counter()
        s.end_of_turn()
        first_wall = None
        n_text = 0
        for ev in s.events():
            if ev.kind in ("text", "tag") and first_wall is None:
                first_wall = (time.perf_counter() - t0) * 1000.0
            n_text += ev.kind == "text"
        stats = s.stats()
    finally:
        s.close()
    stats = dict(stats)
    stats["_first_event_wall_ms"] = first_wall
    stats["_text_events"] = n_text
    return stats


def run_streaming(rt, audio: np.ndarray, rate: int, *, runs: int, warmup: int, chunk_ms: float,
                  max_new_tokens: int) -> dict:
    """``warmup`` untimed sessions, then ``runs`` timed ones; per-stage lists pooled over runs."""
    for _ in range(max(0, warmup)):
        one_session(rt, audio, rate, chunk_ms, max_new_tokens)
    pooled: dict[str, list[float]] = {}
    audio_ms = 0.0
    audio_path_ms = 0.0
    generated = 0
    first_wall: list[float] = []
    for _ in range(max(1, runs)):
        st = one_session(rt, audio, rate, chunk_ms, max_new_tokens)
        counters = st.get("counters") or {}
        run_audio_ms = float(counters.get("audio_ms") or 1000.0 * audio.size / rate)
        audio_ms += run_audio_ms
        generated += int(counters.get("generated_tokens") or 0)
        for name, stage in (st.get("stages") or {}).items():
            ms = _stage_ms(stage)
            pooled.setdefault(name, []).extend(ms)
            if name in AUDIO_PATH:
                audio_path_ms += sum(ms)
        if st["_first_event_wall_ms"] is not None:
            first_wall.append(st["_first_event_wall_ms"])
    stages = {name: summarize(ms) for name, ms in _ordered(pooled)}
    decode = stages.get("decode") or {}
    tps = 1000.0 * decode["count"] / decode["total_ms"] if decode.get("count") and decode["total_ms"] > 0 else None
    return {
        "stages": stages,
        "samples_ms": {name: ms for name, ms in _ordered(pooled)},
        "rtf": audio_path_ms / audio_ms if audio_ms > 0 else None,
        "audio_path_ms_per_run": audio_path_ms / max(1, runs),
        "audio_ms_per_run": audio_ms / max(1, runs),
        "generated_tokens": generated,
        "decode_tokens_per_s": tps,
        "first_event_wall": summarize(first_wall),
    }


def _ordered(pooled: dict) -> list:
    known = [(n, pooled[n]) for n in STAGE_ORDER if n in pooled]
    return known + sorted((n, v) for n, v in pooled.items() if n not in STAGE_ORDER)
