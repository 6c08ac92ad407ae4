"""Synthetic speech for minmo-tiny: espeak-ng voices speaking digit strings and command phrases.

Every utterance is drawn from a ``numpy`` generator seeded by (seed, index), so a data set is a
pure function of its seed and size. Audio goes through the reference whisper log-mel frontend
once and the features are cached on disk (``features.npy`` + ``meta.json``): training never
re-synthesizes.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

SAMPLE_RATE = 16000
SAMPLES_PER_AUDIO_TOKEN = 1280  # 80 ms: one projector output (LLM audio token)
DATA_VERSION = 1
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PHRASES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "phrases.txt")

# espeak-ng English voices (no mbrola data needed) and voice variants that change the timbre.
VOICES = ("en", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029",
          "en-us-nyc")
VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt3",
            "croak", "Andy", "Annie", "iven", "john", "linda", "max", "michel", "norbert", "paul", "aunty",
            "robert", "steph", "quincy", "grandpa")


class SpeechSynthesisError(RuntimeError):
    """espeak-ng is missing or failed."""


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def load_phrases(path: str = PHRASES_FILE) -> list[str]:
    with open(path) as f:
        lines = [ln.strip() for ln in f]
    return [ln for ln in lines if ln and not ln.startswith("#")]


@dataclass
class UtteranceSpec:
    """What to say and how: everything needed to re-synthesize one utterance."""

    text: str          # the transcript (lowercase words), the training target
    voice: str
    rate: int          # espeak words per minute
    pitch: int         # espeak 0..99
    word_gap: int      # espeak -g, units of 10 ms
    lead_s: float      # silence before the speech
    tail_s: float      # silence after it (the turn-taking head learns "respond" there)
    peak: float        # output peak level
    snr_db: float      # white + low-passed noise relative to the speech RMS
    noise_seed: int


def digit_words(rng: np.random.Generator, lo: int = 1, hi: int = 12) -> str:
    n = int(rng.integers(lo, hi + 1))
    return " ".join(DIGIT_WORDS[int(d)] for d in rng.integers(0, 10, size=n))


def sample_text(rng: np.random.Generator, phrases: list[str]) -> str:
    """A digit string (1-12 digits), a phrase, or a phrase followed by a digit string."""
    r = rng.random()
    if r < 0.4:
        return digit_words(rng)
    phrase = phrases[int(rng.integers(len(phrases)))]
    if r < 0.7:
        return phrase
    return f"{phrase} {digit_words(rng, 1, 8)}"


def sample_spec(seed: int, index: int, phrases: list[str]) -> UtteranceSpec:
    rng = np.random.default_rng([seed, index])
    variant = VARIANTS[int(rng.integers(len(VARIANTS)))]
    voice = VOICES[int(rng.integers(len(VOICES)))] + (f"+{variant}" if variant else "")
    return UtteranceSpec(
        text=sample_text(rng, phrases), voice=voice, rate=int(rng.integers(130, 211)),
        pitch=int(rng.integers(20, 81)), word_gap=int(rng.integers(0, 4)), lead_s=float(rng.uniform(0.05, 0.4)),
        tail_s=float(rng.uniform(0.5, 1.0)), peak=float(np.exp(rng.uniform(np.log(0.1), np.log(0.9)))),
        snr_db=float(rng.uniform(15.0, 40.0)), noise_seed=int(rng.integers(2**31)))


def spoken_form(text: str) -> str:
    """What espeak reads: a short pause between a phrase and the digits that follow it."""
    words = text.split()
    cut = next((i for i, w in enumerate(words) if w in DIGIT_WORDS), len(words))
    if 0 < cut < len(words) and not all(w in DIGIT_WORDS for w in words):
        return " ".join(words[:cut]) + ", " + " ".join(words[cut:])
    return text


def espeak(text: str, voice: str, rate: int, pitch: int, word_gap: int) -> np.ndarray:
    """espeak-ng -> float32 mono at 16 kHz."""
    import io

    import soundfile as sf
    import soxr

    if not espeak_available():
        raise SpeechSynthesisError("espeak-ng is not installed (Debian/Ubuntu: apt-get install espeak-ng)")
    cmd = ["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-g", str(word_gap), "--stdout", text]
    proc = subprocess.run(cmd, capture_output=True, timeout=60)
    if proc.returncode != 0 or len(proc.stdout) < 100:
        raise SpeechSynthesisError(f"espeak-ng failed for voice {voice!r}: {proc.stderr.decode(errors='replace')[:200]}")
    audio, rate_in = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    return soxr.resample(audio, rate_in, SAMPLE_RATE).astype(np.float32)


def speech_bounds(x: np.ndarray, frame: int = 160, rel: float = 0.02) -> tuple[int, int]:
    """First and one-past-last sample of frames whose peak exceeds ``rel`` of the overall peak."""
    n = len(x) // frame
    env = np.abs(x[: n * frame]).reshape(n, frame).max(axis=1)
    on = np.nonzero(env > rel * max(float(env.max()), 1e-9))[0]
    if on.size == 0:
        return 0, len(x)
    return int(on[0] * frame), int(min(len(x), (on[-1] + 1) * frame))


def render(spec: UtteranceSpec) -> tuple[np.ndarray, int]:
    """(waveform float32 at 16 kHz, sample where the speech ends)."""
    clean = espeak(spoken_form(spec.text), spec.voice, spec.rate, spec.pitch, spec.word_gap)
    start, end = speech_bounds(clean)
    clean = clean[start:end]
    lead, tail = int(spec.lead_s * SAMPLE_RATE), int(spec.tail_s * SAMPLE_RATE)
    x = np.concatenate([np.zeros(lead, np.float32), clean, np.zeros(tail, np.float32)])
    x *= spec.peak / max(float(np.abs(x).max()), 1e-9)
    rng = np.random.default_rng(spec.noise_seed)
    white = rng.standard_normal(len(x))
    colored = np.convolve(white, np.ones(8) / np.sqrt(8), mode="same")  # some low-frequency weight
    noise = white + colored
    speech_rms = float(np.sqrt(np.mean(x[lead:lead + len(clean)] ** 2)) + 1e-9)
    noise *= speech_rms / (np.sqrt(np.mean(noise ** 2)) * 10 ** (spec.snr_db / 20))
    y = np.clip(x + noise.astype(np.float32), -1.0, 1.0).astype(np.float32)
    return y, lead + len(clean)


def turn_labels(n_tokens: int, speech_end: int, margin_s: float = 0.2) -> np.ndarray:
    """Per audio token: 1 once the token ends ``margin_s`` after the speech has ended (the turn is
    over: respond), else 0."""
    ends = (np.arange(n_tokens) + 1) * SAMPLES_PER_AUDIO_TOKEN
    return (ends >= speech_end + int(margin_s * SAMPLE_RATE)).astype(np.int64)


# -- cached data sets ------------------------------------------------------------------------------

_FRONTEND = None


def _frontend():
    global _FRONTEND
    if _FRONTEND is None:
        import torch

        from ..export.reference import WhisperFrontendConfig, WhisperLogMelFrontend

        torch.set_num_threads(1)
        _FRONTEND = WhisperLogMelFrontend(WhisperFrontendConfig(n_mels=128))
    return _FRONTEND


def _make_one(args) -> tuple[dict, np.ndarray]:
    import torch

    seed, index, phrases = args
    spec = sample_spec(seed, index, phrases)
    wave, speech_end = render(spec)
    with torch.no_grad():
        mel = _frontend()(torch.from_numpy(wave)).numpy().astype(np.float16)
    return {**asdict(spec), "index": index, "num_samples": len(wave), "speech_end": speech_end}, mel


@dataclass
class SpeechSet:
    """A cached synthetic set: per utterance, its spec (with ``num_samples``, ``speech_end``) and its
    log-mel features [T, 128] (float16 in the cache)."""

    items: list
    mels: list

    def __len__(self):
        return len(self.items)


def cache_key(seed: int, n: int, phrases: list[str]) -> str:
    h = hashlib.sha256(json.dumps([DATA_VERSION, seed, n, VOICES, VARIANTS, phrases]).encode()).hexdigest()
    return f"seed{seed}_n{n}_{h[:12]}"


def build_set(seed: int, n: int, cache_dir: Optional[str], workers: int = 2, progress: bool = True) -> SpeechSet:
    """Synthesize ``n`` utterances from ``seed`` (or load them from ``cache_dir``)."""
    phrases = load_phrases()
    path = os.path.join(cache_dir, cache_key(seed, n, phrases)) if cache_dir else None
    if path and os.path.isfile(os.path.join(path, "meta.json")):
        with open(os.path.join(path, "meta.json")) as f:
            meta = json.load(f)
        flat = np.load(os.path.join(path, "features.npy"))
        offs = np.cumsum([0] + [m["frames"] for m in meta])
        return SpeechSet(meta, [flat[offs[i]:offs[i + 1]] for i in range(len(meta))])
    jobs = [(seed, i, phrases) for i in range(n)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as ex:
            results = list(_progress(ex.map(_make_one, jobs, chunksize=16), n, progress))
    else:
        results = list(_progress(map(_make_one, jobs), n, progress))
    items = [dict(r[0], frames=int(r[1].shape[0])) for r in results]
    mels = [r[1] for r in results]
    if path:
        os.makedirs(path, exist_ok=True)
        np.save(os.path.join(path, "features.npy"), np.concatenate(mels))
        with open(os.path.join(path, "meta.json"), "w") as f:
            json.dump(items, f)
    return SpeechSet(items, mels)


def _progress(it, total, on):
    if not on:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, desc="synthesizing", mininterval=5)


def write_wavs(seed: int, n: int, out_dir: str, offset: int = 0) -> list[dict]:
    """Render utterances ``offset`` .. ``offset + n - 1`` of ``seed`` as 16-bit WAVs plus
    ``transcripts.json`` (file -> text, speech_end, num_samples)."""
    import soundfile as sf

    phrases = load_phrases()
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for i in range(offset, offset + n):
        spec = sample_spec(seed, i, phrases)
        wave, speech_end = render(spec)
        name = f"heldout_s{seed}_{i:04d}.wav"
        sf.write(os.path.join(out_dir, name), wave, SAMPLE_RATE, subtype="PCM_16")
        rows.append({"file": name, "text": spec.text, "speech_end": speech_end, "num_samples": len(wave),
                     "voice": spec.voice})
    with open(os.path.join(out_dir, "transcripts.json"), "w") as f:
        json.dump(rows, f, indent=1)
    return rows


#: The demo WAV (bindings/python/minmo_rt/assets/demo_turn_on_lights.wav): a phrase and a digit
#: string in a voice/variant combination, rate and noise of its own (not an utterance of any seed).
DEMO_SPEC = UtteranceSpec(text="turn on the kitchen lights please four seven one nine", voice="en-us+m3", rate=165,
                          pitch=48, word_gap=1, lead_s=0.25, tail_s=0.8, peak=0.5, snr_db=30.0, noise_seed=4719)
