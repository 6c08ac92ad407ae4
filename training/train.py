"""Train minmo-tiny from scratch: ``python -m minmo_rt.training.train --out DIR``.

Synthesizes (or loads from the cache) the training set, trains the reference modules with the
runtime's prompt layout, each batch in full-context or chunked encoder mode at random, and writes
DIR/checkpoint (MinMo layout), DIR/train_log.jsonl (one line per logged step), DIR/summary.json
(settings, timings, held-out WER) and DIR/loss.png when matplotlib is installed.

Losses: cross-entropy of the transcript and <|im_end|> after the ASR prompt; the duplex
predictor's turn-taking probability per audio token against "speech ended >= 200 ms ago"
(on detached LLM states, so it does not disturb the transcript); and, for training only, a CTC
loss on the encoder frames through a linear head that is not exported (it speeds up alignment).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import vmap

from . import data as D
from .evaluate import greedy_wer
from .model import SIZES, MinmoTiny, PromptIds, build_tokenizer, write_checkpoint

PAD_TAIL_FRAMES = 40  # mel padding repeats the last 0.4 s (trailing noise floor, never speech)


def pad_mel(mel: np.ndarray, frames: int) -> np.ndarray:
    """Extend ``mel`` to ``frames`` rows by tiling its trailing silence."""
    extra = frames - mel.shape[0]
    if extra <= 0:
        return mel
    tail = mel[-PAD_TAIL_FRAMES:]
    reps = np.tile(tail, (extra // len(tail) + 1, 1))[:extra]
    return np.concatenate([mel, reps])


def make_batches(frames: list[int], batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """Length-bucketed batches (similar lengths together, so padding stays small), shuffled."""
    order = np.argsort(np.asarray(frames) + rng.uniform(0, 30, len(frames)), kind="stable")
    batches = [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


class Trainer:
    def __init__(self, model: MinmoTiny, prompt: PromptIds, pad_id: int, ctc_weight: float, duplex_weight: float):
        self.model, self.prompt, self.pad_id = model, prompt, pad_id
        self.ctc_head = torch.nn.Linear(model.encoder.cfg.d_model, model.llm_cfg.vocab_size)
        self.ctc_weight, self.duplex_weight = ctc_weight, duplex_weight

    def parameters(self):
        return list(self.model.parameters()) + list(self.ctc_head.parameters())

    def batch_loss(self, items: list[dict], mels: list[np.ndarray]) -> dict:
        m, P = self.model, self.prompt
        n_frames = max(x.shape[0] for x in mels)
        mel = torch.from_numpy(np.stack([pad_mel(x, n_frames) for x in mels]).astype(np.float32))
        targets = [P.target(it["text"]) for it in items]
        n_tgt = max(len(t) for t in targets)
        tgt = torch.full((len(items), n_tgt), self.pad_id, dtype=torch.long)
        for i, t in enumerate(targets):
            tgt[i, :len(t)] = torch.tensor(t)
        valid = tgt != self.pad_id

        frames = vmap(m.encoder)(mel)                                 # [B, F, d_enc]
        audio = vmap(m.projector)(frames)                             # [B, A, H]
        n_audio = audio.shape[1]
        suffix = torch.tensor(P.suffix).expand(len(items), -1)
        text_in = torch.cat([suffix, tgt[:, :-1]], dim=1)
        x = torch.cat([audio, vmap(m.llm.embed)(text_in)], dim=1)
        cache = m.prefix_cache(P.prefix)
        logits, hidden = vmap(lambda e: m.llm(e, cache)[:2])(x)
        start = n_audio + len(P.suffix) - 1
        lg = logits[:, start:start + n_tgt]
        ce = F.cross_entropy(lg.reshape(-1, lg.shape[-1]), tgt.reshape(-1), reduction="none")
        ce = (ce * valid.reshape(-1)).sum() / valid.sum()
        acc = ((lg.argmax(-1) == tgt) & valid).sum() / valid.sum()

        p_turn = vmap(lambda h: m.duplex(h)[0])(hidden[:, :n_audio].detach())
        lab = torch.from_numpy(np.stack([D.turn_labels(n_audio, it["speech_end"]) for it in items])).float()
        p = p_turn.clamp(1e-6, 1 - 1e-6)
        dup = -(lab * p.log() + (1 - lab) * (1 - p).log()).mean()

        logp = F.log_softmax(self.ctc_head(frames), -1).transpose(0, 1)   # [F, B, V]
        ctc_tgt = [torch.tensor(t[:-1]) for t in targets]
        ctc = F.ctc_loss(logp, torch.cat(ctc_tgt), torch.full((len(items),), frames.shape[1], dtype=torch.long),
                         torch.tensor([len(t) for t in ctc_tgt]), blank=self.pad_id, zero_infinity=True)
        total = ce + self.duplex_weight * dup + self.ctc_weight * ctc
        return {"loss": total, "ce": ce, "acc": acc, "duplex": dup, "ctc": ctc}

    @torch.no_grad()
    def eval_loss(self, ds: D.SpeechSet, batch_size: int) -> dict:
        out = {}
        for chunked in (False, True):
            self.model.set_chunked(chunked)
            sums, n = {}, 0
            for b in range(0, len(ds), batch_size):
                idx = list(range(b, min(len(ds), b + batch_size)))
                r = self.batch_loss([ds.items[i] for i in idx], [ds.mels[i] for i in idx])
                for k, v in r.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * len(idx)
                n += len(idx)
            mode = "chunked" if chunked else "full"
            out.update({f"val_{mode}_{k}": v / n for k, v in sums.items() if k in ("ce", "acc", "duplex")})
        return out


def load_weights(model: MinmoTiny, checkpoint: str) -> None:
    """Weights of a MinMo-layout checkpoint written by :func:`write_checkpoint` (same sizes)."""
    from safetensors.torch import load_file

    for name in ("encoder", "projector", "llm", "duplex"):
        sd = load_file(os.path.join(checkpoint, f"{name}.safetensors"))
        getattr(model, name).load_state_dict({k: v.float() for k, v in sd.items()})


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def plot_log(rows: list[dict], path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    steps = [r["step"] for r in rows if "loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in ("loss", "ce", "ctc", "duplex"):
        ax.plot(steps, [r[key] for r in rows if "loss" in r], label=key)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m minmo_rt.training.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder (checkpoint/, train_log.jsonl, summary.json)")
    p.add_argument("--cache", default=None, help="feature cache folder (default: OUT/cache)")
    p.add_argument("--size", default="tiny", choices=sorted(SIZES))
    p.add_argument("--seed", type=int, default=0, help="model init and batch order")
    p.add_argument("--data-seed", type=int, default=1, help="seed of the training utterances")
    p.add_argument("--val-seed", type=int, default=2, help="seed of the validation utterances")
    p.add_argument("--train-size", type=int, default=20000, help="training utterances (fresh data beats epochs: 5000 overfit)")
    p.add_argument("--val-size", type=int, default=60)
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--ctc-weight", type=float, default=1.0)
    p.add_argument("--duplex-weight", type=float, default=0.5)
    p.add_argument("--chunked-fraction", type=float, default=0.5, help="share of batches in chunked encoder mode")
    p.add_argument("--init", default=None, metavar="CHECKPOINT",
                   help="start from this minmo-tiny checkpoint instead of random weights (continued training)")
    p.add_argument("--threads", type=int, default=2,
                   help="torch threads; use 1 when other work shares the CPU (spinning threads stall, see README)")
    p.add_argument("--workers", type=int, default=2, help="synthesis processes")
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--eval-every", type=int, default=1000)
    args = p.parse_args(argv)

    if not D.espeak_available():
        print("error: espeak-ng is not installed (apt-get install espeak-ng)", file=sys.stderr)
        return 2
    t_start = time.time()
    os.makedirs(args.out, exist_ok=True)
    cache = args.cache or os.path.join(args.out, "cache")
    torch.set_num_threads(args.threads)
    train = D.build_set(args.data_seed, args.train_size, cache, workers=args.workers)
    val = D.build_set(args.val_seed, args.val_size, cache, workers=args.workers, progress=False)
    t_data = time.time() - t_start
    print(f"data: {len(train)} train / {len(val)} val utterances in {t_data:.0f} s", flush=True)

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    if args.init:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(os.path.join(args.init, "tokenizer.json"))
    else:
        tok = build_tokenizer()
    prompt = PromptIds(tok)
    model = MinmoTiny(SIZES[args.size], tok.get_vocab_size())
    if args.init:
        load_weights(model, args.init)
    trainer = Trainer(model, prompt, tok.token_to_id("<|endoftext|>"), args.ctc_weight, args.duplex_weight)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f} M parameters (exported), vocab {tok.get_vocab_size()}", flush=True)
    opt = torch.optim.AdamW(trainer.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)

    log_path = os.path.join(args.out, "train_log.jsonl")
    rows = []
    batches: list = []
    frames = [it["frames"] for it in train.items]
    t_train = time.time()
    model.train()
    with open(log_path, "w") as log:
        for step in range(args.steps):
            if not batches:
                batches = make_batches(frames, args.batch_size, rng)
            idx = batches.pop()
            chunked = bool(rng.random() < args.chunked_fraction)
            model.set_chunked(chunked)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
            r = trainer.batch_loss([train.items[i] for i in idx], [train.mels[i] for i in idx])
            opt.zero_grad(set_to_none=True)
            r["loss"].backward()
            gnorm = torch.nn.utils.clip_grad_norm_(trainer.parameters(), 1.0)
            opt.step()
            if step % args.log_every == 0 or step == args.steps - 1:
                row = {"step": step, **{k: round(float(v.detach()), 5) for k, v in r.items()}, "grad_norm": round(float(gnorm), 4),
                       "lr": g["lr"], "mode": "chunked" if chunked else "full", "elapsed_s": round(time.time() - t_start, 1)}
                if (step % args.eval_every == 0 and step) or step == args.steps - 1:
                    model.eval()
                    row.update({k: round(v, 5) for k, v in trainer.eval_loss(val, 32).items()})
                    model.train()
                rows.append(row)
                log.write(json.dumps(row) + "\n")
                log.flush()
                print(json.dumps(row), flush=True)
    t_train = time.time() - t_train
    model.eval()
    ckpt = os.path.join(args.out, "checkpoint")
    write_checkpoint(model, tok, ckpt)
    t_eval = time.time()
    wer = {mode: greedy_wer(model, prompt, val, chunked=(mode == "chunked")) for mode in ("full", "chunked")}
    t_eval = time.time() - t_eval
    summary = {"args": vars(args), "parameters": n_params, "data_s": round(t_data, 1), "train_s": round(t_train, 1),
               "eval_s": round(t_eval, 1), "total_s": round(time.time() - t_start, 1),
               "val_wer_pytorch": {k: v["wer"] for k, v in wer.items()},
               "val_turn_f1_pytorch": {k: v["turn_f1"] for k, v in wer.items()},
               "torch": torch.__version__, "threads": args.threads}
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    plot_log(rows, os.path.join(args.out, "loss.png"))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
