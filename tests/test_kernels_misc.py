"""CPU twins of the non-LLM kernels (kernels/include/minmo_kernels/{fsmn,sampling,flow,hift}.h)
against independent references: export/reference/layers.py fsmn_memory, torch.istft as CosyVoice2's
HiFT calls it, numpy re-statements of CosyVoice2 ras_sampling / the flow Euler step. Inputs are
fresh random draws of odd sizes; outputs are NaN-poisoned before each call. The CUDA kernels are
checked against these twins by kernels/tests/check_speech.cu, part of the CUDA harness that
tests/test_kernels.py::test_cuda_kernels_match_cpu_twins runs where a GPU is present."""
from __future__ import annotations

import ctypes
import os
import tempfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from _kernels_cpu import RasParams, RasState, SamplingParams, load_cpu_kernels, ptr
from minmo_rt.export.reference import SplitMix64, VoiceLMConfig, ras_sample
from minmo_rt.export.reference.layers import chunk_limits, fsmn_memory
from minmo_rt.export.reference.configs import ChunkSpec

OK, INVALID = 0, 1


@pytest.fixture(scope="module")
def lib():
    return load_cpu_kernels()


def rel_err(a, ref):
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(a - ref) / max(np.linalg.norm(ref), 1e-30))


def poisoned(shape):
    return np.full(shape, np.nan, np.float32)


# ---- FSMN ------------------------------------------------------------------------------------

@pytest.mark.parametrize("frames,dim,kernel,shift,chunk", [
    (1, 1, 1, 0, 0), (7, 5, 11, 0, 0), (37, 129, 11, 0, 0), (37, 129, 11, -2, 0), (53, 67, 15, 0, 8),
    (61, 512, 11, 1, 6), (5, 33, 15, 0, 0),
])
def test_fsmn_attn_matches_reference(lib, frames, dim, kernel, shift, chunk):
    rng = np.random.default_rng(frames * 1000 + dim)
    v = rng.standard_normal((frames, dim), dtype=np.float32)
    attn = rng.standard_normal((frames, dim), dtype=np.float32)
    w = rng.standard_normal((dim, 1, kernel), dtype=np.float32)
    left_pad = (kernel - 1) // 2 + shift
    spec = ChunkSpec(encoder_attention="chunked", chunk_frames=chunk, left_chunks=4) if chunk else None
    ref = fsmn_memory(torch.from_numpy(v).double(), torch.from_numpy(w).double(), left_pad,
                      chunk_limits(frames, spec)).numpy() + attn
    out = poisoned((frames, dim))
    assert lib.minmo_fsmn_attn_f32_cpu(ptr(v), ptr(attn), ptr(w), ptr(out), frames, dim, kernel, left_pad, chunk) == OK
    assert rel_err(out, ref) < 1e-6
    mem_only = poisoned((frames, dim))
    assert lib.minmo_fsmn_attn_f32_cpu(ptr(v), None, ptr(w), ptr(mem_only), frames, dim, kernel, left_pad, chunk) == OK
    assert rel_err(mem_only, ref - attn) < 1e-6
    # out may alias attn
    lib.minmo_fsmn_attn_f32_cpu(ptr(v), ptr(attn), ptr(w), ptr(attn), frames, dim, kernel, left_pad, chunk)
    assert np.array_equal(attn, out)


def test_fsmn_attn_rejects_bad_arguments(lib):
    v = np.zeros((4, 3), np.float32)
    w = np.zeros((3, 5), np.float32)
    out = np.zeros_like(v)
    f = lib.minmo_fsmn_attn_f32_cpu
    assert f(ptr(v), None, ptr(w), ptr(out), 4, 3, 5, 5, 0) == INVALID  # left_pad >= K
    assert f(ptr(v), None, ptr(w), ptr(out), 4, 3, 5, -1, 0) == INVALID
    assert f(ptr(v), None, ptr(w), ptr(v), 4, 3, 5, 2, 0) == INVALID  # out aliases v
    assert f(ptr(v), None, None, ptr(out), 4, 3, 5, 2, 0) == INVALID
    assert f(ptr(v), None, ptr(w), ptr(out), 4, 0, 5, 2, 0) == INVALID


