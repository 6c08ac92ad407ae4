"""CPU twins of the HiFT filter-network kernels (kernels/include/minmo_kernels/hift_net.h) against
torch: im2col + product = F.conv1d of the activated input (LeakyReLU, ELU, the reference Snake),
product + col2im = F.conv_transpose1d (+ the reflection pad), the source STFT = the reference
stft (export/reference/hift.py) and torch.stft; and of the NSF source kernels (hift.h): the
float64 phase scan against the host's sequential recurrence and the reference cumsum, windows
carrying the history ring, the source against the reference source_from_f0, the counter-based
normals against the reference counter_normal. Fresh random draws of odd sizes, NaN-poisoned
outputs. The CUDA kernels are checked against these twins by kernels/tests/check_hift_net.cu and
check_hift_source.cu."""
from __future__ import annotations

import ctypes

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


# ---- NSF source (hift.h: minmo_hift_phase_f64, minmo_hift_source_f32, minmo_counter_normal_f32) ----

from _kernels_cpu import HiftNsf, HiftWindow  # noqa: E402
from minmo_rt.export.reference.flow import HIFT_NOISE_STREAM, counter_normal  # noqa: E402
from minmo_rt.export.reference.hift import HiftConfig, harmonic_phase_steps, source_from_f0  # noqa: E402


def _nsf(cfg: HiftConfig) -> HiftNsf:
    return HiftNsf(cfg.nb_harmonics + 1, cfg.samples_per_frame, float(cfg.sample_rate), cfg.nsf_alpha, cfg.nsf_sigma,
                   cfg.nsf_voiced_threshold, HIFT_NOISE_STREAM)


def _f0(rng, n):
    """Speech-like f0 in Hz with unvoiced stretches (|.| is taken by the kernel: signs are mixed)."""
    f = rng.uniform(80.0, 400.0, n) * rng.choice([-1.0, 1.0], n)
    f[rng.random(n) < 0.3] = rng.uniform(-5.0, 5.0)
    return f.astype(np.float32)


class _Ring:
    """A stream's history ring and one window's outputs, run through the CPU twins."""

    def __init__(self, lib, cfg, cap):
        self.lib, self.cfg, self.nsf, self.cap = lib, cfg, _nsf(cfg), cap
        self.H = cfg.nb_harmonics + 1
        self.f0_hist = np.full(cap, np.nan, np.float32)
        self.q_hist = np.full((cap, self.H), np.nan)

    def phase(self, f0_raw, a0, e0, e1, seed=0):
        T = len(f0_raw)
        f0 = np.full(T, np.nan, np.float32)
        q = np.full((T + 1, self.H), np.nan)
        win = HiftWindow(a0, e0, e1, seed)
        rc = self.lib.minmo_hift_phase_f64_cpu(ptr(f0_raw), ctypes.byref(win), ptr(self.f0_hist), ptr(self.q_hist),
                                               self.cap, ptr(f0), ptr(q), T, self.nsf)
        return rc, f0, q, win

    def source(self, f0, q, win, lin_w, lin_b):
        out = np.full(len(f0) * self.cfg.samples_per_frame, np.nan, np.float32)
        rc = self.lib.minmo_hift_source_f32_cpu(ptr(f0), ptr(q), ctypes.byref(win), ptr(lin_w), ptr(lin_b), ptr(out),
                                                len(f0), self.nsf)
        return rc, out


def _host_phases(f0_abs, cfg):
    """The host's sequential float64 recurrence (HiftModel / HiftStream): q_k = frac(q_{k-1} + S r_k)."""
    r = harmonic_phase_steps(torch.from_numpy(f0_abs), cfg)
    q, acc = np.zeros_like(r), np.zeros(r.shape[1])
    for k in range(len(r)):
        acc = acc + cfg.samples_per_frame * r[k]
        acc -= np.floor(acc)
        q[k] = acc
    return q


def _circ(a, b):
    d = np.abs(np.asarray(a) - np.asarray(b)) % 1.0
    return float(np.max(np.minimum(d, 1.0 - d)))


