"""Voice decoder reference: output projector (semantic vectors), the CosyVoice2 voice token LM, the
5:15 interleave state machine and repetition-aware sampling with a portable seeded generator.

The interleave rules (the runtime's voice_lm stream implements the same machine):

- the input sequence is ``[sos, v1..v5, s1..s15, v6..v10, s16..s30, ..., (rest of v), task_id,
  s.., eos]``: ``text_ratio`` (5) text vectors, then ``speech_ratio`` (15) sampled speech tokens;
- after every 15th speech token of a block the fill token is forced (nothing is sampled, nothing
  fed): the next block's 5 vectors follow that 15th token in the sequence;
- inside blocks only real speech tokens ``[0, speech_token_size)`` may be sampled (eos / fill are
  masked); a block that has started is completed even when the text ends during it;
- when the text has ended and fewer than 5 vectors remain, they are fed with task_id (turn of
  speech); then tokens are sampled until eos, which is masked until ``min_token_text_ratio x
  text length`` speech tokens exist; at ``max_token_text_ratio x text length`` tokens the speech
  ends without eos.

Sampling (CosyVoice2 ``ras_sampling``): softmax over the allowed ids (float64); nucleus = the most
likely ids in descending order (ties: lower id first) while their cumulative probability is below
top_p and fewer than top_k are taken; draw one proportionally; if it occurs >= win_size * tau_r
times among the last win_size speech tokens, draw again from the whole allowed distribution.
Draws use :class:`SplitMix64` (uniform = top 53 bits / 2**53), so the runtime reproduces them.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional

import numpy as np
import torch
from torch import nn

from .configs import OutputProjectorConfig, VoiceLMConfig
from .qwen2 import KVCache, Qwen2Decoder

_MASK64 = (1 << 64) - 1

NEED_TEXT = NEED_TEXT_TOKEN = -1
ENDED = ENDED_TOKEN = -2


class OutputProjector(nn.Module):
    """[token embedding ; LLM hidden] -> semantic vectors [T, output_dim]."""

    def __init__(self, cfg: OutputProjectorConfig):
        super().__init__()
        self.cfg = cfg
        self.linear = nn.Linear(cfg.embed_dim + cfg.llm_hidden, cfg.output_dim)

    def forward(self, token_embeds: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.cat([token_embeds, hidden], dim=-1))


class VoiceLM(Qwen2Decoder):
    """State dict: the Qwen2 body (``model.*``, no lm_head), ``llm_embedding.weight`` [2, H],
    ``speech_embedding.weight`` [S + 3, H], ``llm_decoder.{weight,bias}`` [S + 3, H]."""

    def __init__(self, cfg: VoiceLMConfig):
        super().__init__(cfg.as_qwen2())
        self.cfg = self.vcfg = cfg  # the body reads head_dim / rope_theta, which VoiceLMConfig has too
        self.lm_head = None
        h, n = cfg.hidden_size, cfg.speech_token_size + 3
        self.llm_embedding = nn.Embedding(2, h)
        self.speech_embedding = nn.Embedding(n, h)
        self.llm_decoder = nn.Linear(h, n)

    def sos(self) -> torch.Tensor:
        return self.llm_embedding.weight[0:1]

    def task_id(self) -> torch.Tensor:
        return self.llm_embedding.weight[1:2]

    def text_embed(self, ids) -> torch.Tensor:
        """Cascade mode: the body's text-token embeddings [n, hidden]."""
        return self.model.embed_tokens(torch.as_tensor(ids, dtype=torch.long))

    def speech_embed(self, ids) -> torch.Tensor:
        return self.speech_embedding(torch.as_tensor(ids, dtype=torch.long))

    def step_logits(self, embeds: torch.Tensor, cache: Optional[KVCache] = None) -> tuple[torch.Tensor, KVCache]:
        """Appends embeds [T, H]; (speech logits [T, S + 3], the extended cache)."""
        hidden, cache = self.hidden_states(embeds, cache)
        return self.llm_decoder(hidden), cache


class SplitMix64:
    """The runtime's sampling generator (modules/voice_lm.h SplitMix64), bit for bit."""

    def __init__(self, seed: int):
        self.state = int(seed) & _MASK64

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)

    def uniform(self) -> float:
        return (self.next() >> 11) * (1.0 / 9007199254740992.0)


