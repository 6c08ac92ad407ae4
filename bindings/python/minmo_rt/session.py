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
    ``"audio"`` (spoken response: float32 ``samples`` at ``sample_rate``, 24 kHz for CosyVoice2),
    ``"speech_token"`` (one voice LM speech token in ``token_id``),
    ``"end"`` (the response is complete, speech included; ``text`` holds the whole response).
    ``time_ms``: stream time of the audio the event refers to (audio pushed so far, at 16 kHz).
    """

    kind: str
    time_ms: float
    token_id: Optional[int] = None
    text: str = ""
    p_turn: Optional[float] = None
    p_barge: Optional[float] = None
    samples: Optional[np.ndarray] = None
    sample_rate: Optional[int] = None


_KINDS = {0: "text", 1: "duplex", 2: "tag", 3: "end", 4: "audio", 5: "speech_token"}


def collect_audio(events) -> tuple[np.ndarray, Optional[int]]:
    """(all audio samples of ``events`` concatenated, their sample rate or None if there was none)."""
    chunks = [e for e in events if e.kind == "audio"]
    if not chunks:
        return np.zeros(0, np.float32), None
    return np.concatenate([e.samples for e in chunks]).astype(np.float32), chunks[0].sample_rate


def write_events_wav(path: str, events) -> int:
    """Writes the audio events of a session to a WAV file; returns the number of samples.
    Raises ValueError when there is no audio."""
    from .audio import write_wav

    samples, rate = collect_audio(events)
    if rate is None:
        raise ValueError("no audio events to write (was the session created with speak=True?)")
    write_wav(path, samples, rate)
    return int(samples.size)


def _speech_event(kind: str, time_ms, token, samples, rate) -> Optional[Event]:
    """The Event of a speech-output item (audio chunk or speech token); None for other kinds."""
    if kind == "audio":
        return Event(kind, time_ms, samples=samples, sample_rate=rate)
    if kind == "speech_token":
        return Event(kind, time_ms, token_id=token)
    return None


class _CoreSession:
    """What both session kinds share: a core session object guarded by a lock, stats, cancel,
    close and the context-manager protocol. Subclasses set ``_core`` and ``_lock``."""

    _kind = "session"

    def stats(self) -> dict:
        """Per-stage wall times in ms: {stage: {"count", "total_ms", "p50_ms", "p99_ms"}} plus counters."""
        return self._core.stats()

    def cancel(self) -> None:
        """Stop the current response now and free its state."""
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
            raise _core.SessionClosedError(f"{self._kind} is closed")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Session(_CoreSession):
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
        kind, time_ms, token, p_turn, p_barge, samples, rate = item
        kind = _KINDS[kind]
        speech = _speech_event(kind, time_ms, token, samples, rate)
        if speech is not None:
            return speech
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
    def speech_tokens(self) -> list[int]:
        """Speech tokens of the spoken response so far (speak=True)."""
        return list(self._core.speech_tokens)

    @property
    def tags(self) -> list[str]:
        return list(self._tags)



class TtsSession(_CoreSession):
    """Text-to-speech (cascade mode), created by :meth:`minmo_rt.Runtime.tts_session`. Push text as
    it arrives (``push_text``), call ``end_text()`` once, and iterate ``events()``: audio chunks
    (and speech tokens) as they are made, then ``end``."""

    _kind = "TTS session"

    def __init__(self, core_session, tokenizer):
        self._core = core_session
        self._tok = tokenizer
        self._lock = threading.Lock()

    def push_text(self, text) -> None:
        """Append text (a string, tokenized with the voice LM's tokenizer, or a list of token ids)."""
        with self._lock:
            self._check_open()
            if isinstance(text, str):
                if self._tok is None:
                    raise _core.InvalidInputError("bundle has no voice LM tokenizer: push token ids instead of text")
                ids = self._tok.encode(text)
            else:
                ids = [int(i) for i in text]
            self._core.push_text(ids)

    def end_text(self) -> None:
        with self._lock:
            self._check_open()
            self._core.end_text()

    def events(self, generate: bool = True) -> Iterator[Event]:
        """What is ready; with ``generate`` the voice LM runs as far as the text pushed so far allows
        (to the end after ``end_text()``)."""
        while True:
            with self._lock:
                self._check_open()
                raw = self._core.poll()
                if not raw and generate and self._core.step():
                    raw = self._core.poll()
            if not raw:
                return
            for item in raw:
                kind, time_ms, token, _, _, samples, rate = item
                kind = _KINDS[kind]
                yield _speech_event(kind, time_ms, token, samples, rate) or Event(kind, time_ms)

    @property
    def speech_tokens(self) -> list[int]:
        return list(self._core.speech_tokens)

    @property
    def finished(self) -> bool:
        return self._core.finished

