"""CPU operators (runtime/src/backends/cpu/ops.h) against PyTorch on random inputs of odd sizes.

Error = ||out - ref|| / ||ref|| with the reference computed in float64; outputs are poisoned
with NaN first so that unwritten elements fail the check.
"""
from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minmo_rt import _core

ops = _core.ops
TOL = 1e-5


def rnd(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def poisoned(*shape):
    return np.full(shape, np.nan, dtype=np.float32)


def rel_err(out, ref):
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert out.shape == ref.shape, (out.shape, ref.shape)
    assert np.isfinite(out).all(), "output has NaN/inf (unwritten or overflowed elements)"
    denom = np.linalg.norm(ref)
    return np.linalg.norm(out - ref) / (denom if denom > 0 else 1.0)


def t64(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


@pytest.fixture
def rng(request):
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))


@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (1, 37, 63), (7, 129, 5), (33, 64, 127), (2, 300, 1)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_linear(rng, M, K, N, with_bias):
    x, w = rnd(rng, M, K), rnd(rng, N, K)
    b = rnd(rng, N) if with_bias else None
    out = poisoned(M, N)
    res = ops.linear(x, w, b, out=out)
    assert res is out or np.shares_memory(res, out)
    ref = F.linear(t64(x), t64(w), None if b is None else t64(b)).numpy()
    assert rel_err(out, ref) <= TOL


@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (1, 37, 63), (7, 129, 5), (13, 64, 16), (61, 33, 127), (100, 200, 40)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_linear_panels(rng, M, K, N, with_bias):
    """The register-blocked kernel over 16-wide weight panels (full panels, a narrow last panel,
    row counts around the 6-row block and the 48-row block)."""
    x, w = rnd(rng, M, K), rnd(rng, N, K)
    b = rnd(rng, N) if with_bias else None
    out = poisoned(M, N)
    ops.linear_panels(x, w, b, out=out)
    ref = F.linear(t64(x), t64(w), None if b is None else t64(b)).numpy()
    assert rel_err(out, ref) <= TOL


def test_linear_panels_rows_independent(rng):
    """A row's result does not depend on the rows computed with it: decode (one row at a time)
    and prefill (all rows at once) give the same bits."""
    x, w, b = rnd(rng, 53, 96), rnd(rng, 37, 96), rnd(rng, 37)
    together = ops.linear_panels(x, w, b)
    alone = np.concatenate([ops.linear_panels(x[i:i + 1], w, b) for i in range(len(x))])
    split = np.concatenate([ops.linear_panels(x[:7], w, b), ops.linear_panels(x[7:], w, b)])
    assert np.array_equal(together, alone)
    assert np.array_equal(together, split)


@pytest.mark.parametrize("M,K,N", [(1, 17, 9), (5, 1, 3), (31, 65, 47)])
def test_matmul(rng, M, K, N):
    a, b = rnd(rng, M, K), rnd(rng, K, N)
    out = poisoned(M, N)
    ops.matmul(a, b, out=out)
    assert rel_err(out, t64(a) @ t64(b)) <= TOL


@pytest.mark.parametrize("M,D", [(1, 1), (3, 7), (9, 513)])
@pytest.mark.parametrize("affine", [False, True])
def test_layer_norm(rng, M, D, affine):
    x = rnd(rng, M, D, scale=3.0) + 2.0
    g = rnd(rng, D) if affine else None
    b = rnd(rng, D) if affine else None
    out = poisoned(M, D)
    ops.layer_norm(x, g, b, 1e-5, out=out)
    ref = F.layer_norm(t64(x), (D,), None if g is None else t64(g), None if b is None else t64(b), 1e-5).numpy()
    assert rel_err(out, ref) <= TOL


def rms_ref(x, g, eps):
    x = t64(x)
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return (y if g is None else y * t64(g)).numpy()


@pytest.mark.parametrize("M,D", [(1, 3), (5, 17), (4, 896)])
@pytest.mark.parametrize("with_gamma", [False, True])
def test_rms_norm(rng, M, D, with_gamma):
    x, g = rnd(rng, M, D, scale=2.0), (rnd(rng, D) if with_gamma else None)
    out = poisoned(M, D)
    ops.rms_norm(x, g, 1e-6, out=out)
    assert rel_err(out, rms_ref(x, g, 1e-6)) <= TOL


