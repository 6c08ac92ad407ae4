"""Token2Wav (CosyVoice2 flow + HiFT): PyTorch reference properties, C++ runtime vs reference, cached
streaming vs offline, bundle / ONNX export.

Tolerances (fp32, relative error ||out - ref|| / ||ref||):
  - C++ module vs reference: <= 1e-4
  - streamed vs offline with the same chunk masks: mel <= 1e-4, wav <= 1e-3
  - cached chunk streaming vs the public re-run streaming (mel, same chunking, no prompt): <= 1e-5
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from minmo_rt.export.reference import Flow, FlowConfig, HiFT, HiftConfig, flow_offline, token2wav_offline, token2wav_rerun
from minmo_rt.export.reference.hift import istft, receptive_field, stft
from minmo_rt.export.reference.token2wav import stream_masks

MODULE_TOL = 1e-4
MEL_TOL = 1e-4
WAV_TOL = 1e-3


def rel(a, b) -> float:
    a, b = (np.asarray(x.detach() if torch.is_tensor(x) else x, np.float64) for x in (a, b))
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def tiny_flow_config(**kw) -> FlowConfig:
    base = dict(vocab_size=61, d_model=32, n_heads=4, ffn_dim=48, n_blocks=2, n_up_blocks=2, est_channels=32, est_heads=2,
                est_head_dim=16, n_transformer=1, n_mid_blocks=2, n_timesteps=3)
    base.update(kw)
    return FlowConfig(**base)


def tiny_hift_config(**kw) -> HiftConfig:
    # the threshold sits inside the f0 range of the random weights so frames are voiced and unvoiced
    base = dict(base_channels=32, f0_channels=16, upsample_rates=[8, 5, 3], upsample_kernel_sizes=[16, 11, 7],
                nsf_voiced_threshold=0.04)
    base.update(kw)
    return HiftConfig(**base)


def perturb(module: torch.nn.Module, seed: int, scale: float = 0.05) -> torch.nn.Module:
    """Random weights everywhere (LayerNorm gains near 1), so every parameter matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g) * scale
            p.copy_(1.0 + noise if name.endswith("norm.weight") or ".norm" in name and name.endswith("weight") else p + noise)
    return module.eval()


@pytest.fixture(scope="module")
def flow():
    torch.manual_seed(0)
    return perturb(Flow(tiny_flow_config()), 1)


@pytest.fixture(scope="module")
def hift():
    torch.manual_seed(0)
    return perturb(HiFT(tiny_hift_config()), 2)


# ----------------------------------------------------------------------------- reference properties

def test_stft_istft_match_torch():
    x = torch.randn(1203)
    spec = stft(x, 16, 4)
    ref = torch.stft(x, 16, 4, 16, window=torch.hann_window(16), return_complex=True)
    assert rel(spec[:9], ref.real) < 1e-5 and rel(spec[9:], ref.imag) < 1e-5
    back = istft(ref.real, ref.imag, 16, 4)
    assert rel(back, torch.istft(ref, 16, 4, 16, window=torch.hann_window(16))) < 1e-5


def test_hift_weight_norm_layouts_load_and_fold():
    cfg = tiny_hift_config()
    torch.manual_seed(3)
    wn = HiFT(cfg, weight_norm=True).eval()
    sd = wn.state_dict()
    assert "conv_pre.parametrizations.weight.original0" in sd
    legacy = {k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v"): v
              for k, v in sd.items()}
    mel = torch.randn(13, cfg.mel_dim)
    a = HiFT.from_state_dict(cfg, sd)(mel)
    b = HiFT.from_state_dict(cfg, legacy)(mel)
    plain = HiFT(cfg)
    plain.load_state_dict(wn.plain_state_dict())
    assert torch.equal(a, b)
    assert rel(plain.eval()(mel), a) < 1e-6


def test_flow_chunks_are_final_once_lookahead_is_known(flow):
    """A chunk's mel only depends on earlier chunks and the lookahead tokens (the property the cached
    stream relies on)."""
    g = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, flow.cfg.vocab_size, (23,), generator=g)
    spk = torch.randn(192, generator=g)
    full = flow_offline(flow, tokens, spk, seed=4, chunk_tokens=5)
    for k in (1, 2, 3):
        part = flow_offline(flow, tokens[:5 * k + 3], spk, seed=4, chunk_tokens=5)
        assert rel(part[:10 * k], full[:10 * k]) < 1e-6


