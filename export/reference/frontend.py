"""Audio frontends: kaldi fbank + LFR + CMVN (SenseVoice-Small) and whisper log-mel (Large).

Input: float waveform in [-1, 1], shape [num_samples], at the config's sample rate.
Output: features [frames, dim], float32. Computation is in float64 where it is cheap so the
reference stays below the runtime's error.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .configs import FbankFrontendConfig, WhisperFrontendConfig


def _kaldi_mel(f):
    return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def kaldi_mel_banks(num_bins: int, padded_window: int, sample_rate: int, low_freq: float, high_freq: float) -> np.ndarray:
    """Triangular mel filters in kaldi's convention: [num_bins, padded_window // 2 + 1]
    (the Nyquist column is zero, as kaldi drops it)."""
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    n_fft_bins = padded_window // 2
    bin_width = sample_rate / padded_window
    mel_low, mel_high = _kaldi_mel(low_freq), _kaldi_mel(high_freq)
    delta = (mel_high - mel_low) / (num_bins + 1)
    mel = _kaldi_mel(bin_width * np.arange(n_fft_bins))
    banks = np.zeros((num_bins, n_fft_bins + 1), dtype=np.float64)
    for b in range(num_bins):
        left, center, right = mel_low + b * delta, mel_low + (b + 1) * delta, mel_low + (b + 2) * delta
        up = (mel - left) / (center - left)
        down = (right - mel) / (right - center)
        banks[b, :n_fft_bins] = np.maximum(0.0, np.minimum(up, down))
    return banks


def apply_lfr(feats: torch.Tensor, m: int, n: int) -> torch.Tensor:
    """Low frame rate stacking as in FunASR: left-pad with (m-1)//2 copies of frame 0, then every
    n frames emit m stacked frames (the tail repeats the last frame). [T, D] -> [ceil(T/n), m*D]."""
    t, d = feats.shape
    if t == 0:
        return feats.new_zeros((0, m * d))
    t_lfr = math.ceil(t / n)
    left = (m - 1) // 2
    padded = torch.cat([feats[:1].expand(left, d), feats], dim=0)
    total = padded.shape[0]
    out = []
    for i in range(t_lfr):
        start = i * n
        if start + m <= total:
            out.append(padded[start:start + m].reshape(-1))
        else:
            rest = padded[start:]
            pad = padded[-1:].expand(m - rest.shape[0], d)
            out.append(torch.cat([rest, pad], dim=0).reshape(-1))
    return torch.stack(out)


class KaldiFbankFrontend(nn.Module):
    """waveform -> kaldi fbank (Hamming, snip_edges, dither 0) -> LFR -> CMVN ((x + shift) * scale).

    Buffers ``cmvn_shift`` and ``cmvn_scale`` ([lfr_m * num_mel_bins]) come from FunASR's am.mvn.
    """

    def __init__(self, cfg: FbankFrontendConfig):
        super().__init__()
        self.cfg = cfg
        self.win = int(round(cfg.sample_rate * cfg.frame_length_ms / 1000.0))
        self.hop = int(round(cfg.sample_rate * cfg.frame_shift_ms / 1000.0))
        self.padded = 1 << (self.win - 1).bit_length()
        banks = kaldi_mel_banks(cfg.num_mel_bins, self.padded, cfg.sample_rate, cfg.low_freq, cfg.high_freq)
        self.register_buffer("mel_banks", torch.from_numpy(banks), persistent=False)
        i = np.arange(self.win, dtype=np.float64)
        window = 0.54 - 0.46 * np.cos(2.0 * np.pi * i / (self.win - 1))
        self.register_buffer("window", torch.from_numpy(window), persistent=False)
        self.register_buffer("cmvn_shift", torch.zeros(cfg.output_dim))
        self.register_buffer("cmvn_scale", torch.ones(cfg.output_dim))

    def num_frames(self, num_samples: int) -> int:
        return 0 if num_samples < self.win else 1 + (num_samples - self.win) // self.hop

    def fbank(self, waveform: torch.Tensor) -> torch.Tensor:
        """[num_samples] -> log mel energies [frames, num_mel_bins] (before LFR/CMVN)."""
        x = waveform.to(torch.float64) * self.cfg.waveform_scale
        n = self.num_frames(x.shape[0])
        if n == 0:
            return torch.zeros((0, self.cfg.num_mel_bins), dtype=torch.float32)
        frames = x.unfold(0, self.win, self.hop)[:n]
        frames = frames - frames.mean(dim=1, keepdim=True)
        prev = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
        frames = frames - self.cfg.preemphasis * prev
        frames = frames * self.window
        spec = torch.fft.rfft(frames, n=self.padded)
        power = spec.real ** 2 + spec.imag ** 2
        mel = power @ self.mel_banks.T
        eps = float(np.finfo(np.float32).eps)
        return torch.log(torch.clamp(mel, min=eps)).to(torch.float32)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        feats = apply_lfr(self.fbank(waveform), self.cfg.lfr_m, self.cfg.lfr_n)
        if self.cfg.apply_cmvn:
            feats = (feats + self.cmvn_shift) * self.cmvn_scale
        return feats


def slaney_mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """librosa's default (Slaney) mel filterbank, area-normalised: [n_mels, n_fft // 2 + 1]."""
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0

    def hz_to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)

    def mel_to_hz(m):
        m = np.asarray(m, dtype=np.float64)
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mel_pts = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2))
    fdiff = np.diff(mel_pts)
    ramps = mel_pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_pts[2:n_mels + 2] - mel_pts[:n_mels])
    return weights * enorm[:, None]


class WhisperLogMelFrontend(nn.Module):
    """waveform -> |STFT|^2 (Hann, centred, reflect pad, last frame dropped) -> 128 slaney mels
    -> log10 (floor 1e-10) -> max(x, ceiling - 8) -> (x + 4) / 4.  Output [num_samples // hop, n_mels]."""

    def __init__(self, cfg: WhisperFrontendConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("mel_filters", torch.from_numpy(slaney_mel_filters(cfg.sample_rate, cfg.n_fft, cfg.n_mels)), persistent=False)
        n = np.arange(cfg.n_fft, dtype=np.float64)
        self.register_buffer("window", torch.from_numpy(0.5 - 0.5 * np.cos(2.0 * np.pi * n / cfg.n_fft)), persistent=False)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        x = waveform.to(torch.float64)
        n_frames = x.shape[0] // cfg.hop_length
        if n_frames == 0:
            return torch.zeros((0, cfg.n_mels), dtype=torch.float32)
        half = cfg.n_fft // 2
        if x.shape[0] <= half:
            raise ValueError(f"whisper frontend needs more than {half} samples, got {x.shape[0]}")
        padded = torch.nn.functional.pad(x[None, None], (half, half), mode="reflect")[0, 0]
        frames = padded.unfold(0, cfg.n_fft, cfg.hop_length)[:n_frames] * self.window
        spec = torch.fft.rfft(frames, n=cfg.n_fft)
        power = spec.real ** 2 + spec.imag ** 2
        mel = power @ self.mel_filters.T
        log_spec = torch.log10(torch.clamp(mel, min=1e-10))
        ceiling = log_spec.max() if cfg.log_ceiling is None else torch.tensor(cfg.log_ceiling, dtype=torch.float64)
        log_spec = torch.maximum(log_spec, ceiling - 8.0)
        return ((log_spec + 4.0) / 4.0).to(torch.float32)
