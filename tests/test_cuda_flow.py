"""The CosyVoice2 flow's estimator and Euler / guidance loop on the CUDA backend
(runtime/src/backends/cuda/flow_cuda.h) against the CPU FlowModel, segment by segment, and against
the PyTorch reference offline; streamed (Token2WavStream) against offline on the device; two
concurrent utterance states on one model; bad input; a Runtime on device="cuda-sim" running its
flow there.

Every test runs on "cuda-sim" (the backend's buffers, products and launch sequence with each kernel
replaced by its CPU twin and the fp32 products by OpenBLAS) and on "cuda" where a GPU is usable.
The device path is fp32 like the CPU one (its twins sum in fp64); DEVICE_TOL leaves room for the
GPU's expf / tanhf and cuBLAS summation order."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import minmo_rt
from minmo_rt import _core
from minmo_rt.export.reference import Flow, flow_offline, token2wav_offline

from test_cuda_backend import device  # noqa: F401  (the cuda-sim / cuda fixture)
from test_token2wav import MEL_TOL, MODULE_TOL, WAV_TOL, _inputs, perturb, rel, save_module, tiny_flow_config, tiny_hift_config

T2W = _core.testing_t2w

DEVICE_TOL = 1e-5


@pytest.fixture(scope="module")
def flow():
    torch.manual_seed(0)
    # two transformer blocks per stage and 3 mid stages: slots and stage wiring beyond the minimum
    return perturb(Flow(tiny_flow_config(n_transformer=2, n_mid_blocks=3)), 1)


@pytest.fixture(scope="module")
def files(tmp_path_factory, flow):
    return save_module(tmp_path_factory, flow, "flow")


def _segments(model, spk, tokens, sizes, prompt=None, pmel=None, left=-1, seed=3, lookahead=3, reserve=False):
    """Drives FlowModel::segment as Token2WavStream does: [prompt], then chunks of `sizes` tokens.
    reserve: size the state first as Token2WavStream does (FlowModel::reserve), which moves the
    encoder of a bounded-attention state (left >= 0) to the device too."""
    state = model.new_state(spk, prompt is not None, left)
    if reserve:
        n_prompt, chunk = (len(prompt) if prompt is not None else 0), max(sizes)
        state.reserve(max(n_prompt, chunk), n_prompt + (left + 1) * chunk if left >= 0 else n_prompt + sum(sizes))
        want = model.device if left >= 0 and model.device != "cpu" else "cpu"
        assert state.encoder_device == want
    else:
        assert state.encoder_device == "cpu"
    out = []
    if prompt is not None:
        out.append(state.segment(prompt, tokens[:lookahead], pmel, seed))
    at = 0
    for n in sizes:
        end = at + n
        out.append(state.segment(tokens[at:end], tokens[end:end + lookahead], None, seed))
        at = end
    return out


@pytest.mark.parametrize("reserve", [False, True], ids=["cpu_encoder", "reserved"])
@pytest.mark.parametrize("left,prompt,sizes", [(-1, 0, [5, 5, 5, 2]), (1, 4, [4, 4, 4, 4, 3]), (0, 3, [6, 6, 1]),
                                               (2, 0, [3, 7, 3, 7, 3, 1])])
def test_device_segments_match_cpu(files, device, left, prompt, sizes, reserve):
    """Estimator on the device after the CPU encoder, and (reserved, left >= 0) after the device
    encoder whose mu stays on the device."""
    fw, fc = files
    tokens, spk, ptok, pmel = (x.numpy() for x in _inputs(5, sum(sizes), prompt))
    cpu_model, dev_model = T2W.FlowModel(fw, fc), T2W.FlowModel(fw, fc, device)
    assert dev_model.device == device and cpu_model.device == "cpu"
    p = (ptok, pmel) if prompt else (None, None)
    cpu = _segments(cpu_model, spk, tokens, sizes, *p, left=left, reserve=reserve)
    got = _segments(dev_model, spk, tokens, sizes, *p, left=left, reserve=reserve)
    assert len(got) == len(cpu)
    for g, c in zip(got, cpu):
        assert g.shape == c.shape
        assert rel(g, c) <= DEVICE_TOL


@pytest.mark.parametrize("chunk,left,prompt", [(None, -1, 0), (5, -1, 0), (4, 1, 3), (7, 2, 0)])
def test_device_offline_matches_reference(flow, files, device, chunk, left, prompt):
    fw, fc = files
    tokens, spk, ptok, pmel = _inputs(11, 17, prompt)
    ref = flow_offline(flow, tokens, spk, ptok, pmel, seed=3, chunk_tokens=chunk, left_chunks=left)
    args = [x.numpy() for x in (tokens, spk, ptok, pmel)]
    got = T2W.flow_offline(fw, fc, *args, seed=3, chunk_tokens=chunk or 0, left_chunks=left, device=device)
    cpu = T2W.flow_offline(fw, fc, *args, seed=3, chunk_tokens=chunk or 0, left_chunks=left)
    assert got.shape == tuple(ref.shape)
    assert rel(got, cpu) <= DEVICE_TOL
    assert rel(got, ref) <= MODULE_TOL


def test_repeated_lengths_replay_graphs(files, device):
    """Eight equal chunks: the segment length repeats, so from the second one a captured graph runs
    (the caches' row count is read on the device); with left_chunks = 1 the caches are compacted
    before every chunk from the third on."""
    fw, fc = files
    tokens, spk, _, _ = (x.numpy() for x in _inputs(8, 34))
    sizes = [4] * 8 + [2]
    for left in (-1, 1):
        cpu = _segments(T2W.FlowModel(fw, fc), spk, tokens, sizes, left=left)
        got = _segments(T2W.FlowModel(fw, fc, device), spk, tokens, sizes, left=left)
        assert max(rel(g, c) for g, c in zip(got, cpu)) <= DEVICE_TOL


def test_two_concurrent_states_on_one_model(files, device):
    """Two utterances interleaved on one device model (each state has its own stream, caches and
    graphs) give what each gives alone."""
    fw, fc = files
    model = T2W.FlowModel(fw, fc, device)
    ta, sa, _, _ = (x.numpy() for x in _inputs(1, 12))
    tb, sb, _, _ = (x.numpy() for x in _inputs(2, 15))
    alone_a = _segments(T2W.FlowModel(fw, fc), sa, ta, [4, 4, 4], left=1)
    alone_b = _segments(T2W.FlowModel(fw, fc), sb, tb, [5, 5, 5], left=-1)
    a, b = model.new_state(sa, False, 1), model.new_state(sb, False, -1)
    a.reserve(4, 8)  # a's encoder on the device too, on a's stream
    assert a.encoder_device == device and b.encoder_device == "cpu"
    got_a, got_b = [], []
    for i in range(3):
        got_a.append(a.segment(ta[4 * i:4 * i + 4], ta[4 * i + 4:4 * i + 7], None, 3))
        got_b.append(b.segment(tb[5 * i:5 * i + 5], tb[5 * i + 5:5 * i + 8], None, 3))
    assert max(rel(g, c) for g, c in zip(got_a, alone_a)) <= DEVICE_TOL
    assert max(rel(g, c) for g, c in zip(got_b, alone_b)) <= DEVICE_TOL


@pytest.mark.parametrize("left,prompt", [(-1, 0), (1, 4)])
def test_device_token2wav_stream_equals_offline(flow, files, device, left, prompt, tmp_path_factory):
    """Token2WavStream with flow and HiFT on the device against the offline reference."""
    from minmo_rt.export.reference import HiFT

    fw, fc = files
    torch.manual_seed(0)
    hift = perturb(HiFT(tiny_hift_config()), 2)
    hw, hc = save_module(tmp_path_factory, hift, "hift")
    tokens, spk, ptok, pmel = _inputs(21, 23, prompt)
    mel_ref, wav_ref = token2wav_offline(flow, hift, tokens, spk, ptok if prompt else None, pmel if prompt else None,
                                         seed=2, chunk_tokens=5, left_chunks=left)
    kw = dict(prompt_tokens=ptok.numpy(), prompt_mel=pmel.numpy()) if prompt else {}
    s = T2W.Token2WavStream(fw, fc, hw, hc, spk.numpy(), seed=2, chunk_tokens=5, lookahead=3, left_chunks=left,
                            device=device, **kw)
    parts = [s.push(tokens[a:a + 6].numpy()) for a in range(0, 23, 6)]
    parts.append(s.finish())
    wav = np.concatenate(parts)
    assert rel(s.mel, mel_ref) <= MEL_TOL
    assert wav.shape == tuple(wav_ref.shape) and rel(wav, wav_ref) <= WAV_TOL


def test_bad_input_on_device(files):
    fw, fc = files
    model = T2W.FlowModel(fw, fc, "cuda-sim")
    tokens, spk, _, _ = (x.numpy() for x in _inputs(3, 9))
    st = model.new_state(spk, False, -1)
    with pytest.raises(minmo_rt.InvalidInputError, match="outside"):
        st.segment(tokens[:4] + 1000, tokens[4:7], None, 0)
    with pytest.raises(minmo_rt.InvalidInputError):
        st.segment(tokens[:0], tokens[:3], None, 0)
    with pytest.raises(minmo_rt.InvalidInputError):
        st.segment(tokens[:4], tokens[4:9], None, 0)  # 5 lookahead tokens > pre_lookahead
    with pytest.raises(minmo_rt.InvalidInputError):
        model.new_state(spk[:10], False, -1)
    with pytest.raises(minmo_rt.InvalidInputError):
        st.segment(tokens[:4], tokens[4:7], np.zeros((3, 80), np.float32), 0)
    # the state still works after the refused calls, and matches the CPU
    got = st.segment(tokens[:4], tokens[4:7], None, 0)
    ref = T2W.FlowModel(fw, fc).new_state(spk, False, -1).segment(tokens[:4], tokens[4:7], None, 0)
    assert rel(got, ref) <= DEVICE_TOL


def test_bad_input_with_the_device_encoder(files):
    """A state whose encoder reserve() moved to the device refuses bad ids and segments longer than
    it reserved, losing nothing: its next segments still match the CPU."""
    fw, fc = files
    model = T2W.FlowModel(fw, fc, "cuda-sim")
    tokens, spk, _, _ = (x.numpy() for x in _inputs(4, 15))
    st = model.new_state(spk, False, 1)
    st.reserve(4, 8)
    assert st.encoder_device == "cuda-sim"
    with pytest.raises(minmo_rt.InvalidInputError, match="outside"):
        st.segment(tokens[:4] + 1000, tokens[4:7], None, 0)
    with pytest.raises(minmo_rt.InvalidInputError, match="6561|outside"):
        st.segment(tokens[:4], tokens[4:6] + 7000, None, 0)  # a lookahead id
    with pytest.raises(minmo_rt.InvalidInputError):
        st.segment(tokens[:5], tokens[5:8], None, 0)  # longer than the 4 tokens reserved
    assert st.tokens_done == 0
    got = [st.segment(tokens[4 * i:4 * i + 4], tokens[4 * i + 4:4 * i + 7], None, 0) for i in range(3)]
    ref = _segments(T2W.FlowModel(fw, fc), spk, tokens, [4, 4, 4], left=1, seed=0)
    assert max(rel(g, r) for g, r in zip(got, ref)) <= DEVICE_TOL


def test_unsupported_head_dim_is_a_bundle_error(tmp_path_factory):
    torch.manual_seed(0)
    big = perturb(Flow(tiny_flow_config(est_heads=1, est_head_dim=264)), 3)
    fw, fc = save_module(tmp_path_factory, big, "flow264")
    with pytest.raises(minmo_rt.BundleError, match="head dim 264"):
        T2W.FlowModel(fw, fc, "cuda-sim")
    assert T2W.FlowModel(fw, fc).device == "cpu"


def test_runtime_runs_the_flow_on_the_device(device):
    """Runtime(device=...) loads the bundle's flow with the device estimator (module_devices says so)."""
    from _bundles import minmo_bundle

    bundle = minmo_bundle("chunked")
    rt = minmo_rt.Runtime(bundle, device=device)
    names = [n for n, m in rt.manifest["modules"].items() if m["arch"] == "cosyvoice2_flow"]
    if not names:
        pytest.skip("bundle has no token2wav modules")
    assert rt.module_devices[names[0]] == device and names[0] not in rt.cpu_fallbacks
    assert minmo_rt.Runtime(bundle).module_devices[names[0]] == "cpu"


def test_cuda_check_flow_on_sim(tmp_path):
    """minmo_cuda_check flow (runtime/tools/flow_check.cc) at a small size on cuda-sim: device vs CPU
    on the first and a steady chunk, timings and launch counts as JSON."""
    import subprocess

    from test_cuda_backend import _cuda_check_tool

    out = tmp_path / "flow.json"
    r = subprocess.run([_cuda_check_tool(), "flow", "--size", "small", "--device", "cuda-sim", "--chunk", "4",
                        "--left", "1", "--runs", "2", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert report["device"] == "cuda-sim" and report["frames_per_chunk"] == 8
    assert report["check"]["first_chunk_rel_err_vs_cpu"] <= DEVICE_TOL
    assert report["check"]["steady_chunk_rel_err_vs_cpu"] <= DEVICE_TOL
    assert report["first_chunk"]["segment"]["count"] == 2 and report["steady_chunk"]["segment"]["count"] == 4
    # small size: 4 steps; per call 4 resnets x 7 + 8 blocks x 8 + 2 concat copies + 3 convs x 2 + 2
    assert report["launches_per_chunk"] == 4 * (4 * 7 + 8 * 8 + 2 + 3 * 2 + 2) + 4 + 3 + 1
    assert report["cache_rows_steady"] == 2 * 8 and report["graphs_captured"] == 1
    bad = subprocess.run([_cuda_check_tool(), "flow", "--size", "huge", "--device", "cuda-sim"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "--size must be" in bad.stderr