def test_cached_semantics_equal_public_rerun_mel(flow, hift):
    g = torch.Generator().manual_seed(6)
    tokens = torch.randint(0, flow.cfg.vocab_size, (31,), generator=g)
    spk = torch.randn(192, generator=g)
    mel, wav = token2wav_offline(flow, hift, tokens, spk, seed=1, chunk_tokens=7)
    rmel, rwav, chunks = token2wav_rerun(flow, hift, tokens, spk, seed=1, hop=7)
    assert rel(rmel, mel) < 1e-5
    assert rwav.shape == wav.shape and len(chunks) == 4
    # the public cross-fade is not the offline vocoder: the audio differs (reported, not a bug)
    assert rel(rwav, wav) > 1e-4


def test_prompt_conditions_and_is_checked(flow, hift):
    g = torch.Generator().manual_seed(7)
    tokens = torch.randint(0, flow.cfg.vocab_size, (9,), generator=g)
    spk = torch.randn(192, generator=g)
    ptok = torch.randint(0, flow.cfg.vocab_size, (4,), generator=g)
    pmel = torch.randn(8, 80, generator=g)
    a = flow_offline(flow, tokens, spk, ptok, pmel, chunk_tokens=5)
    b = flow_offline(flow, tokens, spk, ptok, pmel * 2, chunk_tokens=5)
    assert a.shape == (18, 80) and rel(a, b) > 1e-4
    with pytest.raises(ValueError, match="frames"):
        flow_offline(flow, tokens, spk, ptok, pmel[:7])
    with pytest.raises(ValueError, match="no speech tokens"):
        flow_offline(flow, tokens[:0], spk)
    with pytest.raises(ValueError, match="speaker"):
        flow_offline(flow, tokens, spk[:10])
    with pytest.raises(ValueError, match="token ids"):
        flow_offline(flow, tokens + 1000, spk)


def test_stream_masks_prompt_and_left_chunks():
    tm, mm = stream_masks(2, 7, 3, 1)
    seg = [0, 0, 1, 1, 1, 2, 2, 2, 3]
    for i in range(9):
        for j in range(9):
            want = seg[j] <= seg[i] and (seg[j] >= seg[i] - 1 or seg[j] == 0)
            assert bool(tm[i, j]) == want
    assert mm.shape == (18, 18) and bool(mm[17, 0]) and not bool(mm[17, 5])


def test_receptive_field_of_full_config():
    left, right = receptive_field(HiftConfig())
    assert 15 <= left <= 30 and 15 <= right <= 30


# ----------------------------------------------------------------------------- C++ runtime vs reference

from minmo_rt import _core  # noqa: E402

T2W = _core.testing_t2w
safetensors_torch = pytest.importorskip("safetensors.torch")


def save_module(tmp_path_factory, model, name):
    """A reference Flow / HiFT as the runtime loads it: (path of <name>.safetensors in a fresh
    directory, its config as JSON). HiFT is saved with its weight norms folded (plain_state_dict)."""
    import json

    state = model.plain_state_dict() if hasattr(model, "plain_state_dict") else model.state_dict()
    path = str(tmp_path_factory.mktemp(name) / f"{name}.safetensors")
    safetensors_torch.save_file({k: v.contiguous() for k, v in state.items()}, path)
    return path, json.dumps(model.cfg.to_dict())


@pytest.fixture(scope="module")
def files(tmp_path_factory, flow, hift):
    return (*save_module(tmp_path_factory, flow, "flow"), *save_module(tmp_path_factory, hift, "hift"))


def _inputs(seed, n, prompt=0, vocab=61):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (n,), generator=g)
    spk = torch.randn(192, generator=g)
    ptok = torch.randint(0, vocab, (prompt,), generator=g)
    pmel = torch.randn(2 * prompt, 80, generator=g)
    return tokens, spk, ptok, pmel


def _np(*xs):
    return [x.numpy() for x in xs]


@pytest.mark.parametrize("chunk,left,prompt", [(None, -1, 0), (5, -1, 0), (4, 1, 3), (7, 2, 0)])
def test_flow_cpp_matches_reference(flow, files, chunk, left, prompt):
    fw, fc, _, _ = files
    tokens, spk, ptok, pmel = _inputs(11, 17, prompt)
    ref = flow_offline(flow, tokens, spk, ptok, pmel, seed=3, chunk_tokens=chunk, left_chunks=left)
    got = T2W.flow_offline(fw, fc, *_np(tokens, spk, ptok, pmel), seed=3, chunk_tokens=chunk or 0, left_chunks=left)
    assert got.shape == tuple(ref.shape)
    assert rel(got, ref) <= MODULE_TOL


