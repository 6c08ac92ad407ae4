"""Per-chunk cost of the cached Token2Wav stream versus chunk index (it must stay flat).

    python -m minmo_rt.bench.token2wav_chunks [--chunks 50] [--chunk-tokens 15] [--left-chunks 4]
                                              [--sizes small|full] [--json OUT]

Random-weight flow + HiFT (``small``: reduced widths, same structure; ``full``: CosyVoice2 sizes),
one utterance pushed 15 tokens at a time; the stream times each segment's flow (encoder + 10-step
CFM with guidance) and HiFT push. Writes per-chunk times and their flatness (``bench.speech.flatness``:
mean and median of chunks 2-11 vs the last 10, least-squares slope in ms per chunk). A measurement,
not a test; on a shared machine read the medians.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile

import numpy as np
import torch

SIZES = {
    "small": dict(flow=dict(d_model=128, n_heads=4, ffn_dim=512, est_channels=64, est_heads=4, est_head_dim=16,
                            n_transformer=2, n_mid_blocks=4), hift=dict(base_channels=64, f0_channels=64)),
    "full": dict(flow={}, hift={}),
}


def build(sizes: str, directory: str):
    from safetensors.torch import save_file

    from ..export.reference import Flow, FlowConfig, HiFT, HiftConfig

    torch.manual_seed(0)
    flow, hift = Flow(FlowConfig(**SIZES[sizes]["flow"])), HiFT(HiftConfig(**SIZES[sizes]["hift"]))
    fw, hw = os.path.join(directory, "flow.safetensors"), os.path.join(directory, "hift.safetensors")
    save_file({k: v.contiguous() for k, v in flow.state_dict().items()}, fw)
    save_file({k: v.contiguous() for k, v in hift.plain_state_dict().items()}, hw)
    return fw, json.dumps(flow.cfg.to_dict()), hw, json.dumps(hift.cfg.to_dict()), flow.cfg


def measure(chunks: int, chunk_tokens: int, left_chunks: int, sizes: str) -> dict:
    from minmo_rt import _core

    from .speech import flatness

    with tempfile.TemporaryDirectory() as d:
        fw, fc, hw, hc, cfg = build(sizes, d)
        rng = np.random.default_rng(0)
        s = _core.testing_t2w.Token2WavStream(fw, fc, hw, hc, rng.standard_normal(192).astype(np.float32),
                                              chunk_tokens=chunk_tokens, left_chunks=left_chunks)
        tokens = rng.integers(0, cfg.vocab_size, chunks * chunk_tokens + cfg.pre_lookahead)
        s.push(tokens[:cfg.pre_lookahead])
        for c in range(chunks):
            s.push(tokens[cfg.pre_lookahead + c * chunk_tokens: cfg.pre_lookahead + (c + 1) * chunk_tokens])
        times = s.segment_times
    flow_ms = [t[0] for t in times]
    hift_ms = [t[1] for t in times]

    return {"sizes": sizes, "chunk_tokens": chunk_tokens, "left_chunks": left_chunks, "chunks": len(times),
            "flow_ms": flow_ms, "hift_ms": hift_ms, "flow": flatness(flow_ms), "hift": flatness(hift_ms)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=50)
    ap.add_argument("--chunk-tokens", type=int, default=15)
    ap.add_argument("--left-chunks", type=int, default=4)
    ap.add_argument("--sizes", choices=sorted(SIZES), default="small")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    res = measure(a.chunks, a.chunk_tokens, a.left_chunks, a.sizes)
    for k in ("flow", "hift"):
        f = res[k]
        print(f"{k}: " + (", ".join(f"{n} {v:.3f}" for n, v in f.items()) if f else "fewer than 21 chunks: no flatness fit"))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
