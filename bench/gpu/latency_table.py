"""The MinMo paper's latency table on one GPU, random weights at full MinMo sizes, in one process.

Stages (p50/p99 of wall time per run, synchronised after each run):
  duplex_predictor    one audio token: LLM last hidden -> Linear -> one Qwen2 layer (KV of --duplex-ctx
                      earlier audio tokens) -> turn-taking / barge-in heads
  stt_first_token     end of user speech -> first text token: the last streaming encoder chunk (chunked
                      attention, 8 frames, 4 cached left chunks; FSMN over cached frames), the input
                      projector on its 4 audio tokens (cached left context), LLM prefill of those 4 tokens
                      + 5 assistant-turn prompt tokens over a KV cache of --stt-ctx earlier positions, the
                      logits of the last row and the greedy first token (the log-mel frontend of the
                      chunk's 320 ms is not included)
  stt_5_tokens        the same + 4 decode steps
  voice_lm_15_tokens  output projector on 5 text tokens (embedding ; LLM hidden) -> voice LM prefill of
                      [sos, 5 semantic vectors] -> 15 sampled speech tokens (repetition-aware sampling)
  token2wav_first_chunk  15 + 3 lookahead speech tokens -> flow encoder -> 10 Euler steps with CFG
                      (batch 2) -> 30 mel frames -> HiFT -> 14400 samples (24 kHz)
  first_audio_packet  composition: stt_5_tokens + voice_lm_15_tokens + token2wav_first_chunk (p50s)
Paths per stage: "minmo" (kernels/ through the ctypes loader for what they cover, cuBLAS via torch.matmul
for products over 8 rows, torch for the rest, each stage one CUDA graph; the JSON says which parts are
torch), "torch_eager" (the reference modules of export/reference, bf16 autocast for the bf16 modules),
"torch_compile" (the same functions under torch.compile) and, for the LLM stages, "hf_transformers".
Checks: minmo against the reference modules (rel. error): encoder + projector chunks streamed against
the offline chunked reference, LLM logits, duplex probabilities, voice-LM logits, Token2Wav mel/audio.
Per stage: bytes read (weights + KV), the floor time at Jetson AGX Orin 64GB's 204.8 GB/s and the
achieved fraction of this device's copy rate (measured in the same run).

Needs torch (+ transformers for that baseline) and libminmo_kernels.so (built with CUDA for the GPU run).
    python bench/gpu/latency_table.py --lib build/kernels-gpu/libminmo_kernels.so --out latency_table.json
    python bench/gpu/latency_table.py --lib build/kernels-py/libminmo_kernels.so --out x.json --dry-run-cpu
(--dry-run-cpu: tiny sizes on the host through the kernels' CPU twins, no graphs; exercises every stage.)
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import math
import platform
import signal
import sys
import time
import traceback
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import decode_bench as db  # noqa: E402  (also puts kernels/python on sys.path)
import minmo_kernels_ctypes as mk  # noqa: E402

BF16, F32, I32 = torch.bfloat16, torch.float32, torch.int32
ORIN_GBS = 204.8  # Jetson AGX Orin 64GB LPDDR5
GEMV_MAX = 8  # MINMO_GEMV_MAX_BATCH
PROMPT_IDS = [151645, 198, 151644, 77091, 198]  # "<|im_end|>\n<|im_start|>assistant\n" (Qwen2.5)


def import_reference():
    """export/reference as minmo_rt.export.reference without importing minmo_rt itself (its C++ module
    is not needed): the reference modules need torch + numpy only."""
    if "minmo_rt" not in sys.modules:
        for name, path in (("minmo_rt", ROOT / "bindings" / "python" / "minmo_rt"), ("minmo_rt.export", ROOT / "export")):
            mod = types.ModuleType(name)
            mod.__path__ = [str(path)]
            sys.modules[name] = mod
    import minmo_rt.export.reference as ref
    return ref


R = import_reference()
ref_attention = R.layers.attention


# ---- sizes -------------------------------------------------------------------------------------
def sizes(tiny: bool) -> dict:
    """Module configs: MinMo sizes (SPEC.md), or tiny ones for the host dry run."""
    if not tiny:
        return dict(llm=db.QWEN_7B, encoder=R.SenseVoiceLargeConfig(), projector=R.ProjectorConfig(),
                    duplex=R.DuplexConfig(), out_proj=R.OutputProjectorConfig(), voice=R.VoiceLMConfig(),
                    flow=R.FlowConfig(), hift=R.HiftConfig())
    h = 256
    return dict(
        llm=db.Cfg("tiny-llm", h, 2, 4, 2, 64, 384, 300),
        encoder=R.SenseVoiceLargeConfig(n_mels=16, d_model=128, n_heads=2, n_blocks=2),
        projector=R.ProjectorConfig(encoder_dim=128, hidden_dim=64, output_dim=h, n_layers=2, n_heads=4, ffn_dim=96),
        duplex=R.DuplexConfig(llm_hidden=h, hidden_size=128, intermediate_size=160, num_attention_heads=2,
                              num_key_value_heads=1, head_dim=64),
        out_proj=R.OutputProjectorConfig(embed_dim=h, llm_hidden=h, output_dim=128),
        voice=R.VoiceLMConfig(vocab_size=64, hidden_size=128, intermediate_size=160, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=64, speech_token_size=200),
        flow=R.FlowConfig(vocab_size=200, d_model=64, n_heads=2, ffn_dim=96, n_blocks=1, n_up_blocks=1, est_channels=32,
                          est_heads=2, est_head_dim=16, n_transformer=1, n_mid_blocks=1),
        hift=R.HiftConfig(base_channels=32, f0_channels=32, f0_layers=2))


def qwen_cfg(c: db.Cfg) -> "R.Qwen2Config":
    return R.Qwen2Config(vocab_size=c.vocab, hidden_size=c.hidden, intermediate_size=c.ffn, num_hidden_layers=c.layers,
                         num_attention_heads=c.heads_q, num_key_value_heads=c.heads_kv, head_dim=c.head_dim,
                         rope_theta=c.theta, rms_norm_eps=c.eps)


def nbytes(*objs) -> int:
    """Bytes of the parameters of modules / of tensors."""
    n = 0
    for o in objs:
        ts = o.parameters() if isinstance(o, nn.Module) else [o]
        n += sum(t.numel() * t.element_size() for t in ts)
    return n


# ---- timing and graphs -------------------------------------------------------------------------
def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def time_wall(fn, dev, iters: int, warmup: int = 2) -> list[float]:
    """Wall ms per call, synchronising after each (the latency a caller sees)."""
    for _ in range(warmup):
        fn()
    sync(dev)
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync(dev)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def graphed(enqueue, dev):
    """(run, how): run() replays a CUDA graph of enqueue(stream) after an eager warm-up on a side
    stream; on the host, run() calls enqueue directly."""
    if dev.type != "cuda":
        return (lambda: enqueue(0)), "python_launches (host dry run)"
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        enqueue(torch.cuda.current_stream().cuda_stream)
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g, capture_error_mode="thread_local"):
        enqueue(torch.cuda.current_stream().cuda_stream)
    return g.replay, "cuda_graph"


def p(t):
    return None if t is None else t.data_ptr()


# ---- minmo Qwen2 stack (LLM, voice LM, duplex layer) -------------------------------------------

class BudgetExceeded(BaseException):
    """Raised by budget_alarm in the main thread; a BaseException so that the sections' own
    `except Exception` guards let it through."""


@contextlib.contextmanager
def budget_alarm(seconds: float | None):
    """Raises BudgetExceeded in the block after `seconds` (None: no limit), through SIGALRM."""
    if seconds is None:
        yield
        return
    def expire(signum, frame):
        raise BudgetExceeded()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.5))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

class QwenRunner:
    """T new tokens (1..max_tokens) through a db.Model's layers from minmo kernels: fused residual +
    RMSNorm, QKV + RoPE + KV append, decode (T = 1) or chunked-prefill attention, our GEMV for T <= 8
    rows (gate|up with SiLU fused) and cuBLAS (torch.matmul) + silu_mul for more; then the final norm
    (or, with final_norm=False, the raw residual) of the last row -> `hidden` and the head -> `logits`.
    The first token's cache position is read from the device int32 `pos`."""

    def __init__(self, ops, k: mk.Kernels, m: db.Model, max_tokens: int, final_norm: bool = True,
                 head_bias: torch.Tensor | None = None, split: int = 32):
        c, dev = m.cfg, m.final_norm.device
        self.ops, self.m, self.final_norm, self.head_bias, self.split = ops, m, final_norm, head_bias, split
        self.lin = [{n: db.Linear(layer[n], "bf16") for n in ("w_qkv", "w_o", "w_gu", "w_down")} for layer in m.layers]
        self.head = db.Linear(m.lm_head, "bf16")
        z = lambda *s, dt=BF16: torch.zeros(*s, dtype=dt, device=dev)  # noqa: E731
        t, qn = max_tokens, c.heads_q * c.head_dim
        self.pos = z(1, dt=I32)
        self.x_in, self.resid = z(t, c.hidden, dt=F32), z(t, c.hidden, dt=F32)
        self.hn, self.o, self.down = z(t, c.hidden), z(t, c.hidden), z(t, c.hidden)
        self.qkv, self.q, self.attn = z(t, qn + 2 * c.heads_kv * c.head_dim), z(t, qn), z(t, qn)
        self.gu, self.act = z(t, 2 * c.ffn), z(t, c.ffn)
        self.hidden, self.logits = z(1, c.hidden), z(1, c.vocab)
        self.ws = torch.zeros(k.decode_workspace_floats(c.heads_q, c.head_dim, m.max_seq, split), dtype=F32, device=dev)

    def _linear(self, lin: db.Linear, x, y, t: int, s: int, gated: bool = False):
        if t <= GEMV_MAX:
            lin(self.ops, x, y, t, s, gated=gated)
        elif gated:
            torch.matmul(x[:t], lin.t[0].T, out=self.gu[:t])
            self.ops.silu_mul_bf16(p(self.gu), p(y), t, lin.n // 2, s)
        else:
            torch.matmul(x[:t], lin.t[0].T, out=y[:t])

    def enqueue(self, s: int, t: int):
        m, c, k = self.m, self.m.cfg, self.ops
        scale = 1.0 / math.sqrt(c.head_dim)
        self.resid[:t].copy_(self.x_in[:t])
        for i, layer in enumerate(m.layers):
            lin, kc, vc = self.lin[i], m.k_cache[i], m.v_cache[i]
            k.rmsnorm_residual_bf16(p(self.down) if i else None, p(self.resid), p(layer["in_norm"]), p(self.hn), t,
                                    c.hidden, c.eps, s)
            self._linear(lin["w_qkv"], self.hn, self.qkv, t, s)
            k.qkv_rope_append_bf16(p(self.qkv), p(layer["b_qkv"]), p(self.pos), p(self.q), p(kc), p(vc), t, c.heads_q,
                                   c.heads_kv, c.head_dim, m.max_seq, c.theta, s)
            if t == 1:
                k.decode_attention_bf16(p(self.q), p(kc), p(vc), p(self.pos), p(self.attn), p(self.ws), c.heads_q,
                                        c.heads_kv, c.head_dim, m.max_seq, self.split, scale, s)
            else:
                k.prefill_attention_bf16(p(self.q), p(kc), p(vc), p(self.pos), p(self.attn), t, c.heads_q, c.heads_kv,
                                         c.head_dim, m.max_seq, scale, s)
            self._linear(lin["w_o"], self.attn, self.o, t, s)
            k.rmsnorm_residual_bf16(p(self.o), p(self.resid), p(layer["post_norm"]), p(self.hn), t, c.hidden, c.eps, s)
            self._linear(lin["w_gu"], self.hn, self.act, t, s, gated=True)
            self._linear(lin["w_down"], self.act, self.down, t, s)
        if self.final_norm:
            k.rmsnorm_residual_bf16(p(self.down), p(self.resid), p(m.final_norm), p(self.hn), t, c.hidden, c.eps, s)
            self.hidden.copy_(self.hn[t - 1:t])
        else:
            self.resid[:t].add_(self.down[:t].float())
            self.hidden.copy_(self.resid[t - 1:t])
        self.head(k, self.hidden, self.logits, 1, s)
        if self.head_bias is not None:
            self.logits.add_(self.head_bias)

    def weight_bytes(self) -> int:
        return self.m.weight_bytes()


def reference_qwen(m: db.Model, embed: torch.Tensor | None):
    """The reference Qwen2Decoder whose parameters are views of the db.Model tensors (embed: the token
    embedding table, or None to leave it unallocated)."""
    c = m.cfg
    with torch.device("meta"):
        ref = R.Qwen2Decoder(qwen_cfg(c))
    P = lambda t: nn.Parameter(t, requires_grad=False)  # noqa: E731
    qn, kvn = c.heads_q * c.head_dim, c.heads_kv * c.head_dim
    for layer, w in zip(ref.model.layers, m.layers):
        a, mlp = layer.self_attn, layer.mlp
        a.q_proj.weight, a.q_proj.bias = P(w["w_qkv"][:qn]), P(w["b_qkv"][:qn])
        a.k_proj.weight, a.k_proj.bias = P(w["w_qkv"][qn:qn + kvn]), P(w["b_qkv"][qn:qn + kvn])
        a.v_proj.weight, a.v_proj.bias = P(w["w_qkv"][qn + kvn:]), P(w["b_qkv"][qn + kvn:])
        a.o_proj.weight = P(w["w_o"])
        mlp.gate_proj.weight, mlp.up_proj.weight = P(w["w_gu"][:c.ffn]), P(w["w_gu"][c.ffn:])
        mlp.down_proj.weight = P(w["w_down"])
        layer.input_layernorm.weight, layer.post_attention_layernorm.weight = P(w["in_norm"]), P(w["post_norm"])
    ref.model.norm.weight = P(m.final_norm)
    if embed is not None:
        ref.model.embed_tokens.weight = P(embed)
    if ref.lm_head is not None:
        ref.lm_head.weight = P(m.lm_head)
    return ref.eval()


def reference_fp32_logits(ref, embeds: torch.Tensor, cache) -> torch.Tensor:
    """Logits of the last row from the reference Qwen2Decoder in fp32 (each layer converted on the fly,
    so only one fp32 layer exists at a time): the yardstick for both bf16 pipelines."""
    cfg, past = ref.cfg, cache.length
    cos, sin = R.layers.rope_cos_sin(torch.arange(past, past + embeds.shape[0], device=embeds.device), cfg.head_dim,
                                     cfg.rope_theta)
    x = embeds.float()
    for layer, (k, v) in zip(ref.model.layers, cache.layers):
        with torch.device("meta"):
            l32 = R.layers.Qwen2Layer(cfg)
        l32.load_state_dict({n: t.float() for n, t in layer.state_dict().items()}, assign=True)
        x, _ = l32(x, cos, sin, (k.float(), v.float()))
        del l32
    x = x[-1:]
    h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg.rms_norm_eps) * ref.model.norm.weight.float()
    return F.linear(h, ref.lm_head.weight.float())


