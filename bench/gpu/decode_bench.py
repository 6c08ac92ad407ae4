"""GPU decode benchmark: the LLM decode step built from minmo kernels vs PyTorch eager,
torch.compile and Hugging Face transformers, on random bf16 weights at Qwen2.5-7B sizes (the MinMo
LLM) and at the 0.5B voice-LM sizes.

Needs only torch (transformers optional) and libminmo_kernels.so built with CUDA (kernels/,
standalone CMake). Usage (see kernels/tests/gpu_check.sh):
    python bench/gpu/decode_bench.py --lib build/kernels/libminmo_kernels.so --out result.json

Measured, in one process on one device:
  copy_rate          device-to-device copy, (bytes read + written) / time
  gemv               one large weight-only product per format: bytes read / time
  llm_7b.minmo.*     one decode step (28 layers + final norm + lm_head) from our kernels, captured
                     in a CUDA graph, per weight format (bf16, int8, int4 g128, fp8 on sm_89+) and
                     context length: p50/p99 step time, bytes read (weights + KV) / p50 time and
                     that bandwidth as a fraction of the copy rate; logits checked against the
                     eager reference step on the same weights and cache (rel. error) and, for
                     bf16, against an fp32 reference; device time of each launch of one layer
  llm_7b.minmo_fused.*   the same step from the fused kernels (FusedStep: 5 launches per layer
                     instead of 8), same checks and breakdown; run after every other section
  llm_7b.torch_eager / torch_compile / hf_transformers   the same step
  voice_lm_0p5b      15 decode steps (one CUDA graph for all 15), unfused and fused, and the eager /
                     HF equivalents
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "kernels" / "python"))
import minmo_kernels_ctypes as mk  # noqa: E402

DEV = torch.device("cuda")
BF16 = torch.bfloat16


@dataclass(frozen=True)
class Cfg:
    name: str
    hidden: int
    layers: int
    heads_q: int
    heads_kv: int
    head_dim: int
    ffn: int
    vocab: int
    theta: float = 1e6
    eps: float = 1e-6


QWEN_7B = Cfg("qwen2.5-7b", 3584, 28, 28, 4, 128, 18944, 152064)
# CosyVoice2 voice LM: Qwen2.5-0.5B body; its output head predicts 6561 speech tokens + 3 specials.
VOICE_05B = Cfg("voice-lm-0.5b", 896, 24, 14, 2, 64, 4864, 6564)


# ---- timing ----------------------------------------------------------------------------------
def time_cuda(fn, iters: int, warmup: int = 3) -> list[float]:
    """Per-call device times in ms (CUDA events around each call)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    evs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    for a, b in evs:
        a.record()
        fn()
        b.record()
    torch.cuda.synchronize()
    return [a.elapsed_time(b) for a, b in evs]


