"""Input projector: 2x frame concatenation -> Linear -> ReLU -> Linear -> N pre-norm transformer
layers at LLM width. [T, encoder_dim] -> [(T - 1) // 2 + 1, output_dim] (12.5 Hz audio tokens)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .configs import ChunkSpec, ProjectorConfig
from .layers import attention, chunk_attention_mask


def projector_tokens(n_frames: int) -> int:
    return (n_frames - 1) // 2 + 1 if n_frames > 0 else 0


class ProjectorAttention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.linear_q = nn.Linear(d, d)
        self.linear_k = nn.Linear(d, d)
        self.linear_v = nn.Linear(d, d)
        self.linear_out = nn.Linear(d, d)

    def forward(self, x, mask):
        t, d = x.shape
        dh = d // self.heads
        ctx = attention(self.linear_q(x).view(t, self.heads, dh), self.linear_k(x).view(t, self.heads, dh),
                        self.linear_v(x).view(t, self.heads, dh), mask)
        return self.linear_out(ctx.reshape(t, d))


class ProjectorLayer(nn.Module):
    def __init__(self, cfg: ProjectorConfig):
        super().__init__()
        d = cfg.output_dim
        self.norm1 = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.self_attn = ProjectorAttention(d, cfg.n_heads)
        self.norm2 = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.feed_forward = nn.ModuleDict({"w_1": nn.Linear(d, cfg.ffn_dim), "w_2": nn.Linear(cfg.ffn_dim, d)})

    def forward(self, x, mask):
        x = x + self.self_attn(self.norm1(x), mask)
        ff = self.feed_forward
        return x + ff["w_2"](torch.relu(ff["w_1"](self.norm2(x))))


class InputProjector(nn.Module):
    def __init__(self, cfg: ProjectorConfig, chunk: Optional[ChunkSpec] = None):
        super().__init__()
        self.cfg, self.chunk = cfg, chunk
        self.linear1 = nn.Linear(2 * cfg.encoder_dim, cfg.hidden_dim)
        self.linear2 = nn.Linear(cfg.hidden_dim, cfg.output_dim)
        self.blocks = nn.ModuleList([ProjectorLayer(cfg) for _ in range(cfg.n_layers)])

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        t, d = frames.shape
        if t % 2:
            frames = F.pad(frames, (0, 0, 0, 1))
        x = frames.reshape(-1, 2 * d)
        x = self.linear2(torch.relu(self.linear1(x)))
        # A projector token covers two encoder frames, so its chunk is half as long.
        mask = chunk_attention_mask(x.shape[0], self.chunk, self.chunk.chunk_frames // 2 if self.chunk else None, device=x.device)
        for block in self.blocks:
            x = block(x, mask)
        return x