def test_rms_norm_in_place(rng):
    x, g = rnd(rng, 3, 11), rnd(rng, 11)
    ref = rms_ref(x, g, 1e-6)
    ops.rms_norm(x, g, 1e-6, out=x)
    assert rel_err(x, ref) <= TOL


@pytest.mark.parametrize("M,D", [(1, 1), (3, 31), (6, 1000)])
@pytest.mark.parametrize("with_x", [True, False])
def test_rms_norm_residual(rng, M, D, with_x):
    x, r, g = rnd(rng, M, D), rnd(rng, M, D), rnd(rng, D)
    r_ref = r.astype(np.float64) + (x if with_x else 0.0)
    out = poisoned(M, D)
    ops.rms_norm_residual(x if with_x else None, r, g, 1e-6, out=out)
    assert rel_err(r, r_ref) <= TOL
    assert rel_err(out, rms_ref(r_ref, g, 1e-6)) <= TOL


def test_rms_norm_residual_rejects_aliasing(rng):
    r, g = rnd(rng, 2, 4), rnd(rng, 4)
    with pytest.raises(_core.InvalidInputError):
        ops.rms_norm_residual(None, r, g, 1e-6, out=r)


@pytest.mark.parametrize("name,ref", [
    ("relu_", torch.relu),
    ("gelu_", lambda t: F.gelu(t, approximate="none")),
    ("silu_", F.silu),
])
@pytest.mark.parametrize("shape", [(1,), (7, 13), (3, 5, 1031)])
def test_activations(rng, name, ref, shape):
    x = rnd(rng, *shape, scale=4.0)
    expect = ref(t64(x)).numpy()
    y = getattr(ops, name)(x)
    assert y is x or np.shares_memory(y, x)
    assert rel_err(x, expect) <= TOL


@pytest.mark.parametrize("n", [1, 9, 20001])
def test_silu_mul(rng, n):
    g, u = rnd(rng, n, scale=4.0), rnd(rng, n)
    out = poisoned(n)
    ops.silu_mul(g, u, out=out)
    assert rel_err(out, (F.silu(t64(g)) * t64(u)).numpy()) <= TOL


def test_add(rng):
    y, x = rnd(rng, 7, 9), rnd(rng, 7, 9)
    ref = y.astype(np.float64) + x
    ops.add_(y, x)
    assert rel_err(y, ref) <= TOL


@pytest.mark.parametrize("M,N", [(1, 1), (4, 7), (3, 6565)])
@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_softmax_and_log_softmax(rng, M, N, offset):
    x = rnd(rng, M, N, scale=5.0) + np.float32(offset)
    ref = torch.softmax(t64(x), -1).numpy()
    lref = torch.log_softmax(t64(x), -1).numpy()
    a, b = x.copy(), x.copy()
    ops.softmax_(a)
    ops.log_softmax_(b)
    assert rel_err(a, ref) <= TOL
    assert rel_err(b, lref) <= TOL
    np.testing.assert_allclose(a.sum(-1), 1.0, rtol=1e-5)


