"""Full-duplex predictor: LLM last hidden -> Linear (no bias) -> one causal Qwen2 layer -> two
binary heads, turn-taking ("respond now") and barge-in ("stop speaking, listen")."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .configs import DuplexConfig
from .layers import Qwen2Layer, rope_cos_sin


class DuplexPredictor(nn.Module):
    def __init__(self, cfg: DuplexConfig):
        super().__init__()
        self.cfg = cfg
        self.proj = nn.Linear(cfg.llm_hidden, cfg.hidden_size, bias=False)
        self.layer = Qwen2Layer(cfg.as_qwen2_layer())
        self.turn_head = nn.Linear(cfg.hidden_size, 2)
        self.barge_head = nn.Linear(cfg.hidden_size, 2)

    def forward(self, hidden: torch.Tensor, past_kv: Optional[tuple] = None):
        """hidden [T, llm_hidden] (LLM final-norm hidden states of audio tokens, in order) ->
        (p_turn [T], p_barge [T], kv). Probabilities are softmax(head)[..., 1]."""
        past = 0 if past_kv is None else past_kv[0].shape[0]
        cos, sin = rope_cos_sin(torch.arange(past, past + hidden.shape[0], device=hidden.device), self.cfg.head_dim, self.cfg.rope_theta)
        x, kv = self.layer(self.proj(hidden), cos, sin, past_kv)
        p_turn = torch.softmax(self.turn_head(x), dim=-1)[:, 1]
        p_barge = torch.softmax(self.barge_head(x), dim=-1)[:, 1]
        return p_turn, p_barge, kv
