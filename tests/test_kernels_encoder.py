"""CPU twins of the speech-encoder kernels (LayerNorm + residual, bias / activation / residual
epilogues, window attention, im2col for Conv1d(k=3, s=2, p=1)) against independent PyTorch
references: F.layer_norm, F.gelu (exact), F.relu, export/reference/layers.py attention with an
explicit chunk mask (chunk_attention_mask), F.conv1d. Fresh random inputs of odd sizes; outputs
are NaN-poisoned before each call. The CUDA kernels are checked against these twins by
kernels/tests/check_encoder.cu (the CUDA harness, run where a GPU is present)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from test_kernels import BF16_TOL, bf16, f32, k, ptr, rel  # noqa: F401  (k: the library fixture)
from minmo_rt.export.reference.configs import ChunkSpec
from minmo_rt.export.reference.layers import attention, chunk_attention_mask

import minmo_kernels_ctypes as mk

RNG = np.random.default_rng(11)
NAN16 = 0x7FC0  # bf16 quiet NaN
NONE, GELU, RELU = 0, 1, 2  # MINMO_ACT_NONE, MINMO_ACT_GELU, MINMO_ACT_RELU (mlp.h)


def poisoned16(shape):
    return np.full(shape, NAN16, np.uint16)


def t64(bits: np.ndarray) -> torch.Tensor:
    return torch.tensor(f32(bits), dtype=torch.float64)


# ---- LayerNorm + residual ---------------------------------------------------------------------
@pytest.mark.parametrize("rows,dim,with_x,with_beta", [
    (1, 3, True, True), (3, 64, True, True), (5, 1280, True, True), (8, 1000, False, True), (2, 257, True, False),
    (1, 20001, True, True),  # wider than 16 elements per thread on the GPU (strided loop)
])
def test_layernorm_residual(k, rows, dim, with_x, with_beta):
    x = bf16(RNG.standard_normal((rows, dim)))
    res = (RNG.standard_normal((rows, dim)) * 3 + 1.5).astype(np.float32)  # non-zero mean
    gamma, beta = bf16(RNG.standard_normal(dim)), bf16(RNG.standard_normal(dim))
    out = poisoned16((rows, dim))
    res_k = res.copy()
    eps = 1e-5
    k.cpu.layernorm_residual_bf16(ptr(x) if with_x else None, ptr(res_k), ptr(gamma), ptr(beta) if with_beta else None,
                                  ptr(out), rows, dim, eps)
    res_ref = torch.tensor(res, dtype=torch.float64) + (t64(x) if with_x else 0)
    out_ref = F.layer_norm(res_ref, (dim,), t64(gamma), t64(beta) if with_beta else None, eps)
    assert rel(res_k, res_ref) < 1e-7
    assert rel(f32(out), out_ref) < BF16_TOL
    # rounded once from fp64, as torch rounds the fp64 result (a last-bit difference in fp64 may
    # flip a rounding boundary in a very rare element)
    assert np.mean(out != bf16(out_ref.float().numpy())) < 1e-3


def test_layernorm_in_place_and_rejections(k):
    rows, dim = 4, 96
    x = bf16(RNG.standard_normal((rows, dim)))
    res = RNG.standard_normal((rows, dim)).astype(np.float32)
    gamma, beta = bf16(RNG.standard_normal(dim)), bf16(RNG.standard_normal(dim))
    expect = F.layer_norm(torch.tensor(res, dtype=torch.float64) + t64(x), (dim,), t64(gamma), t64(beta), 1e-6)
    k.cpu.layernorm_residual_bf16(ptr(x), ptr(res), ptr(gamma), ptr(beta), ptr(x), rows, dim, 1e-6)  # out aliases x
    assert rel(f32(x), expect) < BF16_TOL
    out = poisoned16((rows, dim))
    raw = k.cpu.layernorm_residual_bf16.raw
    assert raw(None, None, ptr(gamma), None, ptr(out), rows, dim, 1e-6) == 1  # no residual
    assert raw(None, ptr(res), ptr(gamma), None, ptr(out), rows, 0, 1e-6) == 1  # dim 0
    assert raw(None, ptr(res), ptr(gamma), None, ptr(res), rows, dim, 1e-6) == 1  # out overlaps residual
    assert raw(ptr(res), ptr(res), ptr(gamma), None, ptr(out), rows, dim, 1e-6) == 1  # x overlaps residual
    assert raw(None, ptr(res), ptr(gamma), None, ptr(out), -1, dim, 1e-6) == 1
    assert np.all(out == NAN16)


# ---- bias + activation, bias + residual ------------------------------------------------------
def act_ref(v: torch.Tensor, act: int) -> torch.Tensor:
    return {NONE: lambda t: t, GELU: lambda t: F.gelu(t, approximate="none"), RELU: F.relu}[act](v)


@pytest.mark.parametrize("rows,n", [(1, 3), (3, 1280), (8, 5120), (5, 1000)])
@pytest.mark.parametrize("act", [NONE, GELU, RELU])
@pytest.mark.parametrize("with_bias", [True, False])
def test_bias_act(k, rows, n, act, with_bias):
    y = bf16(RNG.standard_normal((rows, n)) * 2)
    bias = bf16(RNG.standard_normal(n))
    ref = act_ref(t64(y) + (t64(bias) if with_bias else 0), act)
    k.cpu.bias_act_bf16(ptr(y), ptr(bias) if with_bias else None, rows, n, act)
    assert rel(f32(y), ref) < BF16_TOL
    # rounded once from fp64: equal to torch's own bf16 rounding of the exact value
    assert np.array_equal(y, bf16(ref.float().numpy()))


def test_gelu_is_exact_not_tanh(k):
    v = np.linspace(-4, 4, 801, dtype=np.float32)
    y = bf16(v)
    k.cpu.bias_act_bf16(ptr(y), None, 1, v.size, GELU)
    exact = F.gelu(t64(bf16(v)), approximate="none")
    tanh = F.gelu(t64(bf16(v)), approximate="tanh")
    assert np.array_equal(y, bf16(exact.float().numpy()))
    assert not np.array_equal(y, bf16(tanh.float().numpy()))


@pytest.mark.parametrize("rows,n,with_bias", [(1, 3, True), (4, 1280, True), (7, 1000, False)])
def test_bias_residual(k, rows, n, with_bias):
    y, bias = bf16(RNG.standard_normal((rows, n))), bf16(RNG.standard_normal(n))
    res = RNG.standard_normal((rows, n)).astype(np.float32) * 4
    ref = torch.tensor(res, dtype=torch.float64) + t64(y) + (t64(bias) if with_bias else 0)
    k.cpu.bias_residual_bf16(ptr(y), ptr(bias) if with_bias else None, ptr(res), rows, n)
    assert rel(res, ref) < 1e-7


def test_bias_epilogue_rejections(k):
    y = bf16(RNG.standard_normal((2, 16)))
    res = np.zeros((2, 16), np.float32)
    act, resid = k.cpu.bias_act_bf16.raw, k.cpu.bias_residual_bf16.raw
    assert act(ptr(y), None, 2, 16, 3) == 1  # unknown activation
    assert act(ptr(y), None, 2, 0, GELU) == 1
    assert act(None, None, 2, 16, GELU) == 1
    assert act(ptr(y), ptr(y[1]), 2, 16, GELU) == 1  # bias inside y
    assert resid(ptr(y), None, None, 2, 16) == 1
    assert resid(ptr(y), ptr(res[1]), ptr(res), 2, 16) == 1  # bias inside the residual
    assert act(ptr(y), None, 1 << 40, 2, GELU) == 1  # sizes past the supported range (no overflow)
    assert act(ptr(y), None, 0, 16, GELU) == 0  # zero rows: nothing to do


def test_f32_to_bf16(k):
    """Round to nearest even, as torch's bfloat16 cast (NaN stays NaN, +-inf kept); rejections."""
    x = np.concatenate([RNG.standard_normal(1000).astype(np.float32) * 100,
                        np.array([0.0, -0.0, np.inf, -np.inf, 3.0e38, 1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8], np.float32)])
    y = np.zeros(x.size, np.uint16)
    assert k.cpu.f32_to_bf16.raw(ptr(x), ptr(y), x.size) == 0
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(y, want)
    nan = np.array([np.nan], np.float32)
    assert k.cpu.f32_to_bf16.raw(ptr(nan), ptr(y), 1) == 0 and np.isnan(f32(y[:1]))[0]
    raw = k.cpu.f32_to_bf16.raw
    assert raw(None, ptr(y), 4) == 1 and raw(ptr(x), None, 4) == 1
    assert raw(ptr(x), ptr(x[1:]), 8) == 1  # y inside x
    assert raw(ptr(x), ptr(y), 0) == 0  # nothing to do