def ref_cache(m: db.Model, ctx: int):
    """The first ctx positions of a db.Model's caches as a reference KVCache ([T, Hkv, D] views)."""
    return R.KVCache([(kc[:, :ctx].transpose(0, 1), vc[:, :ctx].transpose(0, 1)) for kc, vc in zip(m.k_cache, m.v_cache)])


# ---- streaming encoder + projector chunk ---------------------------------------------------------
class Streams:
    """State shared by the streamed encoder / projector chunk paths: chunk c (< n_chunks = left_chunks + 1)
    writes cache slots c * frames ..; chunk c's mel window is mel[max(0, 32c - 8) : 32c + 32] (the strided
    convolutions' left context), of which the last `frames` subsampled frames are kept."""

    def __init__(self, enc, proj, chunk):
        self.enc, self.proj, self.chunk = enc, proj, chunk
        self.frames, self.n_chunks = chunk.chunk_frames, chunk.left_chunks + 1
        self.mel_per_chunk = 4 * self.frames

    def mel_window(self, mel, c):
        return mel[max(0, self.mel_per_chunk * c - 8): self.mel_per_chunk * (c + 1)]


class TorchChunk(Streams):
    """The streamed chunk from the reference modules' layers in PyTorch (eager / torch.compile baseline)."""

    def __init__(self, enc, proj, chunk):
        super().__init__(enc, proj, chunk)
        cfg, n = enc.cfg, self.n_chunks * self.frames
        dh = cfg.d_model // cfg.n_heads
        self.kc = [torch.zeros(n, cfg.n_heads, dh, dtype=BF16) for _ in enc.blocks]
        self.vc = [torch.zeros(n, cfg.d_model, dtype=BF16) for _ in enc.blocks]
        pn, d = n // 2, proj.cfg.output_dim
        self.pk = [torch.zeros(pn, d, dtype=BF16) for _ in proj.blocks]
        self.pv = [torch.zeros(pn, d, dtype=BF16) for _ in proj.blocks]
        self.cos, self.sin = R.layers.rope_cos_sin(torch.arange(n), dh, cfg.rope_theta)

    def encoder(self, mel, c):
        enc, cfg, f = self.enc, self.enc.cfg, self.frames
        x = enc.subsample(self.mel_window(mel, c))[-f:]
        a, b, h, dh = c * f, (c + 1) * f, cfg.n_heads, cfg.d_model // cfg.n_heads
        kpad = (cfg.fsmn_kernel - 1) // 2
        for i, blk in enumerate(enc.blocks):
            at, hx = blk.attn, blk.attn_ln(x)
            cos, sin = self.cos[a:b], self.sin[a:b]
            q = R.layers.apply_rope(at.query(hx).view(f, h, dh), cos, sin)
            self.kc[i][a:b] = R.layers.apply_rope(at.key(hx).view(f, h, dh), cos, sin)
            self.vc[i][a:b] = at.value(hx)
            ctx = ref_attention(q, self.kc[i][:b], self.vc[i][:b].view(b, h, dh), None)
            v0 = max(0, a - kpad)
            vwin = self.vc[i][v0:b]
            limits = torch.full((b - v0,), b - v0, dtype=torch.long, device=vwin.device)
            mem = R.layers.fsmn_memory(vwin, at.fsmn.weight, kpad, limits)[-f:]
            x = x + at.out(ctx.reshape(f, cfg.d_model)) + mem
            x = x + blk.mlp(blk.mlp_ln(x))
        return enc.ln_post(x)

    def projector(self, frames, c):
        pj, cfg = self.proj, self.proj.cfg
        n = frames.shape[0] // 2
        x = pj.linear2(torch.relu(pj.linear1(frames.reshape(n, -1))))
        a, b, h = c * n, (c + 1) * n, cfg.n_heads
        dh = cfg.output_dim // h
        for i, blk in enumerate(pj.blocks):
            at, hx = blk.self_attn, blk.norm1(x)
            self.pk[i][a:b], self.pv[i][a:b] = at.linear_k(hx), at.linear_v(hx)
            ctx = ref_attention(at.linear_q(hx).view(n, h, dh), self.pk[i][:b].view(b, h, dh), self.pv[i][:b].view(b, h, dh), None)
            x = x + at.linear_out(ctx.reshape(n, -1))
            ff = blk.feed_forward
            x = x + ff["w_2"](torch.relu(ff["w_1"](blk.norm2(x))))
        return x

    def __call__(self, mel, c):
        return self.projector(self.encoder(mel, c), c)


