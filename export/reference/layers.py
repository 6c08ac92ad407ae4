"""Building blocks shared by the reference modules."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .configs import ChunkSpec, Qwen2Config


def chunk_attention_mask(n: int, chunk: Optional[ChunkSpec], chunk_frames: Optional[int] = None,
                         device=None) -> Optional[torch.Tensor]:
    """Bool [n, n], True where query i may attend key j; None for full attention.

    Frame i belongs to chunk i // C and sees chunks (c - left_chunks) .. c."""
    if chunk is None or not chunk.chunked:
        return None
    c = chunk_frames or chunk.chunk_frames
    idx = torch.arange(n, device=device) // c
    diff = idx[:, None] - idx[None, :]
    return (diff >= 0) & (diff <= chunk.left_chunks)


def chunk_limits(n: int, chunk: Optional[ChunkSpec], chunk_frames: Optional[int] = None, device=None) -> torch.Tensor:
    """For each frame, one past the last frame its convolution memory may read: the end of its chunk
    in chunked mode, else n."""
    if chunk is None or not chunk.chunked:
        return torch.full((n,), n, dtype=torch.long, device=device)
    c = chunk_frames or chunk.chunk_frames
    return torch.clamp((torch.arange(n, device=device) // c + 1) * c, max=n)


def fsmn_memory(v: torch.Tensor, weight: torch.Tensor, left_pad: int, limits: torch.Tensor) -> torch.Tensor:
    """SAN-M memory block: depthwise conv over time plus the input.

    v: [T, D]; weight: [D, 1, K] (Conv1d(groups=D) layout, no bias); output frame i reads
    v[i - left_pad + t] for taps t where 0 <= index < limits[i] (zero elsewhere)."""
    t_len, d = v.shape
    k = weight.shape[-1]
    padded = F.pad(v.T, (left_pad, k - 1 - left_pad))  # [D, T + K - 1]
    windows = padded.unfold(1, k, 1)  # [D, T, K]
    src = torch.arange(t_len, device=v.device)[:, None] - left_pad + torch.arange(k, device=v.device)[None, :]  # [T, K]
    valid = (src >= 0) & (src < limits.to(v.device)[:, None])
    conv = torch.einsum("dtk,dk->td", windows * valid.to(v.dtype)[None], weight[:, 0, :])
    return conv + v


def rope_cos_sin(positions: torch.Tensor, dim: int, theta: float, dtype=torch.float32):
    """cos, sin [T, dim] for the rotate-half (GPT-NeoX / Hugging Face Qwen2) convention."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim))
    freqs = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [T, H, Dh]; cos/sin: [T, Dh]."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos[:, None, :] + rotated * sin[:, None, :]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor], scale: Optional[float] = None) -> torch.Tensor:
    """q: [Tq, Hq, Dh]; k, v: [Tk, Hkv, Dh] with Hq a multiple of Hkv (GQA); mask bool [Tq, Tk] or None.
    Returns [Tq, Hq, Dh]."""
    hq, hkv = q.shape[1], k.shape[1]
    if hq != hkv:
        k = k.repeat_interleave(hq // hkv, dim=1)
        v = v.repeat_interleave(hq // hkv, dim=1)
    scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    scores = torch.einsum("qhd,khd->hqk", q, k) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask[None], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.einsum("hqk,khd->qhd", probs, v)


def causal_mask(tq: int, tk: int, device=None) -> torch.Tensor:
    """Query i sits at absolute position tk - tq + i and sees keys up to it."""
    offset = tk - tq
    return torch.arange(tk, device=device)[None, :] <= (torch.arange(tq, device=device)[:, None] + offset)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        var = x.pow(2).mean(-1, keepdim=True)
        return x * torch.rsqrt(var + self.eps) * self.weight


class Qwen2Attention(nn.Module):
    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.cfg = cfg
        h, dh = cfg.num_attention_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, h * dh, bias=True)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.num_key_value_heads * dh, bias=True)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.num_key_value_heads * dh, bias=True)
        self.o_proj = nn.Linear(h * dh, cfg.hidden_size, bias=False)

    def forward(self, x, cos, sin, past_kv: Optional[tuple[torch.Tensor, torch.Tensor]]):
        cfg = self.cfg
        t = x.shape[0]
        q = self.q_proj(x).view(t, cfg.num_attention_heads, cfg.head_dim)
        k = self.k_proj(x).view(t, cfg.num_key_value_heads, cfg.head_dim)
        v = self.v_proj(x).view(t, cfg.num_key_value_heads, cfg.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if past_kv is not None:
            k = torch.cat([past_kv[0], k], dim=0)
            v = torch.cat([past_kv[1], v], dim=0)
        out = attention(q, k, v, causal_mask(t, k.shape[0], x.device))
        return self.o_proj(out.reshape(t, -1)), (k, v)


class Qwen2MLP(nn.Module):
    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Qwen2Layer(nn.Module):
    """Pre-RMSNorm decoder layer with GQA attention (bias on q/k/v) and a SiLU-gated MLP."""

    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Qwen2Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = Qwen2MLP(cfg)

    def forward(self, x, cos, sin, past_kv=None):
        attn, kv = self.self_attn(self.input_layernorm(x), cos, sin, past_kv)
        x = x + attn
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, kv
