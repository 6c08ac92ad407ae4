"""Kernel library (kernels/): the CPU twins against the PyTorch reference (export/reference) through
the ctypes binding of libminmo_kernels.so, and, where a GPU is present, the CUDA-vs-twin harness.

The library is built from kernels/ as a standalone CMake project under build/kernels-py."""
from __future__ import annotations

import functools
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "kernels" / "python"))
import minmo_kernels_ctypes as mk  # noqa: E402

from minmo_rt.export.reference.configs import Qwen2Config  # noqa: E402
from minmo_rt.export.reference.layers import Qwen2Layer, RMSNorm, apply_rope, attention, causal_mask, rope_cos_sin  # noqa: E402

RNG = np.random.default_rng(7)


@pytest.fixture(scope="module")
def k():
    return mk.Kernels(mk.build(ROOT / "build" / "kernels-py"))


# ---- helpers --------------------------------------------------------------------------------
def bf16(a) -> np.ndarray:
    """float array -> bf16 bits (uint16), rounded by torch."""
    t = torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32)).to(torch.bfloat16)
    return t.view(torch.int16).numpy().view(np.uint16).copy()


def f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def ptr(a: np.ndarray) -> int:
    assert a.flags.c_contiguous
    return a.ctypes.data


def rel(a, ref) -> float:
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(a - ref) / np.linalg.norm(ref))


BF16_TOL = 5e-3  # bf16 output rounding is 2^-9 relative per element


# ---- norm, MLP epilogue ---------------------------------------------------------------------
@pytest.mark.parametrize("rows,dim,with_x", [(1, 7, True), (3, 896, True), (5, 257, False)])
def test_rmsnorm_residual_bf16(k, rows, dim, with_x):
    x = bf16(RNG.standard_normal((rows, dim)))
    res = RNG.standard_normal((rows, dim)).astype(np.float32) * 3
    gamma = bf16(RNG.standard_normal(dim))
    out = np.full((rows, dim), 0xFFFF, np.uint16)
    res_k = res.copy()
    k.cpu.rmsnorm_residual_bf16(ptr(x) if with_x else None, ptr(res_k), ptr(gamma), ptr(out), rows, dim, 1e-6)
    res_ref = torch.tensor(res, dtype=torch.float64) + (torch.tensor(f32(x), dtype=torch.float64) if with_x else 0)
    norm = RMSNorm(dim, 1e-6).double()
    with torch.no_grad():
        norm.weight.copy_(torch.tensor(f32(gamma)))
        out_ref = norm(res_ref)
    assert rel(res_k, res_ref) < 1e-7
    assert rel(f32(out), out_ref) < BF16_TOL


def test_rmsnorm_residual_f32_and_status(k):
    x = RNG.standard_normal((2, 33)).astype(np.float32)
    res, gamma, out = x * 2, RNG.standard_normal(33).astype(np.float32), np.empty_like(x)
    expect = (res + x) / np.sqrt(((res + x).astype(np.float64) ** 2).mean(-1, keepdims=True) + 1e-6) * gamma
    k.cpu.rmsnorm_residual_f32(ptr(x), ptr(res), ptr(gamma), ptr(out), 2, 33, 1e-6)
    assert rel(out, expect) < 1e-6
    with pytest.raises(mk.KernelError, match="invalid argument"):
        k.cpu.rmsnorm_residual_f32(ptr(x), ptr(res), ptr(gamma), ptr(res), 2, 33, 1e-6)  # out aliases residual


@pytest.mark.parametrize("rows,ffn", [(1, 37), (4, 4864)])
def test_silu_mul(k, rows, ffn):
    gu = RNG.standard_normal((rows, 2 * ffn)).astype(np.float32) * 2
    ref = F.silu(torch.tensor(gu[:, :ffn], dtype=torch.float64)) * torch.tensor(gu[:, ffn:], dtype=torch.float64)
    out = np.empty((rows, ffn), np.float32)
    k.cpu.silu_mul_f32(ptr(gu), ptr(out), rows, ffn)
    assert rel(out, ref) < 1e-6
    gub = bf16(gu)
    outb = np.empty((rows, ffn), np.uint16)
    k.cpu.silu_mul_bf16(ptr(gub), ptr(outb), rows, ffn)
    ref_b = F.silu(torch.tensor(f32(gub[:, :ffn]), dtype=torch.float64)) * torch.tensor(f32(gub[:, ffn:]), dtype=torch.float64)
    assert rel(f32(outb), ref_b) < BF16_TOL