# ---- flow Euler step + CFG -------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 7, 80 * 193, 100003])
def test_flow_euler_cfg(lib, n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n, dtype=np.float32)
    est = rng.standard_normal((2, n), dtype=np.float32)
    cfg, dt = 0.7, 1.0 / 10
    ref = x.astype(np.float64) + dt * ((1 + cfg) * est[0].astype(np.float64) - cfg * est[1])
    nxt = poisoned((2, n))
    assert lib.minmo_flow_euler_cfg_f32_cpu(ptr(x), ptr(est), ptr(nxt), n, cfg, dt) == OK
    assert rel_err(x, ref) < 1e-6
    assert np.array_equal(nxt[0], x) and np.array_equal(nxt[1], x)
    # next_in may be the estimator buffer itself (written after it is read)
    x2 = ref.astype(np.float32)
    assert lib.minmo_flow_euler_cfg_f32_cpu(ptr(x2), ptr(est), ptr(est), n, cfg, dt) == OK
    assert np.array_equal(est[0], x2) and np.array_equal(est[1], x2)


def test_flow_euler_cfg_rejects_overlap(lib):
    buf = np.zeros(30, np.float32)
    assert lib.minmo_flow_euler_cfg_f32_cpu(ptr(buf), ptr(buf[5:]), None, 10, 0.7, 0.1) == INVALID
    assert lib.minmo_flow_euler_cfg_f32_cpu(ptr(buf[:5]), ptr(buf[10:]), ptr(buf[2:]), 5, 0.7, 0.1) == INVALID
    assert lib.minmo_flow_euler_cfg_f32_cpu(ptr(buf), ptr(buf[10:]), None, 5, 0.7, 0.1) == OK


# ---- HiFT iSTFT and cross-fade ----------------------------------------------------------------

def hift_istft_reference(spec: np.ndarray, n_fft: int, hop: int, audio_limit: float) -> np.ndarray:
    """CosyVoice2 HiFTGenerator: exp / sin split, _istft (clip 1e2, polar -> torch.istft), clamp."""
    bins = n_fft // 2 + 1
    s = torch.from_numpy(spec).double()
    mag = torch.clip(torch.exp(s[:bins]), max=1e2)
    phase = torch.sin(s[bins:])
    x = torch.complex(mag * torch.cos(phase), mag * torch.sin(phase))
    y = torch.istft(x, n_fft, hop, n_fft, window=torch.hann_window(n_fft, periodic=True, dtype=torch.float64))
    if audio_limit > 0:
        y = torch.clamp(y, -audio_limit, audio_limit)
    return y.numpy()


@pytest.mark.parametrize("frames,n_fft,hop,limit", [(2, 16, 4, 0.99), (3, 16, 4, 0.0), (97, 16, 4, 0.99),
                                                     (961, 16, 4, 0.0), (45, 8, 2, 0.0), (33, 32, 8, 0.5),
                                                     (50, 16, 8, 0.0)])
def test_hift_istft_matches_torch_istft(lib, frames, n_fft, hop, limit):
    rng = np.random.default_rng(frames + n_fft)
    spec = rng.standard_normal((n_fft + 2, frames), dtype=np.float32) * 1.5
    spec[0, 0] = 9.0  # exercises the magnitude clip at 100
    ref = hift_istft_reference(spec, n_fft, hop, limit)
    out = poisoned(hop * (frames - 1))
    assert lib.minmo_hift_istft_f32_cpu(ptr(spec), ptr(out), frames, n_fft, hop, limit) == OK
    assert out.shape == ref.shape
    assert rel_err(out, ref) < 1e-6
    if limit > 0:
        assert np.abs(out).max() <= limit


