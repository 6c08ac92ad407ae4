"""CosyVoice2 HiFT vocoder (``HiFTGenerator`` + ``ConvRNNF0Predictor``): 80-bin mel -> 24 kHz audio.

State-dict names follow the public ``hift.pt`` (``f0_predictor.condnet.N``, ``m_source.l_linear``,
``conv_pre``, ``ups.N``, ``source_downs.N``, ``source_resblocks.N``, ``resblocks.N``, ``conv_post``).
The public convolutions carry weight normalisation; ``HiFT(cfg, weight_norm=True)`` has the same
parametrisation (``*.parametrizations.weight.original0/1``) so such a checkpoint loads as is, and
``plain_state_dict`` folds it into ``*.weight`` (what the bundle stores and the runtime reads).

Differences from the public code, all deliberate and documented in README "Token2Wav":
- the harmonic phase is accumulated in float64 and wrapped to [0, 1) (the public code sums it in
  float32, which loses precision after a few seconds); the random initial phase of SineGen2 never
  reaches the output (its linear downsampling never reads sample 0) and is left out;
- the source noise is ``counter_normal`` (seeded, addressable by sample index) instead of randn;
- STFT / iSTFT are written as DFT-basis convolutions (same result as torch.stft / istft with a
  periodic Hann window, center=True, reflect padding; tested) so the graph exports to ONNX.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .configs import HiftConfig
from .flow import HIFT_NOISE_STREAM, counter_normal


def _wn(module: nn.Module, enabled: bool) -> nn.Module:
    return torch.nn.utils.parametrizations.weight_norm(module) if enabled else module


class Snake(nn.Module):
    """x + 1/(alpha + 1e-9) * sin(alpha x)^2 per channel; x: [C, T]."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x):
        a = self.alpha[:, None]
        return x + (1.0 / (a + 1e-9)) * torch.sin(x * a) ** 2