def rope_ref(x, pos, theta):
    """Hugging Face Qwen2 rotate_half convention, cos/sin in float64 rounded to float32."""
    T, H, Dh = x.shape
    inv = 1.0 / (theta ** (np.arange(0, Dh, 2, dtype=np.float64) / Dh))
    ang = pos.astype(np.float64)[:, None] * inv[None, :]
    emb = np.concatenate([ang, ang], -1)
    cos = torch.from_numpy(np.cos(emb).astype(np.float32).astype(np.float64))[:, None, :]
    sin = torch.from_numpy(np.sin(emb).astype(np.float32).astype(np.float64))[:, None, :]
    xt = t64(x)
    rot = torch.cat([-xt[..., Dh // 2:], xt[..., : Dh // 2]], -1)
    return (xt * cos + rot * sin).numpy()


@pytest.mark.parametrize("T,H,Dh", [(1, 1, 2), (7, 3, 10), (5, 4, 128)])
@pytest.mark.parametrize("theta", [1e4, 1e6])
def test_rope_neox(rng, T, H, Dh, theta):
    x = rnd(rng, T, H, Dh)
    pos = rng.integers(0, 5000, size=T).astype(np.int64)
    ref = rope_ref(x, pos, theta)
    ops.rope_neox_(x, pos, theta)
    assert rel_err(x, ref) <= TOL


def test_rope_matches_transformers_qwen2(rng):
    from transformers.models.qwen2 import modeling_qwen2 as q2

    T, H, Dh, theta = 9, 2, 16, 1e6
    x = rnd(rng, T, H, Dh)
    pos = np.arange(3, 3 + T, dtype=np.int64)
    inv = 1.0 / (theta ** (torch.arange(0, Dh, 2, dtype=torch.float64) / Dh))
    emb = torch.cat([torch.outer(torch.from_numpy(pos).double(), inv)] * 2, -1)
    xt = torch.from_numpy(x).transpose(0, 1)[None]  # [1, H, T, Dh]
    ref, _ = q2.apply_rotary_pos_emb(xt.double(), xt.double(), emb.cos()[None], emb.sin()[None])
    ops.rope_neox_(x, pos, theta)
    assert rel_err(x, ref[0].transpose(0, 1).numpy()) <= TOL


def test_embedding(rng):
    table = rnd(rng, 11, 7)
    ids = np.array([3, 0, 10, 3, 5], dtype=np.int64)
    out = poisoned(5, 7)
    ops.embedding(table, ids, out=out)
    np.testing.assert_array_equal(out, table[ids])
    with pytest.raises(_core.InvalidInputError, match="11"):
        ops.embedding(table, np.array([11], dtype=np.int64))
    with pytest.raises(_core.InvalidInputError):
        ops.embedding(table, np.array([-1], dtype=np.int64))


def attention_ref(q, k, v, scale, lo, hi):
    Tq, Hq, Dh = q.shape
    Tk, Hkv, _ = k.shape
    g = Hq // Hkv
    qt, kt, vt = t64(q), t64(k).repeat_interleave(g, dim=1), t64(v).repeat_interleave(g, dim=1)
    s = torch.einsum("ihd,jhd->hij", qt, kt) * scale
    j = torch.arange(Tk)
    allowed = (j[None, :] >= torch.as_tensor(lo)[:, None]) & (j[None, :] < torch.as_tensor(hi)[:, None])
    s = s.masked_fill(~allowed[None], float("-inf"))
    p = torch.softmax(s, -1).nan_to_num(0.0)  # rows without keys -> zeros
    return torch.einsum("hij,jhd->ihd", p, vt).numpy()


ATTN_SHAPES = [  # Tq, Tk, Hq, Hkv, Dh  (small Tq: per-query loop; Tq, Tk >= 16: BLAS path)
    (1, 1, 1, 1, 8),
    (1, 37, 4, 2, 16),
    (5, 9, 6, 1, 7),
    (23, 41, 4, 4, 12),
    (40, 40, 14, 2, 64),
]


@pytest.mark.parametrize("Tq,Tk,Hq,Hkv,Dh", ATTN_SHAPES)
@pytest.mark.parametrize("mask", ["none", "causal", "ranges"])
def test_attention(rng, Tq, Tk, Hq, Hkv, Dh, mask):
    q, k, v = rnd(rng, Tq, Hq, Dh), rnd(rng, Tk, Hkv, Dh), rnd(rng, Tk, Hkv, Dh)
    scale = 1.0 / math.sqrt(Dh)
    out = poisoned(Tq, Hq, Dh)
    if mask == "none":
        lo, hi = np.zeros(Tq, np.int64), np.full(Tq, Tk, np.int64)
        ops.attention(q, k, v, scale, out=out)
    elif mask == "causal":
        off = max(Tk - Tq, 0)
        lo = np.zeros(Tq, np.int64)
        hi = np.minimum(np.arange(Tq) + off + 1, Tk).astype(np.int64)
        ops.attention(q, k, v, scale, causal_offset=off, out=out)
    else:  # chunked attention with left context: chunks of 4 keys, 1 chunk of left context
        i = np.arange(Tq)
        chunk = (i * Tk // max(Tq, 1)) // 4
        lo = np.clip((chunk - 1) * 4, 0, Tk).astype(np.int64)
        hi = np.clip((chunk + 1) * 4, 0, Tk).astype(np.int64)
        if Tq > 2:
            lo[1] = hi[1] = min(2, Tk)  # a query without keys -> zeros
        ops.attention(q, k, v, scale, lo=lo, hi=hi, out=out)
    assert rel_err(out, attention_ref(q, k, v, scale, lo, hi)) <= TOL


def test_attention_matches_sdpa_causal_gqa(rng):
    Tq, Hq, Hkv, Dh = 19, 8, 2, 32
    q, k, v = rnd(rng, Tq, Hq, Dh), rnd(rng, Tq, Hkv, Dh), rnd(rng, Tq, Hkv, Dh)
    tq = t64(q).transpose(0, 1)[None]
    tk = t64(k).transpose(0, 1).repeat_interleave(Hq // Hkv, 0)[None]
    tv = t64(v).transpose(0, 1).repeat_interleave(Hq // Hkv, 0)[None]
    ref = F.scaled_dot_product_attention(tq, tk, tv, is_causal=True)[0].transpose(0, 1).numpy()
    out = ops.attention(q, k, v, 1.0 / math.sqrt(Dh), causal_offset=0)
    assert rel_err(out, ref) <= TOL


CONV_CASES = [  # T, Cin, Cout, K, stride, pad_left, pad_right, groups, dilation
    (1, 1, 1, 1, 1, 0, 0, 1, 1),
    (17, 3, 5, 3, 1, 1, 1, 1, 1),
    (50, 8, 6, 3, 2, 1, 0, 2, 1),
    (31, 80, 80, 5, 2, 2, 2, 1, 1),
    (29, 12, 12, 11, 1, 5, 5, 12, 1),   # depthwise, symmetric (SAN-M FSMN)
    (29, 12, 12, 15, 1, 14, 0, 12, 1),  # depthwise, causal
    (23, 6, 12, 4, 3, 0, 3, 3, 2),
    (2, 4, 4, 5, 1, 0, 0, 1, 1),        # input shorter than the kernel -> 0 frames
]


@pytest.mark.parametrize("T,Cin,Cout,K,stride,pl,pr,groups,dil", CONV_CASES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_conv1d(rng, T, Cin, Cout, K, stride, pl, pr, groups, dil, with_bias):
    x, w = rnd(rng, T, Cin), rnd(rng, Cout, Cin // groups, K)
    b = rnd(rng, Cout) if with_bias else None
    xt = F.pad(t64(x).T[None], (pl, pr))
    if xt.shape[-1] < dil * (K - 1) + 1:
        ref = np.zeros((0, Cout))
    else:
        ref = F.conv1d(xt, t64(w), None if b is None else t64(b), stride=stride, groups=groups, dilation=dil)[0].T.numpy()
    out = poisoned(*ref.shape)
    ops.conv1d(x, w, b, stride=stride, pad_left=pl, pad_right=pr, groups=groups, dilation=dil, out=out)
    if ref.size == 0:
        assert out.shape == ref.shape
    else:
        assert rel_err(out, ref) <= TOL


def test_argument_checks(rng):
    x, w = rnd(rng, 3, 4), rnd(rng, 5, 4)
    with pytest.raises(ValueError, match="float32"):
        ops.linear(x.astype(np.float64), w)
    with pytest.raises(_core.InvalidInputError, match="C-contiguous"):
        ops.linear(np.asfortranarray(rnd(rng, 3, 4)), w)
    with pytest.raises(_core.InvalidInputError, match="shape"):
        ops.linear(x, rnd(rng, 5, 3))
    with pytest.raises(_core.InvalidInputError, match="out"):
        ops.linear(x, w, out=poisoned(3, 4))
    with pytest.raises(_core.InvalidInputError, match="multiple"):
        ops.attention(rnd(rng, 2, 3, 4), rnd(rng, 2, 2, 4), rnd(rng, 2, 2, 4), 0.5)
    with pytest.raises(_core.InvalidInputError, match="even"):
        ops.rope_neox_(rnd(rng, 2, 1, 3), np.zeros(2, np.int64), 1e4)
    with pytest.raises(_core.InvalidInputError):
        ops.attention(rnd(rng, 2, 2, 4), rnd(rng, 3, 2, 4), rnd(rng, 3, 2, 4), 0.5,
                      lo=np.array([0, 2], np.int64), hi=np.array([1, 4], np.int64))
    assert issubclass(_core.InvalidInputError, _core.MinmoError)


def test_set_num_threads(rng):
    x, w = rnd(rng, 64, 96), rnd(rng, 80, 96)
    before = _core.get_num_threads()
    try:
        _core.set_num_threads(1)
        assert _core.get_num_threads() == 1
        a = ops.linear(x, w)
        _core.set_num_threads(0)
        b = ops.linear(x, w)
    finally:
        _core.set_num_threads(before)
    assert rel_err(a, b) <= TOL
    with pytest.raises(_core.InvalidInputError):
        _core.set_num_threads(-1)