# ---- weight-only products -------------------------------------------------------------------
def quantize(w: np.ndarray, fmt: str, group: int = 128):
    """Quantizes a float weight [N, K] in the layout of minmo_kernels/gemv.h. Returns (arrays for the
    call, dequantized weight computed independently of the packing)."""
    if fmt == "bf16":
        wb = bf16(w)
        return (wb,), f32(wb)
    if fmt == "int8":
        scale = (np.abs(w).max(1) / 127).astype(np.float32)
        q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
        return (q, scale), q.astype(np.float64) * scale[:, None]
    if fmt == "fp8":
        scale = (np.abs(w).max(1) / 448).astype(np.float32)
        q = torch.tensor(w / scale[:, None], dtype=torch.float32).to(torch.float8_e4m3fn)
        return (q.view(torch.uint8).numpy().copy(), scale), q.double().numpy() * scale[:, None]
    n, kk = w.shape
    g = w.reshape(n, kk // group, group)
    if fmt == "int4sym":
        scale = f32(bf16(np.abs(g).max(-1) / 7))
        q = np.clip(np.rint(g / scale[..., None]), -8, 7).astype(np.int64) + 8
        zero = np.full(scale.shape, 8, np.uint8)
    else:
        lo, hi = g.min(-1), g.max(-1)
        scale = f32(bf16((hi - lo) / 15))
        zero = np.clip(np.rint(-lo / scale), 0, 15).astype(np.uint8)
        q = np.clip(np.rint(g / scale[..., None]) + zero[..., None], 0, 15).astype(np.int64)
    deq = ((q - zero[..., None].astype(np.int64)) * scale[..., None].astype(np.float64)).reshape(n, kk)
    q = q.reshape(n, kk)
    packed = (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8)
    return (packed, bf16(scale), None if fmt == "int4sym" else zero), deq


def run_gemv(k, fmt, x, arrays, batch, n, kk, gated=False, group=128):
    y = np.full((batch, n), 0xFFFF, np.uint16)
    pre = "gemv_silu_" if gated else "gemv_"
    if fmt == "bf16":
        k.cpu.__dict__[pre + "bf16"](ptr(x), ptr(arrays[0]), ptr(y), batch, n, kk)
    elif fmt in ("int8", "fp8"):
        k.cpu.__dict__[pre + fmt](ptr(x), ptr(arrays[0]), ptr(arrays[1]), ptr(y), batch, n, kk)
    else:
        packed, scale, zero = arrays
        k.cpu.__dict__[pre + "int4"](ptr(x), ptr(packed), ptr(scale), None if zero is None else ptr(zero), ptr(y), batch, n,
                                     kk, group)
    return y


@pytest.mark.parametrize("fmt", ["bf16", "int8", "fp8", "int4sym", "int4asym"])
@pytest.mark.parametrize("batch,n,kk", [(1, 45, 256), (3, 17, 384), (8, 5, 896)])
@pytest.mark.parametrize("gated", [False, True])
def test_gemv_formats(k, fmt, batch, n, kk, gated):
    rows = 2 * n if gated else n
    w = RNG.standard_normal((rows, kk)).astype(np.float32) * 0.05
    arrays, deq = quantize(w, fmt)
    x = bf16(RNG.standard_normal((batch, kk)))
    y = run_gemv(k, fmt, x, arrays, batch, n, kk, gated)
    xf = torch.tensor(f32(x), dtype=torch.float64)

    def product(wm):
        full = xf @ torch.as_tensor(wm, dtype=torch.float64).T
        return F.silu(full[:, :n]) * full[:, n:] if gated else full

    assert rel(f32(y), product(deq)) < BF16_TOL
    # The quantized product still approximates the float one (catches a wrong dequantization that
    # the twin and the reference would share).
    assert rel(f32(y), product(w)) < {"bf16": 1e-2, "int8": 2e-2, "fp8": 8e-2}.get(fmt, 0.25)


def test_gemv_rejects_bad_shapes(k):
    x, w, y = np.zeros((9, 64), np.uint16), np.zeros((4, 64), np.uint16), np.zeros((9, 4), np.uint16)
    with pytest.raises(mk.KernelError, match="invalid argument"):
        k.cpu.gemv_bf16(ptr(x), ptr(w), ptr(y), 9, 4, 64)  # batch > 8
    s = np.ones((4, 2), np.uint16)
    assert k.cpu.gemv_int4.raw(ptr(x), ptr(w), ptr(s), None, ptr(y), 1, 4, 160, 128) == 1  # K % group
    assert k.cpu.gemv_int4.raw(ptr(x), ptr(w), ptr(s), None, ptr(y), 1, 4, 200, 100) == 1  # group % 32


# ---- attention ------------------------------------------------------------------------------

@pytest.mark.parametrize("hq,hkv,d,tokens,pos", [(4, 2, 64, 3, 5), (7, 1, 128, 1, 40), (6, 3, 64, 4, 29),
                                                 (4, 2, 32, 3, 5), (6, 1, 32, 4, 30)])
def test_qkv_rope_append(k, hq, hkv, d, tokens, pos):
    max_seq, theta = 32, 1e6
    width = (hq + 2 * hkv) * d
    qkv, bias = bf16(RNG.standard_normal((tokens, width))), bf16(RNG.standard_normal(width) * 0.3)
    kc, vc = bf16(RNG.standard_normal((hkv, max_seq, d))), bf16(RNG.standard_normal((hkv, max_seq, d)))
    kc0, vc0 = kc.copy(), vc.copy()
    q = np.full((tokens, hq, d), 0xFFFF, np.uint16)
    p = np.array([pos], np.int32)
    k.cpu.qkv_rope_append_bf16(ptr(qkv), ptr(bias), ptr(p), ptr(q), ptr(kc), ptr(vc), tokens, hq, hkv, d, max_seq, theta)
    v = torch.tensor(f32(qkv) + f32(bias), dtype=torch.float64).view(tokens, hq + 2 * hkv, d)
    cos, sin = rope_cos_sin(torch.arange(pos, pos + tokens), d, theta, torch.float64)
    q_ref, k_ref, v_ref = apply_rope(v[:, :hq], cos, sin), apply_rope(v[:, hq:hq + hkv], cos, sin), v[:, hq + hkv:]
    assert rel(f32(q), q_ref) < BF16_TOL
    inside = [t for t in range(tokens) if pos + t < max_seq]
    for t in inside:
        assert rel(f32(kc[:, pos + t]), k_ref[t]) < BF16_TOL
        assert rel(f32(vc[:, pos + t]), v_ref[t]) < BF16_TOL
    untouched = [s for s in range(max_seq) if not pos <= s < pos + tokens]
    assert np.array_equal(kc[:, untouched], kc0[:, untouched]) and np.array_equal(vc[:, untouched], vc0[:, untouched])


def test_qkv_append_without_rope(k):
    """theta == 0: q and k are stored as they are (the input projector's attention has no positions)."""
    hq, hkv, d, tokens, pos, max_seq = 4, 4, 64, 5, 3, 16
    width = (hq + 2 * hkv) * d
    qkv, bias = bf16(RNG.standard_normal((tokens, width))), bf16(RNG.standard_normal(width) * 0.3)
    kc, vc = np.zeros((hkv, max_seq, d), np.uint16), np.zeros((hkv, max_seq, d), np.uint16)
    q = np.full((tokens, hq, d), 0xFFFF, np.uint16)
    p = np.array([pos], np.int32)
    k.cpu.qkv_rope_append_bf16(ptr(qkv), ptr(bias), ptr(p), ptr(q), ptr(kc), ptr(vc), tokens, hq, hkv, d, max_seq, 0.0)
    v = (f32(qkv) + f32(bias)).reshape(tokens, hq + 2 * hkv, d)
    assert rel(f32(q), v[:, :hq]) < BF16_TOL
    assert rel(f32(kc[:, pos:pos + tokens]).transpose(1, 0, 2), v[:, hq:hq + hkv]) < BF16_TOL
    assert rel(f32(vc[:, pos:pos + tokens]).transpose(1, 0, 2), v[:, hq + hkv:]) < BF16_TOL
    with pytest.raises(mk.KernelError, match="invalid argument"):
        k.cpu.qkv_rope_append_bf16(ptr(qkv), ptr(bias), ptr(p), ptr(q), ptr(kc), ptr(vc), tokens, hq, hkv, d, max_seq,
                                   -1.0)


@pytest.mark.parametrize("hq,hkv,d,tokens,pos", [(4, 2, 64, 1, 0), (14, 2, 64, 1, 77), (28, 4, 128, 1, 130),
                                                 (6, 3, 128, 9, 20), (4, 4, 64, 16, 0), (4, 2, 32, 1, 77),
                                                 (6, 1, 32, 9, 20)])
def test_attention_matches_reference(k, hq, hkv, d, tokens, pos):
    max_seq, L = 160, pos + tokens
    q = bf16(RNG.standard_normal((tokens, hq, d)))
    kc, vc = bf16(RNG.standard_normal((hkv, max_seq, d))), bf16(RNG.standard_normal((hkv, max_seq, d)))
    kc[:, L:] = vc[:, L:] = 0x7FC0  # NaN: must not be read
    p = np.array([pos], np.int32)
    scale = 1 / math.sqrt(d)
    out = np.full((tokens, hq, d), 0xFFFF, np.uint16)
    if tokens == 1:
        k.cpu.decode_attention_bf16(ptr(q), ptr(kc), ptr(vc), ptr(p), ptr(out), None, hq, hkv, d, max_seq, 64, scale)
    else:
        k.cpu.prefill_attention_bf16(ptr(q), ptr(kc), ptr(vc), ptr(p), ptr(out), tokens, hq, hkv, d, max_seq, scale)
    kt = torch.tensor(f32(kc[:, :L]), dtype=torch.float64).transpose(0, 1)
    vt = torch.tensor(f32(vc[:, :L]), dtype=torch.float64).transpose(0, 1)
    ref = attention(torch.tensor(f32(q), dtype=torch.float64), kt, vt, causal_mask(tokens, L), scale)
    assert rel(f32(out), ref) < BF16_TOL


def test_attention_rejects_bad_shapes(k):
    a = np.zeros(4096, np.uint16)
    p = np.zeros(1, np.int32)
    with pytest.raises(mk.KernelError):
        k.cpu.prefill_attention_bf16(ptr(a), ptr(a), ptr(a), ptr(p), ptr(a[2048:]), 1, 4, 2, 96, 8, 1.0)  # D 96
    with pytest.raises(mk.KernelError):
        k.cpu.prefill_attention_bf16(ptr(a), ptr(a), ptr(a), ptr(p), ptr(a[2048:]), 1, 4, 2, 16, 8, 1.0)  # D 16
    with pytest.raises(mk.KernelError):
        k.cpu.prefill_attention_bf16(ptr(a), ptr(a), ptr(a), ptr(p), ptr(a[2048:]), 1, 5, 2, 64, 8, 1.0)  # Hq % Hkv
    assert k.decode_workspace_floats(28, 128, 1000, 64) == 28 * 16 * 130
    with pytest.raises(ValueError):
        k.decode_workspace_floats(28, 128, 1000, 48)


# ---- fused decode-step twins (minmo_kernels/fused.h, decode_attention_fused) -------------------
def fmt_args(fmt, arrays, group=128):
    """(weight pointers, trailing group argument) of a format's call, from quantize()'s arrays."""
    if fmt == "bf16":
        return [ptr(arrays[0])], []
    if fmt in ("int8", "fp8"):
        return [ptr(arrays[0]), ptr(arrays[1])], []
    packed, scale, zero = arrays
    return [ptr(packed), ptr(scale), None if zero is None else ptr(zero)], [group]


def call_name(prefix, fmt):
    return prefix + ("int4" if fmt.startswith("int4") else fmt)


@pytest.mark.parametrize("fmt", ["bf16", "int8", "fp8", "int4sym", "int4asym"])
@pytest.mark.parametrize("n,kk", [(45, 256), (896, 384)])
def test_gemv_norm_twin(k, fmt, n, kk):
    """residual += x W^T (fp64 on the dequantized weight, not rounded to bf16); out = RMSNorm(residual) * gamma
    by the reference RMSNorm; called twice, the residual accumulates both products."""
    w = RNG.standard_normal((n, kk)).astype(np.float32) * 0.05
    arrays, deq = quantize(w, fmt)
    x, gamma = bf16(RNG.standard_normal(kk)), bf16(1 + 0.1 * RNG.standard_normal(n))
    res0 = RNG.standard_normal(n).astype(np.float32) * 3
    res, out = res0.copy(), np.full(n, 0xFFFF, np.uint16)
    wp, grp = fmt_args(fmt, arrays)
    fn = k.cpu.__dict__[call_name("gemv_norm_", fmt)]
    for _ in range(2):
        fn(ptr(x), *wp, ptr(res), ptr(gamma), ptr(out), None, n, kk, *grp, 1e-6)
    prod = torch.tensor(f32(x), dtype=torch.float64) @ torch.as_tensor(deq, dtype=torch.float64).T
    res_ref = torch.tensor(res0, dtype=torch.float64) + 2 * prod
    norm = RMSNorm(n, 1e-6).double()
    with torch.no_grad():
        norm.weight.copy_(torch.tensor(f32(gamma)))
        out_ref = norm(res_ref)
    assert rel(res, res_ref) < 1e-6
    assert rel(f32(out), out_ref) < BF16_TOL


@pytest.mark.parametrize("fmt", ["bf16", "int8", "fp8", "int4asym"])
@pytest.mark.parametrize("hq,hkv,d,pos", [(4, 2, 64, 5), (7, 1, 128, 31), (3, 1, 64, 40), (4, 2, 32, 31),
                                        (6, 1, 32, 40)])
def test_gemv_qkv_rope_twin(k, fmt, hq, hkv, d, pos):
    """q|k|v = x W^T + bias (fp64, not rounded), then RoPE (reference apply_rope) and the cache append at
    pos; a position beyond the cache (40 >= 32) writes q only."""
    max_seq, theta, kk = 32, 1e6, 256
    rows = (hq + 2 * hkv) * d
    w = RNG.standard_normal((rows, kk)).astype(np.float32) * 0.05
    arrays, deq = quantize(w, fmt)
    x, bias = bf16(RNG.standard_normal(kk)), bf16(RNG.standard_normal(rows) * 0.3)
    kc, vc = bf16(RNG.standard_normal((hkv, max_seq, d))), bf16(RNG.standard_normal((hkv, max_seq, d)))
    kc0, vc0 = kc.copy(), vc.copy()
    q = np.full((hq, d), 0xFFFF, np.uint16)
    p = np.array([pos], np.int32)
    wp, grp = fmt_args(fmt, arrays)
    k.cpu.__dict__[call_name("gemv_qkv_rope_", fmt)](ptr(x), *wp, ptr(bias), ptr(p), ptr(q), ptr(kc), ptr(vc), hq, hkv, d,
                                                     max_seq, kk, *grp, theta)
    v = (torch.tensor(f32(x), dtype=torch.float64) @ torch.as_tensor(deq, dtype=torch.float64).T
         + torch.tensor(f32(bias), dtype=torch.float64)).view(1, hq + 2 * hkv, d)
    cos, sin = rope_cos_sin(torch.arange(pos, pos + 1), d, theta, torch.float64)
    assert rel(f32(q), apply_rope(v[:, :hq], cos, sin)[0]) < BF16_TOL
    if pos < max_seq:
        assert rel(f32(kc[:, pos]), apply_rope(v[:, hq:hq + hkv], cos, sin)[0]) < BF16_TOL
        assert rel(f32(vc[:, pos]), v[0, hq + hkv:]) < BF16_TOL
    untouched = [s for s in range(max_seq) if s != pos]
    assert np.array_equal(kc[:, untouched], kc0[:, untouched]) and np.array_equal(vc[:, untouched], vc0[:, untouched])


@pytest.mark.parametrize("hq,hkv,d,pos", [(28, 4, 128, 130), (14, 2, 64, 0), (5, 5, 64, 300), (4, 2, 32, 130),
                                        (6, 1, 32, 300)])
def test_decode_attention_fused_twin(k, hq, hkv, d, pos):
    max_seq = 160
    L = min(pos + 1, max_seq)
    q = bf16(RNG.standard_normal((hq, d)))
    kc, vc = bf16(RNG.standard_normal((hkv, max_seq, d))), bf16(RNG.standard_normal((hkv, max_seq, d)))
    kc[:, L:] = vc[:, L:] = 0x7FC0
    out = np.full((hq, d), 0xFFFF, np.uint16)
    p = np.array([pos], np.int32)
    k.cpu.decode_attention_fused_bf16(ptr(q), ptr(kc), ptr(vc), ptr(p), ptr(out), None, None, hq, hkv, d, max_seq, 7,
                                      1 / math.sqrt(d))
    kt = torch.tensor(f32(kc[:, :L]), dtype=torch.float64).transpose(0, 1)
    vt = torch.tensor(f32(vc[:, :L]), dtype=torch.float64).transpose(0, 1)
    ref = attention(torch.tensor(f32(q), dtype=torch.float64)[None], kt, vt, causal_mask(1, L), 1 / math.sqrt(d))[0]
    assert rel(f32(out), ref) < BF16_TOL


def test_fused_twins_reject_bad_arguments(k):
    a = np.zeros(1 << 16, np.uint16)
    p = np.zeros(1, np.int32)
    with pytest.raises(mk.KernelError, match="invalid argument"):  # 64 (2 D + 8) + 2 G D > 48 KiB
        k.cpu.decode_attention_fused_bf16(ptr(a), ptr(a), ptr(a), ptr(p), ptr(a[32768:]), None, None, 32, 1, 256, 4, 2, 1.0)
    with pytest.raises(mk.KernelError, match="invalid argument"):  # max_splits = 0
        k.cpu.decode_attention_fused_bf16(ptr(a), ptr(a), ptr(a), ptr(p), ptr(a[32768:]), None, None, 4, 2, 64, 4, 0, 1.0)
    assert k.decode_fused_workspace_floats(28, 128, 66) == 28 * 66 * 130
    with pytest.raises(ValueError):
        k.decode_fused_workspace_floats(28, 128, 0)
    r = np.zeros(64, np.float32)
    with pytest.raises(mk.KernelError, match="invalid argument"):  # out overlaps x
        k.cpu.gemv_norm_bf16(ptr(a), ptr(a), ptr(r), ptr(a), ptr(a[4:]), None, 8, 16, 1e-6)
    with pytest.raises(mk.KernelError, match="invalid argument"):  # head_dim 96
        k.cpu.gemv_qkv_rope_bf16(ptr(a), ptr(a), None, ptr(p), ptr(a[32768:]), ptr(a), ptr(a), 2, 1, 96, 8, 64, 1e4)
    assert k.cpu.gemv_norm_int4.raw(ptr(a), ptr(a), ptr(a), None, ptr(r), ptr(a), ptr(a[32768:]), None, 8, 160, 128,
                                    1e-6) == 1  # K % group


# ---- one decoder layer from the kernels vs the reference module ------------------------------
@pytest.mark.parametrize("h,d", [(256, 64), (128, 32)])  # (128, 32): minmo-tiny's LLM layer
def test_decoder_layer_chain_matches_reference(k, h, d):
    """Prefill 6 tokens then decode 1 through a Qwen2Layer built from the twins (bf16 weights and
    activations, fp32 residual), against export.reference Qwen2Layer in fp64 on the same weights."""
    hq, hkv, ffn, max_seq = 4, 2, 384, 16
    cfg = Qwen2Config(hidden_size=h, intermediate_size=ffn, num_attention_heads=hq, num_key_value_heads=hkv,
                      head_dim=d, rope_theta=10000.0)
    torch.manual_seed(0)
    layer = Qwen2Layer(cfg).double()
    with torch.no_grad():  # weights on the bf16 grid so both sides use the same values
        for prm in layer.parameters():
            prm.copy_(torch.randn_like(prm) * (0.05 if prm.dim() == 2 else 0.3) + (1.0 if prm.dim() == 1 and prm.numel() == h else 0.0))
            prm.copy_(prm.to(torch.bfloat16).double())
    at, mlp = layer.self_attn, layer.mlp
    as_bf16 = lambda t: bf16(t.detach().float().numpy())  # noqa: E731
    w_qkv = as_bf16(torch.cat([at.q_proj.weight, at.k_proj.weight, at.v_proj.weight]))
    b_qkv = as_bf16(torch.cat([at.q_proj.bias, at.k_proj.bias, at.v_proj.bias]))
    w_o, w_gu, w_down = as_bf16(at.o_proj.weight), as_bf16(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])), as_bf16(mlp.down_proj.weight)
    g1, g2 = as_bf16(layer.input_layernorm.weight), as_bf16(layer.post_attention_layernorm.weight)
    kc, vc = np.zeros((hkv, max_seq, d), np.uint16), np.zeros((hkv, max_seq, d), np.uint16)

    def step(x_in: np.ndarray, pos: int) -> np.ndarray:
        t = x_in.shape[0]
        res = x_in.astype(np.float32).copy()
        hn = np.empty((t, h), np.uint16)
        k.cpu.rmsnorm_residual_bf16(None, ptr(res), ptr(g1), ptr(hn), t, h, cfg.rms_norm_eps)
        qkv = np.empty((t, (hq + 2 * hkv) * d), np.uint16)
        k.cpu.gemv_bf16(ptr(hn), ptr(w_qkv), ptr(qkv), t, qkv.shape[1], h)
        q, att = np.empty((t, hq, d), np.uint16), np.empty((t, hq, d), np.uint16)
        p = np.array([pos], np.int32)
        k.cpu.qkv_rope_append_bf16(ptr(qkv), ptr(b_qkv), ptr(p), ptr(q), ptr(kc), ptr(vc), t, hq, hkv, d, max_seq, cfg.rope_theta)
        if t == 1:
            k.cpu.decode_attention_bf16(ptr(q), ptr(kc), ptr(vc), ptr(p), ptr(att), None, hq, hkv, d, max_seq, 32, 1 / math.sqrt(d))
        else:
            k.cpu.prefill_attention_bf16(ptr(q), ptr(kc), ptr(vc), ptr(p), ptr(att), t, hq, hkv, d, max_seq, 1 / math.sqrt(d))
        o = np.empty((t, h), np.uint16)
        k.cpu.gemv_bf16(ptr(att), ptr(w_o), ptr(o), t, h, hq * d)
        k.cpu.rmsnorm_residual_bf16(ptr(o), ptr(res), ptr(g2), ptr(hn), t, h, cfg.rms_norm_eps)
        gu, act, down = np.empty((t, 2 * ffn), np.uint16), np.empty((t, ffn), np.uint16), np.empty((t, h), np.uint16)
        k.cpu.gemv_bf16(ptr(hn), ptr(w_gu), ptr(gu), t, 2 * ffn, h)
        k.cpu.silu_mul_bf16(ptr(gu), ptr(act), t, ffn)
        k.cpu.gemv_bf16(ptr(act), ptr(w_down), ptr(down), t, h, ffn)
        return res + f32(down)

    x = RNG.standard_normal((7, h)).astype(np.float32)
    out_prefill, out_decode = step(x[:6], 0), step(x[6:], 6)
    with torch.no_grad():
        xt = torch.tensor(x, dtype=torch.float64)
        cos, sin = rope_cos_sin(torch.arange(0, 6), d, cfg.rope_theta, torch.float64)
        ref_prefill, kv = layer(xt[:6], cos, sin)
        cos, sin = rope_cos_sin(torch.arange(6, 7), d, cfg.rope_theta, torch.float64)
        ref_decode, _ = layer(xt[6:], cos, sin, kv)
    assert rel(out_prefill, ref_prefill) < 1e-2
    assert rel(out_decode, ref_decode) < 1e-2