class ResBlock(nn.Module):
    def __init__(self, channels: int, kernel: int, dilations, wn: bool):
        super().__init__()
        self.convs1 = nn.ModuleList([_wn(nn.Conv1d(channels, channels, kernel, dilation=d, padding=(kernel * d - d) // 2), wn)
                                     for d in dilations])
        self.convs2 = nn.ModuleList([_wn(nn.Conv1d(channels, channels, kernel, padding=(kernel - 1) // 2), wn) for _ in dilations])
        self.activations1 = nn.ModuleList([Snake(channels) for _ in dilations])
        self.activations2 = nn.ModuleList([Snake(channels) for _ in dilations])

    def forward(self, x):
        for c1, c2, a1, a2 in zip(self.convs1, self.convs2, self.activations1, self.activations2):
            x = x + c2(a2(c1(a1(x))))
        return x


class F0Predictor(nn.Module):
    """``ConvRNNF0Predictor``: N x (Conv1d k3 + ELU), Linear -> |f0| per frame."""

    def __init__(self, cfg: HiftConfig, wn: bool):
        super().__init__()
        layers = []
        for i in range(cfg.f0_layers):
            layers += [_wn(nn.Conv1d(cfg.mel_dim if i == 0 else cfg.f0_channels, cfg.f0_channels, 3, padding=1), wn), nn.ELU()]
        self.condnet = nn.Sequential(*layers)
        self.classifier = nn.Linear(cfg.f0_channels, 1)

    def forward(self, mel):
        """mel: [80, T] -> f0 [T]."""
        return torch.abs(self.classifier(self.condnet(mel).T)[:, 0])


class SourceModule(nn.Module):
    """Harmonic-plus-noise source; only ``l_linear`` has weights."""

    def __init__(self, cfg: HiftConfig):
        super().__init__()
        self.l_linear = nn.Linear(cfg.nb_harmonics + 1, 1)


def harmonic_phase_steps(f0: torch.Tensor, cfg: HiftConfig) -> np.ndarray:
    """Per frame and harmonic the phase advance (in turns, wrapped to [0, 1)) of one sample: [T, H+1] float64."""
    h = np.arange(1, cfg.nb_harmonics + 2, dtype=np.float64)
    return np.mod(f0.detach().double().numpy()[:, None] * h[None, :] / cfg.sample_rate, 1.0)


def source_from_f0(f0: torch.Tensor, l_linear: nn.Linear, cfg: HiftConfig, seed: int) -> torch.Tensor:
    """The NSF source of a whole utterance: f0 [T] -> source [S*T] (S samples per frame).

    SineGen2 in closed form: r_k = frac(f0_k * h / sr) per frame and harmonic h = 1..H+1;
    Q_k = frac(Q_{k-1} + S * r_k) (the accumulated phase in turns, float64); sample n lies at
    s = (n + 1/2)/S - 1/2 frames, clamped to [0, T-1]; with k0 = floor(s) its phase is
    Q_{k0} + (s - k0) * S * r_{k0+1} (no second term at the last frame). Voiced frames (f0 above the
    threshold) get alpha * sin + sigma * noise, unvoiced ones alpha/3 * noise; the source is
    tanh(l_linear(harmonics))."""
    spf = cfg.samples_per_frame
    t = f0.shape[0]
    r = harmonic_phase_steps(f0, cfg)  # [T, H+1]
    q = np.mod(np.cumsum(spf * r, axis=0), 1.0)
    n = np.arange(spf * t, dtype=np.float64)
    s = np.clip((n + 0.5) / spf - 0.5, 0.0, None)
    k0 = np.minimum(np.floor(s).astype(np.int64), t - 1)
    k1 = np.minimum(k0 + 1, t - 1)
    lam = np.where(k1 > k0, s - k0, 0.0)
    turns = q[k0] + lam[:, None] * spf * r[k1]
    sines = cfg.nsf_alpha * np.sin(2.0 * np.pi * np.mod(turns, 1.0))
    uv = (f0.detach().double().numpy() > cfg.nsf_voiced_threshold).astype(np.float64)[n.astype(np.int64) // spf]
    noise_amp = uv * cfg.nsf_sigma + (1.0 - uv) * cfg.nsf_alpha / 3.0
    h1 = cfg.nb_harmonics + 1
    noise = counter_normal(seed, HIFT_NOISE_STREAM, 0, spf * t * h1).double().numpy().reshape(spf * t, h1)
    waves = torch.from_numpy((sines * uv[:, None] + noise_amp[:, None] * noise).astype(np.float32))
    return torch.tanh(l_linear(waves))[:, 0]


def stft_basis(n_fft: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Periodic Hann window [n_fft] and the real DFT basis [2*(n_fft/2+1), n_fft] (cos rows then -sin rows)."""
    n = torch.arange(n_fft, dtype=torch.float64, device=device)
    window = 0.5 - 0.5 * torch.cos(2 * math.pi * n / n_fft)
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64, device=device)
    ang = 2 * math.pi * k[:, None] * n[None, :] / n_fft
    return window.float(), torch.cat([torch.cos(ang), -torch.sin(ang)], 0).float()


def stft(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """torch.stft(center=True, reflect, periodic Hann) as [real | imag] rows: x [N] -> [n_fft+2, N/hop+1]."""
    window, basis = stft_basis(n_fft, x.device)
    xp = F.pad(x[None, None], (n_fft // 2, n_fft // 2), mode="reflect")[0]
    return F.conv1d(xp[None], (basis * window[None, :])[:, None, :], stride=hop)[0]


def istft(real: torch.Tensor, imag: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """torch.istft(center=True, periodic Hann) of a one-sided spectrum [n_fft/2+1, F] -> [(F-1)*hop]."""
    dev = real.device
    window, _ = stft_basis(n_fft, dev)
    nb = n_fft // 2 + 1
    n = torch.arange(n_fft, dtype=torch.float64, device=dev)
    k = torch.arange(nb, dtype=torch.float64, device=dev)
    c = torch.full((nb,), 2.0, dtype=torch.float64, device=dev)
    c[0] = 1.0
    c[-1] = 1.0
    ang = 2 * math.pi * k[:, None] * n[None, :] / n_fft
    inv = torch.cat([c[:, None] * torch.cos(ang), -c[:, None] * torch.sin(ang)], 0) / n_fft  # [2nb, n_fft]
    inv[nb] = 0.0  # irfft ignores the imaginary parts of DC and Nyquist
    inv[-1] = 0.0
    kernel = (inv.float() * window[None, :])[:, None, :]  # [2nb, 1, n_fft] -> conv_transpose
    frames = real.shape[1]
    y = F.conv_transpose1d(torch.cat([real, imag], 0)[None], kernel, stride=hop)[0, 0]
    env = F.conv_transpose1d(torch.ones(1, 1, frames, device=dev), (window ** 2)[None, None], stride=hop)[0, 0]
    half = n_fft // 2
    length = (frames - 1) * hop
    return y[half:half + length] / env[half:half + length]


class HiFT(nn.Module):
    def __init__(self, cfg: HiftConfig, weight_norm: bool = False):
        super().__init__()
        self.cfg = cfg
        wn = weight_norm
        base, n_up = cfg.base_channels, len(cfg.upsample_rates)
        self.f0_predictor = F0Predictor(cfg, wn)
        self.m_source = SourceModule(cfg)
        self.conv_pre = _wn(nn.Conv1d(cfg.mel_dim, base, 7, padding=3), wn)
        self.ups = nn.ModuleList([
            _wn(nn.ConvTranspose1d(base // 2 ** i, base // 2 ** (i + 1), k, u, padding=(k - u) // 2), wn)
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes))])
        down_rates = np.cumprod([1] + cfg.upsample_rates[::-1][:-1])[::-1]
        self.source_downs = nn.ModuleList()
        self.source_resblocks = nn.ModuleList()
        for i, (u, k, d) in enumerate(zip(down_rates, cfg.source_resblock_kernel_sizes, cfg.source_resblock_dilation_sizes)):
            ch = base // 2 ** (i + 1)
            u = int(u)
            self.source_downs.append(nn.Conv1d(cfg.n_fft + 2, ch, 1) if u == 1 else nn.Conv1d(cfg.n_fft + 2, ch, 2 * u, u, padding=u // 2))
            self.source_resblocks.append(ResBlock(ch, k, d, wn))
        self.resblocks = nn.ModuleList([ResBlock(base // 2 ** (i + 1), k, d, wn)
                                        for i in range(n_up)
                                        for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)])
        self.conv_post = _wn(nn.Conv1d(base // 2 ** n_up, cfg.n_fft + 2, 7, padding=3), wn)

    @classmethod
    def from_config(cls, config: dict, weight_norm: bool = False) -> "HiFT":
        return cls(HiftConfig.from_dict(config), weight_norm)

    @classmethod
    def from_state_dict(cls, cfg: HiftConfig, state: dict) -> "HiFT":
        """Builds the module matching ``state``: plain weights, torch.nn.utils.parametrizations weight
        norm (``parametrizations.weight.original0/1``) or the legacy ``weight_g`` / ``weight_v`` names."""
        state = dict(state)
        legacy = [k for k in state if k.endswith(".weight_g") or k.endswith(".weight_v")]
        for k in legacy:
            stem, kind = k.rsplit(".", 1)
            state[f"{stem}.parametrizations.weight.original{0 if kind == 'weight_g' else 1}"] = state.pop(k)
        wn = any(".parametrizations.weight." in k for k in state)
        m = cls(cfg, weight_norm=wn)
        m.load_state_dict(state)
        return m

    def plain_state_dict(self) -> dict:
        """State dict with weight norm folded into ``*.weight`` (the bundle layout)."""
        out = {}
        for name, mod in self.named_modules():
            for pname, p in mod.named_parameters(recurse=False):
                out[f"{name}.{pname}" if name else pname] = p.detach().clone()
            if hasattr(mod, "parametrizations") and "weight" in mod.parametrizations:
                out[f"{name}.weight"] = mod.weight.detach().clone()
        return {k: v for k, v in out.items() if ".parametrizations." not in k and not k.startswith("parametrizations.")}

    # -- pieces -----------------------------------------------------------------------------

    def f0(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [T, 80] -> f0 [T] (zero padding at both ends of ``mel``)."""
        return self.f0_predictor(mel.T)

    def spectrum(self, mel: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """The filter network: mel [T, 80], source [S*T] -> conv_post output [n_fft + 2, S*T/hop + 1]
        (log-magnitude rows, then phase rows; what ``decode`` turns into audio)."""
        cfg = self.cfg
        spec = stft(source, cfg.n_fft, cfg.hop_len)[None]
        x = self.conv_pre(mel.T[None])
        n_up = len(self.ups)
        nk = len(cfg.resblock_kernel_sizes)
        for i in range(n_up):
            x = self.ups[i](F.leaky_relu(x, cfg.lrelu_slope))
            if i == n_up - 1:
                x = F.pad(x, (1, 0), mode="reflect")
            x = x + self.source_resblocks[i](self.source_downs[i](spec))
            x = sum(self.resblocks[i * nk + j](x) for j in range(nk)) / nk
        return self.conv_post(F.leaky_relu(x, 0.01))[0]

    def decode(self, mel: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """mel [T, 80], source [S*T] -> audio [S*T] (the filter network and iSTFT)."""
        cfg = self.cfg
        x = self.spectrum(mel, source)
        nb = cfg.n_fft // 2 + 1
        mag = torch.clamp(torch.exp(x[:nb]), max=1e2)
        phase = torch.sin(x[nb:])
        wav = istft(mag * torch.cos(phase), mag * torch.sin(phase), cfg.n_fft, cfg.hop_len)
        return torch.clamp(wav, -cfg.audio_limit, cfg.audio_limit)

    def forward(self, mel: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """Offline synthesis of a whole utterance: mel [T, 80] -> audio [S*T]."""
        if mel.ndim != 2 or mel.shape[1] != self.cfg.mel_dim or mel.shape[0] == 0:
            raise ValueError(f"mel must have shape [T>0, {self.cfg.mel_dim}], not {tuple(mel.shape)}")
        source = source_from_f0(self.f0(mel), self.m_source.l_linear, self.cfg, seed)
        return self.decode(mel, source)


def receptive_field(cfg: HiftConfig) -> tuple[int, int]:
    """(left, right) mel frames that the audio of one frame depends on, rounded up with one frame of
    margin: exact streaming runs the vocoder over [e0 - left, e1 + right) to finalise frames [e0, e1).
    Mirrors hift_receptive_field in runtime/src/modules/hift.cc."""
    spf = cfg.samples_per_frame
    stft_rate = Fraction(spf, cfg.hop_len)

    def resblock(kernel, dilations, rate):
        r = sum(Fraction((kernel - 1) * d, 2) + Fraction(kernel - 1, 2) for d in dilations) / rate
        return r, r

    def add(a, b):
        return a[0] + b[0], a[1] + b[1]

    f0 = (Fraction(cfg.f0_layers), Fraction(cfg.f0_layers))
    source = add(f0, (Fraction(1), Fraction(1)))  # phase interpolation reads the neighbouring frame
    source = add(source, (Fraction(cfg.n_fft // 2) / spf, Fraction(cfg.n_fft // 2) / spf))  # STFT window
    x = (Fraction(3), Fraction(3))  # conv_pre
    rate = Fraction(1)
    down_rates = list(np.cumprod([1] + cfg.upsample_rates[::-1][:-1])[::-1])
    for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)):
        rate *= u
        p = (k - u) // 2
        x = add(x, (Fraction(k - 1 - p) / rate, Fraction(p) / rate))
        if i == len(cfg.upsample_rates) - 1:
            x = add(x, (1 / rate, 1 / rate))  # reflection pad
        du = int(down_rates[i])
        dk, dp = (1, 0) if du == 1 else (2 * du, du // 2)
        s = add(source, (Fraction(dp) / stft_rate, Fraction(dk - 1 - dp) / stft_rate))
        s = add(s, resblock(cfg.source_resblock_kernel_sizes[i], cfg.source_resblock_dilation_sizes[i], rate))
        x = (max(x[0], s[0]), max(x[1], s[1]))
        res = [resblock(k2, d2, rate) for k2, d2 in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)]
        x = add(x, (max(r[0] for r in res), max(r[1] for r in res)))
    x = add(x, (Fraction(3) / rate, Fraction(3) / rate))  # conv_post
    x = add(x, (Fraction(cfg.n_fft // 2) / spf, Fraction(cfg.n_fft // 2) / spf))  # iSTFT overlap
    return math.ceil(x[0]) + 1, math.ceil(x[1]) + 1