def time_wall(fn, iters: int, warmup: int = 2) -> list[float]:
    """Per-call wall times in ms, synchronising after each call (includes host overhead)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def stats(ms: list[float]) -> dict:
    s = sorted(ms)
    pick = lambda q: s[min(len(s) - 1, int(round(q * (len(s) - 1))))]  # noqa: E731
    return {"p50_ms": statistics.median(s), "p99_ms": pick(0.99), "min_ms": s[0], "n": len(s)}


def copy_rate_gbs() -> dict:
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device=DEV)
    b = torch.empty_like(a)
    a.fill_(1)
    ms = time_cuda(lambda: b.copy_(a), iters=20)
    st = stats(ms)
    del a, b
    return {"bytes_per_copy": 2 * n, "p50_ms": st["p50_ms"], "gbs_p50": 2 * n / st["p50_ms"] / 1e6,
            "gbs_best": 2 * n / st["min_ms"] / 1e6}


# ---- weights ---------------------------------------------------------------------------------
def rand_w(*shape, std=0.02, device=DEV):
    return torch.randn(*shape, dtype=BF16, device=device) * std


class CpuOps:
    """The CPU twins behind the CUDA call signature (the trailing stream argument is dropped), so
    the decode step below also runs on host tensors (tests/test_kernels.py checks it that way)."""

    def __init__(self, k: mk.Kernels):
        self._k = k

    def __getattr__(self, name):
        fn = getattr(self._k.cpu, name)
        return lambda *args: fn(*args[:-1])


class Linear:
    """One weight in one format, with the launch of its product (y[B, N] = x[B, K] W^T)."""

    def __init__(self, w: torch.Tensor, fmt: str, group: int = 128):
        self.fmt, self.n, self.k, self.group = fmt, w.shape[0], w.shape[1], group
        if fmt == "bf16":
            self.t = [w.contiguous()]
            return
        wf = w.float()
        if fmt == "int8":
            scale = (wf.abs().amax(1) / 127).clamp(min=1e-12)
            q = torch.round(wf / scale[:, None]).clamp(-127, 127).to(torch.int8)
            self.t = [q.contiguous(), scale.contiguous()]
        elif fmt == "fp8":
            scale = (wf.abs().amax(1) / 448).clamp(min=1e-12)
            q = (wf / scale[:, None]).to(torch.float8_e4m3fn).view(torch.uint8)
            self.t = [q.contiguous(), scale.contiguous()]
        elif fmt == "int4":
            g = wf.view(self.n, self.k // group, group)
            lo, hi = g.amin(-1), g.amax(-1)
            scale = ((hi - lo) / 15).clamp(min=1e-8).to(BF16)
            sf = scale.float()
            zero = torch.round(-lo / sf).clamp(0, 15)
            q = torch.round(g / sf[..., None] + zero[..., None]).clamp(0, 15).to(torch.uint8).view(self.n, self.k)
            packed = (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous()
            self.t = [packed, scale.contiguous(), zero.to(torch.uint8).contiguous()]
        else:
            raise ValueError(fmt)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.t)

    def dequant(self) -> torch.Tensor:
        """bf16 weight the format represents (for the reference step's accuracy check)."""
        if self.fmt == "bf16":
            return self.t[0]
        if self.fmt == "int8":
            return (self.t[0].float() * self.t[1][:, None]).to(BF16)
        if self.fmt == "fp8":
            return (self.t[0].view(torch.float8_e4m3fn).float() * self.t[1][:, None]).to(BF16)
        packed, scale, zero = self.t
        q = torch.stack([packed & 15, packed >> 4], -1).view(self.n, self.k // self.group, self.group).float()
        return ((q - zero.float()[..., None]) * scale.float()[..., None]).view(self.n, self.k).to(BF16)

    def __call__(self, ops, x: torch.Tensor, y: torch.Tensor, batch: int, stream: int, gated: bool = False):
        """Enqueues y = x W^T through `ops` (Kernels.cuda, or CpuOps); gated: y = silu(x Wg^T) * (x Wu^T)
        with W = [Wg; Wu] (the fused gate|up weight), y: [batch, N / 2]."""
        fn = getattr(ops, ("gemv_silu_" if gated else "gemv_") + self.fmt)
        n = self.n // 2 if gated else self.n
        fn(x.data_ptr(), *self._w(), y.data_ptr(), batch, n, self.k, *self._group(), stream)

    def norm(self, ops, x: torch.Tensor, resid: torch.Tensor, gamma: torch.Tensor, out: torch.Tensor,
             counter: torch.Tensor, eps: float, stream: int):
        """Enqueues resid += x W^T; out = RMSNorm(resid) * gamma (minmo_gemv_norm_*, batch 1)."""
        getattr(ops, "gemv_norm_" + self.fmt)(x.data_ptr(), *self._w(), resid.data_ptr(), gamma.data_ptr(), out.data_ptr(),
                                              counter.data_ptr(), self.n, self.k, *self._group(), eps, stream)

    def qkv_rope(self, ops, x: torch.Tensor, bias: torch.Tensor, pos: torch.Tensor, q: torch.Tensor, kc: torch.Tensor,
                 vc: torch.Tensor, c: "Cfg", max_seq: int, stream: int):
        """Enqueues the q|k|v product + bias + RoPE + KV-cache append at *pos (minmo_gemv_qkv_rope_*)."""
        getattr(ops, "gemv_qkv_rope_" + self.fmt)(x.data_ptr(), *self._w(), bias.data_ptr(), pos.data_ptr(), q.data_ptr(),
                                                  kc.data_ptr(), vc.data_ptr(), c.heads_q, c.heads_kv, c.head_dim, max_seq,
                                                  self.k, *self._group(), c.theta, stream)

    def _w(self) -> list[int]:
        """Pointers of the format's weight arguments: W [, scale [, zero]]."""
        return [t.data_ptr() for t in self.t]

    def _group(self) -> list[int]:
        return [self.group] if self.fmt == "int4" else []


class Model:
    """Random bf16 weights of a Qwen2 decoder (q|k|v and gate|up fused), a KV cache of max_seq
    positions filled with random values (a stand-in for an earlier prompt) and the embedding."""

    def __init__(self, cfg: Cfg, max_seq: int, device=DEV):
        self.cfg, self.max_seq = cfg, max_seq
        c, dev = cfg, device
        rand_w = lambda *s, std=0.02: globals()["rand_w"](*s, std=std, device=dev)  # noqa: E731
        qkv_n = (c.heads_q + 2 * c.heads_kv) * c.head_dim
        self.layers = []
        for _ in range(c.layers):
            self.layers.append({
                "in_norm": (1 + 0.1 * torch.randn(c.hidden, device=dev)).to(BF16),
                "w_qkv": rand_w(qkv_n, c.hidden), "b_qkv": rand_w(qkv_n, std=0.1),
                "w_o": rand_w(c.hidden, c.heads_q * c.head_dim),
                "post_norm": (1 + 0.1 * torch.randn(c.hidden, device=dev)).to(BF16),
                "w_gu": rand_w(2 * c.ffn, c.hidden), "w_down": rand_w(c.hidden, c.ffn),
            })
        self.final_norm = (1 + 0.1 * torch.randn(c.hidden, device=dev)).to(BF16)
        self.lm_head = rand_w(c.vocab, c.hidden)
        self.embed = rand_w(16, c.hidden, std=1.0)  # embeddings of tokens 0..15 (lookup is not timed)
        self.k_cache = [torch.randn(c.heads_kv, max_seq, c.head_dim, device=dev, dtype=BF16) for _ in range(c.layers)]
        self.v_cache = [torch.randn(c.heads_kv, max_seq, c.head_dim, device=dev, dtype=BF16) for _ in range(c.layers)]
        inv = 1.0 / (c.theta ** (torch.arange(0, c.head_dim, 2, dtype=torch.float64, device=dev) / c.head_dim))
        ang = torch.arange(max_seq, dtype=torch.float64, device=dev)[:, None] * inv[None]
        self.cos, self.sin = torch.cat([ang, ang], -1).cos().float(), torch.cat([ang, ang], -1).sin().float()

    def weight_bytes(self, step: "MinmoStep | None" = None) -> int:
        """Bytes one decode step reads from weights (matrices in their format, norms, biases)."""
        c = self.cfg
        if step is not None:
            mats = sum(lin.nbytes for layer in step.lin for lin in layer.values()) + step.lm_head.nbytes
        else:
            mats = sum(self.layers[0][n].numel() * 2 for n in ("w_qkv", "w_o", "w_gu", "w_down")) * c.layers
            mats += self.lm_head.numel() * 2
        small = c.layers * (2 * c.hidden + (c.heads_q + 2 * c.heads_kv) * c.head_dim) * 2 + c.hidden * 2
        return mats + small

    def kv_bytes(self, ctx: int) -> int:
        c = self.cfg
        return c.layers * 2 * c.heads_kv * (ctx + 1) * c.head_dim * 2


# ---- our decode step --------------------------------------------------------------------------
class MinmoStep:
    """Batch-1 decode step from minmo kernels on torch buffers; position read from a device int32."""

    def __init__(self, k: mk.Kernels, m: Model, fmt: str, split: int = 32, ops=None, share: "MinmoStep | None" = None):
        """share: a step of the same model and format whose (quantized) weights this one reuses."""
        self.k, self.m, self.fmt, self.split = k, m, fmt, split
        self.ops = ops if ops is not None else k.cuda
        c, dev = m.cfg, m.k_cache[0].device
        if share is not None:
            assert share.m is m and share.fmt == fmt
            self.lin, self.lm_head = share.lin, share.lm_head
        else:
            self.lin = [{n: Linear(layer[n], fmt) for n in ("w_qkv", "w_o", "w_gu", "w_down")} for layer in m.layers]
            self.lm_head = Linear(m.lm_head, fmt)
        z = lambda *s, dt=BF16: torch.zeros(*s, dtype=dt, device=dev)  # noqa: E731
        self.pos = z(1, dt=torch.int32)
        self.x_in = z(1, c.hidden, dt=torch.float32)  # input hidden state (embedding), fp32
        self.resid = z(1, c.hidden, dt=torch.float32)
        self.hn, self.attn_out, self.o_out, self.down = z(1, c.hidden), z(1, c.heads_q * c.head_dim), z(1, c.hidden), z(1, c.hidden)
        self.qkv, self.q = z(1, (c.heads_q + 2 * c.heads_kv) * c.head_dim), z(1, c.heads_q * c.head_dim)
        self.act = z(1, c.ffn)
        self.logits = z(1, c.vocab)
        self.ws = torch.zeros(k.decode_workspace_floats(c.heads_q, c.head_dim, m.max_seq, split), dtype=torch.float32, device=dev)
        self.graph = None

    def layer_calls(self, i: int):
        """The launches of decoder layer i, in order, as (name, fn(stream))."""
        k, m, c, lin, layer = self.ops, self.m, self.m.cfg, self.lin[i], self.m.layers[i]
        p = lambda t: t.data_ptr()  # noqa: E731
        scale = 1.0 / math.sqrt(c.head_dim)
        return [
            ("rmsnorm_in", lambda s: k.rmsnorm_residual_bf16(p(self.down) if i else None, p(self.resid), p(layer["in_norm"]),
                                                             p(self.hn), 1, c.hidden, c.eps, s)),
            ("gemv_qkv", lambda s: lin["w_qkv"](k, self.hn, self.qkv, 1, s)),
            ("qkv_rope_append", lambda s: k.qkv_rope_append_bf16(p(self.qkv), p(layer["b_qkv"]), p(self.pos), p(self.q),
                                                                 p(m.k_cache[i]), p(m.v_cache[i]), 1, c.heads_q, c.heads_kv,
                                                                 c.head_dim, m.max_seq, c.theta, s)),
            ("decode_attention", lambda s: k.decode_attention_bf16(p(self.q), p(m.k_cache[i]), p(m.v_cache[i]), p(self.pos),
                                                                   p(self.attn_out), p(self.ws), c.heads_q, c.heads_kv,
                                                                   c.head_dim, m.max_seq, self.split, scale, s)),
            ("gemv_o", lambda s: lin["w_o"](k, self.attn_out, self.o_out, 1, s)),
            ("rmsnorm_post", lambda s: k.rmsnorm_residual_bf16(p(self.o_out), p(self.resid), p(layer["post_norm"]), p(self.hn),
                                                               1, c.hidden, c.eps, s)),
            ("gemv_gate_up_silu", lambda s: lin["w_gu"](k, self.hn, self.act, 1, s, gated=True)),
            ("gemv_down", lambda s: lin["w_down"](k, self.act, self.down, 1, s)),
        ]

    def enqueue(self, stream: int):
        m, c = self.m, self.m.cfg
        self.resid.copy_(self.x_in)
        for i in range(len(m.layers)):
            for _, fn in self.layer_calls(i):
                fn(stream)
        self.ops.rmsnorm_residual_bf16(self.down.data_ptr(), self.resid.data_ptr(), m.final_norm.data_ptr(),
                                       self.hn.data_ptr(), 1, c.hidden, c.eps, stream)
        self.lm_head(self.ops, self.hn, self.logits, 1, stream)

    def layer_breakdown(self, reps: int = 20, iters: int = 10) -> dict:
        """Device time of each launch of layer 0 (a CUDA graph of `reps` back-to-back copies of it)."""
        out = {}
        for name, fn in self.layer_calls(0):
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, capture_error_mode="thread_local"):
                for _ in range(reps):
                    fn(torch.cuda.current_stream().cuda_stream)
            out[name] = {"us": statistics.median(time_cuda(g.replay, iters=iters)) * 1e3 / reps}
        out["sum_us"] = sum(v["us"] for v in out.values())
        return out

    def capture(self, steps: int = 1):
        """CUDA graph of `steps` consecutive decode steps (the position advances inside the graph)."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # eager warm-up: loads every kernel before capture
            self.enqueue(torch.cuda.current_stream().cuda_stream)
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, capture_error_mode="thread_local"):
            s = torch.cuda.current_stream().cuda_stream
            for j in range(steps):
                self.enqueue(s)
                if steps > 1:
                    self.pos.add_(1)
        self.graph = g
        return g

    def free(self):
        self.lin = self.lm_head = self.graph = None


class FusedStep(MinmoStep):
    """The decode step from the fused kernels: per layer q|k|v product + bias + RoPE + KV append,
    one-launch decode attention, o-proj + residual + post-attention RMSNorm, gate|up + SiLU,
    down-proj + residual + the next layer's input RMSNorm (the final norm after the last layer):
    5 launches per layer instead of 8, plus one norm before layer 0 and the lm_head product."""

    def __init__(self, k: mk.Kernels, m: Model, fmt: str, ops=None, share: MinmoStep | None = None,
                 max_splits: int | None = None):
        super().__init__(k, m, fmt, ops=ops, share=share)
        c, dev = m.cfg, m.k_cache[0].device
        if max_splits is None:  # about two blocks per SM at long contexts
            sms = torch.cuda.get_device_properties(dev).multi_processor_count if dev.type == "cuda" else 8
            max_splits = max(1, 2 * sms // c.heads_kv)
        self.max_splits = max_splits
        self.ws = torch.zeros(k.decode_fused_workspace_floats(c.heads_q, c.head_dim, max_splits), dtype=torch.float32,
                              device=dev)
        # Self-resetting counters of the last-block epilogues (zero between launches).
        self.norm_counter = torch.zeros(1, dtype=torch.int32, device=dev)
        self.attn_counters = torch.zeros(c.heads_kv, dtype=torch.int32, device=dev)

    def layer_calls(self, i: int):
        k, m, c, lin, layer = self.ops, self.m, self.m.cfg, self.lin[i], self.m.layers[i]
        p = lambda t: t.data_ptr()  # noqa: E731
        scale = 1.0 / math.sqrt(c.head_dim)
        gamma_next = m.layers[i + 1]["in_norm"] if i + 1 < len(m.layers) else m.final_norm
        return [
            ("gemv_qkv_rope", lambda s: lin["w_qkv"].qkv_rope(k, self.hn, layer["b_qkv"], self.pos, self.q, m.k_cache[i],
                                                              m.v_cache[i], c, m.max_seq, s)),
            ("decode_attention_fused", lambda s: k.decode_attention_fused_bf16(
                p(self.q), p(m.k_cache[i]), p(m.v_cache[i]), p(self.pos), p(self.attn_out), p(self.ws), p(self.attn_counters),
                c.heads_q, c.heads_kv, c.head_dim, m.max_seq, self.max_splits, scale, s)),
            ("gemv_o_norm", lambda s: lin["w_o"].norm(k, self.attn_out, self.resid, layer["post_norm"], self.hn,
                                                      self.norm_counter, c.eps, s)),
            ("gemv_gate_up_silu", lambda s: lin["w_gu"](k, self.hn, self.act, 1, s, gated=True)),
            ("gemv_down_norm", lambda s: lin["w_down"].norm(k, self.act, self.resid, gamma_next, self.hn,
                                                            self.norm_counter, c.eps, s)),
        ]

    def enqueue(self, stream: int):
        m, c = self.m, self.m.cfg
        self.resid.copy_(self.x_in)
        self.ops.rmsnorm_residual_bf16(None, self.resid.data_ptr(), m.layers[0]["in_norm"].data_ptr(), self.hn.data_ptr(),
                                       1, c.hidden, c.eps, stream)
        for i in range(len(m.layers)):
            for _, fn in self.layer_calls(i):
                fn(stream)
        self.lm_head(self.ops, self.hn, self.logits, 1, stream)


# ---- reference step (PyTorch) -----------------------------------------------------------------
def rmsnorm(x, w, eps):
    """Hugging Face Qwen2RMSNorm order: normalise in fp32, cast back to x's dtype, scale."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w.to(x.dtype)


def rope(x, cos, sin):
    half = x.shape[-1] // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], -1)
    return (x.float() * cos + rot.float() * sin).to(x.dtype)


def ref_layer(x, in_norm, w_qkv, b_qkv, w_o, post_norm, w_gu, w_down, kc, vc, pos: int, cos, sin,
              hq: int, hkv: int, d: int, eps: float):
    """One Qwen2 decoder layer for one token (x: [1, H] bf16); writes K/V at pos."""
    h = rmsnorm(x, in_norm, eps)
    qkv = F.linear(h, w_qkv, b_qkv)
    q, k, v = qkv.split([hq * d, hkv * d, hkv * d], -1)
    q, k, v = q.view(hq, 1, d), k.view(hkv, 1, d), v.view(hkv, 1, d)
    q, k = rope(q, cos, sin), rope(k, cos, sin)
    kc[:, pos:pos + 1] = k
    vc[:, pos:pos + 1] = v
    keys, vals = kc[:, :pos + 1].to(q.dtype), vc[:, :pos + 1].to(q.dtype)
    if hq != hkv:
        keys, vals = keys.repeat_interleave(hq // hkv, 0), vals.repeat_interleave(hq // hkv, 0)
    a = F.scaled_dot_product_attention(q[None], keys[None], vals[None])[0]
    x = x + F.linear(a.reshape(1, hq * d), w_o)
    g, u = F.linear(rmsnorm(x, post_norm, eps), w_gu).chunk(2, -1)
    return x + F.linear(F.silu(g) * u, w_down)


def ref_layer_fp32(x, in_norm, w_qkv, b_qkv, w_o, post_norm, w_gu, w_down, *rest):
    """ref_layer with every activation and weight in fp32 (weights converted per call; the KV
    cache stays bf16): the accuracy yardstick for both bf16 pipelines."""
    f = lambda t: t.float()  # noqa: E731
    return ref_layer(x.float(), f(in_norm), f(w_qkv), f(b_qkv), f(w_o), f(post_norm), f(w_gu), f(w_down), *rest)


class RefStep:
    """The decode step in PyTorch, layer by layer (bf16 like transformers, or fp32 with
    layer_fn=ref_layer_fp32)."""

    def __init__(self, m: Model, layer_fn=ref_layer, weights=None):
        self.m, self.layer_fn = m, layer_fn
        self.weights = weights or [{n: layer[n] for n in ("w_qkv", "w_o", "w_gu", "w_down")} for layer in m.layers]
        self.lm_head = m.lm_head

    def __call__(self, x: torch.Tensor, pos: int) -> torch.Tensor:
        m, c = self.m, self.m.cfg
        cos, sin = m.cos[pos:pos + 1], m.sin[pos:pos + 1]
        for i, layer in enumerate(m.layers):
            w = self.weights[i]
            x = self.layer_fn(x, layer["in_norm"], w["w_qkv"], layer["b_qkv"], w["w_o"], layer["post_norm"], w["w_gu"],
                              w["w_down"], m.k_cache[i], m.v_cache[i], pos, cos, sin, c.heads_q, c.heads_kv, c.head_dim, c.eps)
        return F.linear(rmsnorm(x, m.final_norm, c.eps), self.lm_head.to(x.dtype))


def rel_err(a, b) -> float:
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm())


# ---- Hugging Face -------------------------------------------------------------------------------
def hf_model(m: Model):
    """transformers Qwen2ForCausalLM with the same weights (bf16, sdpa attention)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    c, dev = m.cfg, m.final_norm.device
    conf = Qwen2Config(vocab_size=c.vocab, hidden_size=c.hidden, intermediate_size=c.ffn, num_hidden_layers=c.layers,
                       num_attention_heads=c.heads_q, num_key_value_heads=c.heads_kv, rope_theta=c.theta,
                       rms_norm_eps=c.eps, max_position_embeddings=32768, tie_word_embeddings=False,
                       attn_implementation="sdpa")
    old = torch.get_default_dtype()
    torch.set_default_dtype(BF16)
    try:
        with torch.device(dev):
            model = Qwen2ForCausalLM(conf)
    finally:
        torch.set_default_dtype(old)
    model.eval()
    q_n, kv_n = c.heads_q * c.head_dim, c.heads_kv * c.head_dim
    with torch.no_grad():
        for layer, w in zip(model.model.layers, m.layers):
            at, mlp = layer.self_attn, layer.mlp
            at.q_proj.weight.copy_(w["w_qkv"][:q_n]); at.q_proj.bias.copy_(w["b_qkv"][:q_n])
            at.k_proj.weight.copy_(w["w_qkv"][q_n:q_n + kv_n]); at.k_proj.bias.copy_(w["b_qkv"][q_n:q_n + kv_n])
            at.v_proj.weight.copy_(w["w_qkv"][q_n + kv_n:]); at.v_proj.bias.copy_(w["b_qkv"][q_n + kv_n:])
            at.o_proj.weight.copy_(w["w_o"])
            mlp.gate_proj.weight.copy_(w["w_gu"][:c.ffn]); mlp.up_proj.weight.copy_(w["w_gu"][c.ffn:])
            mlp.down_proj.weight.copy_(w["w_down"])
            layer.input_layernorm.weight.copy_(w["in_norm"]); layer.post_attention_layernorm.weight.copy_(w["post_norm"])
        model.model.norm.weight.copy_(m.final_norm)
        model.lm_head.weight.copy_(m.lm_head)
        model.model.embed_tokens.weight[:m.embed.shape[0]].copy_(m.embed)
    return model


def hf_decode_ms(model, ctx: int, steps: int) -> list[float]:
    """Wall time of each forward() decode step after a ctx-token prompt (dynamic cache)."""
    ids = torch.randint(0, 1000, (1, ctx), device=model.lm_head.weight.device)
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True)
        pkv, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        times = []
        for _ in range(steps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = model(input_ids=tok, past_key_values=pkv, use_cache=True)
            pkv, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
            torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


# ---- sections -----------------------------------------------------------------------------------
class Bench:
    def __init__(self, args):
        self.args, self.t0 = args, time.time()
        self.k = mk.Kernels(args.lib)
        if not self.k.has_cuda:
            raise SystemExit(f"{args.lib} was built without CUDA")
        p = torch.cuda.get_device_properties(0)
        self.res = {
            "device": torch.cuda.get_device_name(0), "sm": f"{p.major}.{p.minor}", "sms": p.multi_processor_count,
            "memory_gib": round(p.total_memory / 2**30, 1), "torch": torch.__version__, "cuda_torch": torch.version.cuda,
            "driver": _driver(), "python": platform.python_version(), "lib": str(args.lib),
            "fp8_supported": self.k.fp8_supported(), "errors": {},
        }
        self.voice_model = None  # the voice-LM weights, shared by voice() and voice_fused()
        try:
            import transformers
            self.res["transformers"] = transformers.__version__
        except Exception as e:  # noqa: BLE001
            self.res["transformers"] = f"unavailable: {e}"

    def elapsed(self) -> float:
        return time.time() - self.t0

    def section(self, name, fn, *a, optional=False):
        if optional and self.elapsed() > self.args.budget_s:
            self.res["errors"][name] = f"skipped: time budget ({self.args.budget_s} s) spent"
            print(f"[{self.elapsed():6.1f}s] {name}: skipped (budget)", flush=True)
            return None
        print(f"[{self.elapsed():6.1f}s] {name} ...", flush=True)
        try:
            return fn(*a)
        except Exception as e:  # noqa: BLE001 - one failing section must not lose the others
            self.res["errors"][name] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
            return None
        finally:
            torch.cuda.synchronize()
            self.save()

    def save(self):
        self.res["bench_wall_s"] = round(self.elapsed(), 1)
        Path(self.args.out).write_text(json.dumps(self.res, indent=2))

    # -- device copy rate and single products
    def copy(self):
        self.res["copy_rate"] = copy_rate_gbs()
        print(f"    copy rate {self.res['copy_rate']['gbs_p50']:.0f} GB/s")

    def gemv(self):
        out = {}
        n, kk = 2 * QWEN_7B.ffn, QWEN_7B.hidden  # gate|up of one 7B layer
        w = rand_w(n, kk)
        stream = torch.cuda.current_stream().cuda_stream
        for fmt in self.formats():
            lin = Linear(w, fmt)
            for batch in (1, 4, 8):
                x, y = rand_w(batch, kk, std=1.0), torch.empty(batch, n, dtype=BF16, device=DEV)
                g = torch.cuda.CUDAGraph()
                lin(self.k.cuda, x, y, batch, stream)
                torch.cuda.synchronize()
                with torch.cuda.graph(g, capture_error_mode="thread_local"):
                    for _ in range(10):
                        lin(self.k.cuda, x, y, batch, torch.cuda.current_stream().cuda_stream)
                st = stats([t / 10 for t in time_cuda(g.replay, iters=10)])
                ref = (x.float() @ lin.dequant().float().T)
                out[f"{fmt}_b{batch}"] = {"N": n, "K": kk, "bytes": lin.nbytes, **st,
                                          "gbs": lin.nbytes / st["p50_ms"] / 1e6,
                                          "frac_of_copy": lin.nbytes / st["p50_ms"] / 1e6 / self.res["copy_rate"]["gbs_p50"],
                                          "rel_err_vs_torch": rel_err(y, ref)}
                print(f"    gemv {fmt} B={batch}: {st['p50_ms']*1e3:.1f} us, {out[f'{fmt}_b{batch}']['gbs']:.0f} GB/s, "
                      f"err {out[f'{fmt}_b{batch}']['rel_err_vs_torch']:.1e}")
            del lin
        self.res["gemv_gate_up_7b"] = out

    def formats(self):
        return ["bf16", "int8", "int4"] + (["fp8"] if self.k.fp8_supported() else [])

    # -- Qwen2.5-7B step
    def llm_minmo(self, m: Model, ctxs):
        """The unfused step (MinmoStep) per format and context."""
        out = self.res.setdefault("llm_7b", {}).setdefault("minmo", {})
        ref = RefStep(m)
        for fmt in self.formats():
            step = MinmoStep(self.k, m, fmt)
            ref_q = self._ref_for(m, ref, step)
            for ctx in ctxs:
                self._measure_step(step, m, ref, ref_q, ctx, out, "minmo")
            step.free()
            del step, ref_q
            torch.cuda.empty_cache()

    def llm_minmo_fused(self, m: Model, ctxs):
        """The fused step (FusedStep) per format and context; a failure is recorded per format and
        context and the others still run."""
        out = self.res.setdefault("llm_7b", {}).setdefault("minmo_fused", {})
        ref = RefStep(m)
        for fmt in self.formats():
            try:
                step = FusedStep(self.k, m, fmt)
                ref_q = self._ref_for(m, ref, step)
            except Exception as e:  # noqa: BLE001
                self.res["errors"][f"llm_7b_minmo_fused_{fmt}"] = f"{type(e).__name__}: {e}"
                traceback.print_exc()
                continue
            for ctx in ctxs:
                try:
                    self._measure_step(step, m, ref, ref_q, ctx, out, "minmo_fused")
                except Exception as e:  # noqa: BLE001
                    self.res["errors"][f"llm_7b_minmo_fused_{fmt}_ctx{ctx}"] = f"{type(e).__name__}: {e}"
                    traceback.print_exc()
            step.free()
            del step, ref_q
            torch.cuda.empty_cache()

    @staticmethod
    def _ref_for(m: Model, ref: "RefStep", step: MinmoStep) -> "RefStep":
        """The reference step on the weights the step's format represents (bf16: ref itself): isolates
        kernel error from quantization error."""
        if step.fmt == "bf16":
            return ref
        ref_q = RefStep(m, weights=[{n: lin.dequant() for n, lin in d.items()} for d in step.lin])
        ref_q.lm_head = step.lm_head.dequant()
        return ref_q

    def _measure_step(self, step: MinmoStep, m: Model, ref: "RefStep", ref_q: "RefStep", ctx: int, out: dict, label: str):
        """Times one decode step at position ctx (CUDA graph), checks its logits against the references,
        and records out[f"{fmt}_ctx{ctx}"] (with the per-launch breakdown of one layer for bf16 and for
        the last context)."""
        fmt, ctxs = step.fmt, [int(c) for c in self.args.ctx.split(",")]
        wbytes = m.weight_bytes(step)
        step.x_in.copy_(m.embed[ctx % 16].float())
        step.pos.fill_(ctx)
        try:
            run, how = step.capture().replay, "cuda_graph"
        except Exception as e:  # noqa: BLE001 - still time the step, launched from Python
            self.res["errors"][f"llm_7b_{label}_{fmt}_capture"] = f"{type(e).__name__}: {e}"
            run, how = (lambda: step.enqueue(torch.cuda.current_stream().cuda_stream)), "python_launches"
        run()
        logits = step.logits.clone()
        ref_logits = ref_q(m.embed[ctx % 16][None], ctx)
        ms = time_cuda(run, iters=self.args.iters)
        st = {**stats(ms), "launch": how}
        kvb = m.kv_bytes(ctx)
        gbs = (wbytes + kvb) / st["p50_ms"] / 1e6
        r = out[f"{fmt}_ctx{ctx}"] = {**st, "weight_bytes": wbytes, "kv_bytes": kvb, "gbs": gbs,
                                      "frac_of_copy": gbs / self.res["copy_rate"]["gbs_p50"],
                                      "logits_rel_err_vs_torch_same_weights": rel_err(logits, ref_logits)}
        if fmt != "bf16":
            r["logits_rel_err_vs_bf16_ref"] = rel_err(logits, ref(m.embed[ctx % 16][None], ctx))
        else:  # both bf16 pipelines against an fp32 one on the same weights and cache
            with torch.no_grad():
                ref32 = RefStep(m, ref_layer_fp32)(m.embed[ctx % 16][None], ctx)
            r["logits_rel_err_vs_fp32_ref"] = rel_err(logits, ref32)
            r["torch_bf16_logits_rel_err_vs_fp32_ref"] = rel_err(ref_logits, ref32)
        print(f"    {label} {fmt} ctx {ctx}: p50 {st['p50_ms']:.3f} ms p99 {st['p99_ms']:.3f} ms, {gbs:.0f} GB/s "
              f"({r['frac_of_copy']:.0%} of copy), logits err {r['logits_rel_err_vs_torch_same_weights']:.1e}", flush=True)
        if fmt == "bf16" or ctx == ctxs[-1]:
            try:
                r["layer_breakdown"] = step.layer_breakdown()
            except Exception as e:  # noqa: BLE001
                self.res["errors"][f"layer_breakdown_{label}_{fmt}_{ctx}"] = f"{type(e).__name__}: {e}"
        self.save()

    def llm_eager(self, m: Model, ctxs, key="torch_eager", layer_fn=ref_layer):
        out = self.res.setdefault("llm_7b", {}).setdefault(key, {})
        step = RefStep(m, layer_fn)
        for ctx in ctxs:
            x = m.embed[ctx % 16][None]
            t0 = time.time()
            with torch.no_grad():
                step(x, ctx)
                torch.cuda.synchronize()
            first = time.time() - t0
            with torch.no_grad():
                ms = time_wall(lambda: step(x, ctx), iters=self.args.ref_iters, warmup=1)
            out[f"ctx{ctx}"] = {**stats(ms), "first_call_s": round(first, 2),
                                "gbs": (m.weight_bytes() + m.kv_bytes(ctx)) / statistics.median(ms) / 1e6}
            print(f"    {key} ctx {ctx}: p50 {out[f'ctx{ctx}']['p50_ms']:.2f} ms (first call {first:.1f} s)", flush=True)

    def llm_compile(self, m: Model, ctxs):
        torch._dynamo.config.cache_size_limit = 64
        compiled = torch.compile(ref_layer, dynamic=False)
        self.res.setdefault("llm_7b", {})["torch_compile_note"] = (
            "torch.compile(mode='default', dynamic=False) of one decoder layer, reused for all layers; "
            "first_call_s includes compilation")
        self.llm_eager(m, ctxs, key="torch_compile", layer_fn=compiled)

    def llm_hf(self, m: Model, ctxs):
        out = self.res.setdefault("llm_7b", {}).setdefault("hf_transformers", {})
        model = hf_model(m)
        for ctx in ctxs:
            ms = hf_decode_ms(model, ctx, self.args.ref_iters + 2)[2:]
            out[f"ctx{ctx}"] = {**stats(ms), "method": "Qwen2ForCausalLM.forward per token, DynamicCache, sdpa, bf16"}
            print(f"    hf ctx {ctx}: p50 {out[f'ctx{ctx}']['p50_ms']:.2f} ms", flush=True)
        del model
        torch.cuda.empty_cache()

    # -- voice LM (0.5B sizes), 15 tokens
    VOICE_CTX, VOICE_STEPS = 256, 15

    def voice(self):
        out = self.res.setdefault("voice_lm_0p5b", {"config": asdict(VOICE_05B)})
        ctx, n = self.VOICE_CTX, self.VOICE_STEPS
        m = self.voice_model = Model(VOICE_05B, 512)
        for fmt in self.formats():
            self._voice_steps(MinmoStep(self.k, m, fmt), out, "minmo")
        ref = RefStep(m)
        x = m.embed[0][None]

        def eager15():
            with torch.no_grad():
                for j in range(n):
                    ref(x, ctx + j)

        out["torch_eager_15_steps"] = stats(time_wall(eager15, iters=5, warmup=1))
        print(f"    voice eager: 15 steps p50 {out['torch_eager_15_steps']['p50_ms']:.1f} ms", flush=True)
        try:
            model = hf_model(m)
            ms = hf_decode_ms(model, ctx, n + 2)[2:]
            out["hf_transformers_15_steps"] = {"sum_ms": sum(ms), **stats(ms)}
            print(f"    voice hf: 15 steps {sum(ms):.1f} ms", flush=True)
        except Exception as e:  # noqa: BLE001
            self.res["errors"]["voice_hf"] = f"{type(e).__name__}: {e}"

    def voice_fused(self):
        """15 fused steps per format on the voice-LM weights of voice() (one CUDA graph); the first step's
        logits are checked against the reference step on the same weights and cache."""
        out = self.res.setdefault("voice_lm_0p5b", {"config": asdict(VOICE_05B)})
        m = self.voice_model
        ref = RefStep(m)
        for fmt in self.formats():
            try:
                step = FusedStep(self.k, m, fmt)
                step.x_in.copy_(m.embed[0].float())
                step.pos.fill_(self.VOICE_CTX)
                step.enqueue(torch.cuda.current_stream().cuda_stream)
                ref_logits = self._ref_for(m, ref, step)(m.embed[0][None], self.VOICE_CTX)
                err = rel_err(step.logits, ref_logits)
                self._voice_steps(step, out, "minmo_fused", {"first_step_logits_rel_err_vs_torch_same_weights": err})
            except Exception as e:  # noqa: BLE001
                self.res["errors"][f"voice_lm_fused_{fmt}"] = f"{type(e).__name__}: {e}"
                traceback.print_exc()

    def _voice_steps(self, step: MinmoStep, out: dict, label: str, extra: dict | None = None):
        """Times VOICE_STEPS consecutive decode steps of `step` in one CUDA graph, from position VOICE_CTX."""
        m, ctx, n = step.m, self.VOICE_CTX, self.VOICE_STEPS
        step.x_in.copy_(m.embed[0].float())
        step.pos.fill_(ctx)
        g = step.capture(steps=n)

        def run():
            step.pos.fill_(ctx)
            g.replay()

        st = stats(time_cuda(run, iters=self.args.iters))
        wb = m.weight_bytes(step)
        out[f"{label}_{step.fmt}_15_steps"] = {**st, "per_step_ms": st["p50_ms"] / n, "weight_bytes": wb,
                                               "gbs": n * (wb + m.kv_bytes(ctx + n // 2)) / st["p50_ms"] / 1e6,
                                               **(extra or {})}
        if label == "minmo_fused" and step.fmt == "bf16":
            try:
                out[f"{label}_{step.fmt}_layer_breakdown"] = step.layer_breakdown()
            except Exception as e:  # noqa: BLE001
                self.res["errors"][f"voice_layer_breakdown_{label}"] = f"{type(e).__name__}: {e}"
        print(f"    voice {label} {step.fmt}: 15 steps p50 {st['p50_ms']:.3f} ms", flush=True)
        step.free()

    def run(self):
        a = self.args
        ctxs = [int(c) for c in a.ctx.split(",")]
        self.section("copy_rate", self.copy)
        self.section("gemv", self.gemv)
        self.section("voice_lm", self.voice)
        m = self.section("llm_7b_weights", lambda: Model(QWEN_7B, max(ctxs) + 64))
        if m is not None:
            self.res.setdefault("llm_7b", {})["config"] = asdict(QWEN_7B)
            self.res["llm_7b"]["bf16_weight_bytes"] = m.weight_bytes()
            self.section("llm_7b_minmo", self.llm_minmo, m, ctxs)
            self.section("llm_7b_eager", self.llm_eager, m, ctxs)
            self.section("llm_7b_hf", self.llm_hf, m, ctxs, optional=True)
            self.section("llm_7b_compile", self.llm_compile, m, ctxs, optional=True)
        # The fused variants run last, so that a device fault in them cannot cost the other sections.
        if self.voice_model is not None:
            self.section("voice_lm_fused", self.voice_fused)
        if m is not None:
            self.section("llm_7b_minmo_fused", self.llm_minmo_fused, m, ctxs)
        self.summarize()
        self.save()
        print(json.dumps(self.res.get("summary", {}), indent=1))

    def summarize(self):
        """Per weight format and context: fraction of the copy rate and speed-ups over the baselines."""
        llm = self.res.get("llm_7b", {})
        summ = {}
        for variant, prefix in (("minmo", ""), ("minmo_fused", "fused_")):
            for key, r in llm.get(variant, {}).items():
                fmt, ctx = key.rsplit("_ctx", 1)
                row = {"p50_ms": round(r["p50_ms"], 4), "frac_of_copy": round(r["frac_of_copy"], 3)}
                for base in ("torch_eager", "torch_compile", "hf_transformers"):
                    b = llm.get(base, {}).get(f"ctx{ctx}")
                    if b:
                        row[f"speedup_vs_{base}"] = round(b["p50_ms"] / r["p50_ms"], 2)
                if variant == "minmo_fused" and key in llm.get("minmo", {}):
                    row["speedup_vs_unfused"] = round(llm["minmo"][key]["p50_ms"] / r["p50_ms"], 3)
                summ[prefix + key] = row
        voice = self.res.get("voice_lm_0p5b", {})
        for key, r in voice.items():
            if key.startswith("minmo_") and "p50_ms" in r:
                summ[f"voice_{key}"] = {"p50_ms": round(r["p50_ms"], 4)}
        self.res["summary"] = summ


def _driver() -> str:
    try:
        import subprocess
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=20).stdout.strip()
    except Exception:  # noqa: BLE001
        return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", required=True, help="libminmo_kernels.so built with CUDA")
    ap.add_argument("--out", required=True, help="JSON result path")
    ap.add_argument("--ctx", default="128,1024", help="context lengths for the 7B step")
    ap.add_argument("--iters", type=int, default=50, help="CUDA-graph replays per measurement")
    ap.add_argument("--ref-iters", type=int, default=8, help="steps per eager / compile / HF measurement")
    ap.add_argument("--budget-s", type=float, default=150, help="skip optional sections (HF, compile) after this")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("SKIP: no CUDA device")
        return
    torch.manual_seed(0)
    Bench(args).run()


if __name__ == "__main__":
    main()