# ---- CUDA harness (GPU only) ----------------------------------------------------------------
def _gpu_present() -> bool:
    if shutil.which("nvcc") is None or shutil.which("nvidia-smi") is None:
        return False
    r = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return r.returncode == 0 and "GPU" in r.stdout


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu_present(), reason="needs nvcc and a CUDA device")
def test_cuda_kernels_match_cpu_twins():
    lib = mk.build(ROOT / "build" / "kernels-gpu", cuda=True, cuda_arch="native", jobs=8)
    r = subprocess.run([str(lib.parent / "minmo_kernels_cuda_test")], capture_output=True, text=True, timeout=600)
    print(r.stdout[-4000:])
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "failed: PASS" in r.stdout.replace("0 failed: PASS", "failed: PASS")
    kern = mk.Kernels(lib)
    assert kern.has_cuda


# ---- bench/gpu/decode_bench.py logic on the host (the device run gets one shot) ----------------
@pytest.fixture(scope="module")
def bench_mod():
    sys.path.insert(0, str(ROOT / "bench" / "gpu"))
    import decode_bench

    return decode_bench


TINY = dict(name="tiny", hidden=256, layers=2, heads_q=4, heads_kv=2, head_dim=64, ffn=384, vocab=300)


@pytest.mark.parametrize("fmt", ["bf16", "int8", "int4", "fp8"])
def test_bench_decode_step_on_cpu_twins(k, bench_mod, fmt):
    """The bench's decode step (quantizers, buffer plumbing, kernel sequence) run through the CPU
    twins matches its PyTorch reference step on the same (dequantized) weights."""
    db = bench_mod
    torch.manual_seed(0)
    m = db.Model(db.Cfg(**TINY), 48, device="cpu")
    step = db.MinmoStep(k, m, fmt, ops=db.CpuOps(k))
    ref = db.RefStep(m, weights=[{n: lin.dequant() for n, lin in d.items()} for d in step.lin])
    ref.lm_head = step.lm_head.dequant()
    step.x_in.copy_(m.embed[3].float())
    step.pos.fill_(20)
    step.enqueue(0)
    logits_ref = ref(m.embed[3][None], 20)
    assert rel(step.logits.float(), logits_ref.float()) < 1e-2
    if fmt != "bf16":  # the quantized weights stay close to the bf16 ones
        assert rel(step.lin[0]["w_gu"].dequant().float(), m.layers[0]["w_gu"].float()) < {"int8": 0.02, "fp8": 0.06, "int4": 0.2}[fmt]


