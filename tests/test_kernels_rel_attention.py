"""CPU twins of the flow-encoder kernels (kernels/include/minmo_kernels/rel_attention.h) against the
PyTorch reference (export/reference/flow.py): the relative-position attention over keys cached at
scattered rows with a segment mask (prompt + left chunks + this segment) = RelPositionAttention's
scores on the whole sequence with that mask; the position encoding = rel_position_encoding;
LayerNorm = F.layer_norm (strided, scaled); SiLU, embedding rows and the upsampling repeat. Fresh
random draws of odd sizes, NaN-poisoned outputs. The CUDA kernels are checked against these twins
by kernels/tests/check_rel_attention.cu."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _kernels_cpu import ptr
from test_kernels_misc import lib, rel_err  # noqa: F401  (lib: the CPU twins' library fixture)
from minmo_rt.export.reference.flow import RelPositionAttention, rel_position_encoding
from minmo_rt.export.reference.token2wav import segment_ids, segment_mask

OK, INVALID = 0, 1


def key_tables(pos, q0, nq):
    """key_pe and distances for keys at positions `pos` (runs of contiguous positions)."""
    pe, dist, a = np.zeros(len(pos), np.int32), [], 0
    while a < len(pos):
        b = a + 1
        while b < len(pos) and pos[b] == pos[b - 1] + 1:
            b += 1
        rmin, rmax = q0 - pos[b - 1], q0 + nq - 1 - pos[a]
        pe[a:b] = len(dist) + q0 - np.asarray(pos[a:b]) - rmin
        dist += list(range(rmin, rmax + 1))
        a = b
    return pe, np.asarray(dist, np.int32)


@pytest.mark.parametrize("d,heads,n_prompt,n_tokens,chunk,left", [
    (32, 4, 5, 23, 4, 1),     # prompt kept, two left chunks pruned away: two runs of key positions
    (36, 3, 0, 17, 5, 0),     # no prompt
    (24, 2, 3, 11, 3, -1),    # every earlier segment
    (16, 1, 0, 6, 6, -1),     # one segment: full attention
])
def test_rel_attention_is_reference_with_segment_mask(lib, d, heads, n_prompt, n_tokens, chunk, left):
    torch.manual_seed(d + heads + left)
    attn = RelPositionAttention(d, heads).eval()
    for p in attn.parameters():
        p.data += 0.1 * torch.randn_like(p)
    T = n_prompt + n_tokens
    x = torch.randn(T, d)
    seg = segment_ids(n_prompt, n_tokens, chunk)
    mask = segment_mask(seg, left, n_prompt > 0)
    with torch.no_grad():  # the reference: linear_out of the attention context; undo linear_out
        ref = attn(x, mask)
        ctx_ref = torch.linalg.solve(attn.linear_out.weight, (ref - attn.linear_out.bias).T).T.numpy()
        q = attn.linear_q(x).numpy()
        k = attn.linear_k(x).numpy()
        v = attn.linear_v(x).numpy()
    rng = np.random.default_rng(T)
    last = int(seg[-1])
    rows = np.nonzero((seg == last).numpy())[0]  # queries: the last segment
    keys = np.nonzero(mask[rows[0]].numpy())[0]  # the keys it may see, in position order
    cap = 2 * T + 3
    cache_rows = rng.permutation(cap)[:T].astype(np.int32)  # token t lives at cache row cache_rows[t]
    ld = 3 * d + 5
    cache = rng.standard_normal((cap, ld)).astype(np.float32)
    cache[cache_rows, :d], cache[cache_rows, d:2 * d], cache[cache_rows, 2 * d:3 * d] = q, k, v
    key_rows = np.ascontiguousarray(cache_rows[keys])
    key_pe, dist = key_tables(list(keys), int(rows[0]), len(rows))
    pe = np.full((len(dist), d), np.nan, np.float32)
    assert lib.minmo_rel_pos_enc_f32_cpu(ptr(dist), len(dist), d, ptr(pe)) == OK
    assert rel_err(pe, rel_position_encoding(torch.from_numpy(dist).long(), d).numpy()) <= 1e-7
    with torch.no_grad():
        p = attn.linear_pos(torch.from_numpy(pe)).numpy()
    ldo = d + 3
    out = np.full((len(rows), ldo), np.nan, np.float32)
    qrows = np.ascontiguousarray(cache[cache_rows[rows]])
    bu = attn.pos_bias_u.detach().numpy().reshape(-1).copy()
    bv = attn.pos_bias_v.detach().numpy().reshape(-1).copy()
    rc = lib.minmo_rel_attention_f32_cpu(ptr(qrows), ld, cache.ctypes.data + 4 * d, cache.ctypes.data + 8 * d, ld,
                                         ptr(key_rows), ptr(key_pe), len(keys), ptr(p), d, ptr(bu), ptr(bv), ptr(out),
                                         ldo, len(rows), heads, d // heads, 1 / math.sqrt(d // heads))
    assert rc == OK
    assert np.isnan(out[:, d:]).all()  # the padding columns are not written
    assert rel_err(out[:, :d], ctx_ref[rows]) <= 2e-5


def test_rel_attention_rejects_bad_arguments(lib):
    a = np.zeros(64, np.float32)
    i = np.zeros(4, np.int32)
    args = [ptr(a), 8, ptr(a), ptr(a), 8, ptr(i), ptr(i), 4, ptr(a), 8, ptr(a), ptr(a)]
    out = np.zeros(64, np.float32)
    assert lib.minmo_rel_attention_f32_cpu(*args, ptr(out), 8, 1, 1, 129, 1.0) == INVALID  # head dim > 128
    assert lib.minmo_rel_attention_f32_cpu(*args, ptr(out), 4, 1, 2, 4, 1.0) == INVALID    # ldo < H D
    assert lib.minmo_rel_attention_f32_cpu(*args, ptr(a), 8, 1, 2, 4, 1.0) == INVALID      # out overlaps q
    assert lib.minmo_rel_attention_f32_cpu(*args, ptr(out), 8, 0, 2, 4, 1.0) == INVALID    # no rows


@pytest.mark.parametrize("rows,dim,pad,scale,in_place", [(7, 33, 3, 1.0, False), (5, 512, 4, 22.6, True), (1, 1, 0, 2.0, False)])
def test_layernorm_is_torch(lib, rows, dim, pad, scale, in_place):
    rng = np.random.default_rng(rows * dim)
    ld = dim + pad
    x = (rng.standard_normal((rows, ld)) * 3 + 1).astype(np.float32)
    g, b = rng.standard_normal(dim).astype(np.float32), rng.standard_normal(dim).astype(np.float32)
    ref = scale * F.layer_norm(torch.from_numpy(x[:, :dim]).double(), (dim,), torch.from_numpy(g).double(),
                               torch.from_numpy(b).double(), 1e-5).numpy()
    out = x if in_place else np.full((rows, ld), np.nan, np.float32)
    tail = out[:, dim:].copy()
    assert lib.minmo_layernorm_f32_cpu(ptr(x), ld, ptr(g), ptr(b), ptr(out), ld, rows, dim, 1e-5, scale) == OK
    assert rel_err(out[:, :dim], ref) <= 1e-6
    np.testing.assert_array_equal(out[:, dim:], tail)


def test_silu_embedding_repeat(lib):
    rng = np.random.default_rng(3)
    y = rng.standard_normal((5, 11)).astype(np.float32) * 4
    want = y.copy()
    want[:, :9] = F.silu(torch.from_numpy(y[:, :9])).numpy()
    assert lib.minmo_silu_rows_f32_cpu(ptr(y), 5, 9, 11) == OK
    assert rel_err(y, want) <= 1e-6 and np.array_equal(y[:, 9:], want[:, 9:])
    table = rng.standard_normal((13, 6)).astype(np.float32)
    ids = np.array([3, 12, 0, 7, 13], np.int32)  # 13: out of range -> NaN row
    out = np.full((5, 8), -1.0, np.float32)
    assert lib.minmo_embedding_rows_f32_cpu(ptr(table), ptr(ids), ptr(out), 5, 13, 6, 8) == OK
    np.testing.assert_array_equal(out[:4, :6], table[ids[:4]])
    assert np.isnan(out[4, :6]).all() and (out[:, 6:] == -1).all()
    ctx, x = rng.standard_normal((2, 5)).astype(np.float32), rng.standard_normal((3, 5)).astype(np.float32)
    rep = np.full((10, 5), np.nan, np.float32)
    assert lib.minmo_repeat_rows_f32_cpu(ptr(ctx), 2, ptr(x), 3, 5, 2, ptr(rep)) == OK
    np.testing.assert_array_equal(rep, np.repeat(np.concatenate([ctx, x]), 2, axis=0))
    assert lib.minmo_repeat_rows_f32_cpu(None, 1, ptr(x), 3, 5, 2, ptr(rep)) == INVALID  # context rows without data
