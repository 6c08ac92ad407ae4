"""SenseVoice-Large style voice encoder (MinMo): whisper log-mel -> 2 strided convs -> blocks of
RoPE attention with an FSMN memory branch -> ln_post. 100 Hz mel in, 25 Hz frames out."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .configs import ChunkSpec, SenseVoiceLargeConfig
from .layers import apply_rope, attention, chunk_attention_mask, chunk_limits, fsmn_memory, rope_cos_sin


def conv_out_len(n: int) -> int:
    """Frames out of one Conv1d(k=3, s=2, p=1)."""
    return (n - 1) // 2 + 1 if n > 0 else 0


def encoder_frames(n_mel: int) -> int:
    return conv_out_len(conv_out_len(n_mel))


class FSMNAttention(nn.Module):
    def __init__(self, cfg: SenseVoiceLargeConfig):
        super().__init__()
        d = cfg.d_model
        self.cfg = cfg
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(d, d, bias=False)
        self.value = nn.Linear(d, d)
        self.out = nn.Linear(d, d)
        self.fsmn = nn.Conv1d(d, d, cfg.fsmn_kernel, groups=d, bias=False)

    def forward(self, x, cos, sin, mask, limits):
        t, d, h = x.shape[0], self.cfg.d_model, self.cfg.n_heads
        q = apply_rope(self.query(x).view(t, h, d // h), cos, sin)
        k = apply_rope(self.key(x).view(t, h, d // h), cos, sin)
        v = self.value(x)
        memory = fsmn_memory(v, self.fsmn.weight, (self.cfg.fsmn_kernel - 1) // 2, limits)
        ctx = attention(q, k, v.view(t, h, d // h), mask)
        return self.out(ctx.reshape(t, d)) + memory


class Block(nn.Module):
    def __init__(self, cfg: SenseVoiceLargeConfig):
        super().__init__()
        d = cfg.d_model
        self.attn_ln = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.attn = FSMNAttention(cfg)
        self.mlp_ln = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x, cos, sin, mask, limits):
        x = x + self.attn(self.attn_ln(x), cos, sin, mask, limits)
        return x + self.mlp(self.mlp_ln(x))


class SenseVoiceLargeEncoder(nn.Module):
    """log-mel [T, n_mels] -> frames [encoder_frames(T), d_model]."""

    def __init__(self, cfg: SenseVoiceLargeConfig, chunk: Optional[ChunkSpec] = None):
        super().__init__()
        self.cfg, self.chunk = cfg, chunk
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.d_model, 3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(cfg.d_model, cfg.d_model, 3, stride=2, padding=1)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_blocks)])
        self.ln_post = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)

    def subsample(self, mel: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv1(mel.T[None]))
        return F.gelu(self.conv2(x))[0].T

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.subsample(mel)
        n = x.shape[0]
        cos, sin = rope_cos_sin(torch.arange(n, device=x.device), self.cfg.d_model // self.cfg.n_heads, self.cfg.rope_theta)
        mask = chunk_attention_mask(n, self.chunk, device=x.device)
        limits = chunk_limits(n, self.chunk, device=x.device)
        for block in self.blocks:
            x = block(x, cos, sin, mask, limits)
        return self.ln_post(x)