@pytest.mark.parametrize("fmt", ["bf16", "int8", "int4", "fp8"])
def test_bench_fused_step_on_cpu_twins(k, bench_mod, fmt):
    """The bench's fused step (FusedStep: fused products, one-launch attention, norms in the product
    epilogues, final norm after the last down-proj) on the CPU twins matches the unfused step and the
    PyTorch reference on the same (dequantized) weights, at a position inside the cache and, twice in a
    row, the next one (the residual restarts from the embedding every step)."""
    db = bench_mod
    torch.manual_seed(3)
    m = db.Model(db.Cfg(**TINY), 48, device="cpu")
    plain = db.MinmoStep(k, m, fmt, ops=db.CpuOps(k))
    fused = db.FusedStep(k, m, fmt, ops=db.CpuOps(k), share=plain)
    assert fused.lin is plain.lin and len(fused.layer_calls(0)) == 5
    ref = db.RefStep(m, weights=[{n: lin.dequant() for n, lin in d.items()} for d in plain.lin])
    ref.lm_head = plain.lm_head.dequant()
    for pos in (20, 21, 21):
        for step in (plain, fused):
            step.x_in.copy_(m.embed[pos % 16].float())
            step.pos.fill_(pos)
            step.enqueue(0)
        logits_ref = ref(m.embed[pos % 16][None], pos)
        assert rel(fused.logits.float(), logits_ref.float()) < 1e-2
        assert rel(fused.logits.float(), plain.logits.float()) < 1e-2


