"""CPU twins of the flow-estimator kernels (kernels/include/minmo_kernels/flow_est.h) against
torch: causal im2col + product = F.conv1d over [context; x] (and the next context), LayerNorm (+
Mish, + row add, the residual bias), attention over cache + new rows = softmax(q K^T s) V with the
new rows appended, cache compaction, GELU, strided row copy. Fresh random draws of odd sizes,
NaN-poisoned outputs, bad arguments refused. The CUDA kernels are checked against these twins by
kernels/tests/check_flow_est.cu."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _kernels_cpu import ptr
from test_kernels_misc import lib as _lib, rel_err  # noqa: F401

OK, INVALID = 0, 1
NONE, MISH = 0, 1


@pytest.fixture(scope="module")
def lib(_lib):
    i64, f32, i32, vp = ctypes.c_int64, ctypes.c_float, ctypes.c_int32, ctypes.c_void_p
    sig = {
        "minmo_flow_causal_im2col_f32_cpu": [vp, vp, vp, vp, i64, i64, i64, i32, i64],
        "minmo_flow_norm_act_f32_cpu": [vp, vp, vp, vp, vp, vp, i64, i64, i64, f32, i32],
        "minmo_flow_attention_f32_cpu": [vp, vp, vp, vp, vp, i64, i64, i64, i64, i64, f32],
        "minmo_flow_kv_compact_f32_cpu": [vp, i64, i64, i64, i64, i64, i64],
        "minmo_flow_gelu_f32_cpu": [vp, i64],
        "minmo_flow_copy_rows_f32_cpu": [vp, i64, i64, vp, i64, i64, i64],
    }
    for name, args in sig.items():
        getattr(_lib, name).argtypes = args
        getattr(_lib, name).restype = ctypes.c_int
    return _lib


def nan(shape):
    return np.full(shape, np.nan, np.float32)


@pytest.mark.parametrize("batch,n,C,cout,k", [(2, 13, 7, 5, 3), (2, 1, 9, 4, 3), (1, 17, 6, 3, 1), (2, 36, 40, 8, 3)])
def test_causal_im2col_is_conv_over_context(lib, batch, n, C, cout, k):
    rng = np.random.default_rng(n * C + k)
    x = rng.standard_normal((batch, n, C), dtype=np.float32)
    ctx = rng.standard_normal((batch, max(k - 1, 0), C), dtype=np.float32)
    w = rng.standard_normal((cout, C, k), dtype=np.float32)
    b = rng.standard_normal(cout, dtype=np.float32)
    ld = (C * k + 1 + 3) // 4 * 4
    col, nxt = nan((batch * n, ld)), nan(ctx.shape)
    assert lib.minmo_flow_causal_im2col_f32_cpu(ptr(x), ptr(ctx), ptr(nxt), ptr(col), batch, n, C, k, ld) == OK
    wb = np.zeros((cout, ld), np.float32)
    wb[:, :C * k] = w.reshape(cout, C * k)
    wb[:, C * k] = b
    s = torch.from_numpy(np.concatenate([ctx, x], 1)).double()  # [B, k - 1 + n, C]
    ref = F.conv1d(s.transpose(1, 2), torch.from_numpy(w).double(), torch.from_numpy(b).double())
    assert rel_err(col.astype(np.float64) @ wb.T.astype(np.float64), ref.transpose(1, 2).reshape(batch * n, cout)) < 1e-12
    assert np.array_equal(nxt, s[:, n:].float().numpy())


@pytest.mark.parametrize("rows,C,ld,act,post,add", [(7, 33, 33, MISH, False, True), (5, 16, 21, NONE, True, False),
                                                    (3, 40, 44, MISH, True, True), (1, 1, 1, NONE, False, False)])
def test_norm_act_is_layernorm_mish(lib, rows, C, ld, act, post, add):
    rng = np.random.default_rng(rows * C)
    x = rng.standard_normal((rows, C), dtype=np.float32) * 3 + 1
    g, b, pb, ad = (rng.standard_normal(C, dtype=np.float32) for _ in range(4))
    x0 = x.copy()
    out = nan((rows, ld))
    assert lib.minmo_flow_norm_act_f32_cpu(ptr(x), ptr(g), ptr(b), ptr(pb) if post else None, ptr(ad) if add else None,
                                           ptr(out), rows, C, ld, 1e-5, act) == OK
    y = F.layer_norm(torch.from_numpy(x0).double(), (C,), torch.from_numpy(g).double(), torch.from_numpy(b).double(), 1e-5)
    if act == MISH:
        y = F.mish(y)
    if add:
        y = y + torch.from_numpy(ad).double()
    assert rel_err(out[:, :C], y) < 1e-6
    if ld > C:
        assert np.all(out[:, C] == 1) and np.all(out[:, C + 1:] == 0)
    assert rel_err(x, x0 + pb if post else x0) < 1e-7
    # in place (ld == C, no residual bias) gives the same; with a residual bias it is refused
    if ld == C and not post:
        y2 = x0.copy()
        assert lib.minmo_flow_norm_act_f32_cpu(ptr(y2), ptr(g), ptr(b), None, ptr(ad) if add else None, ptr(y2),
                                               rows, C, C, 1e-5, act) == OK
        assert rel_err(y2, out) < 1e-7
        assert lib.minmo_flow_norm_act_f32_cpu(ptr(y2), ptr(g), ptr(b), ptr(pb), None, ptr(y2), rows, C, C, 1e-5,
                                               act) == INVALID
    assert lib.minmo_flow_norm_act_f32_cpu(ptr(x), ptr(g), ptr(b), None, None, ptr(out), rows, C, ld, 1e-5, 7) == INVALID


@pytest.mark.parametrize("batch,n,heads,hd,m0,cap", [(2, 5, 3, 16, 7, 15), (2, 1, 2, 8, 0, 3), (1, 9, 4, 32, 20, 40)])
def test_attention_over_cache_and_new_rows(lib, batch, n, heads, hd, m0, cap):
    rng = np.random.default_rng(n * 100 + m0)
    inner = heads * hd
    qkv = rng.standard_normal((batch, n, 3 * inner), dtype=np.float32)
    kc, vc = nan((batch, cap, inner)), nan((batch, cap, inner))
    kc[:, :m0] = rng.standard_normal((batch, m0, inner), dtype=np.float32)
    vc[:, :m0] = rng.standard_normal((batch, m0, inner), dtype=np.float32)
    k0, v0 = kc[:, :m0].copy(), vc[:, :m0].copy()
    out = nan((batch, n, inner))
    rows = np.array([m0], np.int32)
    scale = 1 / np.sqrt(hd)
    assert lib.minmo_flow_attention_f32_cpu(ptr(qkv), ptr(kc), ptr(vc), ptr(out), ptr(rows), batch, n, heads, hd, cap,
                                            scale) == OK
    t = torch.from_numpy(qkv).double()
    q, k, v = t[..., :inner], t[..., inner:2 * inner], t[..., 2 * inner:]
    K = torch.cat([torch.from_numpy(k0).double(), k], 1).view(batch, m0 + n, heads, hd).transpose(1, 2)
    V = torch.cat([torch.from_numpy(v0).double(), v], 1).view(batch, m0 + n, heads, hd).transpose(1, 2)
    Q = q.view(batch, n, heads, hd).transpose(1, 2)
    ref = F.scaled_dot_product_attention(Q, K, V, scale=scale).transpose(1, 2).reshape(batch, n, inner)
    assert rel_err(out, ref) < 1e-6
    assert np.array_equal(kc[:, m0:m0 + n], qkv[..., inner:2 * inner])
    assert np.array_equal(vc[:, m0:m0 + n], qkv[..., 2 * inner:])
    assert np.isnan(kc[:, m0 + n:]).all()  # nothing past the new rows
    rows[0] = cap - n + 1  # the new rows would not fit
    assert lib.minmo_flow_attention_f32_cpu(ptr(qkv), ptr(kc), ptr(vc), ptr(out), ptr(rows), batch, n, heads, hd, cap,
                                            scale) == INVALID


@pytest.mark.parametrize("first,last,rows", [(2, 5, 11), (0, 9, 10), (3, 3, 8), (4, 8, 8)])
def test_kv_compact_drops_rows(lib, first, last, rows):
    rng = np.random.default_rng(first * 10 + last)
    count, cap, width = 5, 12, 7
    c = rng.standard_normal((count, cap, width), dtype=np.float32)
    ref = c.copy()
    ref[:, first:rows - (last - first)] = np.concatenate([c[:, :first], c[:, last:rows]], 1)[:, first:]
    assert lib.minmo_flow_kv_compact_f32_cpu(ptr(c), count, cap * width, width, first, last, rows) == OK
    keep = rows - (last - first)
    assert np.array_equal(c[:, :keep], ref[:, :keep])
    assert lib.minmo_flow_kv_compact_f32_cpu(ptr(c), count, cap * width, width, 5, 4, rows) == INVALID
    assert lib.minmo_flow_kv_compact_f32_cpu(ptr(c), count, cap * width, width, 0, 0, cap + 1) == INVALID


def test_gelu_and_copy_rows(lib):
    rng = np.random.default_rng(9)
    y = rng.standard_normal(1027, dtype=np.float32) * 4
    ref = F.gelu(torch.from_numpy(y).double())
    assert lib.minmo_flow_gelu_f32_cpu(ptr(y), y.size) == OK
    assert rel_err(y, ref) < 1e-7
    src = rng.standard_normal((5, 9), dtype=np.float32)
    dst = nan((10, 14))
    assert lib.minmo_flow_copy_rows_f32_cpu(ptr(src), 9, 5, ptr(dst), 14, 10, 7) == OK
    assert np.array_equal(dst[:, :7], np.concatenate([src, src])[:, :7]) and np.isnan(dst[:, 7:]).all()
    assert lib.minmo_flow_copy_rows_f32_cpu(ptr(src), 9, 5, ptr(dst), 14, 10, 10) == INVALID  # cols > lds
    assert lib.minmo_flow_copy_rows_f32_cpu(ptr(src), 9, 5, ptr(src), 9, 5, 7) == INVALID  # overlap