def test_hift_istft_rejects_bad_arguments(lib):
    spec = np.zeros((18, 4), np.float32)
    out = np.zeros(64, np.float32)
    f = lib.minmo_hift_istft_f32_cpu
    assert f(ptr(spec), ptr(out), 1, 16, 4, 0.99) == INVALID  # one frame: no samples
    assert f(ptr(spec), ptr(out), 4, 15, 4, 0.99) == INVALID  # odd n_fft
    assert f(ptr(spec), ptr(out), 4, 16, 9, 0.99) == INVALID  # hop > n_fft / 2
    assert f(ptr(spec), ptr(out), 4, 64, 4, 0.99) == INVALID  # above MINMO_HIFT_MAX_NFFT


@pytest.mark.parametrize("overlap", [1, 5, 3840])
def test_hamming_crossfade(lib, overlap):
    rng = np.random.default_rng(overlap)
    chunk = rng.standard_normal(overlap + 17, dtype=np.float32)
    tail = rng.standard_normal(overlap, dtype=np.float32)
    w = np.hamming(2 * overlap)
    ref = chunk.astype(np.float64).copy()
    ref[:overlap] = chunk[:overlap] * w[:overlap] + tail * w[overlap:]
    assert lib.minmo_hamming_crossfade_f32_cpu(ptr(chunk), ptr(tail), overlap) == OK
    assert rel_err(chunk, ref) < 1e-7


# ---- sampling -----------------------------------------------------------------------------------

def philox(lib, seed, counter):
    words = np.zeros(4, np.uint32)
    uni = np.zeros(4, np.float32)
    lib.minmo_philox4x32_cpu(seed, counter, ptr(words), ptr(uni))
    return words, uni


def test_philox_known_answers(lib):
    # Random123 kat_vectors, philox4x32-10 with counter words (c0, c1, 0, 0) and key (k0, k1).
    w, u = philox(lib, 0, 0)
    assert [hex(x) for x in w] == ["0x6627e8d5", "0xe169c58d", "0xbc57ac4c", "0x9b00dbd8"]
    assert np.array_equal(u, (w >> 8).astype(np.float32) / 2**24)
    assert philox(lib, 1, 0)[0].tolist() != philox(lib, 0, 1)[0].tolist()


def params(**kw):
    base = dict(top_k=25, top_p=0.8, temperature=1.0, ras_window=10, ras_tau=0.1, force_id=-1, seed=1234, counter=0)
    base.update(kw)
    return SamplingParams(**base)


def sample(lib, logits, history=None, forbid=None, **kw):
    tok = ctypes.c_int32(-7)
    h = np.asarray(history if history is not None else [], np.int32)
    fb = np.asarray(forbid if forbid is not None else [], np.int32)
    rc = lib.minmo_sample_ras_f32_cpu(ptr(logits), logits.size, ptr(h) if h.size else None, h.size,
                                      ptr(fb) if fb.size else None, fb.size, params(**kw), ctypes.byref(tok))
    return rc, tok.value


def ras_reference(logits, history, forbid, u0, u1, top_k=25, top_p=0.8, temperature=1.0, window=10, tau=0.1):
    """CosyVoice2 ras_sampling (nucleus_sampling, then random_sampling when the token repeats) with
    the multinomial draws replaced by inverse-CDF draws at the given uniforms."""
    l = (logits / np.float32(temperature)).astype(np.float64)
    l[np.asarray(forbid, np.int64)] = -np.inf
    p = np.exp(l - l.max())
    p /= p.sum()
    order = np.argsort(-l, kind="stable")
    prob, ids, cum = [], [], 0.0
    for i in order:
        if cum < top_p and len(prob) < top_k and np.isfinite(l[i]):
            cum += p[i]
            prob.append(p[i])
            ids.append(i)
        else:
            break
    tok = ids[min(int(np.searchsorted(np.cumsum(prob), u0 * sum(prob), side="right")), len(ids) - 1)]
    reps = int(np.sum(np.asarray(history[-window:], np.int64) == tok)) if window else 0
    if window and np.float32(reps) >= np.float32(window) * np.float32(tau):
        tok = min(int(np.searchsorted(np.cumsum(p), u1 * p.sum(), side="right")), int(np.nonzero(p)[0][-1]))
    return tok