def test_bench_measurement_plumbing_on_cpu(k, bench_mod, monkeypatch, tmp_path):
    """The bench's per-step measurement (_measure_step, used by the unfused and the fused 7B sections)
    and the voice sections' _voice_steps / voice_fused, run on the CPU twins with the CUDA pieces
    (graph capture, events, streams) replaced: results land under their keys, logits errors are
    small, a failing piece is recorded in errors and the rest still runs."""
    import types

    db = bench_mod

    class FakeGraph:
        def __init__(self, step, steps):
            self.step, self.steps = step, steps

        def replay(self):
            for _ in range(self.steps):
                self.step.enqueue(0)
                if self.steps > 1:
                    self.step.pos.add_(1)

    monkeypatch.setattr(db, "time_cuda", lambda fn, iters, warmup=3: [fn() or 1.0 for _ in range(2)])
    monkeypatch.setattr(db.MinmoStep, "capture", lambda self, steps=1: FakeGraph(self, steps))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: types.SimpleNamespace(cuda_stream=0))
    monkeypatch.setattr(db.FusedStep, "__init__", functools.partialmethod(db.FusedStep.__init__, ops=db.CpuOps(k)))
    monkeypatch.setattr(db.MinmoStep, "__init__", functools.partialmethod(db.MinmoStep.__init__, ops=db.CpuOps(k)))
    b = db.Bench.__new__(db.Bench)
    b.args = types.SimpleNamespace(ctx="20,30", iters=2, out=str(tmp_path / "r.json"), budget_s=100)
    b.t0, b.k, b.voice_model = 0.0, k, None
    b.res = {"errors": {}, "copy_rate": {"gbs_p50": 1000.0}}
    monkeypatch.setattr(b, "formats", lambda: ["bf16", "int8"])
    torch.manual_seed(4)
    m = db.Model(db.Cfg(**TINY), 48, device="cpu")
    b.llm_minmo(m, [20, 30])
    b.llm_minmo_fused(m, [20, 30])
    for variant in ("minmo", "minmo_fused"):
        for key in ("bf16_ctx20", "bf16_ctx30", "int8_ctx20", "int8_ctx30"):
            r = b.res["llm_7b"][variant][key]
            assert r["logits_rel_err_vs_torch_same_weights"] < 1e-2, (variant, key)
            assert r["launch"] == "cuda_graph" and r["p50_ms"] > 0
    assert b.res["llm_7b"]["minmo"]["bf16_ctx20"]["logits_rel_err_vs_fp32_ref"] < 1e-2
    # The per-launch breakdown needs CUDA graphs: recorded as an error here, without stopping anything.
    assert any(key.startswith("layer_breakdown_minmo_fused_bf16") for key in b.res["errors"])
    b.voice_model = db.Model(db.Cfg(**TINY), 300, device="cpu")
    b._voice_steps(db.MinmoStep(k, b.voice_model, "bf16"), b.res.setdefault("voice_lm_0p5b", {}), "minmo")
    b.voice_fused()
    voice = b.res["voice_lm_0p5b"]
    assert voice["minmo_bf16_15_steps"]["per_step_ms"] > 0
    assert voice["minmo_fused_int8_15_steps"]["first_step_logits_rel_err_vs_torch_same_weights"] < 1e-2
    b.summarize()
    assert b.res["summary"]["fused_bf16_ctx20"]["speedup_vs_unfused"] > 0
    assert json.loads((tmp_path / "r.json").read_text())["llm_7b"]["minmo_fused"]["int8_ctx30"]


