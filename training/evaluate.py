"""Accuracy metrics of minmo-tiny: word error rate and turn-taking F1, and the PyTorch reference
transcription used during training (the runtime and ONNX paths are in ``minmo_rt.bench.wer``)."""
from __future__ import annotations

import re
from typing import Iterable, Sequence

import numpy as np
import torch

from .data import turn_labels


def normalize(text: str) -> list[str]:
    """Lowercase words without punctuation (what WER compares)."""
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def word_errors(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance over words (substitutions + deletions + insertions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer(refs: Iterable[str], hyps: Iterable[str]) -> float:
    """Corpus WER: total word errors / total reference words."""
    errors = words = 0
    for r, h in zip(refs, hyps, strict=True):
        rw = normalize(r)
        errors += word_errors(rw, normalize(h))
        words += len(rw)
    return errors / max(1, words)


def turn_f1(probs: Iterable[Sequence[float]], labels: Iterable[Sequence[int]], threshold: float = 0.5) -> dict:
    """Per audio token, "respond now" (p_turn > threshold) against the label; precision, recall, F1
    pooled over all tokens of all utterances."""
    tp = fp = fn = 0
    for p, y in zip(probs, labels, strict=True):
        pred = np.asarray(p) > threshold
        y = np.asarray(y).astype(bool)
        tp += int((pred & y).sum())
        fp += int((pred & ~y).sum())
        fn += int((~pred & y).sum())
    precision = tp / max(1, tp + fp)
    recall = tp / max(1, tp + fn)
    f1 = 2 * precision * recall / max(1e-12, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1}


@torch.no_grad()
def greedy_wer(model, prompt, ds, chunked: bool, limit: int | None = None) -> dict:
    """Greedy-decode a cached set with the PyTorch model; WER and turn-taking F1."""
    model.set_chunked(chunked)
    refs, hyps, probs, labels = [], [], [], []
    n = len(ds) if limit is None else min(limit, len(ds))
    for i in range(n):
        item = ds.items[i]
        ids, p_turn = model.greedy(torch.from_numpy(ds.mels[i].astype(np.float32)), prompt)
        refs.append(item["text"])
        hyps.append(prompt.decode(ids))
        probs.append(p_turn.numpy())
        labels.append(turn_labels(len(p_turn), item["speech_end"]))
    return {"wer": wer(refs, hyps), "turn_f1": turn_f1(probs, labels)["f1"],
            "examples": [{"ref": r, "hyp": h} for r, h in list(zip(refs, hyps))[:5]]}