# ---- window attention ------------------------------------------------------------------------
def window_call(k, q, kc, vc, p0, lo, max_seq, scale):
    tokens, hq, d = q.shape
    hkv = kc.shape[0]
    out = poisoned16(q.shape)
    pos, low = np.array([p0], np.int32), np.array([lo], np.int32)
    k.cpu.window_attention_bf16(ptr(q), ptr(kc), ptr(vc), ptr(pos), ptr(low), ptr(out), tokens, hq, hkv, d, max_seq,
                                scale)
    return out


@pytest.mark.parametrize("hq,hkv,d", [(4, 4, 64), (8, 2, 32), (4, 1, 128), (20, 20, 64), (8, 8, 448), (2, 1, 320)])
@pytest.mark.parametrize("p0,tokens,lo,max_seq", [
    (16, 8, 0, 64),      # lo = 0: keys 0 .. 23
    (40, 8, 8, 64),      # lo > 0: the chunk and 4 left chunks
    (60, 8, 28, 64),     # clipped by max_seq: keys 28 .. 63
    (0, 5, -8, 20),      # lo < 0 clamps to 0
])
def test_window_attention_vs_masked_reference(k, hq, hkv, d, p0, tokens, lo, max_seq):
    scale = 1 / np.sqrt(d)
    q = bf16(RNG.standard_normal((tokens, hq, d)))
    kc, vc = bf16(RNG.standard_normal((hkv, max_seq, d))), bf16(RNG.standard_normal((hkv, max_seq, d)))
    hi = min(p0 + tokens, max_seq)
    # keys outside [max(lo, 0), hi) must not be read
    kc[:, hi:], vc[:, hi:] = NAN16, NAN16
    kc[:, :max(lo, 0)], vc[:, :max(lo, 0)] = NAN16, NAN16
    out = window_call(k, q, kc, vc, p0, lo, max_seq, scale)
    keys = torch.arange(max_seq)
    mask = ((keys >= max(lo, 0)) & (keys < hi))[None, :].expand(tokens, max_seq)
    kk = torch.nan_to_num(t64(kc)).permute(1, 0, 2)  # [S, Hkv, D]; masked keys zeroed, never weighted
    vv = torch.nan_to_num(t64(vc)).permute(1, 0, 2)
    ref = attention(t64(q), kk, vv, mask, scale)
    assert rel(f32(out), ref) < BF16_TOL
    assert np.mean(out != bf16(ref.float().numpy())) < 1e-3  # one rounding of the fp64 result