@pytest.mark.parametrize("count,start,seed,stream", [(1001, 0, 0, 1), (333, 123456789, 7, 1), (17, 2**40 + 3, 2**63 + 5, 0)])
def test_counter_normal_twin_is_the_reference(lib, count, start, seed, stream):
    out = np.full(count, np.nan, np.float32)
    assert lib.minmo_counter_normal_f32_cpu(seed, stream, start, count, ptr(out)) == OK
    ref = counter_normal(seed, stream, start, count).numpy()
    # numpy's float64 log / cos may round differently from libm: at most one float ulp apart
    assert np.max(np.abs(out - ref) / np.maximum(np.abs(ref), 1e-30)) <= 2.0 ** -23
    assert np.mean(out == ref) > 0.999
    assert lib.minmo_counter_normal_f32_cpu(seed, stream, start, 0, ptr(out)) == INVALID


@pytest.mark.parametrize("T,nb", [(37, 8), (301, 8), (1000, 2), (1, 0)])
def test_phase_scan_is_the_host_recurrence(lib, T, nb):
    """Offline window (a0 = e0 = 0, e1 = T): f0 = |f0_raw|, q row 0 = 0, rows 1.. the phases (runs of
    several frames per scan thread for T > 256); the ring holds every frame afterwards."""
    cfg = HiftConfig(nb_harmonics=nb)
    rng = np.random.default_rng(T + nb)
    f0_raw = _f0(rng, T)
    ring = _Ring(lib, cfg, T + 3)
    rc, f0, q, _ = ring.phase(f0_raw, 0, 0, T)
    assert rc == OK
    assert np.array_equal(f0, np.abs(f0_raw))
    assert np.all(q[0] == 0.0)
    host = _host_phases(np.abs(f0_raw), cfg)
    assert _circ(q[1:], host) < 1e-12  # measured: 1e-13 turns at 1000 frames (ulp(S r) ~ 6e-14)
    ref = np.mod(np.cumsum(cfg.samples_per_frame * harmonic_phase_steps(torch.from_numpy(np.abs(f0_raw)), cfg), 0), 1)
    assert _circ(q[1:], ref) < 1e-9
    slots = np.arange(T) % ring.cap
    assert np.array_equal(ring.f0_hist[slots], f0) and np.array_equal(ring.q_hist[slots], q[1:])


def test_phase_windows_carry_the_history(lib):
    """A stream's windows [a0, a0 + T) with frames before e0 from the ring: the f0 and phases of the
    final frames equal the offline ones, whatever the window's own predictor said about them."""
    cfg = HiftConfig()
    rng = np.random.default_rng(3)
    total, left, right = 150, 11, 9
    truth = _f0(rng, total)  # the f0 each frame has when it becomes final
    host = _host_phases(np.abs(truth), cfg)
    ring = _Ring(lib, cfg, left + right + 40 + 1)
    e0 = 0
    for e1 in [20, 27, 60, 99, 100, 138, 150]:
        a0 = max(0, e0 - left)
        a1 = min(total, e1 + right)
        f0_raw = truth[a0:a1].copy()
        f0_raw[:e0 - a0] = rng.standard_normal(e0 - a0)  # history frames: must not be used
        f0_raw[e1 - a0:] *= 1.5  # provisional frames past e1: used here, not kept
        rc, f0, q, _ = ring.phase(f0_raw, a0, e0, e1)
        assert rc == OK
        assert np.array_equal(f0[:e1 - a0], np.abs(truth[a0:e1]))
        assert _circ(q[1:e1 - a0 + 1], host[a0:e1]) < 1e-12
        assert (q[0] == 0).all() if a0 == 0 else _circ(q[0], host[a0 - 1]) < 1e-12
        e0 = e1


def test_phase_invalid_window_writes_nan(lib):
    cfg = HiftConfig()
    ring = _Ring(lib, cfg, 20)
    ring.f0_hist[:] = 1.0
    rc, f0, q, _ = ring.phase(np.ones(8, np.float32), 5, 3, 9)  # e0 < a0
    assert rc == OK and np.isnan(f0).all() and np.isnan(q).all()
    assert (ring.f0_hist == 1.0).all()
    rc, f0, q, _ = ring.phase(np.ones(8, np.float32), 0, 0, 9)  # e1 past the window
    assert np.isnan(q).all()


