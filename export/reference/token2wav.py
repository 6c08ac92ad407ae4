"""Token2Wav reference: flow + HiFT offline, and the streaming semantics the runtime implements.

Streaming semantics (what ``Token2WavStream`` in the runtime computes, for any push schedule):

* The token sequence is [prompt tokens, generated tokens]. It is split into *segments*: the prompt
  (if any) is segment 0, then the generated tokens form chunks of ``chunk_tokens``.
* Every attention (encoder blocks at token rate, up-encoder blocks and estimator transformer blocks
  at mel rate, mel frame f belonging to token f // 2) lets a position see the keys of its own
  segment, of the ``left_chunks`` segments before it (all of them when ``left_chunks < 0``) and of
  the prompt. No position sees a later segment. Convolutions are causal except the pre-lookahead
  layer, which reads the ``pre_lookahead`` tokens after each token (zeros after the last token).
* Hence the mel of a segment is final as soon as its tokens and the lookahead tokens after it are
  known: the runtime caches K/V (encoder and every estimator block at every Euler step and both
  guidance branches) and causal-conv context instead of recomputing the prefix; with a bounded
  ``left_chunks`` each chunk costs the same.
* HiFT runs exactly: the audio of mel frames [e0, e1) is computed over frames
  [e0 - left, e1 + right) (``hift.receptive_field``) with the harmonic phase and f0 of earlier frames
  carried over, so the streamed audio equals ``hift(mel)`` of the whole utterance. It holds back
  ``right`` frames of audio until the following mel (or the end) is known.

``token2wav_offline`` computes this in one pass (the chunked masks applied offline);
``token2wav_rerun`` is the public CosyVoice2 streaming for comparison (re-runs the flow over all
tokens so far at every chunk, cross-fades HiFT windows over 8 mel frames with a Hamming window).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from .flow import Flow
from .hift import HiFT, source_from_f0


def segment_ids(n_prompt: int, n_tokens: int, chunk_tokens: int) -> torch.Tensor:
    """Segment of every token of [prompt, generated]: the prompt is 0, generated chunk c is c (+1 with a prompt)."""
    first = 1 if n_prompt > 0 else 0
    gen = torch.arange(n_tokens) // chunk_tokens + first
    return torch.cat([torch.zeros(n_prompt, dtype=torch.long), gen])


def segment_mask(seg: torch.Tensor, left_chunks: int, has_prompt: bool) -> torch.Tensor:
    """Bool [n, n]: query i may attend key j (see the module docstring)."""
    qi, kj = seg[:, None], seg[None, :]
    allowed = kj <= qi
    if left_chunks >= 0:
        near = kj >= qi - left_chunks
        if has_prompt:
            near = near | (kj == 0)
        allowed = allowed & near
    return allowed


def stream_masks(n_prompt: int, n_tokens: int, chunk_tokens: Optional[int], left_chunks: int, ratio: int = 2):
    """(token mask, mel mask) of the streaming semantics; (None, None) for full attention."""
    if chunk_tokens is None:
        return None, None
    if chunk_tokens < 1:
        raise ValueError("chunk_tokens must be >= 1")
    seg = segment_ids(n_prompt, n_tokens, chunk_tokens)
    mel_seg = seg.repeat_interleave(ratio)
    return segment_mask(seg, left_chunks, n_prompt > 0), segment_mask(mel_seg, left_chunks, n_prompt > 0)


def _check_inputs(flow: Flow, tokens, spk, prompt_tokens, prompt_feat):
    tokens = torch.as_tensor(tokens, dtype=torch.long).reshape(-1)
    if tokens.numel() == 0:
        raise ValueError("no speech tokens to synthesise")
    spk = torch.as_tensor(spk, dtype=torch.float32)
    prompt_tokens = torch.zeros(0, dtype=torch.long) if prompt_tokens is None else torch.as_tensor(prompt_tokens, dtype=torch.long).reshape(-1)
    ratio = flow.cfg.token_mel_ratio
    if prompt_feat is None:
        prompt_feat = torch.zeros(0, flow.cfg.mel_dim)
    prompt_feat = torch.as_tensor(prompt_feat, dtype=torch.float32)
    if prompt_feat.numel() and (prompt_feat.ndim != 2 or prompt_feat.shape[1] != flow.cfg.mel_dim):
        raise ValueError(f"prompt mel must have shape [T, {flow.cfg.mel_dim}]")
    if prompt_feat.shape[0] and prompt_feat.shape[0] != ratio * prompt_tokens.numel():
        raise ValueError(f"prompt mel has {prompt_feat.shape[0]} frames; {ratio} per prompt token "
                         f"({ratio * prompt_tokens.numel()}) are required")
    return tokens, spk, prompt_tokens, prompt_feat


@torch.no_grad()
def flow_offline(flow: Flow, tokens, spk, prompt_tokens=None, prompt_feat=None, seed: int = 0,
                 chunk_tokens: Optional[int] = 15, left_chunks: int = -1) -> torch.Tensor:
    """Mel [2N, 80] of the N generated tokens under the streaming semantics (``chunk_tokens=None``:
    full attention, the public non-streaming mode)."""
    tokens, spk, prompt_tokens, prompt_feat = _check_inputs(flow, tokens, spk, prompt_tokens, prompt_feat)
    all_tokens = torch.cat([prompt_tokens, tokens])
    tmask, mmask = stream_masks(prompt_tokens.numel(), tokens.numel(), chunk_tokens, left_chunks, flow.cfg.token_mel_ratio)
    mel = flow(all_tokens, spk, prompt_feat, tmask, mmask, seed)
    return mel[prompt_tokens.numel() * flow.cfg.token_mel_ratio:]


@torch.no_grad()
def token2wav_offline(flow: Flow, hift: HiFT, tokens, spk, prompt_tokens=None, prompt_feat=None, seed: int = 0,
                      chunk_tokens: Optional[int] = 15, left_chunks: int = -1):
    """(mel [2N, 80], wav [2N * 480]) in one pass; equals the runtime's stream for the same settings."""
    mel = flow_offline(flow, tokens, spk, prompt_tokens, prompt_feat, seed, chunk_tokens, left_chunks)
    return mel, hift(mel, seed)


