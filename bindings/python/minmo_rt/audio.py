"""Audio input helpers: dtype checks, conversion to float32 in [-1, 1], resampling, WAV I/O."""
from __future__ import annotations

import numpy as np

from ._core import InvalidInputError

#: Rates accepted by :func:`to_model_rate`; anything else is refused rather than guessed.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 192000


def to_float_mono(pcm) -> np.ndarray:
    """int16 or float32 mono samples (shape [N] or [N, 1]) -> float32 [N] in [-1, 1].

    Raises InvalidInputError for other dtypes, multi-channel audio and NaN/Inf samples."""
    if not isinstance(pcm, np.ndarray):
        raise InvalidInputError(f"audio must be a numpy array, got {type(pcm).__name__}")
    if pcm.ndim == 2 and pcm.shape[1] == 1:
        pcm = pcm[:, 0]
    if pcm.ndim != 1:
        raise InvalidInputError(f"audio must be mono with shape [N] or [N, 1], got shape {pcm.shape}")
    if pcm.dtype == np.int16:
        return pcm.astype(np.float32) / 32768.0
    if pcm.dtype == np.float32:
        if not np.isfinite(pcm).all():
            bad = int(np.count_nonzero(~np.isfinite(pcm)))
            raise InvalidInputError(f"audio holds {bad} NaN/Inf samples; nothing was consumed")
        return np.ascontiguousarray(pcm)
    raise InvalidInputError(f"audio dtype must be int16 or float32, got {pcm.dtype}")


class Resampler:
    """Streaming resampler (soxr) from ``in_rate`` to ``out_rate``; identity when they match."""

    def __init__(self, in_rate: int, out_rate: int):
        if not isinstance(in_rate, (int, np.integer)) or not (MIN_SAMPLE_RATE <= in_rate <= MAX_SAMPLE_RATE):
            raise InvalidInputError(
                f"unsupported sample rate {in_rate!r}: give an integer between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz")
        self.in_rate, self.out_rate = int(in_rate), int(out_rate)
        self._stream = None
        if self.in_rate != self.out_rate:
            import soxr

            self._stream = soxr.ResampleStream(self.in_rate, self.out_rate, 1, dtype="float32", quality="HQ")

    def __call__(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return x
        return np.ascontiguousarray(self._stream.resample_chunk(x, last=last), dtype=np.float32)


def read_wav(path: str) -> tuple[np.ndarray, int]:
    """(float32 mono samples, sample rate) from a WAV/FLAC file; multi-channel files are averaged."""
    import soundfile as sf

    data, rate = sf.read(path, dtype="float32", always_2d=True)
    return np.ascontiguousarray(data.mean(axis=1), dtype=np.float32), int(rate)


def write_wav(path: str, samples: np.ndarray, rate: int) -> None:
    import soundfile as sf

    sf.write(path, np.asarray(samples, dtype=np.float32), rate, subtype="PCM_16")
