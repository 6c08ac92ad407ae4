"""Qwen2 / Qwen2.5 decoder (Hugging Face names: ``model.embed_tokens``, ``model.layers.N...``,
``model.norm``, ``lm_head``) with an explicit KV cache."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from .configs import Qwen2Config
from .layers import Qwen2Layer, RMSNorm, rope_cos_sin


@dataclass
class KVCache:
    """Per-layer (k, v) of shape [T, n_kv_heads, head_dim]; ``length`` tokens so far."""

    layers: list = field(default_factory=list)

    @property
    def length(self) -> int:
        return 0 if not self.layers else self.layers[0][0].shape[0]


class _Body(nn.Module):
    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([Qwen2Layer(cfg) for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Qwen2Decoder(nn.Module):
    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.cfg = cfg
        self.model = _Body(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_tokens(ids.long())

    def forward(self, embeds: torch.Tensor, cache: Optional[KVCache] = None) -> tuple[torch.Tensor, torch.Tensor, KVCache]:
        """embeds [T, hidden] appended after ``cache`` -> (logits [T, vocab], final-norm hidden
        [T, hidden], the extended cache). The cache passed in is not modified."""
        hidden, new_cache = self.hidden_states(embeds, cache)
        return self.lm_head(hidden), hidden, new_cache

    def hidden_states(self, embeds: torch.Tensor, cache: Optional[KVCache] = None) -> tuple[torch.Tensor, KVCache]:
        """Like ``forward`` without the head: (final-norm hidden [T, hidden], the extended cache)."""
        cfg = self.cfg
        past = cache.length if cache is not None else 0
        cos, sin = rope_cos_sin(torch.arange(past, past + embeds.shape[0], device=embeds.device), cfg.head_dim, cfg.rope_theta)
        x = embeds
        new_layers = []
        for i, layer in enumerate(self.model.layers):
            x, kv = layer(x, cos, sin, cache.layers[i] if cache is not None and cache.layers else None)
            new_layers.append(kv)
        return self.model.norm(x), KVCache(new_layers)