@torch.no_grad()
def token2wav_rerun(flow: Flow, hift: HiFT, tokens, spk, seed: int = 0, hop: int = 15, mel_cache: int = 8):
    """Public CosyVoice2 streaming (no prompt): at every ``hop`` new tokens (+ lookahead) re-run the flow
    over all tokens so far with chunk-causal masks of ``hop`` tokens, keep the new mel frames, vocode
    them with the last ``mel_cache`` frames of the previous window in front (its source reused) and
    cross-fade ``mel_cache`` frames of audio with a Hamming window. Returns (mel, wav, chunks)."""
    tokens, spk, _, _ = _check_inputs(flow, tokens, spk, None, None)
    n, la, ratio = tokens.numel(), flow.cfg.pre_lookahead, flow.cfg.token_mel_ratio
    spf = hift.cfg.samples_per_frame
    overlap = mel_cache * spf
    window = torch.from_numpy(np.hamming(2 * overlap).astype(np.float32))
    mels, chunks = [], []
    cache = None
    offset = 0
    while offset < n:
        final = offset + hop + la >= n
        upto = n if final else offset + hop
        context = None if final else tokens[upto:upto + la]
        tmask, mmask = stream_masks(0, upto, hop, -1, ratio)
        mel_all = flow(tokens[:upto], spk, None, tmask, mmask, seed, context=context)
        new_mel = mel_all[offset * ratio:]
        mels.append(new_mel)
        win_mel = new_mel if cache is None else torch.cat([cache["mel"], new_mel])
        source = source_from_f0(hift.f0(win_mel), hift.m_source.l_linear, hift.cfg, seed)
        if cache is not None:
            source[:cache["source"].numel()] = cache["source"]
        speech = hift.decode(win_mel, source)
        if cache is not None:
            speech[:overlap] = speech[:overlap] * window[:overlap] + cache["speech"] * window[overlap:]
        if not final:
            cache = {"mel": win_mel[-mel_cache:], "source": source[-overlap:], "speech": speech[-overlap:]}
            speech = speech[:-overlap]
        chunks.append(speech)
        offset = upto
    return torch.cat(mels), torch.cat(chunks), chunks