def test_window_attention_empty_range_gives_zeros(k):
    q = bf16(RNG.standard_normal((3, 4, 64)))
    kc = poisoned16((2, 16, 64))
    for p0, lo in [(10, 13), (30, 20), (-5, 0), (4, 40)]:  # lo >= end, lo past the cache, chunk before it
        out = window_call(k, q, kc, kc, p0, lo, 16, 0.125)
        assert np.all(out == 0), (p0, lo)


def test_window_attention_streams_chunked_encoder_attention(k):
    """Chunk after chunk through the cache (each chunk appended at its absolute position, window
    lo = (c - left) * C) equals the offline attention with the encoder's chunk mask."""
    chunk, left, n, hq, hkv, d = 8, 4, 61, 6, 2, 64
    scale = 1 / np.sqrt(d)
    q = bf16(RNG.standard_normal((n, hq, d)))
    kr, vr = bf16(RNG.standard_normal((n, hkv, d))), bf16(RNG.standard_normal((n, hkv, d)))
    spec = ChunkSpec(encoder_attention="chunked", chunk_frames=chunk, left_chunks=left)
    ref = attention(t64(q), t64(kr), t64(vr), chunk_attention_mask(n, spec), scale)
    kc, vc = poisoned16((hkv, n, d)), poisoned16((hkv, n, d))
    outs = []
    for p0 in range(0, n, chunk):
        t = min(chunk, n - p0)
        kc[:, p0:p0 + t], vc[:, p0:p0 + t] = kr[p0:p0 + t].transpose(1, 0, 2), vr[p0:p0 + t].transpose(1, 0, 2)
        lo = (p0 // chunk - left) * chunk
        outs.append(window_call(k, np.ascontiguousarray(q[p0:p0 + t]), kc, vc, p0, lo, n, scale))
    assert rel(f32(np.concatenate(outs)), ref) < BF16_TOL


def test_window_attention_rejections(k):
    q = bf16(RNG.standard_normal((2, 4, 64)))
    kc = bf16(RNG.standard_normal((2, 16, 64)))
    out = poisoned16(q.shape)
    pos = np.array([0], np.int32)
    raw = k.cpu.window_attention_bf16.raw
    assert raw(ptr(q), ptr(kc), ptr(kc), ptr(pos), None, ptr(out), 2, 4, 2, 64, 16, 1.0) == 1  # no lo
    assert raw(ptr(q), ptr(kc), ptr(kc), ptr(pos), ptr(pos), ptr(out), 2, 4, 2, 48, 16, 1.0) == 1  # head dim 48
    assert raw(ptr(q), ptr(kc), ptr(kc), ptr(pos), ptr(pos), ptr(out), 2, 5, 2, 64, 16, 1.0) == 1  # Hq % Hkv
    assert raw(ptr(q), ptr(kc), ptr(kc), ptr(pos), ptr(pos), ptr(q), 2, 4, 2, 64, 16, 1.0) == 1  # out aliases q
    assert raw(ptr(q), ptr(kc), ptr(kc), ptr(pos), ptr(pos), ptr(out), 0, 4, 2, 64, 16, 1.0) == 1  # no token
    assert np.all(out == NAN16)


# ---- im2col for Conv1d(k=3, stride 2, pad 1) ---------------------------------------------------
def conv_ref(x_bits: np.ndarray, w: torch.Tensor) -> torch.Tensor:
    """F.conv1d on the whole input (zero padding 1 at both ends), [T_out, C_out], fp64."""
    return F.conv1d(t64(x_bits).T[None], w, stride=2, padding=1)[0].T


def im2col(k, x_part, t_out0, n_out, t_in0, channels, total_in):
    out = poisoned16((n_out, 3 * channels))
    k.cpu.im2col_k3s2_bf16(ptr(x_part), ptr(out), t_out0, n_out, t_in0, x_part.shape[0], channels, total_in)
    return out


@pytest.mark.parametrize("total_in,channels", [(1, 3), (2, 5), (7, 80), (16, 64), (33, 128)])
def test_im2col_offline_matches_conv1d(k, total_in, channels):
    c_out = 11
    x = bf16(RNG.standard_normal((total_in, channels)))
    w = torch.tensor(RNG.standard_normal((c_out, channels, 3)), dtype=torch.float64)
    n_out = (total_in - 1) // 2 + 1
    cols = im2col(k, x, 0, n_out, 0, channels, total_in)
    got = t64(cols) @ w.reshape(c_out, -1).T  # the weight viewed as [C_out, C_in * 3]: index c * 3 + k
    ref = conv_ref(x, w)
    assert got.shape == ref.shape
    assert rel(got, ref) < 1e-12  # a copy: exact up to fp64 summation order


def test_im2col_chunked_partial_ranges_match_conv1d(k):
    """Outputs produced chunk by chunk, each from only the input rows it reads (t_out0 > 0, x a
    partial window), equal the offline convolution; the last output reads the right zero pad."""
    total_in, channels, c_out = 41, 24, 9
    x = bf16(RNG.standard_normal((total_in, channels)))
    w = torch.tensor(RNG.standard_normal((c_out, channels, 3)), dtype=torch.float64)
    ref = conv_ref(x, w)
    n_total = (total_in - 1) // 2 + 1  # 21
    got = []
    for t0, n in [(0, 1), (1, 4), (5, 7), (12, 9)]:
        lo, hi = max(2 * t0 - 1, 0), min(2 * (t0 + n), total_in)  # rows the outputs read
        got.append(im2col(k, np.ascontiguousarray(x[lo:hi]), t0, n, lo, channels, total_in))
    assert sum(g.shape[0] for g in got) == n_total
    cols = np.concatenate(got)
    assert rel(t64(cols) @ w.reshape(c_out, -1).T, ref) < 1e-12
    # a wider window than needed gives the same columns
    wide = im2col(k, np.ascontiguousarray(x[3:30]), 5, 7, 3, channels, total_in)
    assert np.array_equal(wide, got[2])


def test_im2col_rejections(k):
    x = bf16(RNG.standard_normal((10, 4)))
    out = poisoned16((8, 12))
    raw = k.cpu.im2col_k3s2_bf16.raw
    # output 3 reads rows 5..7; x holds rows 6..9 of 20
    assert raw(ptr(x[:4]), ptr(out), 3, 1, 6, 4, 4, 20) == 1
    # output 2 reads rows 3..5; x holds rows 0..4 (row 5 missing)
    assert raw(ptr(x[:5]), ptr(out), 2, 1, 0, 5, 4, 20) == 1
    assert raw(ptr(x), ptr(out), 0, 6, 0, 10, 4, 10) == 1  # 10 rows give 5 outputs
    assert raw(ptr(x), ptr(out), 0, 1, 5, 10, 4, 12) == 1  # x past the end of the input
    assert raw(ptr(x), ptr(x), 0, 2, 0, 10, 4, 10) == 1  # out overlaps x
    assert raw(ptr(x), ptr(out), -1, 1, 0, 10, 4, 10) == 1
    assert raw(ptr(x), ptr(out), 0, 1, 0, 10, 0, 10) == 1  # no channel
    assert raw(ptr(x), ptr(out), 0, 1, 1 << 62, 1 << 62, 4, 10) == 1  # t_in0 + n_in would overflow
    assert np.all(out == NAN16)
    assert raw(ptr(x), ptr(out), 0, 0, 0, 10, 4, 10) == 0  # nothing to do
    # the last output of an odd-length input reads only the pad past the end: x may stop there
    assert raw(ptr(x[9:]), ptr(out), 5, 1, 9, 1, 4, 11) == 1  # row 10 not in x
    assert raw(ptr(x), ptr(out), 5, 1, 0, 10, 4, 10) == 1  # output 5 does not exist for 10 rows


def test_cuda_exports_declared(k):
    """The launch functions are exported under the same names (checked where the library has CUDA)."""
    for name in ("layernorm_residual_bf16", "bias_act_bf16", "bias_residual_bf16", "f32_to_bf16",
                 "window_attention_bf16", "im2col_k3s2_bf16"):
        assert name in mk._SIGNATURES
        assert hasattr(k.lib, f"minmo_{name}_cpu")
        if k.has_cuda:
            assert hasattr(k.lib, f"minmo_{name}")
