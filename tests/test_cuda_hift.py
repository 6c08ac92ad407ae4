"""HiFT's f0 predictor, NSF source and decode (filter network + iSTFT) on the CUDA backend
(runtime/src/backends/cuda/hift_cuda.h) against the CPU module and the PyTorch reference, streamed
HiftStream on the device (one enqueue per window, f0 / phase history in device memory) against the
CPU HiftStream and the offline synthesis, concurrent device streams, the device's counter-based
noise against the host's, and a whole speaking session's audio on device="cuda-sim".

Every test runs on "cuda-sim" (the backend's buffers, products and launch sequence with each kernel
replaced by its CPU twin and the fp32 products by OpenBLAS) and on "cuda" where a GPU is usable
(skipped otherwise). The device path is fp32 like the CPU one: measured on cuda-sim, decode vs the
CPU module <= 1.9e-7 and vs the reference <= 2.3e-7, streamed vs the offline reference 2.1e-7
(DEVICE_TOL leaves room for the GPU's sinf / expf and cuBLAS summation order)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import minmo_rt
from minmo_rt import _core
from minmo_rt.export.reference import HiFT
from minmo_rt.export.reference.hift import receptive_field

from test_cuda_backend import device  # noqa: F401  (the cuda-sim / cuda fixture)
from test_token2wav import WAV_TOL, perturb, rel, save_module, tiny_hift_config

T2W = _core.testing_t2w
safetensors_torch = pytest.importorskip("safetensors.torch")

DEVICE_TOL = 1e-5
# Device stream vs CPU stream (and vs the device's offline synthesis): both fp32; on cuda-sim the
# products run in another BLAS order and the source's harmonics are rounded to fp32 after float64
# libm calls that may differ by an ulp: measured 1.6e-7 .. 1.7e-7 vs the CPU stream and 5e-8 ..
# 1e-7 vs the device offline audio, the size of the decode-only difference (1.6e-7); 1e-6 leaves
# a factor 6. On a GPU DEVICE_TOL (sinf / expf / tanhf and cuBLAS summation order).
STREAM_TOL = {"cuda-sim": 1e-6, "cuda": DEVICE_TOL}
# With speech-like f0 (tens to hundreds of Hz) the harmonic phase integrates f0: an fp32 rounding
# difference d in a frame's f0 moves harmonic h's phase by S (h + 1) d / sr turns from that frame
# on, so the audio's agreement degrades with f0 and length. Measured on cuda-sim over 213 frames:
# device stream vs CPU stream 3.9e-5, CPU stream vs CPU offline 4.0e-5 (the window's products
# round f0 differently from the whole utterance's), device stream vs device offline 7.7e-5; a
# different noise seed alone moves the audio by 1e-2. 5e-4 is a factor 6 above the measurements
# and 20 below a seed change (a wrong carried phase or f0 is a difference of order 1).
VOICED_TOL = 5e-4


@pytest.fixture(scope="module")
def hift():
    torch.manual_seed(0)
    return perturb(HiFT(tiny_hift_config()), 2)


@pytest.fixture(scope="module")
def files(tmp_path_factory, hift):
    return save_module(tmp_path_factory, hift, "hift")


@pytest.mark.parametrize("frames", [1, 21, 70])
def test_device_decode_matches_cpu_and_reference(hift, files, device, frames):
    hw, hc = files
    g = torch.Generator().manual_seed(frames)
    mel = torch.randn(frames, 80, generator=g)
    src = torch.randn(frames * 480, generator=g) * 0.1
    with torch.no_grad():
        ref = hift.decode(mel, src)
    cpu = T2W.hift_decode(hw, hc, mel.numpy(), src.numpy())
    got = T2W.hift_decode(hw, hc, mel.numpy(), src.numpy(), device=device)
    assert got.shape == tuple(ref.shape)
    assert rel(got, cpu) <= DEVICE_TOL
    assert rel(got, ref) <= DEVICE_TOL


def test_device_f0_matches_cpu_and_reference(hift, files, device):
    hw, hc = files
    mel = torch.randn(45, 80, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = hift.f0(mel)
    got = T2W.hift_f0(hw, hc, mel.numpy(), device=device)
    assert rel(got, T2W.hift_f0(hw, hc, mel.numpy())) <= DEVICE_TOL
    assert rel(got, ref) <= DEVICE_TOL


@pytest.mark.parametrize("frames", [33, 300])
def test_device_synthesize_matches_reference(hift, files, device, frames):
    """Offline on the device (f0, source and decode; 300 frames: the phase scan folds runs of 2
    frames per thread) against the reference and the CPU module."""
    hw, hc = files
    mel = torch.randn(frames, 80, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = hift(mel, seed=5)
    got = T2W.hift_synthesize(hw, hc, mel.numpy(), 5, device=device)
    assert rel(got, ref) <= DEVICE_TOL
    assert rel(got, T2W.hift_synthesize(hw, hc, mel.numpy(), 5)) <= STREAM_TOL[device]


@pytest.mark.parametrize("sizes", [[3] * 30, [30] * 3, [7, 1, 23, 2, 40, 17], [200]])
def test_device_stream_equals_offline(hift, files, device, sizes):
    """Exact streaming on the device, windows of at most CudaHift::kMaxStep (64) new frames: 200
    frames at once run as four windows."""
    hw, hc = files
    T = sum(sizes) if sum(sizes) < 200 else 200
    mel = torch.randn(T, 80, generator=torch.Generator().manual_seed(14))
    with torch.no_grad():
        ref = hift(mel, seed=9)
    got, outs = T2W.hift_streamed(hw, hc, mel.numpy(), sizes, 9, device=device)
    cpu, cpu_outs = T2W.hift_streamed(hw, hc, mel.numpy(), sizes, 9)
    assert got.shape == tuple(ref.shape) and sum(outs) == got.size
    assert outs == cpu_outs  # the same audio comes out at the same pushes
    assert rel(got, ref) <= WAV_TOL
    assert rel(got, cpu) <= DEVICE_TOL
    _, right = receptive_field(hift.cfg)
    if sizes[0] == 30:
        assert outs[0] == (30 - right) * 480


@pytest.fixture(scope="module")
def voiced_files(tmp_path_factory):
    """The tiny HiFT with its f0 classifier scaled to speech-like f0 (median about 270 Hz, 5 % below
    30 Hz) and the default voiced threshold of 10 Hz: the phase advances by whole turns per frame."""
    torch.manual_seed(0)
    model = perturb(HiFT(tiny_hift_config(nsf_voiced_threshold=10.0)), 2)
    with torch.no_grad():
        model.f0_predictor.classifier.weight.mul_(4000.0)
        model.f0_predictor.classifier.bias.mul_(4000.0)
    return model, save_module(tmp_path_factory, model, "hift_voiced")


def test_device_stream_with_speech_like_f0(voiced_files, device):
    """Speech-like f0: device stream vs CPU stream, vs the device's offline synthesis and vs the
    reference, windows of several lengths (VOICED_TOL: see above)."""
    model, (hw, hc) = voiced_files
    sizes = [36, 7, 40, 13, 64, 5, 48]
    mel = torch.randn(sum(sizes), 80, generator=torch.Generator().manual_seed(7))
    f0 = T2W.hift_f0(hw, hc, mel.numpy())
    assert np.median(f0) > 100 and 0.5 < np.mean(f0 > 10.0) < 1.0
    got, outs = T2W.hift_streamed(hw, hc, mel.numpy(), sizes, 11, device=device)
    cpu, cpu_outs = T2W.hift_streamed(hw, hc, mel.numpy(), sizes, 11)
    assert outs == cpu_outs
    assert rel(got, cpu) <= VOICED_TOL
    assert rel(got, T2W.hift_synthesize(hw, hc, mel.numpy(), 11, device=device)) <= VOICED_TOL
    with torch.no_grad():
        ref = model(mel, seed=11)
    assert rel(got, ref) <= VOICED_TOL
    other, _ = T2W.hift_streamed(hw, hc, mel.numpy(), sizes, 12, device=device)
    assert rel(other, cpu) > 20 * VOICED_TOL  # the bound tells seeds (noise alone) apart


def _voiced_fraction(files, mel):
    hw, hc = files
    return float(np.mean(T2W.hift_f0(hw, hc, mel) > json.loads(hc)["nsf_voiced_threshold"]))


@pytest.mark.parametrize("sizes", [[36, 7, 40, 13, 64, 5, 90], [1, 2, 3, 50, 4, 100]])
def test_device_stream_matches_cpu_stream(hift, files, device, sizes):
    """Windows of several lengths (first window without left context, steady ones, 90 and 100 new
    frames split into windows of at most kMaxStep, the end at finish()): each push's audio on the
    device equals the CPU HiftStream's, and the whole stream the device's offline synthesis."""
    hw, hc = files
    mel = torch.randn(sum(sizes), 80, generator=torch.Generator().manual_seed(len(sizes))).numpy()
    assert 0.2 < _voiced_fraction(files, mel) < 0.9  # harmonics and noise-only frames both present
    got, outs = T2W.hift_streamed(hw, hc, mel, sizes, 21, device=device)
    cpu, cpu_outs = T2W.hift_streamed(hw, hc, mel, sizes, 21)
    assert outs == cpu_outs and len(outs) == len(sizes) + 1
    assert rel(got, cpu) <= STREAM_TOL[device]
    at = 0
    for n in outs:
        if n:
            assert rel(got[at:at + n], cpu[at:at + n]) <= STREAM_TOL[device]
        at += n
    assert rel(got, T2W.hift_synthesize(hw, hc, mel, 21, device=device)) <= STREAM_TOL[device]


@pytest.mark.parametrize("threads", [False, True])
def test_two_concurrent_device_streams(hift, files, device, threads):
    """Two streams of one device model, interleaved push by push or on two threads, each with its own
    state (history ring, graphs): each one's audio is what it makes alone, and the CPU stream's."""
    hw, hc = files
    g = torch.Generator().manual_seed(8)
    mels = [torch.randn(n, 80, generator=g).numpy() for n in (97, 130)]
    seeds, sizes = [3, 4], [11, 30, 5]
    both = T2W.hift_streamed_concurrent(hw, hc, mels, sizes, seeds, device=device, threads=threads)
    for mel, seed, got in zip(mels, seeds, both):
        alone = T2W.hift_streamed_concurrent(hw, hc, [mel], sizes, [seed], device=device)[0]
        cpu = T2W.hift_streamed_concurrent(hw, hc, [mel], sizes, [seed])[0]
        if device == "cuda-sim":
            assert np.array_equal(got, alone)
        else:
            assert rel(got, alone) <= 1e-6
        assert rel(got, cpu) <= STREAM_TOL[device]
    assert rel(both[0][:40000], both[1][:40000]) > 0.1  # different mel and seed: different audio


def test_device_noise_is_the_hosts_counter_normal(device):
    """minmo_counter_normal_f32 (the source's noise) against the runtime's counter_normal: equal on
    cuda-sim (the twin, libm on both sides); on a GPU its float64 log / cos may round an ulp apart,
    which can move the float result by one ulp at most."""
    for seed, stream, start, count in [(0, 1, 0, 4097), (2**63 + 11, 1, 3 * 10**9, 1001), (7, 0, 5, 33)]:
        host = T2W.counter_normal(seed, stream, start, count)
        got = T2W.counter_normal(seed, stream, start, count, device=device)
        if device == "cuda-sim":
            assert np.array_equal(got, host)
        else:
            assert np.max(np.abs(got - host) / np.maximum(np.abs(host), 1e-30)) <= 2.0 ** -23
            assert np.mean(got == host) > 0.999


def test_device_is_reported(files, device):
    hw, hc = files
    assert T2W.hift_device(hw, hc, device) == device
    assert T2W.hift_device(hw, hc, "cpu") == "cpu"


def test_unsupported_config_is_a_bundle_error(tmp_path_factory):
    """n_fft above the iSTFT kernel's MINMO_HIFT_MAX_NFFT (32): the device decode refuses to load
    (the Runtime loads such a module on the CPU and names the reason in cpu_fallbacks)."""
    torch.manual_seed(0)
    big = perturb(HiFT(tiny_hift_config(n_fft=64, hop_len=4)), 3)
    hw, hc = save_module(tmp_path_factory, big, "hift64")
    with pytest.raises(minmo_rt.BundleError, match="not run by the iSTFT kernel"):
        T2W.hift_device(hw, hc, "cuda-sim")
    assert T2W.hift_device(hw, hc, "cpu") == "cpu"


def test_bad_input_on_device(files):
    hw, hc = files
    with pytest.raises(minmo_rt.InvalidInputError):
        T2W.hift_decode(hw, hc, np.zeros((4, 80), np.float32), np.zeros(7, np.float32), device="cuda-sim")
    with pytest.raises(minmo_rt.InvalidInputError):
        T2W.hift_streamed(hw, hc, np.full((4, 80), np.nan, np.float32), [4], 0, device="cuda-sim")


# ---- a whole speaking session on the device --------------------------------------------------

def test_speech_session_audio_on_device(device):
    """device=...: the session's audio (HiFT decode on the device; the LLM / voice LM wherever their
    shapes run) equals the offline reference token2wav of the speech tokens the session made."""
    from _bundles import minmo_bundle
    from minmo_rt.export.bundle import build_reference_modules
    from minmo_rt.session import collect_audio
    from test_speech_sessions import WAV_TOL as SESSION_TOL, _offline_audio, _rel, _speechlike

    bundle = minmo_bundle("chunked")
    rt = minmo_rt.Runtime(bundle, device=device)
    if "flow" not in rt.modules:
        pytest.skip("bundle has no token2wav modules")
    hift_name = next(n for n, m in rt.manifest["modules"].items() if m["arch"] == "cosyvoice2_hift")
    assert rt.module_devices[hift_name] == device and hift_name not in rt.cpu_fallbacks
    assert minmo_rt.Runtime(bundle).module_devices[hift_name] == "cpu"
    refs = build_reference_modules(bundle)
    spk = np.random.default_rng(1).standard_normal(192).astype(np.float32)
    s = rt.session(max_new_tokens=12, speak=True, speaker=spk, speech_seed=5)
    s.push(_speechlike(1.1, seed=3), 16000)
    s.end_of_turn()
    wav, rate = collect_audio(list(s.events()))
    assert rate == 24000 and len(s.speech_tokens) > 0
    ref = _offline_audio(refs, s.speech_tokens, spk, seed=5)
    assert wav.shape == ref.shape
    assert _rel(wav, ref) <= SESSION_TOL


def test_runtime_falls_back_to_cpu_with_a_reason(tmp_path):
    """A bundle whose HiFT the kernels do not run (n_fft 64 > MINMO_HIFT_MAX_NFFT): Runtime(device=
    "cuda-sim") loads it on the CPU, says so in module_devices and names the reason in cpu_fallbacks;
    its audio is the CPU module's."""
    import hashlib
    import shutil

    from _bundles import minmo_bundle

    bundle = str(tmp_path / "bundle")
    shutil.copytree(minmo_bundle("chunked"), bundle)
    manifest = json.loads(open(f"{bundle}/manifest.json").read())
    name = next(n for n, m in manifest["modules"].items() if m["arch"] == "cosyvoice2_hift")
    entry = manifest["modules"][name]
    cfg = dict(entry["config"], n_fft=64)
    torch.manual_seed(0)
    model = perturb(HiFT.from_config(cfg), 4)
    path = f"{bundle}/{entry['weights']}"
    safetensors_torch.save_file({k: v.contiguous() for k, v in model.plain_state_dict().items()}, path)
    entry["config"] = cfg
    entry["params"] = sum(p.numel() for p in model.plain_state_dict().values())
    data = open(path, "rb").read()
    manifest["files"][entry["weights"]] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    open(f"{bundle}/manifest.json", "w").write(json.dumps(manifest))

    rt = minmo_rt.Runtime(bundle, device="cuda-sim")
    assert rt.module_devices[name] == "cpu"
    assert "not run by the iSTFT kernel" in rt.cpu_fallbacks[name]
    mel = np.random.default_rng(2).standard_normal((12, 80)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(mel), seed=0)
    assert rel(rt.run_module(name, {"mel": mel})["audio"], ref) <= 1e-4