def test_phase_and_source_reject_bad_arguments(lib):
    cfg = HiftConfig()
    ring = _Ring(lib, cfg, 9)
    f0_raw = np.ones(8, np.float32)
    assert ring.phase(f0_raw, 0, 0, 8)[0] == OK
    assert ring.phase(np.ones(9, np.float32), 0, 0, 9)[0] == INVALID  # cap < T + 1
    for bad in (0, 65):
        r = _Ring(lib, HiftConfig(nb_harmonics=bad - 1), 20)
        assert r.phase(f0_raw, 0, 0, 8)[0] == INVALID
    f0 = np.ones(8, np.float32)
    q = np.zeros((9, 9))
    win = HiftWindow(0, 0, 8, 0)
    out = np.zeros(8 * 480, np.float32)
    w = np.ones(9, np.float32)
    f = lib.minmo_hift_source_f32_cpu
    assert f(ptr(f0), ptr(q), ctypes.byref(win), ptr(w), None, ptr(out), 8, ring.nsf) == OK  # no bias
    assert f(ptr(f0), ptr(q), ctypes.byref(win), None, None, ptr(out), 8, ring.nsf) == INVALID  # no weight
    assert f(ptr(f0), ptr(q), ctypes.byref(win), ptr(w), None, ptr(q), 8, ring.nsf) == INVALID  # out overlaps q
    assert f(ptr(f0), ptr(q), ctypes.byref(win), ptr(w), None, ptr(out), 0, ring.nsf) == INVALID


@pytest.mark.parametrize("T,nb,seed", [(23, 8, 5), (301, 3, 2**40 + 1)])
def test_source_is_the_reference(lib, T, nb, seed):
    """Offline: phase + source twins = source_from_f0 (export/reference/hift.py), noise included."""
    cfg = HiftConfig(nb_harmonics=nb)
    rng = np.random.default_rng(T)
    f0_raw = _f0(rng, T)
    lin = torch.nn.Linear(nb + 1, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(rng.standard_normal((1, nb + 1)).astype(np.float32)))
        lin.bias.fill_(0.1)
    ring = _Ring(lib, cfg, T + 1)
    rc, f0, q, win = ring.phase(f0_raw, 0, 0, T, seed)
    assert rc == OK
    lw, lb = lin.weight.detach().numpy()[0].copy(), lin.bias.detach().numpy().copy()
    rc, out = ring.source(f0, q, win, lw, lb)
    assert rc == OK
    with torch.no_grad():
        ref = source_from_f0(torch.from_numpy(np.abs(f0_raw)), lin, cfg, seed).numpy()
    assert rel_err(out, ref) < 1e-6  # fp32 rounding of the harmonics and of l_linear


def test_windowed_source_equals_offline(lib):
    """A window starting at a0 > 0 with the offline phases and f0: its samples equal the offline
    source's (noise addressed by the absolute sample index), except the window's last frame, where
    the interpolation has no next frame."""
    cfg = HiftConfig()
    S, T, a0, total, seed = cfg.samples_per_frame, 40, 17, 80, 3
    rng = np.random.default_rng(1)
    f0_raw = _f0(rng, total)
    lw = rng.standard_normal(9).astype(np.float32)
    lb = np.array([-0.05], np.float32)
    off = _Ring(lib, cfg, total + 1)
    rc, f0, q, win = off.phase(f0_raw, 0, 0, total, seed)
    _, full = off.source(f0, q, win, lw, lb)
    ring = _Ring(lib, cfg, T + 1)
    win = HiftWindow(a0, a0, a0 + T, seed)
    _, out = ring.source(f0[a0:a0 + T].copy(), q[a0:a0 + T + 1].copy(), win, lw, lb)
    n = (T - 1) * S
    assert rel_err(out[:n], full[a0 * S:a0 * S + n]) < 1e-6  # sample positions round differently
    assert np.isnan(ring.source(f0[:T].copy(), q[:T + 1].copy(), HiftWindow(3, 2, 5, 0), lw, lb)[1]).all()