def test_bench_reference_step_matches_transformers(bench_mod):
    """The bench's eager reference step equals Hugging Face Qwen2ForCausalLM on the same weights."""
    pytest.importorskip("transformers")
    db = bench_mod
    torch.manual_seed(1)
    m = db.Model(db.Cfg(**TINY), 16, device="cpu")
    model = db.hf_model(m)
    ids = [3, 7, 1, 9, 4, 4]
    ref = db.RefStep(m)
    with torch.no_grad():
        for p, t in enumerate(ids):
            logits = ref(m.embed[t][None], p)
        hf = model(input_ids=torch.tensor([ids])).logits[0, -1]
    assert rel(logits.float()[0], hf.float()) < 3e-2


def test_bench_decode_step_close_to_fp32_reference(k, bench_mod):
    """Against the fp32 reference step, the kernels' step (fp32 residual) is at least as accurate
    as the bf16 PyTorch step."""
    db = bench_mod
    torch.manual_seed(2)
    m = db.Model(db.Cfg(**dict(TINY, layers=4)), 48, device="cpu")
    step = db.MinmoStep(k, m, "bf16", ops=db.CpuOps(k))
    step.x_in.copy_(m.embed[5].float())
    step.pos.fill_(30)
    step.enqueue(0)
    with torch.no_grad():
        ref32 = db.RefStep(m, db.ref_layer_fp32)(m.embed[5][None], 30)
        ref16 = db.RefStep(m)(m.embed[5][None], 30)
    ours, theirs = rel(step.logits.float(), ref32), rel(ref16.float(), ref32)
    assert ours < 1e-2 and ours <= theirs * 1.5, (ours, theirs)