def _draw(probs: np.ndarray, order: Iterable[int], total: float, rng: SplitMix64) -> int:
    u = rng.uniform() * total
    acc, last = 0.0, -1
    for i in order:
        acc += probs[i]
        last = i
        if u < acc:
            return int(i)
    return int(last)


def ras_sample(logits, n_allowed: int, history: list, cfg: VoiceLMConfig, rng: SplitMix64) -> int:
    """Repetition-aware sampling over ids [0, n_allowed) of one logits row (see module doc)."""
    x = np.asarray(logits, dtype=np.float64)[:n_allowed]
    e = np.exp(x - x.max())
    probs = e / math.fsum(e.tolist())
    order = np.argsort(-x, kind="stable")[:cfg.top_k].tolist()  # descending, ties: lower id first
    kept, cum = [], 0.0
    for i in order:
        if cum < cfg.top_p and len(kept) < cfg.top_k:
            cum += probs[i]
            kept.append(i)
        else:
            break
    tok = _draw(probs, kept, cum, rng)
    recent = history[-cfg.win_size:]
    if sum(1 for t in recent if t == tok) >= cfg.win_size * cfg.tau_r:
        tok = _draw(probs, range(n_allowed), 1.0, rng)
    return tok


class VoiceTokenStream:
    """The interleave state machine over a :class:`VoiceLM` (see module doc). Push text vectors
    (semantic vectors, or cascade text embeddings) as they arrive, ``end_text()`` once, and call
    ``step()``: one LM forward, returning a speech token, NEED_TEXT or ENDED."""

    def __init__(self, lm: VoiceLM, seed: int):
        self.lm, self.cfg = lm, lm.vcfg
        self.rng = SplitMix64(seed)
        self.cache: Optional[KVCache] = None
        self.pending = [lm.sos()]       # rows to feed before the next sample
        self.text: list = []            # vectors not fed yet
        self.n_text = 0
        self.text_ended = False
        self.in_block = self.cfg.speech_ratio  # speech tokens of the current block (full: needs text)
        self.final = False
        self.ended = False
        self.tokens: list[int] = []

    def push_text(self, vectors: torch.Tensor) -> None:
        if self.text_ended:
            raise ValueError("text pushed after end_text()")
        for row in vectors:
            self.text.append(row[None])
        self.n_text += vectors.shape[0]

    def end_text(self) -> None:
        self.text_ended = True

    def _sample(self, allow_eos: bool) -> int:
        logits, self.cache = self.lm.step_logits(torch.cat(self.pending), self.cache)
        n = self.cfg.speech_token_size + (1 if allow_eos else 0)
        return ras_sample(logits[-1].detach().numpy(), n, self.tokens, self.cfg, self.rng)

    @torch.no_grad()
    def step(self) -> int:
        c = self.cfg
        if self.ended:
            return ENDED
        if not self.final and self.in_block >= c.speech_ratio:
            if len(self.text) >= c.text_ratio:
                self.pending += self.text[:c.text_ratio]
                del self.text[:c.text_ratio]
                self.in_block = 0
            elif self.text_ended:
                if self.n_text == 0:
                    self.ended = True
                    return ENDED
                self.pending += self.text + [self.lm.task_id()]
                self.text = []
                self.final = True
            else:
                return NEED_TEXT
        if self.final:
            tok = self._sample(allow_eos=len(self.tokens) >= c.min_token_text_ratio * self.n_text)
            if tok == c.eos:
                self.ended = True
                return ENDED
        else:
            tok = self._sample(allow_eos=False)
            self.in_block += 1
        self.tokens.append(tok)
        self.pending = [self.lm.speech_embed([tok])]
        if self.final and len(self.tokens) >= c.max_token_text_ratio * self.n_text:
            self.ended = True
        return tok


def generate_speech_tokens(lm: VoiceLM, vectors: torch.Tensor, seed: int, schedule: Optional[list] = None) -> list[int]:
    """Offline reference generator: feeds ``vectors`` [N, H] (in pieces of ``schedule`` sizes,
    cycled; default all at once, which gives the same tokens), ends the text and runs to the end."""
    s = VoiceTokenStream(lm, seed)
    sizes = schedule or [max(1, vectors.shape[0])]
    pos, i = 0, 0
    while pos < vectors.shape[0]:
        n = sizes[i % len(sizes)]
        s.push_text(vectors[pos:pos + n])
        pos, i = pos + n, i + 1
        while s.step() >= 0:
            pass
    s.end_text()
    while s.step() != ENDED:
        pass
    return list(s.tokens)