def test_hift_cpp_matches_reference(hift, files):
    _, _, hw, hc = files
    g = torch.Generator().manual_seed(12)
    mel = torch.randn(21, 80, generator=g)
    with torch.no_grad():
        f0 = hift.f0(mel)
        src = torch.randn(21 * 480, generator=g) * 0.1
        dec = hift.decode(mel, src)
        wav = hift(mel, seed=5)
    assert rel(T2W.hift_f0(hw, hc, mel.numpy()), f0) <= MODULE_TOL
    assert rel(T2W.hift_decode(hw, hc, mel.numpy(), src.numpy()), dec) <= MODULE_TOL
    assert rel(T2W.hift_synthesize(hw, hc, mel.numpy(), 5), wav) <= MODULE_TOL
    assert tuple(T2W.hift_receptive_field(hw, hc)) == receptive_field(hift.cfg)


def test_hift_uses_both_voiced_and_unvoiced_frames(hift):
    with torch.no_grad():
        f0 = hift.f0(torch.randn(60, 80, generator=torch.Generator().manual_seed(13)))
    voiced = (f0 > hift.cfg.nsf_voiced_threshold).float().mean().item()
    assert 0.1 < voiced < 0.9


@pytest.mark.parametrize("sizes", [[3] * 30, [30] * 3, [7, 1, 23, 2, 40, 17]])
def test_hift_stream_equals_offline(hift, files, sizes):
    _, _, hw, hc = files
    mel = torch.randn(90, 80, generator=torch.Generator().manual_seed(14))
    with torch.no_grad():
        ref = hift(mel, seed=9)
    got, outs = T2W.hift_streamed(hw, hc, mel.numpy(), sizes, 9)
    assert got.shape == tuple(ref.shape) and sum(outs) == got.size
    assert rel(got, ref) <= WAV_TOL
    _, right = receptive_field(hift.cfg)
    if sizes[0] == 30:  # audio comes out as soon as `right` frames of lookahead exist
        assert outs[0] == (30 - right) * 480 and outs[1] == 30 * 480


def _stream(files, tokens, spk, schedule, ptok=None, pmel=None, seed=0, chunk=5, left=-1):
    fw, fc, hw, hc = files
    kw = {}
    if ptok is not None:
        kw = dict(prompt_tokens=ptok.numpy(), prompt_mel=pmel.numpy())
    s = T2W.Token2WavStream(fw, fc, hw, hc, spk.numpy(), seed=seed, chunk_tokens=chunk, lookahead=3, left_chunks=left, **kw)
    parts, at = [], 0
    for n in schedule:
        parts.append(s.push(tokens[at:at + n].numpy()))
        at += n
    assert at == tokens.numel()
    parts.append(s.finish())
    return np.concatenate(parts), s.mel, [p.size for p in parts]


def _random_schedule(n, seed):
    rng = np.random.default_rng(seed)
    out = []
    while sum(out) < n:
        out.append(int(min(rng.integers(0, 9), n - sum(out))))
    return out


@pytest.mark.parametrize("name,prompt,left", [("one_at_a_time", 0, -1), ("chunk", 0, 1), ("random", 4, 1),
                                              ("all_at_once", 4, -1)])
def test_token2wav_stream_equals_offline(flow, hift, files, name, prompt, left):
    tokens, spk, ptok, pmel = _inputs(21, 37, prompt)
    sched = {"one_at_a_time": [1] * 37, "chunk": [5] * 7 + [2], "random": _random_schedule(37, 3), "all_at_once": [37]}[name]
    mel_ref, wav_ref = token2wav_offline(flow, hift, tokens, spk, ptok if prompt else None, pmel if prompt else None,
                                         seed=2, chunk_tokens=5, left_chunks=left)
    wav, mel, sizes = _stream(files, tokens, spk, sched, ptok if prompt else None, pmel if prompt else None, seed=2,
                              left=left)
    assert mel.shape == tuple(mel_ref.shape) and wav.shape == tuple(wav_ref.shape)
    assert rel(mel, mel_ref) <= MEL_TOL
    assert rel(wav, wav_ref) <= WAV_TOL
    if name == "one_at_a_time":  # audio streams out before the end
        assert sum(sizes[:-1]) > 0


def test_token2wav_seed_determines_audio(files):
    tokens, spk, _, _ = _inputs(22, 16)
    a, _, _ = _stream(files, tokens, spk, [16], seed=7)
    b, _, _ = _stream(files, tokens, spk, [3, 13], seed=7)
    c, _, _ = _stream(files, tokens, spk, [16], seed=8)
    assert np.array_equal(a, _stream(files, tokens, spk, [16], seed=7)[0])
    assert rel(a, b) <= WAV_TOL
    assert rel(a, c) > 1e-2


