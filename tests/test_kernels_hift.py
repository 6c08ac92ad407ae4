"""CPU twins of the HiFT filter-network kernels (kernels/include/minmo_kernels/hift_net.h) against
torch: im2col + product = F.conv1d of the activated input (LeakyReLU, ELU, the reference Snake),
product + col2im = F.conv_transpose1d (+ the reflection pad), the source STFT = the reference
stft (export/reference/hift.py) and torch.stft. Fresh random draws of odd sizes, NaN-poisoned
outputs. The CUDA kernels are checked against these twins by kernels/tests/check_hift_net.cu."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _kernels_cpu import ptr
from test_kernels_misc import lib, rel_err  # noqa: F401  (lib: the CPU twins' library fixture)
from minmo_rt.export.reference.hift import Snake, stft

OK, INVALID = 0, 1
NONE, LEAKY, SNAKE, ELU = 0, 1, 2, 3


def activate(x: torch.Tensor, act: int, slope: float, alpha: torch.Tensor) -> torch.Tensor:
    """x: [C, T] (torch layout)."""
    if act == LEAKY:
        return F.leaky_relu(x, slope)
    if act == ELU:
        return F.elu(x)
    if act == SNAKE:
        s = Snake(x.shape[0]).double()
        s.alpha.data = alpha.double()
        return s(x)
    return x


@pytest.mark.parametrize("t_in,cin,cout,k,stride,pad,dil,act", [
    (37, 5, 7, 7, 1, 3, 1, NONE),      # conv_pre
    (53, 9, 9, 11, 1, 25, 5, SNAKE),   # a dilated ResBlock conv
    (41, 6, 4, 3, 1, 1, 1, ELU),       # f0 predictor
    (97, 18, 5, 30, 15, 7, 1, NONE),   # source_downs (k = 2u, stride u, pad u / 2)
    (29, 8, 18, 7, 1, 3, 1, LEAKY),    # conv_post
    (1, 3, 2, 1, 1, 0, 1, LEAKY),
])
def test_im2col_product_is_conv1d(lib, t_in, cin, cout, k, stride, pad, dil, act):
    rng = np.random.default_rng(t_in * k + act)
    x = rng.standard_normal((t_in, cin), dtype=np.float32)
    alpha = (rng.random(cin, dtype=np.float32) * 2 + 0.05).astype(np.float32)
    w = rng.standard_normal((cout, cin, k), dtype=np.float32) / np.sqrt(cin * k)
    b = rng.standard_normal(cout, dtype=np.float32)
    t_out = (t_in + 2 * pad - dil * (k - 1) - 1) // stride + 1
    ld = (cin * k + 1 + 3) // 4 * 4
    col = np.full((t_out, ld), np.nan, np.float32)
    assert lib.minmo_conv1d_im2col_f32_cpu(ptr(x), ptr(alpha), ptr(col), t_in, cin, t_out, ld, k, stride, pad, dil,
                                           act, 0.1) == OK
    wp = np.zeros((cout, ld), np.float32)
    wp[:, :cin * k] = w.reshape(cout, cin * k)
    wp[:, cin * k] = b
    out = col.astype(np.float64) @ wp.T.astype(np.float64)
    with torch.no_grad():
        xt = activate(torch.from_numpy(x).double().T, act, 0.1, torch.from_numpy(alpha))
    ref = F.conv1d(xt[None], torch.from_numpy(w).double(), torch.from_numpy(b).double(), stride, pad, dil)[0].T
    assert out.shape == ref.shape
    assert rel_err(out, ref.numpy()) < 1e-6
    assert np.all(col[:, cin * k + 1:] == 0)


def test_im2col_without_bias_column_and_fewer_rows(lib):
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    col = np.full((4, 6), np.nan, np.float32)  # ld == C * k: no ones column; 4 of the 10 rows
    assert lib.minmo_conv1d_im2col_f32_cpu(ptr(x), None, ptr(col), 10, 2, 4, 6, 3, 1, 1, 1, NONE, 0.0) == OK
    assert col[0].tolist() == [0, 0, 2, 0, 1, 3]  # x[t, c] = 2 t + c: [c0: 0 (pad), x[0], x[1] | c1: ...]
    assert col[3].tolist() == [4, 6, 8, 5, 7, 9]


def test_im2col_rejects_bad_arguments(lib):
    x = np.zeros((10, 4), np.float32)
    col = np.zeros((16, 16), np.float32)
    f = lib.minmo_conv1d_im2col_f32_cpu
    assert f(ptr(x), None, ptr(col), 10, 4, 10, 11, 3, 1, 1, 1, NONE, 0.0) == INVALID  # ld < C k
    assert f(ptr(x), None, ptr(col), 10, 4, 11, 12, 3, 1, 1, 1, NONE, 0.0) == INVALID  # past the output length
    assert f(ptr(x), None, ptr(col), 10, 4, 10, 12, 3, 1, 1, 1, SNAKE, 0.0) == INVALID  # Snake without alpha
    assert f(ptr(x), None, ptr(col), 10, 4, 10, 12, 3, 1, 1, 1, 7, 0.0) == INVALID  # unknown activation
    assert f(ptr(x), None, ptr(x), 2, 4, 2, 12, 3, 1, 1, 1, NONE, 0.0) == INVALID  # out overlaps x
    assert f(ptr(x), None, ptr(col), 10, 4, 10, 12, 3, 1, 1, 1, NONE, 0.0) == OK


@pytest.mark.parametrize("t_in,cin,cout,k,stride,reflect", [
    (13, 6, 5, 16, 8, 0), (29, 5, 3, 11, 5, 0), (31, 4, 7, 7, 3, 1), (1, 3, 2, 4, 2, 1), (7, 2, 3, 3, 3, 0)])
def test_product_col2im_is_conv_transpose1d(lib, t_in, cin, cout, k, stride, reflect):
    rng = np.random.default_rng(t_in + k)
    pad = (k - stride) // 2
    x = rng.standard_normal((t_in, cin), dtype=np.float32)
    w = rng.standard_normal((cin, cout, k), dtype=np.float32)
    b = rng.standard_normal(cout, dtype=np.float32)
    z = (x.astype(np.float64) @ w.reshape(cin, cout * k).astype(np.float64)).astype(np.float32)
    L = (t_in - 1) * stride + k - 2 * pad
    y = np.full((L + reflect, cout), np.nan, np.float32)
    assert lib.minmo_conv_transpose1d_col2im_f32_cpu(ptr(z), ptr(b), ptr(y), t_in, cout, k, stride, pad,
                                                     reflect) == OK
    ref = F.conv_transpose1d(torch.from_numpy(x).double().T[None], torch.from_numpy(w).double(),
                             torch.from_numpy(b).double(), stride, pad)
    if reflect:
        ref = F.pad(ref, (reflect, 0), mode="reflect")
    assert rel_err(y, ref[0].T.numpy()) < 1e-6
    y2 = np.full_like(y, np.nan)
    assert lib.minmo_conv_transpose1d_col2im_f32_cpu(ptr(z), None, ptr(y2), t_in, cout, k, stride, pad, reflect) == OK
    assert rel_err(y2 + b, y) < 1e-6


def test_col2im_rejects_bad_arguments(lib):
    z = np.zeros((4, 12), np.float32)
    y = np.zeros(64, np.float32)
    f = lib.minmo_conv_transpose1d_col2im_f32_cpu
    assert f(ptr(z), None, ptr(y), 4, 3, 4, 5, 0, 0) == INVALID  # k < stride
    assert f(ptr(z), None, ptr(y), 4, 3, 4, 2, -1, 0) == INVALID  # negative padding
    assert f(ptr(z), None, ptr(y), 1, 3, 4, 2, 0, 4) == INVALID  # reflection past the output
    assert f(ptr(z), None, ptr(z), 4, 3, 4, 2, 1, 0) == INVALID  # y overlaps z
    assert f(ptr(z), None, ptr(y), 4, 3, 4, 2, 1, 1) == OK


@pytest.mark.parametrize("n,n_fft,hop", [(9, 16, 4), (480 * 7, 16, 4), (101, 8, 2), (333, 32, 8), (50, 16, 3)])
def test_stft_matches_reference_and_torch(lib, n, n_fft, hop):
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n, dtype=np.float32)
    frames = n // hop + 1
    spec = np.full((frames, n_fft + 2), np.nan, np.float32)
    assert lib.minmo_hift_stft_f32_cpu(ptr(x), ptr(spec), n, n_fft, hop) == OK
    xt = torch.from_numpy(x).double()
    t = torch.stft(xt, n_fft, hop, window=torch.hann_window(n_fft, periodic=True, dtype=torch.float64), center=True,
                   pad_mode="reflect", return_complex=True)
    ref = torch.cat([t.real, t.imag], 0).T.numpy()
    assert rel_err(spec, ref) < 1e-6
    assert rel_err(spec, stft(torch.from_numpy(x), n_fft, hop).T.numpy()) < 1e-5


def test_stft_rejects_bad_arguments(lib):
    x = np.zeros(64, np.float32)
    spec = np.zeros((64, 34), np.float32)
    f = lib.minmo_hift_stft_f32_cpu
    assert f(ptr(x), ptr(spec), 8, 16, 4) == INVALID  # n <= n_fft / 2: one reflection is not enough
    assert f(ptr(x), ptr(spec), 64, 15, 4) == INVALID  # odd n_fft
    assert f(ptr(x), ptr(spec), 64, 64, 4) == INVALID  # above MINMO_HIFT_MAX_NFFT
    assert f(ptr(x), ptr(x), 16, 16, 4) == INVALID  # overlap
    assert f(ptr(x), ptr(spec), 9, 16, 4) == OK


def test_axpby(lib):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(1001, dtype=np.float32)
    y = rng.standard_normal(1001, dtype=np.float32)
    ref = 0.25 * x.astype(np.float64) - 2.0 * y
    assert lib.minmo_axpby_f32_cpu(ptr(x), ptr(y), 1001, 0.25, -2.0) == OK
    assert rel_err(y, ref) < 1e-7
    y[:] = np.nan
    assert lib.minmo_axpby_f32_cpu(ptr(x), ptr(y), 1001, 3.0, 0.0) == OK  # b == 0: y not read
    assert rel_err(y, 3.0 * x) < 1e-7
    assert lib.minmo_axpby_f32_cpu(ptr(x), ptr(x), 1001, 1.0, 1.0) == OK  # in place
    assert lib.minmo_axpby_f32_cpu(ptr(x), ptr(x[1:]), 1000, 1.0, 1.0) == INVALID  # partial overlap
    assert lib.minmo_axpby_f32_cpu(ptr(x), ptr(y), 0, 1.0, 1.0) == INVALID