class MinmoChunk(Streams):
    """The streamed chunk on minmo kernels: per encoder block our GEMV (8 rows) for q|k|v, out and the MLP,
    qkv_rope_append into a [H, slots, Dh] cache, decode attention with the chunk's 8 frames as 8 query
    heads per KV head (every frame of a chunk sees the whole chunk and the cached left chunks), FSMN +
    attention output fused (fp32); projector: our GEMV (4 rows) for every product. Torch: the strided
    convolutions, LayerNorms, biases, GELU/ReLU, layout copies and the projector's attention (head dim
    448 is outside our attention kernels)."""

    def __init__(self, ops, k, enc, proj, chunk, dev):
        super().__init__(enc, proj, chunk)
        self.ops = ops
        cfg, f = enc.cfg, self.frames
        d, h = cfg.d_model, cfg.n_heads
        self.dh, slots = d // h, self.n_chunks * f
        self.kpad = (cfg.fsmn_kernel - 1) // 2
        z = lambda *s, dt=BF16: torch.zeros(*s, dtype=dt, device=dev)  # noqa: E731
        self.blocks = []
        for blk in enc.blocks:
            at = blk.attn
            self.blocks.append(dict(
                qkv=db.Linear(torch.cat([at.query.weight, at.key.weight, at.value.weight]).contiguous(), "bf16"),
                b_qkv=torch.cat([at.query.bias, torch.zeros_like(at.query.bias), at.value.bias]).contiguous(),
                out=db.Linear(at.out.weight, "bf16"), fsmn=at.fsmn.weight.float().reshape(d, -1).contiguous(),
                w1=db.Linear(blk.mlp[0].weight, "bf16"), w2=db.Linear(blk.mlp[2].weight, "bf16"),
                kc=z(h, slots, self.dh), vc=z(h, slots, self.dh)))
        self.player = [dict(q=db.Linear(b.self_attn.linear_q.weight, "bf16"), k=db.Linear(b.self_attn.linear_k.weight, "bf16"),
                            v=db.Linear(b.self_attn.linear_v.weight, "bf16"), o=db.Linear(b.self_attn.linear_out.weight, "bf16"),
                            w1=db.Linear(b.feed_forward["w_1"].weight, "bf16"), w2=db.Linear(b.feed_forward["w_2"].weight, "bf16"),
                            kc=z(slots // 2, proj.cfg.output_dim), vc=z(slots // 2, proj.cfg.output_dim)) for b in proj.blocks]
        self.l1, self.l2 = db.Linear(proj.linear1.weight, "bf16"), db.Linear(proj.linear2.weight, "bf16")
        self.pos_new, self.pos_last = z(1, dt=I32), z(1, dt=I32)
        self.ws = torch.zeros(k.decode_workspace_floats(h * f, self.dh, slots, 32), dtype=F32, device=dev)
        self.out = z(f // 2, proj.cfg.output_dim)

    def _mm(self, lin, x, bias=None):
        y = torch.empty(x.shape[0], lin.n, dtype=BF16, device=x.device)
        lin(self.ops, x.to(BF16).contiguous(), y, x.shape[0], self.s)
        return y if bias is None else y.add_(bias)

    def encoder(self, mel, c):
        enc, cfg, f, ops = self.enc, self.enc.cfg, self.frames, self.ops
        d, h, dh = cfg.d_model, cfg.n_heads, self.dh
        x = enc.subsample(self.mel_window(mel, c))[-f:]
        a, b = c * f, (c + 1) * f
        self.pos_new.fill_(a)
        self.pos_last.fill_(b - 1)
        v0 = max(0, a - self.kpad)
        nv = b - v0
        for blk, w in zip(enc.blocks, self.blocks):
            hx = blk.attn_ln(x)
            qkv = self._mm(w["qkv"], hx)
            q = torch.empty(f, h, dh, dtype=BF16, device=x.device)
            ops.qkv_rope_append_bf16(p(qkv), p(w["b_qkv"]), p(self.pos_new), p(q), p(w["kc"]), p(w["vc"]), f, h, h, dh,
                                     w["kc"].shape[1], cfg.rope_theta, self.s)
            qh = q.transpose(0, 1).contiguous()  # [H, f, Dh]: f query heads per KV head
            ah = torch.empty_like(qh)
            ops.decode_attention_bf16(p(qh), p(w["kc"]), p(w["vc"]), p(self.pos_last), p(ah), p(self.ws), h * f, h, dh,
                                      w["kc"].shape[1], 32, 1.0 / math.sqrt(dh), self.s)
            o = self._mm(w["out"], ah.transpose(0, 1).reshape(f, d), blk.attn.out.bias)
            v = w["vc"][:, v0:b].transpose(0, 1).reshape(nv, d).float()
            att = torch.zeros(nv, d, dtype=F32, device=x.device)
            att[-f:] = o
            mem = torch.empty_like(att)
            ops.fsmn_attn_f32(p(v), p(att), p(w["fsmn"]), p(mem), nv, d, w["fsmn"].shape[1], self.kpad, 0, self.s)
            x = x + mem[-f:].to(BF16)
            x = x + self._mm(w["w2"], F.gelu(self._mm(w["w1"], blk.mlp_ln(x), blk.mlp[0].bias)), blk.mlp[2].bias)
        return enc.ln_post(x)

    def projector(self, frames, c):
        pj, cfg = self.proj, self.proj.cfg
        n = frames.shape[0] // 2
        x = self._mm(self.l2, torch.relu(self._mm(self.l1, frames.reshape(n, -1), pj.linear1.bias)), pj.linear2.bias)
        a, b, h = c * n, (c + 1) * n, cfg.n_heads
        dh = cfg.output_dim // h
        for blk, w in zip(pj.blocks, self.player):
            at, hx = blk.self_attn, blk.norm1(x)
            w["kc"][a:b] = self._mm(w["k"], hx, at.linear_k.bias)
            w["vc"][a:b] = self._mm(w["v"], hx, at.linear_v.bias)
            q = self._mm(w["q"], hx, at.linear_q.bias)
            ctx = F.scaled_dot_product_attention(q.view(n, h, dh).transpose(0, 1), w["kc"][:b].view(b, h, dh).transpose(0, 1),
                                                 w["vc"][:b].view(b, h, dh).transpose(0, 1))
            x = x + self._mm(w["o"], ctx.transpose(0, 1).reshape(n, -1), at.linear_out.bias)
            ff = blk.feed_forward
            x = x + self._mm(w["w2"], torch.relu(self._mm(w["w1"], blk.norm2(x), ff["w_1"].bias)), ff["w_2"].bias)
        return x

    def enqueue(self, s, mel, c):
        self.s = s
        self.enc_out = self.encoder(mel, c)
        self.out.copy_(self.projector(self.enc_out, c))


# ---- Token2Wav ---------------------------------------------------------------------------------
def source_torch(f0, l_linear, cfg, noise):
    """reference.hift.source_from_f0 in torch on f0's device (float64 phase), with the counter-based
    noise [S*T, H+1] given: capturable in a CUDA graph. Checked against the numpy reference in the run."""
    spf, t, dev = cfg.samples_per_frame, f0.shape[0], f0.device
    f64 = torch.float64
    hs = torch.arange(1, cfg.nb_harmonics + 2, dtype=f64, device=dev)
    r = torch.remainder(f0.double()[:, None] * hs[None] / cfg.sample_rate, 1.0)
    q = torch.remainder(torch.cumsum(spf * r, 0), 1.0)
    n = torch.arange(spf * t, dtype=f64, device=dev)
    s = torch.clamp((n + 0.5) / spf - 0.5, min=0.0)
    k0 = torch.clamp(torch.floor(s).long(), max=t - 1)
    k1 = torch.clamp(k0 + 1, max=t - 1)
    lam = torch.where(k1 > k0, s - k0, torch.zeros_like(s))
    turns = q[k0] + lam[:, None] * spf * r[k1]
    sines = cfg.nsf_alpha * torch.sin(2.0 * math.pi * torch.remainder(turns, 1.0))
    uv = (f0.double() > cfg.nsf_voiced_threshold).double()[n.long() // spf]
    amp = uv * cfg.nsf_sigma + (1.0 - uv) * cfg.nsf_alpha / 3.0
    waves = (sines * uv[:, None] + amp[:, None] * noise.double()).float()
    return torch.tanh(l_linear(waves))[:, 0]


class Token2WavChunk:
    """First Token2Wav chunk: tokens [n] + lookahead [la] -> mu (flow encoder) -> Euler/CFG solve -> HiFT.
    use_kernels: the Euler + guidance update (our flow_euler_cfg_f32, which also writes the next batch-2
    estimator input) and the iSTFT tail (our hift_istft_f32); else the reference solve / decode."""

    def __init__(self, flow, hift, tokens, lookahead, spk192, ops, seed=0):
        self.flow, self.hift, self.ops = flow, hift, ops
        self.tokens, self.la = tokens, lookahead
        n_mel = tokens.numel() * flow.cfg.token_mel_ratio
        self.spk = flow.speaker(spk192).detach()
        self.noise = R.flow.flow_noise(seed, 0, n_mel, flow.cfg.mel_dim).to(tokens.device)
        spf, h1 = hift.cfg.samples_per_frame, hift.cfg.nb_harmonics + 1
        self.src_noise = R.flow.counter_normal(seed, R.flow.HIFT_NOISE_STREAM, 0, spf * n_mel * h1).view(-1, h1).to(tokens.device)
        ts = R.flow.cosine_t_span(flow.cfg.n_timesteps)
        self.t2 = [ts[i].expand(2).contiguous().to(tokens.device) for i in range(flow.cfg.n_timesteps)]
        self.dts = [float(ts[i + 1] - ts[i]) for i in range(flow.cfg.n_timesteps)]
        self.x = torch.zeros(n_mel, flow.cfg.mel_dim, dtype=F32)
        self.xin = torch.zeros(2, n_mel, flow.cfg.mel_dim, dtype=F32)
        self.audio = torch.zeros(n_mel * spf, dtype=F32)

    def mu(self):
        fl = self.flow
        return fl.encoder_proj(fl.encoder(fl.input_embedding(self.tokens), None, None, fl.input_embedding(self.la)))

    def run(self, use_kernels: bool, s: int = 0, estimator=None):
        fl, hf, cfg = self.flow, self.hift, self.flow.cfg
        est_fn = estimator if estimator is not None else fl.decoder.estimator
        mu = self.mu()
        zeros = torch.zeros_like(mu)
        if not use_kernels and estimator is None:  # the reference solve
            mel = fl.decoder.solve(self.noise, mu, self.spk, zeros, None)
            return mel, hf.decode(mel, source_torch(hf.f0(mel), hf.m_source.l_linear, hf.cfg, self.src_noise))
        mu2, spk2, cond2 = torch.stack([mu, zeros]), torch.stack([self.spk, torch.zeros_like(self.spk)]), torch.stack([zeros, zeros])
        if use_kernels:
            self.x.copy_(self.noise)
            self.xin.copy_(self.noise.expand(2, -1, -1))
            for i in range(cfg.n_timesteps):
                est = est_fn(self.xin, mu2, self.t2[i], spk2, cond2, None).contiguous()
                self.ops.flow_euler_cfg_f32(p(self.x), p(est), p(self.xin), self.x.numel(), cfg.cfg_rate, self.dts[i], s)
            mel = self.x
        else:
            x = self.noise
            for i in range(cfg.n_timesteps):
                d = est_fn(torch.stack([x, x]), mu2, self.t2[i], spk2, cond2, None)
                x = x + self.dts[i] * ((1.0 + cfg.cfg_rate) * d[0] - cfg.cfg_rate * d[1])
            mel = x
        source = source_torch(hf.f0(mel), hf.m_source.l_linear, hf.cfg, self.src_noise)
        if use_kernels:
            spec = hf.spectrum(mel, source).contiguous()
            self.ops.hift_istft_f32(p(spec), p(self.audio), spec.shape[1], hf.cfg.n_fft, hf.cfg.hop_len, hf.cfg.audio_limit, s)
            return mel, self.audio
        return mel, hf.decode(mel, source)

    def weight_bytes(self) -> int:
        fl = self.flow
        est = nbytes(fl.decoder.estimator)
        emb = (self.tokens.numel() + self.la.numel()) * fl.cfg.d_model * fl.input_embedding.weight.element_size()
        return emb + nbytes(fl.encoder, fl.encoder_proj) + fl.cfg.n_timesteps * est + nbytes(self.hift)


# ---- the bench -----------------------------------------------------------------------------------
def rel(a, b) -> float:
    return db.rel_err(a, b)


class LatencyTable:
    def __init__(self, args):
        self.args, self.t0 = args, time.time()
        self.dev = torch.device("cpu" if args.dry_run_cpu else "cuda")
        self.k = mk.Kernels(args.lib)
        if self.dev.type == "cuda":
            if not self.k.has_cuda:
                raise SystemExit(f"{args.lib} was built without CUDA")
            self.ops = self.k.cuda
        else:
            self.ops = db.CpuOps(self.k)
        self.sz = sizes(args.dry_run_cpu and not args.full_sizes)
        if args.llm_layers:
            self.sz["llm"] = dataclasses.replace(self.sz["llm"], layers=args.llm_layers)
        self.autocast = lambda: torch.autocast(self.dev.type, dtype=BF16)  # noqa: E731
        self.res = {"device": self.device_info(), "settings": vars(args).copy(), "stages": {}, "checks": {},
                    "errors": {}, "skipped": {}, "timing": "wall clock per run, synchronised after each run; "
                    "p50 / p99 over --iters runs (minmo) or --ref-iters runs (baselines), after 2 warm-up runs; "
                    "p99 of so few runs is close to the maximum"}
        self.stages = self.res["stages"]

    # -- bookkeeping
    def device_info(self) -> dict:
        info = {"torch": torch.__version__, "python": platform.python_version(), "lib": str(self.args.lib)}
        if self.dev.type == "cuda":
            pr = torch.cuda.get_device_properties(0)
            info.update(name=torch.cuda.get_device_name(0), nvidia_smi=_smi(), cuda_torch=torch.version.cuda,
                        sm=f"{pr.major}.{pr.minor}", memory_gib=round(pr.total_memory / 2**30, 1),
                        fp8_supported=self.k.fp8_supported())
        else:
            what = "MinMo sizes" if self.args.full_sizes else "tiny sizes"
            info.update(name=f"cpu dry run ({platform.machine()}), {what}", nvidia_smi=None, cuda_torch=None)
        try:
            import transformers
            info["transformers"] = transformers.__version__
        except Exception as e:  # noqa: BLE001
            info["transformers"] = f"unavailable: {e}"
        return info

    def elapsed(self) -> float:
        return time.time() - self.t0

    def save(self):
        self.res["wall_s"] = round(self.elapsed(), 1)
        Path(self.args.out).write_text(json.dumps(self.res, indent=2, default=str))

    def section(self, name, fn, *a, needs_s: float | None = None):
        """Runs one section, recording its exception; an optional one (needs_s: its expected seconds) is
        skipped when it would end past --budget-s, and stopped (SIGALRM) when it runs past it: a
        torch.compile of the voice LM's step took over 250 s on an H100. "running" names the section in
        progress (the JSON on disk shows it if the process is killed)."""
        if needs_s is not None and self.elapsed() + needs_s > self.args.budget_s:
            self.res["skipped"][name] = (f"time budget: {self.elapsed():.0f} s spent + ~{needs_s:.0f} s needed > "
                                         f"--budget-s {self.args.budget_s:.0f}")
            print(f"[{self.elapsed():6.1f}s] {name}: skipped (budget)", flush=True)
            return None
        print(f"[{self.elapsed():6.1f}s] {name} ...", flush=True)
        self.res["running"] = name
        self.save()
        try:
            with torch.no_grad(), budget_alarm(self.args.budget_s - self.elapsed() if needs_s is not None else None):
                return fn(*a)
        except BudgetExceeded:
            self.res["skipped"][name] = f"stopped at --budget-s {self.args.budget_s:.0f} after {self.elapsed():.0f} s"
            print(f"[{self.elapsed():6.1f}s] {name}: stopped (budget)", flush=True)
            return None
        except Exception as e:  # noqa: BLE001 - one failing section must not lose the others
            self.res["errors"][name] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
            return None
        finally:
            with contextlib.suppress(Exception):
                sync(self.dev)
            self.res.pop("running", None)
            self.save()

    def record(self, stage: str, impl: str, ms: list[float], **extra):
        st = db.stats(ms)
        self.stages.setdefault(stage, {})[impl] = {**{k: round(v, 4) if isinstance(v, float) else v for k, v in st.items()}, **extra}
        print(f"    {stage:24s} {impl:16s} p50 {st['p50_ms']:9.3f} ms  p99 {st['p99_ms']:9.3f} ms", flush=True)

    @contextlib.contextmanager
    def guard(self, name: str):
        """Records an exception of one part (a check, a baseline) under errors[name] and goes on."""
        try:
            yield
        except Exception as e:  # noqa: BLE001
            self.res["errors"][name] = f"{type(e).__name__}: {e}"
            traceback.print_exc()

    def graph(self, stage: str, enqueue):
        """graphed(enqueue), or, when the capture fails (recorded under errors), launches from Python."""
        try:
            return graphed(enqueue, self.dev)
        except Exception as e:  # noqa: BLE001
            self.res["errors"][f"{stage}_cuda_graph_capture"] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
            with contextlib.suppress(Exception):
                sync(self.dev)
            cur = (lambda: torch.cuda.current_stream().cuda_stream) if self.dev.type == "cuda" else (lambda: 0)
            return (lambda: enqueue(cur())), "python_launches (graph capture failed)"

    def timed(self, fn, iters):
        return time_wall(fn, self.dev, iters, warmup=2)

    def compiled(self, fn, dynamic):
        return torch.compile(fn, dynamic=dynamic, backend=self.args.compile_backend)

    # -- sections
    def copy_rate(self):
        if self.dev.type == "cuda":
            self.res["copy_rate"] = db.copy_rate_gbs()
        else:  # host memcpy, only so the dry run has the same fields
            a = torch.empty(1 << 24, dtype=torch.uint8)
            b = torch.empty_like(a)
            ms = db.stats(time_wall(lambda: b.copy_(a), self.dev, 5))
            self.res["copy_rate"] = {"bytes_per_copy": 2 * a.numel(), "p50_ms": ms["p50_ms"], "gbs_p50": 2 * a.numel() / ms["p50_ms"] / 1e6}
        print(f"    copy rate {self.res['copy_rate']['gbs_p50']:.0f} GB/s", flush=True)

    def build(self):
        """Random weights at the chosen sizes; the reference modules share the minmo path's tensors."""
        sz, dev, a = self.sz, self.dev, self.args
        torch.manual_seed(0)
        # LLM: fused db.Model weights + a full embedding table; the reference Qwen2Decoder views them
        self.llm = db.Model(sz["llm"], a.stt_ctx + 64, device=dev)
        self.llm.embed = db.rand_w(sz["llm"].vocab, sz["llm"].hidden, std=1.0, device=dev)
        self.llm_ref = reference_qwen(self.llm, self.llm.embed)
        chunk = R.ChunkSpec("chunked", 8, 4)
        self.enc = R.SenseVoiceLargeEncoder(sz["encoder"], chunk).to(dev, BF16).eval()
        self.proj = R.InputProjector(sz["projector"], chunk).to(dev, BF16).eval()
        self.chunk = chunk
        # duplex: a 1-layer db.Model (heads = [turn; barge] as its 4-row lm_head), reference views it
        dc = sz["duplex"]
        dcfg = db.Cfg("duplex", dc.hidden_size, 1, dc.num_attention_heads, dc.num_key_value_heads, dc.head_dim,
                      dc.intermediate_size, 4, theta=dc.rope_theta, eps=dc.rms_norm_eps)
        self.dup = db.Model(dcfg, a.duplex_ctx + 8, device=dev)
        self.dup_proj = db.rand_w(dc.hidden_size, dc.llm_hidden, device=dev)
        self.dup_bias = db.rand_w(4, std=0.1, device=dev)
        with torch.device("meta"):
            dref = R.DuplexPredictor(dc)
        dl = reference_qwen(self.dup, None)  # a 1-layer Qwen2Decoder holding the views
        P = lambda t: nn.Parameter(t, requires_grad=False)  # noqa: E731
        dref.layer = dl.model.layers[0]
        dref.proj.weight = P(self.dup_proj)
        dref.turn_head.weight, dref.turn_head.bias = P(self.dup.lm_head[:2]), P(self.dup_bias[:2])
        dref.barge_head.weight, dref.barge_head.bias = P(self.dup.lm_head[2:]), P(self.dup_bias[2:])
        self.dup_ref = dref.eval()
        # voice LM: db.Model (head = llm_decoder, + bias), reference VoiceLM views it
        vc = sz["voice"]
        vcfg = db.Cfg("voice-lm", vc.hidden_size, vc.num_hidden_layers, vc.num_attention_heads, vc.num_key_value_heads,
                      vc.head_dim, vc.intermediate_size, vc.speech_token_size + 3, theta=vc.rope_theta, eps=vc.rms_norm_eps)
        self.voice = db.Model(vcfg, 64, device=dev)
        self.voice_bias = db.rand_w(vcfg.vocab, std=0.1, device=dev)
        with torch.device("meta"):
            vref = R.VoiceLM(vc)
        vref.model = reference_qwen(self.voice, None).model  # the text embedding (cascade mode) is not used
        vref.llm_embedding.weight = P(db.rand_w(2, vc.hidden_size, std=1.0, device=dev))
        vref.speech_embedding.weight = P(db.rand_w(vcfg.vocab, vc.hidden_size, std=1.0, device=dev))
        vref.llm_decoder.weight, vref.llm_decoder.bias = P(self.voice.lm_head), P(self.voice_bias)
        self.voice_ref = vref.eval()
        self.out_proj = R.OutputProjector(sz["out_proj"]).to(dev, BF16).eval()
        # Token2Wav in fp32 (as CosyVoice2 runs it)
        self.flow = R.Flow(sz["flow"]).to(dev).eval()
        self.hift = R.HiFT(sz["hift"]).to(dev).eval()
        self.res["sizes"] = {
            "llm": {**vars(sz["llm"]), "weight_bytes": self.llm.weight_bytes()},
            "encoder": {**sz["encoder"].to_dict(), "param_bytes": nbytes(self.enc)},
            "projector": {**sz["projector"].to_dict(), "param_bytes": nbytes(self.proj)},
            "duplex": {**dc.to_dict(), "param_bytes": nbytes(self.dup_ref)},
            "output_projector": {**sz["out_proj"].to_dict(), "param_bytes": nbytes(self.out_proj)},
            "voice_lm": {**vc.to_dict(), "weight_bytes": self.voice.weight_bytes()},
            "flow": {**sz["flow"].to_dict(), "param_bytes": nbytes(self.flow)},
            "hift": {**sz["hift"].to_dict(), "param_bytes": nbytes(self.hift)},
            "dtypes": "LLM, encoder, projector, duplex, output projector, voice LM: bf16; flow + HiFT: fp32",
            "chunk": chunk.to_dict(),
        }

    # -- duplex predictor
    def duplex(self):
        m, ctx, H = self.dup, self.args.duplex_ctx, self.sz["duplex"].llm_hidden
        hidden = db.rand_w(1, H, std=1.0, device=self.dev)
        run_ = QwenRunner(self.ops, self.k, m, 1, final_norm=False, head_bias=self.dup_bias)
        projl = db.Linear(self.dup_proj, "bf16")
        xb = torch.zeros(1, m.cfg.hidden, dtype=BF16)
        probs = torch.zeros(2, dtype=F32)

        def enqueue(s):
            projl(self.ops, hidden, xb, 1, s)
            run_.x_in.copy_(xb.float())
            run_.pos.fill_(ctx)
            run_.enqueue(s, 1)
            lg = run_.logits.float().view(2, 2)
            probs.copy_(torch.softmax(lg, -1)[:, 1])

        run, how = self.graph("duplex_predictor", enqueue)
        run()
        wb = m.weight_bytes() + nbytes(self.dup_proj, self.dup_bias)
        self.record("duplex_predictor", "minmo", self.timed(run, self.args.iters), launch=how,
                    path="minmo GEMV (proj, q|k|v, o, gate|up+SiLU, down, heads), fused norm, QKV+RoPE+append, "
                         "decode attention; torch: residual add, bias, softmax",
                    bytes_read=wb + m.kv_bytes(ctx), kv_ctx=ctx)
        past = tuple(t[:, :ctx].transpose(0, 1) for t in (m.k_cache[0], m.v_cache[0]))
        with self.guard("duplex_check"):
            run()
            with self.autocast():
                pt, pb, _ = self.dup_ref(hidden, past)
            self.res["checks"]["duplex_probs_rel_err_vs_reference"] = rel(probs, torch.stack([pt[0], pb[0]]))

        def eager():
            with self.autocast():
                return self.dup_ref(hidden, past)

        with self.guard("duplex_predictor_torch_eager"):
            self.record("duplex_predictor", "torch_eager", self.timed(eager, self.args.ref_iters))
            self.dup_eager = eager

    def duplex_compile(self):
        comp = self.compiled(self.dup_eager, dynamic=False)
        t0 = time.time()
        comp()
        sync(self.dev)
        self.record("duplex_predictor", "torch_compile", self.timed(comp, self.args.ref_iters),
                    first_call_s=round(time.time() - t0, 1))

    # -- speech to text
    def stt(self):
        a, m, dev = self.args, self.llm, self.dev
        ctx, c_last = a.stt_ctx, self.chunk.left_chunks
        n_mel = 4 * self.chunk.chunk_frames * (c_last + 1)
        mel = torch.randn(n_mel, self.sz["encoder"].n_mels, dtype=BF16)
        mc = MinmoChunk(self.ops, self.k, self.enc, self.proj, self.chunk, dev)
        tc = TorchChunk(self.enc, self.proj, self.chunk)
        enc_m, enc_t, prj_m, prj_t = [], [], [], []
        for c in range(c_last + 1):  # fills the caches the timed last chunk reads
            mc.enqueue(0 if dev.type != "cuda" else torch.cuda.current_stream().cuda_stream, mel, c)
            enc_m.append(mc.enc_out.clone())
            prj_m.append(mc.out.clone())
        with self.guard("stt_torch_chunk_stream"):
            for c in range(c_last + 1):
                with self.autocast():
                    enc_t.append(tc.encoder(mel, c))
                    prj_t.append(tc.projector(enc_t[-1], c))
        with self.guard("stt_encoder_checks"):
            self.encoder_checks(mel, enc_m, prj_m, enc_t, prj_t)

        n_audio = self.chunk.chunk_frames // 2
        t_in = n_audio + len(PROMPT_IDS)
        prompt = torch.tensor([i % m.cfg.vocab for i in PROMPT_IDS], dtype=torch.long)
        llm = QwenRunner(self.ops, self.k, m, t_in)
        tok = torch.zeros(1, dtype=torch.long)
        self.text_hidden = torch.zeros(5, m.cfg.hidden, dtype=BF16)
        self.text_embed = torch.zeros(5, m.cfg.hidden, dtype=BF16)
        first_logits = torch.zeros(1, m.cfg.vocab, dtype=BF16)

        def make(n_tokens):
            def enqueue(s):
                mc.enqueue(s, mel, c_last)
                llm.x_in[:n_audio].copy_(mc.out.float())
                llm.x_in[n_audio:t_in].copy_(torch.index_select(m.embed, 0, prompt).float())
                llm.pos.fill_(ctx)
                llm.enqueue(s, t_in)
                first_logits.copy_(llm.logits)
                for j in range(n_tokens):
                    tok.copy_(torch.argmax(llm.logits[0]).view(1))
                    e = torch.index_select(m.embed, 0, tok)
                    self.text_hidden[j].copy_(llm.hidden[0])
                    self.text_embed[j].copy_(e[0])
                    if j == n_tokens - 1:
                        break
                    llm.x_in[:1].copy_(e.float())
                    llm.pos.fill_(ctx + t_in + j)
                    llm.enqueue(s, 1)
            return enqueue

        enc_bytes = nbytes(self.enc, self.proj)
        enc_kv = sum(w["kc"].numel() * 2 * 2 for w in mc.blocks) + sum(w["kc"].numel() * 2 * 2 for w in mc.player)
        path = ("encoder: minmo GEMV (8 rows: q|k|v, out, MLP), QKV+RoPE+append, decode attention (8 frames as query "
                "heads), FSMN+attention fused; torch: strided convs, LayerNorm, bias, GELU, layout copies. projector: "
                "minmo GEMV (4 rows); torch: LayerNorm, bias, ReLU, attention (head dim 448). LLM: "
                f"{'cuBLAS (torch.matmul) + minmo silu_mul' if t_in > GEMV_MAX else 'minmo GEMV'} for the {t_in}-row prefill "
                "products, minmo fused norm, QKV+RoPE+append, prefill attention, GEMV head; decode steps all minmo; "
                "torch: argmax, embedding gather")
        for n_tokens, stage in ((1, "stt_first_token"), (5, "stt_5_tokens")):
            run, how = self.graph(stage, make(n_tokens))
            run()
            wb = enc_bytes + enc_kv + n_tokens * m.weight_bytes() + sum(m.kv_bytes(ctx + t_in + j) for j in range(n_tokens))
            self.record(stage, "minmo", self.timed(run, a.iters), launch=how, path=path, bytes_read=wb, kv_ctx=ctx,
                        prefill_rows=t_in, decode_steps=n_tokens - 1,
                        kv_ctx_meaning="LLM KV positions cached before the last chunk (system prompt + earlier speech)")
            if n_tokens == 1:
                with self.guard("stt_llm_check"):
                    run()
                    self.llm_checks(first_logits, torch.cat([mc.out, torch.index_select(m.embed, 0, prompt)]), ctx)
        if "stt_torch_chunk_stream" in self.res["errors"]:
            return
        # eager baseline: the torch chunk path + the reference Qwen2Decoder with a KVCache
        self.stt_parts = (tc, mel, c_last, prompt, ctx)
        for n_tokens, stage in ((1, "stt_first_token"), (5, "stt_5_tokens")):
            with self.guard(f"{stage}_torch_eager"):
                self.record(stage, "torch_eager", self.timed(lambda: self.stt_torch(n_tokens, tc.__call__, self.llm_ref),
                                                             a.ref_iters))

    def encoder_checks(self, mel, enc_m, prj_m, enc_t, prj_t):
        """The streamed chunks (minmo; torch) against the offline chunked reference (bf16 autocast and fp32)."""
        ch = self.res["checks"]
        with self.autocast():
            enc_off = self.enc(mel)
            prj_off = self.proj(enc_off)
        ch["encoder_chunks_minmo_rel_err_vs_offline_reference"] = rel(torch.cat(enc_m), enc_off)
        ch["encoder_last_chunk_minmo_rel_err_vs_offline_reference"] = rel(enc_m[-1], enc_off[-self.chunk.chunk_frames:])
        ch["projector_chunks_minmo_rel_err_vs_offline_reference"] = rel(torch.cat(prj_m), prj_off)
        if enc_t and prj_t:
            ch["encoder_chunks_torch_stream_rel_err_vs_offline_reference"] = rel(torch.cat(enc_t), enc_off)
            ch["projector_chunks_torch_stream_rel_err_vs_offline_reference"] = rel(torch.cat(prj_t), prj_off)
        enc32, proj32 = copy.deepcopy(self.enc).float(), copy.deepcopy(self.proj).float()
        enc_off32 = enc32(mel.float())
        prj_off32 = proj32(enc_off32)
        del enc32, proj32
        ch["encoder_chunks_minmo_rel_err_vs_offline_fp32"] = rel(torch.cat(enc_m), enc_off32)
        ch["encoder_offline_torch_bf16_rel_err_vs_offline_fp32"] = rel(enc_off, enc_off32)
        ch["projector_chunks_minmo_rel_err_vs_offline_fp32"] = rel(torch.cat(prj_m), prj_off32)
        ch["projector_offline_torch_bf16_rel_err_vs_offline_fp32"] = rel(prj_off, prj_off32)
        print(f"    checks: encoder {ch['encoder_chunks_minmo_rel_err_vs_offline_reference']:.2e}, projector "
              f"{ch['projector_chunks_minmo_rel_err_vs_offline_reference']:.2e} (vs fp32: minmo "
              f"{ch['encoder_chunks_minmo_rel_err_vs_offline_fp32']:.2e}, torch bf16 "
              f"{ch['encoder_offline_torch_bf16_rel_err_vs_offline_fp32']:.2e})", flush=True)

    def llm_checks(self, logits, x, ctx):
        """minmo's prefill logits (last row) against the reference Qwen2Decoder (bf16 autocast, and fp32)
        on the same inputs x [T, H] and cache."""
        ch, m = self.res["checks"], self.llm
        with self.autocast():
            ref = self.llm_ref(x, ref_cache(m, ctx))[0][-1:]
        ref32 = reference_fp32_logits(self.llm_ref, x, ref_cache(m, ctx))
        ch["llm_prefill_logits_rel_err_vs_reference"] = rel(logits, ref)
        ch["llm_prefill_argmax_equal"] = bool(int(logits.argmax()) == int(ref.argmax()))
        ch["llm_prefill_logits_minmo_rel_err_vs_fp32"] = rel(logits, ref32)
        ch["llm_prefill_logits_torch_bf16_rel_err_vs_fp32"] = rel(ref, ref32)
        print(f"    checks: LLM prefill logits {ch['llm_prefill_logits_rel_err_vs_reference']:.2e} (vs fp32: minmo "
              f"{ch['llm_prefill_logits_minmo_rel_err_vs_fp32']:.2e}, torch bf16 "
              f"{ch['llm_prefill_logits_torch_bf16_rel_err_vs_fp32']:.2e})", flush=True)

    def stt_torch(self, n_tokens, chunk_fn, llm_fn):
        tc, mel, c, prompt, ctx = self.stt_parts
        m = self.llm
        with self.autocast():
            audio = chunk_fn(mel, c)
            x = torch.cat([audio, torch.index_select(m.embed, 0, prompt)])
            cache = ref_cache(m, ctx)
            toks = []
            for j in range(n_tokens):
                logits, _, cache = llm_fn(x, cache)
                toks.append(torch.argmax(logits[-1]))
                x = torch.index_select(m.embed, 0, toks[-1].view(1))
        return toks

    def stt_compile(self):
        tc = self.stt_parts[0]
        chunk_c = self.compiled(tc.__call__, dynamic=False)
        llm_c = self.compiled(self.llm_ref.forward, dynamic=True)
        t0 = time.time()
        self.stt_torch(5, chunk_c, llm_c)
        sync(self.dev)
        first = round(time.time() - t0, 1)
        for n_tokens, stage in ((1, "stt_first_token"), (5, "stt_5_tokens")):
            self.record(stage, "torch_compile", self.timed(lambda: self.stt_torch(n_tokens, chunk_c, llm_c), self.args.ref_iters),
                        first_call_s=first, what="torch.compile of the streamed chunk (static) and of Qwen2Decoder.forward (dynamic)")

    def stt_hf(self):
        """transformers Qwen2ForCausalLM on the same weights for the LLM part (prefill over a DynamicCache of
        --stt-ctx positions, then greedy decode steps), plus the eager chunk time for the encoder/projector."""
        tc, mel, c, prompt, ctx = self.stt_parts
        m = self.llm
        model = db.hf_model(m)
        ids = torch.randint(0, m.cfg.vocab, (1, ctx))
        out = model(input_ids=ids, use_cache=True)
        pkv = out.past_key_values
        with self.autocast():
            audio = tc(mel, c)
        x = torch.cat([audio.to(BF16), torch.index_select(m.embed, 0, prompt)])[None]

        def run(n_tokens):
            o = model(inputs_embeds=x, past_key_values=pkv, use_cache=True)
            t = o.logits[:, -1:].argmax(-1)
            for _ in range(n_tokens - 1):
                o = model(input_ids=t, past_key_values=pkv, use_cache=True)
                t = o.logits[:, -1:].argmax(-1)
            sync(self.dev)
            pkv.crop(ctx - pkv.get_seq_length())  # negative: drop that many positions (transformers 4.x and 5.x)
            if pkv.get_seq_length() != ctx:
                raise RuntimeError(f"DynamicCache.crop left {pkv.get_seq_length()} positions, not {ctx}")
            return t

        with self.autocast():
            chunk_ms = db.stats(self.timed(lambda: tc(mel, c), self.args.ref_iters))["p50_ms"]
        for n_tokens, stage in ((1, "stt_first_token"), (5, "stt_5_tokens")):
            ms = [t + chunk_ms for t in self.timed(lambda: run(n_tokens), self.args.ref_iters)]
            self.record(stage, "hf_transformers", ms,
                        what=f"Qwen2ForCausalLM.forward (sdpa, DynamicCache of {ctx}) for the LLM part + the eager "
                             "chunk p50 (transformers has no speech encoder)")
        del model, pkv
        if self.dev.type == "cuda":
            torch.cuda.empty_cache()

    # -- voice LM, 15 speech tokens
    def voice_lm(self):
        m, vc, dev = self.voice, self.sz["voice"], self.dev
        n_sem, n_speech = vc.text_ratio, vc.speech_ratio
        if not hasattr(self, "text_hidden"):  # the STT section failed: random text inputs
            self.text_hidden = db.rand_w(n_sem, self.sz["llm"].hidden, std=1.0, device=dev)
            self.text_embed = db.rand_w(n_sem, self.sz["llm"].hidden, std=1.0, device=dev)
        opj = db.Linear(self.out_proj.linear.weight, "bf16")
        run_ = QwenRunner(self.ops, self.k, m, n_sem + 1, head_bias=self.voice_bias)
        sos = self.voice_ref.sos()
        semb = self.voice_ref.speech_embedding.weight
        sem = torch.zeros(n_sem, m.cfg.hidden, dtype=BF16)
        hist = torch.full((vc.win_size,), -1, dtype=I32)
        tok = torch.zeros(1, dtype=I32)
        tokens = torch.zeros(n_speech, dtype=I32)
        forbid = torch.tensor([vc.speech_token_size, vc.speech_token_size + 1, vc.speech_token_size + 2], dtype=I32)
        logits32 = torch.zeros(m.cfg.vocab, dtype=F32)

        def enqueue(s):
            opj(self.ops, torch.cat([self.text_embed, self.text_hidden], -1), sem, n_sem, s)
            sem.add_(self.out_proj.linear.bias)
            run_.x_in[:1].copy_(sos.float())
            run_.x_in[1:n_sem + 1].copy_(sem.float())
            run_.pos.fill_(0)
            run_.enqueue(s, n_sem + 1)
            for j in range(n_speech):
                logits32.copy_(run_.logits[0])
                sp = mk.SamplingParams(top_k=vc.top_k, top_p=vc.top_p, temperature=1.0, ras_window=vc.win_size,
                                       ras_tau=vc.tau_r, force_id=-1, seed=1234, counter=j)
                self.ops.sample_ras_f32(p(logits32), m.cfg.vocab, p(hist), vc.win_size, p(forbid), 3, sp, p(tok), s)
                tokens[j:j + 1].copy_(tok)
                hist.copy_(torch.cat([hist[1:], tok]))
                if j == n_speech - 1:
                    break
                run_.x_in[:1].copy_(torch.index_select(semb, 0, tok.long()).float())
                run_.pos.fill_(n_sem + 1 + j)
                run_.enqueue(s, 1)

        run, how = self.graph("voice_lm_15_tokens", enqueue)
        run()
        wb = nbytes(self.out_proj) + n_speech * m.weight_bytes() + sum(m.kv_bytes(n_sem + 1 + j) for j in range(n_speech))
        self.record("voice_lm_15_tokens", "minmo", self.timed(run, self.args.iters), launch=how, bytes_read=wb,
                    path="minmo GEMV (output projector, 6-row prefill and decode products, head), fused norm, "
                         "QKV+RoPE+append, prefill / decode attention, on-device RAS sampling; torch: bias adds, "
                         "embedding gather, history shift", kv_ctx="0 (first speech chunk: sos + 5 semantic vectors)")
        with self.guard("voice_lm_check"):  # the prefill logits against the reference VoiceLM, same semantic vectors
            run()
            toks = tokens.cpu().tolist()
            run_.x_in[:1].copy_(sos.float())
            run_.x_in[1:n_sem + 1].copy_(sem.float())
            run_.pos.fill_(0)
            run_.enqueue(0 if dev.type != "cuda" else torch.cuda.current_stream().cuda_stream, n_sem + 1)
            with self.autocast():
                sem_ref = self.out_proj(self.text_embed, self.text_hidden)
                ref_logits, _ = self.voice_ref.step_logits(torch.cat([sos, sem.to(BF16)]))
            ch = self.res["checks"]
            ch["output_projector_rel_err_vs_reference"] = rel(sem, sem_ref)
            ch["voice_lm_prefill_logits_rel_err_vs_reference"] = rel(run_.logits, ref_logits[-1:])
            ch["voice_lm_tokens_in_range"] = all(0 <= t < vc.speech_token_size for t in toks)
            ch["voice_lm_tokens"] = toks

        def eager(step_fn=None):
            step_fn = step_fn or self.voice_ref.step_logits
            rng = R.SplitMix64(1234)
            out = []
            with self.autocast():
                x = torch.cat([sos, self.out_proj(self.text_embed, self.text_hidden)])
                cache = None
                for _ in range(n_speech):
                    logits, cache = step_fn(x, cache)
                    t = R.ras_sample(logits[-1].float().cpu().numpy(), vc.speech_token_size, out, vc, rng)
                    out.append(t)
                    x = self.voice_ref.speech_embedding.weight[t:t + 1]
            return out

        with self.guard("voice_lm_15_tokens_torch_eager"):
            self.record("voice_lm_15_tokens", "torch_eager", self.timed(eager, self.args.ref_iters),
                        what="reference OutputProjector + VoiceLM.step_logits (KVCache), reference ras_sample on the host")
            self.voice_eager = eager

    def voice_compile(self):
        comp = self.compiled(self.voice_ref.step_logits, dynamic=True)
        t0 = time.time()
        self.voice_eager(comp)
        sync(self.dev)
        self.record("voice_lm_15_tokens", "torch_compile", self.timed(lambda: self.voice_eager(comp), self.args.ref_iters),
                    first_call_s=round(time.time() - t0, 1), what="torch.compile(VoiceLM.step_logits, dynamic=True)")

    def voice_hf(self):
        m, vc = self.voice, self.sz["voice"]
        model = db.hf_model(m)
        semb = self.voice_ref.speech_embedding.weight
        with self.autocast():
            x0 = torch.cat([self.voice_ref.sos(), self.out_proj(self.text_embed, self.text_hidden)])[None]

        def run():
            o = model(inputs_embeds=x0, use_cache=True)
            for _ in range(vc.speech_ratio - 1):
                t = o.logits[0, -1, :vc.speech_token_size].argmax()
                o = model(inputs_embeds=semb[t][None, None], past_key_values=o.past_key_values, use_cache=True)
            return o.logits[0, -1, :vc.speech_token_size].argmax()

        self.record("voice_lm_15_tokens", "hf_transformers", self.timed(run, self.args.ref_iters),
                    what="Qwen2ForCausalLM.forward per token on the same body/head (no head bias), greedy on device")
        del model

    # -- Token2Wav
    def token2wav(self):
        fc, dev = self.sz["flow"], self.dev
        gen = torch.Generator().manual_seed(5)
        toks = torch.randint(0, fc.vocab_size, (15 + fc.pre_lookahead,), generator=gen, device="cpu").to(dev)
        spk = torch.randn(fc.spk_dim, generator=gen, device="cpu").to(dev)
        t2w = Token2WavChunk(self.flow, self.hift, toks[:15], toks[15:], spk, self.ops)
        run, how = self.graph("token2wav_first_chunk", lambda s: t2w.run(True, s))
        run()
        n_mel, n_audio = t2w.x.shape[0], t2w.audio.numel()
        self.record("token2wav_first_chunk", "minmo", self.timed(run, self.args.iters), launch=how,
                    bytes_read=t2w.weight_bytes(), mel_frames=n_mel, samples=n_audio,
                    path="minmo: Euler step + CFG combine (flow_euler_cfg_f32), iSTFT + clamp (hift_istft_f32); torch "
                         "(no minmo CUDA path yet): flow encoder (conformer, rel-pos attention), the whole estimator "
                         "U-Net (convs, attention, MLPs), HiFT f0 predictor, NSF source (torch port), filter network; "
                         "one CUDA graph", speaker_prompt="none (speaker embedding only)")
        with self.guard("token2wav_check"):
            run()
            mel_m, audio_m = t2w.x.clone(), t2w.audio.clone()
            mel_r, audio_r = t2w.run(False)
            ch = self.res["checks"]
            ch["token2wav_mel_rel_err_vs_reference"] = rel(mel_m, mel_r)
            ch["token2wav_audio_rel_err_vs_reference"] = rel(audio_m, audio_r)
            f0 = self.hift.f0(mel_r)  # the torch NSF source against the numpy reference (host)
            l_cpu = copy.deepcopy(self.hift.m_source.l_linear).cpu()
            with torch.device("cpu"):
                src_np = R.hift.source_from_f0(f0.cpu(), l_cpu, self.hift.cfg, 0)
            src = source_torch(f0, self.hift.m_source.l_linear, self.hift.cfg, t2w.src_noise)
            ch["hift_source_torch_rel_err_vs_numpy_reference"] = rel(src.cpu(), src_np)
        with self.guard("token2wav_first_chunk_torch_eager"):
            self.record("token2wav_first_chunk", "torch_eager", self.timed(lambda: t2w.run(False), self.args.ref_iters),
                        what="reference Flow encoder, ConditionalCFM.solve, HiFT.decode; NSF source: torch port")
            self.t2w = t2w

    def token2wav_compile(self):
        est_c = self.compiled(self.flow.decoder.estimator, dynamic=False)
        t0 = time.time()
        self.t2w.run(False, estimator=est_c)
        sync(self.dev)
        self.record("token2wav_first_chunk", "torch_compile",
                    self.timed(lambda: self.t2w.run(False, estimator=est_c), self.args.ref_iters),
                    first_call_s=round(time.time() - t0, 1), what="torch.compile of the estimator (the bulk), rest eager")

    # -- summary
    def summarize(self):
        st, cr = self.stages, self.res.get("copy_rate", {}).get("gbs_p50")
        for name, paths in st.items():
            mm = paths.get("minmo")
            if not mm or "bytes_read" not in mm:
                continue
            b = mm["bytes_read"]
            mm["orin_floor_ms"] = round(b / ORIN_GBS / 1e6, 3)
            if cr:
                mm["achieved_gbs"] = round(b / mm["p50_ms"] / 1e6, 1)
                mm["frac_of_copy_rate"] = round(b / mm["p50_ms"] / 1e6 / cr, 3)
                mm["orin_projection_same_efficiency_ms"] = round(mm["p50_ms"] * cr / ORIN_GBS, 2)
        p50 = lambda s, path="minmo": st.get(s, {}).get(path, {}).get("p50_ms")  # noqa: E731
        parts = ("stt_5_tokens", "voice_lm_15_tokens", "token2wav_first_chunk")
        comp = {}
        for path in ("minmo", "torch_eager", "torch_compile"):
            vals = [p50(s, path) for s in parts]
            if all(v is not None for v in vals):
                comp[path] = {"p50_ms": round(sum(vals), 3), "parts_ms": dict(zip(parts, [round(v, 3) for v in vals]))}
        if "minmo" in comp:
            comp["orin_floor_ms"] = round(sum(st[s]["minmo"].get("orin_floor_ms", 0) for s in parts), 2)
        st["first_audio_packet"] = {
            "composition": " + ".join(parts) + " (p50s, critical path)",
            "not_included": "the log-mel frontend of the last chunk, and the wait for Token2Wav's 3 lookahead tokens "
                            "(taken as available; streaming them costs 3 more voice-LM steps after the next 5 text tokens)",
            **comp}
        targets = {"stt_first_token": 10.0, "voice_lm_15_tokens": 4.0, "token2wav_first_chunk": 8.0}
        summ = {}
        for s in ("duplex_predictor", "stt_first_token", "stt_5_tokens", "voice_lm_15_tokens", "token2wav_first_chunk"):
            v = p50(s)
            if v is None:
                summ[s] = "not measured (see errors)"
                continue
            row = {"minmo_p50_ms": round(v, 3)}
            if s in targets:
                row["target_ms"] = targets[s]
                row["target"] = "met" if v <= targets[s] else "missed"
            for base in ("torch_eager", "torch_compile", "hf_transformers"):
                b = p50(s, base)
                if b is not None:
                    row[f"speedup_vs_{base}"] = round(b / v, 2)
            for base in ("torch_compile", "hf_transformers"):  # the "faster than" targets, one verdict each
                k = f"speedup_vs_{base}"
                row[f"faster_than_{base}"] = ("met" if row[k] > 1 else "missed") if k in row else "not measured"
            summ[s] = row
        fap = st["first_audio_packet"].get("minmo")
        summ["first_audio_packet"] = ({"minmo_p50_ms": fap["p50_ms"], "target_ms": 50.0,
                                       "target": "met" if fap["p50_ms"] <= 50 else "missed"} if fap else "not measured")
        summ["stt_first_token_fp8"] = "not measured: the 9-row prefill takes cuBLAS bf16; fp8 GEMV covers <= 8 rows"
        if self.args.dry_run_cpu:
            summ["note"] = "host dry run through the CPU twins: the numbers only exercise the bench"
        self.res["summary"] = summ

    def print_table(self):
        """The latency table with the Orin projection, as text."""
        cr = self.res.get("copy_rate", {}).get("gbs_p50", 0)
        print(f"\nlatency p50 / p99 ms on {self.res['device']['name']} (copy rate {cr:.0f} GB/s); Orin floor = bytes / {ORIN_GBS} GB/s")
        print(f"{'stage':24s} {'minmo':>16s} {'eager':>9s} {'compile':>9s} {'transformers':>12s} {'MB read':>9s} "
              f"{'of copy':>8s} {'Orin floor':>10s}")
        for name, paths in self.stages.items():
            if name == "first_audio_packet":
                continue
            mm = paths.get("minmo", {})
            cell = lambda k: f"{paths[k]['p50_ms']:9.2f}" if k in paths else f"{'-':>9s}"  # noqa: E731
            print(f"{name:24s} {mm.get('p50_ms', float('nan')):7.2f} / {mm.get('p99_ms', float('nan')):6.2f} "
                  f"{cell('torch_eager')} {cell('torch_compile')} {cell('hf_transformers'):>12s} "
                  f"{mm.get('bytes_read', 0) / 1e6:9.1f} {mm.get('frac_of_copy_rate', float('nan')):8.1%} "
                  f"{mm.get('orin_floor_ms', float('nan')):8.2f} ms")
        fap = self.stages.get("first_audio_packet", {})
        if "minmo" in fap:
            print(f"first audio packet = {fap['composition']}: minmo {fap['minmo']['p50_ms']:.2f} ms, Orin floor "
                  f"{fap.get('orin_floor_ms', float('nan')):.2f} ms"
                  + "".join(f", {k} {fap[k]['p50_ms']:.1f} ms" for k in ("torch_eager", "torch_compile") if k in fap))

    def run(self):
        a = self.args
        self.section("copy_rate", self.copy_rate)
        if self.section("build_weights", self.build) is None and "build_weights" in self.res["errors"]:
            return self.finish()
        self.section("duplex_predictor", self.duplex)
        self.section("stt", self.stt)
        self.section("voice_lm", self.voice_lm)
        self.section("token2wav", self.token2wav)
        self.summarize()
        self.save()
        # baselines that may be cut by the budget, cheapest first; each needs its stage's eager section
        # (name, fn, attribute its stage's eager section sets, disabled, rough seconds on an H100)
        plan = [("duplex_compile", self.duplex_compile, "dup_eager", a.no_compile, 10),
                ("voice_hf", self.voice_hf, "voice_eager", a.no_hf, 10),
                ("stt_hf", self.stt_hf, "stt_parts", a.no_hf, 25),
                ("token2wav_compile", self.token2wav_compile, "t2w", a.no_compile, 30),
                ("voice_compile", self.voice_compile, "voice_eager", a.no_compile, 20),
                ("stt_compile", self.stt_compile, "stt_parts", a.no_compile, 45)]
        for name, fn, need, off, needs_s in plan:
            if off:
                self.res["skipped"][name] = "disabled by option"
            elif not hasattr(self, need):
                self.res["skipped"][name] = "its stage failed (see errors)"
            else:
                self.section(name, fn, needs_s=0 if a.dry_run_cpu else needs_s)
                self.summarize()
                self.save()
        return self.finish()

    def finish(self):
        if "build_weights" not in self.res["errors"]:
            self.summarize()
        self.save()
        with contextlib.suppress(Exception):
            self.print_table()
        print(json.dumps(self.res.get("summary", {}), indent=1))
        return self.res


def _smi() -> str | None:
    try:
        import subprocess
        return subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:  # noqa: BLE001
        return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", required=True, help="libminmo_kernels.so (built with CUDA, or CPU-only for --dry-run-cpu)")
    ap.add_argument("--out", required=True, help="JSON result path (written after every section)")
    ap.add_argument("--stt-ctx", type=int, default=512, help="LLM KV positions before the last chunk (system prompt + earlier speech)")
    ap.add_argument("--duplex-ctx", type=int, default=64, help="duplex predictor KV positions (earlier audio tokens)")
    ap.add_argument("--iters", type=int, default=30, help="runs per minmo measurement")
    ap.add_argument("--ref-iters", type=int, default=5, help="runs per baseline measurement")
    ap.add_argument("--budget-s", type=float, default=150, help="skip the remaining torch.compile / transformers baselines after this")
    ap.add_argument("--compile-backend", default="inductor", help="torch.compile backend (the dry run uses 'eager')")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-hf", action="store_true")
    ap.add_argument("--dry-run-cpu", action="store_true", help="tiny sizes on the host through the CPU twins (no GPU)")
    ap.add_argument("--full-sizes", action="store_true", help="with --dry-run-cpu: MinMo sizes (slow; see --llm-layers)")
    ap.add_argument("--llm-layers", type=int, default=0, help="override the LLM's layer count (host runs at full width)")
    args = ap.parse_args(argv)
    if args.dry_run_cpu:
        if args.compile_backend == "inductor":
            args.compile_backend = "eager"
        args.stt_ctx = min(args.stt_ctx, 40)
        args.iters, args.ref_iters = min(args.iters, 3), min(args.ref_iters, 2)
    elif not torch.cuda.is_available():
        print("SKIP: no CUDA device (use --dry-run-cpu for the host dry run)")
        return None
    torch._dynamo.config.cache_size_limit = 64
    torch.manual_seed(0)
    with torch.device("cpu" if args.dry_run_cpu else "cuda"):
        return LatencyTable(args).run()


if __name__ == "__main__":
    main()
