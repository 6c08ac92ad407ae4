"""Streaming session: push microphone chunks, receive events as they become ready."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np

from . import _core
from .audio import Resampler, to_float_mono
from .text import StreamingDetokenizer, Tokenizer


@dataclass
class Event:
    """One thing a session produced.

    kind: ``"text"`` (a generated token; ``token_id`` and the decoded ``text`` delta),
    ``"duplex"`` (turn-taking / barge-in probabilities for one audio token, every 80 ms of audio),
    ``"tag"`` (CTC bundles: language / emotion / event / itn tag in ``text``),
    ``"end"`` (the response is complete; ``text`` holds the whole response).
    ``time_ms``: stream time of the audio the event refers to (audio pushed so far, at 16 kHz).
    """

    kind: str
    time_ms: float
    token_id: Optional[int] = None
    text: str = ""
    p_turn: Optional[float] = None
    p_barge: Optional[float] = None


_KINDS = {0: "text", 1: "duplex", 2: "tag", 3: "end"}


class Session:
    """Created by :meth:`minmo_rt.Runtime.session`. Not thread-safe on its own (one thread drives a
    session; several sessions may run in parallel threads — compute releases the GIL)."""

    def __init__(self, core_session, tokenizer: Optional[Tokenizer], model_rate: int, ctc: bool):
        self._core = core_session
        self._tok = tokenizer
        self._model_rate = model_rate
        self._ctc = ctc
        self._resampler: Optional[Resampler] = None
        self._detok = StreamingDetokenizer(tokenizer) if tokenizer is not None else None
        self._lock = threading.Lock()
        self._tags: list[str] = []

    # -- input ---------------------------------------------------------------------------------
    def push(self, pcm: np.ndarray, sample_rate: int = 16000) -> None:
        """Append mono audio (int16, or float32 in [-1, 1]) of any length. Other rates than the
        model's are resampled with soxr (8-192 kHz); the rate may not change within a turn.
        An empty array is a no-op. Nothing is consumed when an error is raised."""
        with self._lock:
            self._check_open()
            x = to_float_mono(pcm)
            if self._resampler is None or self._resampler.in_rate != sample_rate:
                if self._resampler is not None and self._core.turn_samples > 0:
                    raise _core.InvalidInputError(
                        f"sample rate changed within a turn ({self._resampler.in_rate} -> {sample_rate} Hz)")
                resampler = Resampler(sample_rate, self._model_rate)
            else:
                resampler = self._resampler
            if x.size == 0:
                self._resampler = resampler
                return
            y = resampler(x)
            self._core.push(y)
            self._resampler = resampler

    def end_of_turn(self) -> None:
        """The user stopped speaking: finish the audio and start the response."""
        with self._lock:
            self._check_open()
            if self._resampler is not None:
                tail = self._resampler(np.zeros(0, np.float32), last=True)
                if tail.size:
                    self._core.push(tail)
                self._resampler = None
            self._core.end_of_turn()

    # -- output --------------------------------------------------------------------------------
    def events(self, generate: bool = True) -> Iterator[Event]:
        """Yield what is ready. With ``generate`` (default) the response is generated token by
        token as the iterator is consumed, until its ``end`` event; without it only what is
        already computed is returned."""
        while True:
            with self._lock:
                self._check_open()
                raw = self._core.poll()
                if not raw and generate and self._core.responding:
                    self._core.step()
                    raw = self._core.poll()
            if not raw:
                return
            for item in raw:
                yield self._convert(item)

    def _convert(self, item) -> Event:
        kind, time_ms, token, p_turn, p_barge = item
        kind = _KINDS[kind]
        if kind == "text":
            if self._ctc:
                return Event(kind, time_ms, token, self._tok.piece(token).replace("\u2581", " ") if self._tok else "")
            return Event(kind, time_ms, token, self._detok.add(token) if self._detok else "")
        if kind == "tag":
            tag = self._tok.piece(token) if self._tok else str(token)
            self._tags.append(tag)
            return Event(kind, time_ms, token, tag)
        if kind == "duplex":
            return Event(kind, time_ms, p_turn=p_turn, p_barge=p_barge)
        return Event(kind, time_ms, text=self.text)

    @property
    def text(self) -> str:
        """The response text so far."""
        ids = self._core.response_tokens
        if self._tok is None:
            return ""
        if self._ctc:
            return self._tok.decode(ids)
        return self._tok.decode(ids)

    @property
    def tags(self) -> list[str]:
        return list(self._tags)

    def stats(self) -> dict:
        """Per-stage wall times in ms: {stage: {"count", "total_ms", "p50_ms", "p99_ms"}} plus
        counters (audio_ms, audio_tokens, generated_tokens, first_token_ms)."""
        return self._core.stats()

    def cancel(self) -> None:
        """Stop the current response; the session can take a new turn."""
        with self._lock:
            self._check_open()
            self._core.cancel()

    def close(self) -> None:
        """Free the session's state. Further calls raise SessionClosedError; closing twice is fine."""
        with self._lock:
            self._core.close()

    @property
    def closed(self) -> bool:
        return self._core.closed

    def _check_open(self):
        if self._core.closed:
            raise _core.SessionClosedError("session is closed")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