def test_token2wav_bad_inputs(files):
    import minmo_rt

    fw, fc, hw, hc = files
    spk = np.ones(192, np.float32)
    with pytest.raises(minmo_rt.InvalidInputError, match="192"):
        T2W.Token2WavStream(fw, fc, hw, hc, np.ones(10, np.float32))
    with pytest.raises(minmo_rt.InvalidInputError, match="NaN"):
        T2W.Token2WavStream(fw, fc, hw, hc, np.full(192, np.nan, np.float32))
    with pytest.raises(minmo_rt.InvalidInputError, match="lookahead"):
        T2W.Token2WavStream(fw, fc, hw, hc, spk, lookahead=2)
    with pytest.raises(minmo_rt.InvalidInputError, match="chunk_tokens"):
        T2W.Token2WavStream(fw, fc, hw, hc, spk, chunk_tokens=0)
    with pytest.raises(minmo_rt.InvalidInputError, match="prompt mel"):
        T2W.Token2WavStream(fw, fc, hw, hc, spk, prompt_tokens=np.array([1, 2]), prompt_mel=np.zeros((3, 80), np.float32))
    s = T2W.Token2WavStream(fw, fc, hw, hc, spk)
    with pytest.raises(minmo_rt.InvalidInputError, match="outside"):
        s.push(np.array([1, 2, 61]))
    with pytest.raises(minmo_rt.InvalidInputError, match="no speech tokens"):
        s.finish()  # the rejected push consumed nothing
    s.push(np.array([1, 2, 3]))
    assert s.finish().size == 6 * 480 and s.finished
    with pytest.raises(minmo_rt.SessionClosedError):
        s.push(np.array([1]))
    with pytest.raises(minmo_rt.SessionClosedError):
        s.finish()
    with pytest.raises(minmo_rt.InvalidInputError, match="no speech tokens"):
        T2W.flow_offline(fw, fc, np.zeros(0, np.int64), spk, np.zeros(0, np.int64), np.zeros((0, 80), np.float32))
    with pytest.raises(minmo_rt.InvalidInputError, match="mel"):
        T2W.hift_synthesize(hw, hc, np.zeros((4, 7), np.float32))


# ----------------------------------------------------------------------------- bundle, ONNX, verify

def test_bundle_with_flow_and_hift_exports_onnx_and_verifies(tmp_path, flow, hift):
    """A MinMo-layout checkpoint holding flow + hift -> bundle (weights, ONNX graphs checked with ONNX
    Runtime against the reference) -> C++ Runtime loads it -> minmo-export verify passes."""
    import json

    import minmo_rt
    from minmo_rt.export.bundle import load_manifest, write_bundle
    from minmo_rt.export.checkpoints import load_checkpoint
    from minmo_rt.export.verify import verify_bundle

    ck = tmp_path / "ck"
    ck.mkdir()
    meta = {"format": "minmo-checkpoint", "version": 1, "modules": {
        "flow": {"arch": "cosyvoice2_flow", "config": flow.cfg.to_dict()},
        "hift": {"arch": "cosyvoice2_hift", "config": hift.cfg.to_dict()}}}
    (ck / "minmo.json").write_text(json.dumps(meta))
    safetensors_torch.save_file({k: v.contiguous() for k, v in flow.state_dict().items()}, str(ck / "flow.safetensors"))
    safetensors_torch.save_file({k: v.contiguous() for k, v in hift.plain_state_dict().items()}, str(ck / "hift.safetensors"))
    out = tmp_path / "bundle"
    manifest = write_bundle([load_checkpoint(str(ck))], str(out), progress=False, log=lambda *a: None)
    assert manifest["mode"] == "partial"
    for name, parts in (("flow", ["estimator"]), ("hift", ["f0"])):
        entry = manifest["modules"][name]
        assert entry["onnx_check"]["ok"]
        for p in parts:
            assert entry["onnx_parts"][p]["onnx_check"]["ok"]
            assert entry["onnx_parts"][p]["onnx"] in manifest["files"]
    load_manifest(str(out), verify=True)
    rt = minmo_rt.Runtime(str(out))
    assert {"flow", "hift"} <= set(rt.modules)
    rows = verify_bundle(str(out))
    assert {(r.module, r.output) for r in rows} == {("flow", "mel"), ("hift", "audio")}
    assert all(r.ok for r in rows), [(r.module, r.rel_err, r.note) for r in rows]