def test_sampling_matches_cosyvoice_ras(lib):
    rng = np.random.default_rng(0)
    vocab = 6564
    mismatches = 0
    for step in range(150):
        logits = (rng.standard_normal(vocab) * rng.uniform(0.5, 4)).astype(np.float32)
        history = rng.integers(0, vocab, size=int(rng.integers(0, 20))).tolist()
        _, u = philox(lib, 99, step)
        # put the nucleus' likely tokens into the history half of the time so RAS fires
        if step % 2:
            history += np.argsort(-logits)[:3].tolist()
        forbid = rng.integers(0, vocab, size=3).tolist() + [int(np.argmax(logits))] * (step % 3 == 0)
        temp = float(rng.choice([1.0, 0.7]))
        top_k, top_p = int(rng.choice([1, 25, 64])), float(rng.choice([0.8, 1.0, 0.3]))
        rc, tok = sample(lib, logits, history, forbid, top_k=top_k, top_p=top_p, temperature=temp, seed=99,
                         counter=step)
        assert rc == OK
        ref = ras_reference(logits, history, forbid, float(u[0]), float(u[1]), top_k, top_p, temp)
        mismatches += tok != ref
    assert mismatches == 0


def test_sampling_frequencies_follow_the_nucleus(lib):
    rng = np.random.default_rng(1)
    logits = rng.standard_normal(41).astype(np.float32) * 2
    n = 20000
    counts = np.zeros(41)
    for c in range(n):
        rc, tok = sample(lib, logits, ras_window=0, top_k=5, top_p=0.9, counter=c, seed=7)
        assert rc == OK
        counts[tok] += 1
    p = np.exp(logits.astype(np.float64) - logits.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    keep, cum = [], 0.0
    for i in order:
        if cum < 0.9 and len(keep) < 5:
            keep.append(i)
            cum += p[i]
    expect = np.zeros(41)
    expect[keep] = p[keep] / p[keep].sum()
    assert np.abs(counts / n - expect).max() < 0.015
    assert counts[[i for i in range(41) if i not in keep]].sum() == 0


def test_sampling_ras_threshold_and_forced_and_forbidden(lib):
    logits = np.array([0.0, 5.0, 1.0, 4.9, -1.0], np.float32)
    # top_k 1 -> nucleus is the argmax (1); one occurrence in the window fires RAS at tau 0.1 (1 >= 1)
    drawn = {sample(lib, logits, [1], top_k=1, counter=c)[1] for c in range(400)}
    assert drawn == {0, 1, 2, 3, 4}
    # at tau 0.2 one occurrence is below the threshold (1 < 2): always the argmax
    assert {sample(lib, logits, [1], top_k=1, ras_tau=0.2, counter=c)[1] for c in range(100)} == {1}
    # occurrences older than the window do not count
    assert {sample(lib, logits, [1] + [0] * 10, top_k=1, counter=c)[1] for c in range(100)} == {1}
    assert sample(lib, logits, force_id=4) == (OK, 4)
    assert {sample(lib, logits, forbid=[1, 3], ras_window=0, counter=c)[1] for c in range(200)} <= {0, 2}
    assert sample(lib, logits, forbid=[0, 1, 2, 3, 4]) == (OK, -1)
    nan_logits = logits.copy()
    nan_logits[1] = np.nan
    assert sample(lib, nan_logits, top_k=1, ras_window=0) == (OK, 3)


@pytest.mark.parametrize("kw", [dict(top_k=0), dict(top_k=65), dict(top_p=0.0), dict(top_p=1.5),
                                dict(temperature=0.0), dict(ras_window=-1), dict(force_id=5)])
def test_sampling_rejects_bad_parameters(lib, kw):
    logits = np.zeros(5, np.float32)
    assert sample(lib, logits, **kw)[0] == INVALID


# ---- the voice LM's sampler as a device-loop step (SplitMix64 state in memory) -----------------



def ras_loop(lib, logits, n_allowed, state, history, pos=None, cfg=VoiceLMConfig(), bf16=False):
    """One minmo_sample_ras_loop_*_cpu call; history: the int32 ring (updated in place)."""
    tok = ctypes.c_int32(-7)
    fn = lib.minmo_sample_ras_loop_bf16_cpu if bf16 else lib.minmo_sample_ras_loop_f32_cpu
    params = RasParams(top_k=cfg.top_k, win_size=cfg.win_size, top_p=cfg.top_p, tau_r=cfg.tau_r)
    rc = fn(ptr(logits), n_allowed, ptr(history), history.size, ctypes.byref(state),
            ptr(pos) if pos is not None else None, params, ctypes.byref(tok))
    return rc, tok.value


def to_bf16_bits(x):
    """fp32 -> bf16 bits, round to nearest even (finite values)."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def check_against_ras_sample(lib, rows, n_allowed, seed, cfg=VoiceLMConfig(), bf16=False, cap=None):
    """Draws one token per row as a loop (history ring, state carried between calls) and with the
    reference ras_sample; returns (tokens, reference tokens, RAS redraws seen)."""
    cap = cap or cfg.win_size + 3
    ring = np.full(cap, -5, np.int32)
    state = RasState(rng=seed, n_history=0)
    pos = np.array([41], np.int32)
    ref_rng, history, got, want, redraws = SplitMix64(seed), [], [], [], 0
    for i, row in enumerate(rows):
        before = ref_rng.state
        want.append(ras_sample(row.astype(np.float32), n_allowed, history, cfg, ref_rng))
        draws = 1 if ref_rng.state == (before + 0x9E3779B97F4A7C15) % 2**64 else 2
        redraws += draws == 2
        rc, tok = ras_loop(lib, to_bf16_bits(row) if bf16 else np.ascontiguousarray(row, np.float32), n_allowed,
                           state, history=ring, pos=pos, cfg=cfg, bf16=bf16)
        assert rc == OK
        got.append(tok)
        history.append(want[-1])
        assert state.n_history == i + 1 and pos[0] == 42 + i and ring[i % cap] == tok
        assert state.rng == ref_rng.state  # the same number of draws, so the same generator state
    return got, want, redraws


def test_ras_loop_matches_reference_ras_sample(lib):
    """Random logits at CosyVoice2's vocabulary (6561 of 6564 ids allowed), scales from flat to peaked,
    around a common profile so that tokens repeat and the RAS redraw happens."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal(6564)
    rows = [((base + 0.5 * rng.standard_normal(6564)) * s).astype(np.float32) for s in rng.uniform(0.3, 6.0, 300)]
    got, want, redraws = check_against_ras_sample(lib, rows, 6561, seed=12345)
    assert got == want and redraws >= 20


def test_ras_loop_small_vocab_configs(lib):
    """Odd sizes and configs: top_k 1 (greedy nucleus, RAS fires on every repeat), top_p 1, a window of one."""
    rng = np.random.default_rng(4)
    for n, cfg in [(3, VoiceLMConfig(top_k=1)), (41, VoiceLMConfig(top_p=1.0, top_k=64)),
                   (1025, VoiceLMConfig(win_size=1, tau_r=0.5)), (7, VoiceLMConfig(tau_r=0.0))]:
        base = 3 * rng.standard_normal(n + 3)
        rows = [(base + rng.standard_normal(n + 3)).astype(np.float32) for _ in range(120)]
        got, want, redraws = check_against_ras_sample(lib, rows, n, seed=int(rng.integers(2**63)), cfg=cfg)
        assert got == want and redraws > 0, cfg


def test_ras_loop_on_voice_lm_logits(lib):
    """The logits of a voice LM (the runtime's CPU backend, fp32; and bf16-rounded, what the CUDA
    backend's head writes): the loop kernel's twin draws ras_sample's tokens."""
    import json

    from minmo_rt import _core
    from minmo_rt.export.checkpoints import synthetic
    from minmo_rt.export.reference.voice_decoder import VoiceLM as VoiceLMRef
    from test_llm_modules import save

    cfg = VoiceLMConfig(vocab_size=300, hidden_size=128, intermediate_size=192, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=64, speech_token_size=200)
    torch.manual_seed(0)
    lm = synthetic.perturb_(VoiceLMRef(cfg), 3).eval()
    with tempfile.TemporaryDirectory() as d:
        path = save(lm, os.path.join(d, "voice.safetensors"))
        with torch.no_grad():
            x = torch.cat([lm.sos(), lm.speech_embed(list(range(0, 200, 2)) * 2)]).numpy()
        logits = _core.testing_voice.voice_logits(path, json.dumps(cfg.to_dict()), x, "cpu")
    for bf16 in (False, True):
        rows = [r for r in logits]
        if bf16:  # the values the device sees
            rows = [(to_bf16_bits(r).astype(np.uint32) << 16).view(np.float32) for r in rows]
        got, want, redraws = check_against_ras_sample(lib, rows, cfg.speech_token_size, seed=7, cfg=cfg, bf16=bf16)
        assert got == want and redraws >= 5


def test_ras_loop_window_ring_and_errors(lib):
    cfg = VoiceLMConfig(top_k=1, win_size=3, tau_r=0.5)  # redraw when the argmax is >= 1.5 of the last 3
    logits = np.array([0.0, 6.0, 1.0, 5.0, -1.0, 0.5], np.float32)
    ring = np.array([1, 4, 0, 2, 2], np.int32)  # cap 5; entries 3, 4 (= 2, 2) and 5 % 5 = 0 (= 1) are the window
    st = RasState(rng=99, n_history=6)
    assert ras_loop(lib, logits, 5, st, ring, cfg=cfg) == (OK, 1)  # one 1 in the window: no redraw
    assert st.n_history == 7 and ring[1] == 1 and st.rng == (99 + 0x9E3779B97F4A7C15) % 2**64
    # the window now holds 2, 1, 1: the argmax repeats twice, so a redraw from ids [0, 5)
    seen = set()
    for s in range(200):
        st2 = RasState(rng=s, n_history=7)
        rc, tok = ras_loop(lib, logits, 5, st2, ring.copy(), cfg=cfg)
        assert rc == OK and 0 <= tok < 5
        seen.add(tok)
    assert seen > {1}
    bad = logits.copy()
    bad[2] = np.inf
    st3 = RasState(rng=5, n_history=0)
    ring3 = np.zeros(5, np.int32)
    pos = np.array([10], np.int32)
    assert ras_loop(lib, bad, 5, st3, ring3, pos=pos, cfg=cfg) == (OK, -1)
    assert st3.rng == 5 and st3.n_history == 1 and ring3[0] == -1 and pos[0] == 11
    assert ras_loop(lib, bad, 2, RasState(rng=5), ring3, cfg=cfg)[0] == OK  # the bad id is not allowed
    for kw in [dict(top_k=0), dict(top_k=65), dict(top_p=0.0), dict(top_p=1.5), dict(win_size=0),
               dict(tau_r=-1.0)]:
        bad_cfg = SimpleNamespace(**{**dict(top_k=25, win_size=3, top_p=0.8, tau_r=0.1), **kw})
        assert ras_loop(lib, logits, 5, RasState(), ring, cfg=bad_cfg)[0] == INVALID, kw
    assert ras_loop(lib, logits, 5, RasState(), np.zeros(9, np.int32))[0] == INVALID  # ring < window
    assert ras_loop(lib, logits, 0, RasState(), ring, cfg=cfg)[0] == INVALID


def test_embedding_row(lib):
    rng = np.random.default_rng(5)
    table = rng.standard_normal((7, 13)).astype(np.float32)
    out = poisoned(13)
    for i in (0, 6, 3):
        assert lib.minmo_embedding_row_f32_cpu(ptr(table), 7, 13, ptr(np.array([i], np.int32)), ptr(out)) == OK
        assert np.array_equal(out, table[i])
    for bad in (-1, 7):
        out = poisoned(13)
        assert lib.minmo_embedding_row_f32_cpu(ptr(table), 7, 13, ptr(np.array([bad], np.int32)), ptr(out)) == OK
        assert not out.any()
    assert lib.minmo_embedding_row_f32_cpu(ptr(table), 0, 13, ptr(np.array([0], np.int32)), ptr(out)) == INVALID
