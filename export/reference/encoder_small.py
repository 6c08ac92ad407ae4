"""SenseVoice-Small encoder (FunASR ``SenseVoiceEncoderSmall``) with its CTC head.

State-dict names follow FunASR's checkpoint (``embed.weight``, ``encoder.encoders0.0...``,
``ctc.ctc_lo``) so a FunASR ``model.pt`` loads as is.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from .configs import ChunkSpec, SenseVoiceSmallConfig
from .layers import attention, chunk_attention_mask, chunk_limits, fsmn_memory

from ...sensevoice_ids import sensevoice_query_ids

NUM_QUERIES = 4


def sinusoidal_encoding(positions: torch.Tensor, depth: int) -> torch.Tensor:
    """FunASR SinusoidalPositionEncoder: [sin | cos] halves, timescale step log(1e4) / (depth/2 - 1)."""
    half = depth // 2
    step = math.log(10000.0) / (half - 1)
    inv = torch.exp(torch.arange(half, dtype=torch.float64, device=positions.device) * -step)
    scaled = positions.to(torch.float64)[:, None] * inv[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1).to(torch.float32)


class SANMAttention(nn.Module):
    def __init__(self, in_dim: int, d: int, heads: int, kernel: int, shift: int):
        super().__init__()
        self.d, self.heads = d, heads
        self.linear_q_k_v = nn.Linear(in_dim, 3 * d)
        self.linear_out = nn.Linear(d, d)
        self.fsmn_block = nn.Conv1d(d, d, kernel, groups=d, bias=False)
        self.left_pad = (kernel - 1) // 2 + shift

    def forward(self, x, mask, limits):
        t = x.shape[0]
        q, k, v = self.linear_q_k_v(x).split(self.d, dim=-1)
        memory = fsmn_memory(v, self.fsmn_block.weight, self.left_pad, limits)
        dh = self.d // self.heads
        ctx = attention(q.view(t, self.heads, dh), k.view(t, self.heads, dh), v.view(t, self.heads, dh), mask)
        return self.linear_out(ctx.reshape(t, self.d)) + memory


class FeedForward(nn.Module):
    def __init__(self, d: int, ffn: int):
        super().__init__()
        self.w_1 = nn.Linear(d, ffn)
        self.w_2 = nn.Linear(ffn, d)

    def forward(self, x):
        return self.w_2(torch.relu(self.w_1(x)))


class SANMBlock(nn.Module):
    def __init__(self, in_dim: int, cfg: SenseVoiceSmallConfig):
        super().__init__()
        self.in_dim, self.d = in_dim, cfg.d_model
        self.norm1 = nn.LayerNorm(in_dim, eps=cfg.norm_eps)
        self.self_attn = SANMAttention(in_dim, cfg.d_model, cfg.n_heads, cfg.fsmn_kernel, cfg.sanm_shift)
        self.norm2 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.feed_forward = FeedForward(cfg.d_model, cfg.ffn_dim)

    def forward(self, x, mask, limits):
        attn = self.self_attn(self.norm1(x), mask, limits)
        x = x + attn if self.in_dim == self.d else attn
        return x + self.feed_forward(self.norm2(x))


class _Encoder(nn.Module):
    def __init__(self, cfg: SenseVoiceSmallConfig):
        super().__init__()
        self.encoders0 = nn.ModuleList([SANMBlock(cfg.input_dim, cfg)])
        self.encoders = nn.ModuleList([SANMBlock(cfg.d_model, cfg) for _ in range(cfg.n_blocks - 1)])
        self.after_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.tp_encoders = nn.ModuleList([SANMBlock(cfg.d_model, cfg) for _ in range(cfg.n_tp_blocks)])
        self.tp_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)


class _CTC(nn.Module):
    def __init__(self, cfg: SenseVoiceSmallConfig):
        super().__init__()
        self.ctc_lo = nn.Linear(cfg.d_model, cfg.vocab_size)


class SenseVoiceSmallEncoder(nn.Module):
    """features [T, 560] (+ 4 query ids) -> encoder output [T + 4, 512] and CTC logits [T + 4, vocab].

    The query embeddings [language, event, emotion, itn] are prepended before the encoder."""

    def __init__(self, cfg: SenseVoiceSmallConfig, chunk: Optional[ChunkSpec] = None):
        super().__init__()
        self.cfg, self.chunk = cfg, chunk
        self.embed = nn.Embedding(cfg.n_query_embed, cfg.input_dim)
        self.encoder = _Encoder(cfg)
        self.ctc = _CTC(cfg)

    @staticmethod
    def query_ids(language: str = "auto", use_itn: bool = False) -> torch.Tensor:
        return torch.tensor(sensevoice_query_ids(language, use_itn))

    def forward(self, features: torch.Tensor, query_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([self.embed(query_ids.long()), features], dim=0)
        n = x.shape[0]
        x = x * math.sqrt(self.cfg.d_model) + sinusoidal_encoding(torch.arange(1, n + 1, device=x.device), self.cfg.input_dim)
        mask = chunk_attention_mask(n, self.chunk, device=x.device)
        limits = chunk_limits(n, self.chunk, device=x.device)
        enc = self.encoder
        for block in list(enc.encoders0) + list(enc.encoders):
            x = block(x, mask, limits)
        x = enc.after_norm(x)
        for block in enc.tp_encoders:
            x = block(x, mask, limits)
        x = enc.tp_norm(x)
        return x, self.ctc.ctc_lo(x)
