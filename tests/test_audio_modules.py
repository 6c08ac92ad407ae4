"""C++ audio frontends and voice encoders (minmo_rt._core.testing_audio) vs the PyTorch reference.

Tiny random modules are built from the reference classes, saved with safetensors, run through the
C++ runtime and compared by relative error ||out - ref|| / ||ref||:
  - frontends (kaldi fbank + LFR + CMVN, whisper log-mel): <= 1e-4 (measured ~1e-7)
  - encoders (SenseVoice-Small, SenseVoice-Large), full and chunked attention: <= 1e-4
  - streaming: frontends bit-exact vs offline; the chunked Large encoder <= 1e-5 vs offline
The reference fbank itself is checked against the independent kaldi-native-fbank package.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from minmo_rt import _core
from minmo_rt.export.reference import (
    ChunkSpec,
    FbankFrontendConfig,
    KaldiFbankFrontend,
    SenseVoiceLargeConfig,
    SenseVoiceLargeEncoder,
    SenseVoiceSmallConfig,
    SenseVoiceSmallEncoder,
    WhisperFrontendConfig,
    WhisperLogMelFrontend,
)

safetensors_torch = pytest.importorskip("safetensors.torch")
TA = _core.testing_audio

FRONTEND_TOL = 1e-4
ENCODER_TOL = 1e-4
STREAM_TOL = 1e-5


def rel_err(out, ref) -> float:
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert out.shape == ref.shape, (out.shape, ref.shape)
    den = np.linalg.norm(ref)
    return float(np.linalg.norm(out - ref) / (den if den > 0 else 1.0))


def signal(n: int, seed: int, sr: int = 16000) -> np.ndarray:
    """Speech-like test waveform in [-1, 1]: harmonics with a moving pitch, noise, and a silent
    stretch (exercises the log floors)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    f0 = 120.0 + 40.0 * np.sin(2 * np.pi * 1.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(0.3 / k * np.sin(k * phase + rng.uniform(0, 2 * np.pi)) for k in range(1, 8))
    x = x * (0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t)) + 0.01 * rng.standard_normal(n)
    if n > 4000:
        x[n // 3: n // 3 + 1600] = 0.0
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def schedules(n: int, seed: int) -> list[list[int]]:
    """Three push schedules over n items: single items then small odd pieces, random sizes
    around a frame, and random large odd pieces."""
    rng = np.random.default_rng(seed)
    s1 = [1] * 37 + [int(v) for v in rng.integers(1, 40, size=max(1, n // 20)) | 1]
    s2 = [int(v) for v in rng.integers(1, 400, size=max(1, n // 100))]
    s3 = [int(v) | 1 for v in rng.integers(n // 7 + 1, n // 2 + 2, size=8)]
    return [s1, s2, s3]


def save(tmp_path, name: str, tensors: dict) -> str:
    path = str(tmp_path / f"{name}.safetensors")
    safetensors_torch.save_file({k: v.detach().to(torch.float32).contiguous().clone() for k, v in tensors.items()}, path)
    return path


def randomize(module: nn.Module, seed: int) -> nn.Module:
    """Random weights everywhere, LayerNorm gammas/betas included."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in module.modules():
            if isinstance(mod, nn.LayerNorm):
                mod.weight.copy_(1.0 + 0.2 * torch.randn(mod.weight.shape, generator=g))
                mod.bias.copy_(0.2 * torch.randn(mod.bias.shape, generator=g))
        norms = {id(p) for m in module.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()}
        for name, p in module.named_parameters():
            if id(p) in norms:
                continue
            if p.dim() == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif isinstance(module.get_submodule(name.rsplit(".", 1)[0]), nn.Embedding):
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
    return module.eval()


def chunk_json(chunk: ChunkSpec | None) -> str:
    return json.dumps((chunk or ChunkSpec()).to_dict())


# ============================================================================ kaldi fbank frontend

FBANK_CONFIGS = [
    FbankFrontendConfig(),
    FbankFrontendConfig(num_mel_bins=40, lfr_m=5, lfr_n=3, apply_cmvn=False, low_freq=60.0, high_freq=-400.0),
]


@pytest.fixture(scope="module", params=range(len(FBANK_CONFIGS)), ids=["sensevoice", "m5n3_nocmvn"])
def fbank(request, tmp_path_factory):
    cfg = FBANK_CONFIGS[request.param]
    fe = KaldiFbankFrontend(cfg)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        fe.cmvn_shift.copy_(-10.0 + 2.0 * torch.randn(cfg.output_dim, generator=g))
        fe.cmvn_scale.copy_(0.2 + torch.rand(cfg.output_dim, generator=g))
    bufs = {k: v for k, v in fe.named_buffers()}
    path = save(tmp_path_factory.mktemp("fbank"), "frontend", bufs)
    return fe, cfg, path


def fbank_ref(fe, wave: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return fe(torch.from_numpy(wave)).numpy()


@pytest.mark.parametrize("n", [0, 399, 400, 401, 1000, 5 * 160 + 400, 16000 + 123, 48000 + 77])
def test_fbank_offline_matches_reference(fbank, n):
    fe, cfg, path = fbank
    wave = signal(n, seed=n)
    ref = fbank_ref(fe, wave)
    out = TA.fbank_offline(path, json.dumps(cfg.to_dict()), wave)
    assert out.shape == ref.shape == (math.ceil(fe.num_frames(n) / cfg.lfr_n), cfg.output_dim)
    if n >= 400:
        assert rel_err(out, ref) <= FRONTEND_TOL
        assert np.max(np.abs(out - ref)) <= 1e-3


def test_fbank_logmel_matches_reference(fbank):
    fe, cfg, path = fbank
    wave = signal(16000 + 321, seed=3)
    with torch.no_grad():
        ref = fe.fbank(torch.from_numpy(wave)).numpy()
    out = TA.fbank_logmel(path, json.dumps(cfg.to_dict()), wave)
    assert out.shape == ref.shape
    assert rel_err(out, ref) <= FRONTEND_TOL


def _fbank_final_rows(fe, cfg, num_samples: int) -> int:
    """LFR rows whose stacked frames all exist after num_samples samples."""
    frames = fe.num_frames(num_samples)
    reach = cfg.lfr_m - 1 - (cfg.lfr_m - 1) // 2
    return 0 if frames - 1 - reach < 0 else (frames - 1 - reach) // cfg.lfr_n + 1


@pytest.mark.parametrize("n", [401, 9 * 160 + 400, 32000 + 55])
def test_fbank_streaming_equals_offline(fbank, n):
    fe, cfg, path = fbank
    wave = signal(n, seed=n + 1)
    conf = json.dumps(cfg.to_dict())
    offline = TA.fbank_offline(path, conf, wave)
    for sched in schedules(n, seed=n):
        out, counts = TA.fbank_streamed(path, conf, wave, sched)
        assert np.array_equal(out, offline), "streamed fbank differs from offline"
        # Rows come out as soon as they are final.
        pushed, emitted = 0, 0
        for size, c in zip(sched, counts[:-1]):
            pushed = min(n, pushed + size)
            emitted += c
            assert emitted == _fbank_final_rows(fe, cfg, pushed)
        assert sum(counts) == offline.shape[0]


# ============================================================================ whisper frontend

WHISPER_CONFIGS = [
    WhisperFrontendConfig(),
    WhisperFrontendConfig(n_fft=512, hop_length=128, n_mels=80, log_ceiling=1.0),
]


@pytest.fixture(scope="module", params=range(len(WHISPER_CONFIGS)), ids=["whisper128", "nfft512"])
def whisper(request, tmp_path_factory):
    cfg = WHISPER_CONFIGS[request.param]
    fe = WhisperLogMelFrontend(cfg)
    path = save(tmp_path_factory.mktemp("whisper"), "frontend", dict(fe.named_buffers()))
    return fe, cfg, path


def whisper_ref(fe, wave):
    with torch.no_grad():
        return fe(torch.from_numpy(wave)).numpy()


@pytest.mark.parametrize("n", [0, 100, 257, 400, 1601, 16000 + 77, 40000 + 3])
def test_whisper_offline_matches_reference(whisper, n):
    fe, cfg, path = whisper
    wave = signal(n, seed=n + 5)
    ref = whisper_ref(fe, wave)
    out = TA.whisper_offline(path, json.dumps(cfg.to_dict()), wave)
    assert out.shape == ref.shape == (n // cfg.hop_length, cfg.n_mels)
    if ref.size:
        assert rel_err(out, ref) <= FRONTEND_TOL
        assert np.max(np.abs(out - ref)) <= 1e-4
    if n > 4000:
        assert (ref == np.float32((cfg.log_ceiling - 8.0 + 4.0) / 4.0)).any(), "test signal should hit the floor"


def test_whisper_too_short_raises_like_reference(whisper):
    fe, cfg, path = whisper
    n = cfg.hop_length + 1  # one frame, but too short for the reflect padding
    assert n <= cfg.n_fft // 2
    wave = signal(n, seed=1)
    with pytest.raises(ValueError):
        whisper_ref(fe, wave)
    with pytest.raises(_core.InvalidInputError, match="reflect"):
        TA.whisper_offline(path, json.dumps(cfg.to_dict()), wave)


def test_whisper_null_ceiling_refused(whisper):
    fe, cfg, path = whisper
    conf = dict(cfg.to_dict(), log_ceiling=None)
    with pytest.raises(_core.InvalidInputError, match="not streamable"):
        TA.whisper_offline(path, json.dumps(conf), signal(1600, seed=2))


@pytest.mark.parametrize("n", [-1, 16000 + 77, 24000 + 11])
def test_whisper_streaming_equals_offline(whisper, n):
    fe, cfg, path = whisper
    if n < 0:
        n = cfg.n_fft // 2 + 1  # the shortest waveform with frames
    wave = signal(n, seed=n)
    conf = json.dumps(cfg.to_dict())
    offline = TA.whisper_offline(path, conf, wave)
    half, hop = cfg.n_fft // 2, cfg.hop_length
    for sched in schedules(n, seed=n + 9):
        out, counts = TA.whisper_streamed(path, conf, wave, sched)
        assert np.array_equal(out, offline), "streamed whisper frontend differs from offline"
        pushed, emitted = 0, 0
        for size, c in zip(sched, counts[:-1]):
            pushed = min(n, pushed + size)
            emitted += c
            expect = 0 if pushed <= half else min(pushed // hop, (pushed - half) // hop + 1)
            assert emitted == expect
        assert sum(counts) == offline.shape[0] == n // hop


# ============================================================================ SenseVoice-Small

SMALL_CFG = SenseVoiceSmallConfig(input_dim=560, d_model=32, n_heads=2, ffn_dim=64, n_blocks=3, n_tp_blocks=2,
                                  fsmn_kernel=11, vocab_size=50)
SMALL_CHUNKS = {
    "full": None,
    "chunk4_left1": ChunkSpec("chunked", 4, 1),
    "chunk2_left0": ChunkSpec("chunked", 2, 0),
    "chunk6_left3": ChunkSpec("chunked", 6, 3),
}


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory):
    enc = randomize(SenseVoiceSmallEncoder(SMALL_CFG), seed=11)
    path = save(tmp_path_factory.mktemp("small"), "encoder", enc.state_dict())
    return enc.state_dict(), path


def small_ref(state, cfg, chunk, feats, ids):
    enc = SenseVoiceSmallEncoder(cfg, chunk)
    enc.load_state_dict(state)
    with torch.no_grad():
        out, logits = enc.eval()(torch.from_numpy(feats), torch.tensor(ids))
    return out.numpy(), logits.numpy()


@pytest.mark.parametrize("mode", list(SMALL_CHUNKS))
@pytest.mark.parametrize("T", [1, 7, 30])
def test_sensevoice_small_matches_reference(small_weights, mode, T):
    state, path = small_weights
    chunk = SMALL_CHUNKS[mode]
    rng = np.random.default_rng(T)
    feats = rng.standard_normal((T, SMALL_CFG.input_dim)).astype(np.float32)
    ids = [4, 1, 2, 15]
    ref_out, ref_logits = small_ref(state, SMALL_CFG, chunk, feats, ids)
    out, logits = TA.sensevoice_small_run(path, json.dumps(SMALL_CFG.to_dict()), chunk_json(chunk), feats, ids)
    assert out.shape == (T + 4, SMALL_CFG.d_model) and logits.shape == (T + 4, SMALL_CFG.vocab_size)
    assert rel_err(out, ref_out) <= ENCODER_TOL
    assert rel_err(logits, ref_logits) <= ENCODER_TOL


def test_sensevoice_small_sanm_shift(tmp_path):
    cfg = SenseVoiceSmallConfig(input_dim=560, d_model=16, n_heads=4, ffn_dim=24, n_blocks=2, n_tp_blocks=1,
                                fsmn_kernel=5, sanm_shift=1, vocab_size=20)
    enc = randomize(SenseVoiceSmallEncoder(cfg), seed=3)
    path = save(tmp_path, "encoder", enc.state_dict())
    feats = np.random.default_rng(0).standard_normal((13, 560)).astype(np.float32)
    for chunk in (None, ChunkSpec("chunked", 4, 1)):
        ref_out, ref_logits = small_ref(enc.state_dict(), cfg, chunk, feats, [0, 1, 2, 14])
        out, logits = TA.sensevoice_small_run(path, json.dumps(cfg.to_dict()), chunk_json(chunk), feats, [0, 1, 2, 14])
        assert rel_err(out, ref_out) <= ENCODER_TOL and rel_err(logits, ref_logits) <= ENCODER_TOL


def test_ctc_greedy():
    rng = np.random.default_rng(0)
    path = [0, 3, 3, 0, 3, 5, 5, 5, 0, 0, 7, 1, 1, 0]
    logits = rng.standard_normal((len(path), 10)).astype(np.float32)
    logits[np.arange(len(path)), path] += 10.0
    assert TA.ctc_greedy(logits) == [3, 3, 5, 7, 1]
    assert TA.ctc_greedy(logits, blank=3) == [0, 0, 5, 0, 7, 1, 0]
    assert TA.ctc_greedy(np.zeros((0, 10), np.float32)) == []


def test_sensevoice_small_bad_inputs(small_weights):
    _, path = small_weights
    conf, chunk = json.dumps(SMALL_CFG.to_dict()), chunk_json(None)
    with pytest.raises(_core.InvalidInputError, match="560 columns"):
        TA.sensevoice_small_run(path, conf, chunk, np.zeros((5, 559), np.float32), [0, 1, 2, 15])
    with pytest.raises(_core.InvalidInputError, match="empty input"):
        TA.sensevoice_small_run(path, conf, chunk, np.zeros((0, 560), np.float32), [0, 1, 2, 15])
    with pytest.raises(_core.InvalidInputError, match="2-D"):
        TA.sensevoice_small_run(path, conf, chunk, np.zeros(560, np.float32), [0, 1, 2, 15])
    with pytest.raises(_core.InvalidInputError, match="query id"):
        TA.sensevoice_small_run(path, conf, chunk, np.zeros((3, 560), np.float32), [0, 1, 2, 16])
    with pytest.raises(_core.InvalidInputError, match="4 query ids"):
        TA.sensevoice_small_run(path, conf, chunk, np.zeros((3, 560), np.float32), [0, 1, 2])


def test_sensevoice_small_weight_and_config_errors(small_weights, tmp_path):
    state, _ = small_weights
    conf, chunk = json.dumps(SMALL_CFG.to_dict()), chunk_json(None)
    feats = np.zeros((3, 560), np.float32)
    missing = {k: v for k, v in state.items() if k != "encoder.encoders.0.self_attn.fsmn_block.weight"}
    p = save(tmp_path, "missing", missing)
    with pytest.raises(_core.MinmoError, match=r"encoder\.encoders\.0\.self_attn\.fsmn_block\.weight"):
        TA.sensevoice_small_run(p, conf, chunk, feats, [0, 1, 2, 15])
    wrong = dict(state)
    wrong["encoder.tp_norm.weight"] = torch.ones(31)
    p = save(tmp_path, "wrong", wrong)
    with pytest.raises(_core.BundleError, match=r"encoder\.tp_norm\.weight.*\[31\].*expected \[32\]"):
        TA.sensevoice_small_run(p, conf, chunk, feats, [0, 1, 2, 15])
    good = save(tmp_path, "good", state)
    with pytest.raises(_core.BundleError, match="unknown config keys 'bogus'"):
        TA.sensevoice_small_run(good, json.dumps(dict(SMALL_CFG.to_dict(), bogus=1)), chunk, feats, [0, 1, 2, 15])
    with pytest.raises(_core.BundleError, match="encoder_attention"):
        TA.sensevoice_small_run(good, conf, json.dumps({"encoder_attention": "causal"}), feats, [0, 1, 2, 15])
    with pytest.raises(_core.BundleError, match="chunk_frames"):
        TA.sensevoice_small_run(good, conf, json.dumps({"encoder_attention": "chunked", "chunk_frames": 3}), feats,
                                [0, 1, 2, 15])


# ============================================================================ SenseVoice-Large

LARGE_CFG = SenseVoiceLargeConfig(n_mels=128, d_model=32, n_heads=4, n_blocks=2, fsmn_kernel=15)
LARGE_CHUNKS = {
    "full": None,
    "chunk4_left2": ChunkSpec("chunked", 4, 2),
    "chunk2_left0": ChunkSpec("chunked", 2, 0),
    "chunk8_left1": ChunkSpec("chunked", 8, 1),
}


@pytest.fixture(scope="module")
def large_weights(tmp_path_factory):
    enc = randomize(SenseVoiceLargeEncoder(LARGE_CFG), seed=5)
    path = save(tmp_path_factory.mktemp("large"), "encoder", enc.state_dict())
    return enc.state_dict(), path


def large_ref(state, chunk, mel):
    enc = SenseVoiceLargeEncoder(LARGE_CFG, chunk)
    enc.load_state_dict(state)
    with torch.no_grad():
        return enc.eval()(torch.from_numpy(mel)).numpy()


def mel_input(T: int, seed: int) -> np.ndarray:
    return (0.5 * np.random.default_rng(seed).standard_normal((T, LARGE_CFG.n_mels))).astype(np.float32)


@pytest.mark.parametrize("mode", list(LARGE_CHUNKS))
@pytest.mark.parametrize("T", [1, 2, 3, 5, 8, 37, 64, 101])
def test_sensevoice_large_matches_reference(large_weights, mode, T):
    state, path = large_weights
    chunk = LARGE_CHUNKS[mode]
    mel = mel_input(T, seed=T)
    ref = large_ref(state, chunk, mel)
    out = TA.sensevoice_large_run(path, json.dumps(LARGE_CFG.to_dict()), chunk_json(chunk), mel)
    assert out.shape == ref.shape
    assert rel_err(out, ref) <= ENCODER_TOL


def _large_stream_ready(mel_rows: int, C: int) -> int:
    """Frames out after mel_rows rows (not final): conv outputs t need input row 2t+1; only
    complete chunks are encoded."""
    return ((mel_rows // 2) // 2) // C * C


@pytest.mark.parametrize("mode", [m for m in LARGE_CHUNKS if m != "full"])
@pytest.mark.parametrize("T", [3, 37, 101, 150])
def test_sensevoice_large_streaming(large_weights, mode, T):
    state, path = large_weights
    chunk = LARGE_CHUNKS[mode]
    mel = mel_input(T, seed=T + 100)
    conf, cj = json.dumps(LARGE_CFG.to_dict()), chunk_json(chunk)
    offline = TA.sensevoice_large_run(path, conf, cj, mel)
    ref = large_ref(state, chunk, mel)
    rng = np.random.default_rng(T)
    scheds = [[1] * T, [int(v) for v in rng.integers(1, 8, size=T)], [int(v) | 1 for v in rng.integers(5, 40, size=6)],
              [T]]
    for sched in scheds:
        out, counts = TA.sensevoice_large_streamed(path, conf, cj, mel, sched)
        assert out.shape == offline.shape
        assert rel_err(out, offline) <= STREAM_TOL
        assert rel_err(out, ref) <= ENCODER_TOL
        pushed, emitted = 0, 0
        for size, c in zip(sched, counts[:-1]):
            pushed = min(T, pushed + size)
            emitted += c
            assert emitted == _large_stream_ready(pushed, chunk.chunk_frames)


def test_sensevoice_large_bad_inputs(large_weights):
    _, path = large_weights
    conf = json.dumps(LARGE_CFG.to_dict())
    with pytest.raises(_core.InvalidInputError, match="128 columns"):
        TA.sensevoice_large_run(path, conf, chunk_json(None), np.zeros((10, 80), np.float32))
    with pytest.raises(_core.InvalidInputError, match="empty input"):
        TA.sensevoice_large_run(path, conf, chunk_json(None), np.zeros((0, 128), np.float32))
    with pytest.raises(_core.InvalidInputError, match="chunked"):
        TA.sensevoice_large_streamed(path, conf, chunk_json(None), np.zeros((10, 128), np.float32), [3])
    with pytest.raises(_core.InvalidInputError, match="128 columns"):
        TA.sensevoice_large_streamed(path, conf, chunk_json(ChunkSpec("chunked", 4, 1)), np.zeros((10, 64), np.float32),
                                     [3])
    with pytest.raises(_core.BundleError, match=r"conv1\.weight"):
        TA.sensevoice_large_run(path, json.dumps(dict(LARGE_CFG.to_dict(), n_mels=80)), chunk_json(None),
                                np.zeros((10, 80), np.float32))


def test_frontend_bad_inputs(fbank, whisper):
    _, cfg, path = fbank
    with pytest.raises(_core.InvalidInputError, match="1-D"):
        TA.fbank_offline(path, json.dumps(cfg.to_dict()), np.zeros((2, 400), np.float32))
    _, wcfg, wpath = whisper
    with pytest.raises(_core.InvalidInputError, match="1-D"):
        TA.whisper_streamed(wpath, json.dumps(wcfg.to_dict()), np.zeros((2, 400), np.float32), [1])
    with pytest.raises(_core.MinmoError, match="mel_banks"):
        TA.fbank_offline(wpath, json.dumps(cfg.to_dict()), np.zeros(400, np.float32))


# ============================================================================ independent fbank check

def test_reference_fbank_matches_kaldi_native_fbank():
    """The reference KaldiFbankFrontend.fbank (before LFR/CMVN) against kaldi-native-fbank
    (an independent C++ implementation of kaldi's compute-fbank-feats, in float32). Measured
    agreement on this signal (with a digitally silent stretch): relative error 3.5e-7, max |diff|
    1.9e-4 (log-mel units)."""
    knf = pytest.importorskip("kaldi_native_fbank", reason="kaldi-native-fbank is not installed")
    cfg = FbankFrontendConfig()
    fe = KaldiFbankFrontend(cfg)
    wave = signal(3 * 16000 + 123, seed=42)
    with torch.no_grad():
        ref = fe.fbank(torch.from_numpy(wave)).numpy()
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.snip_edges = True
    opts.frame_opts.window_type = "hamming"
    opts.frame_opts.samp_freq = 16000
    opts.mel_opts.num_bins = 80
    opts.mel_opts.low_freq = cfg.low_freq
    opts.mel_opts.high_freq = cfg.high_freq
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(16000, (wave.astype(np.float64) * 32768.0).tolist())
    fb.input_finished()
    other = np.stack([np.asarray(fb.get_frame(i)) for i in range(fb.num_frames_ready)])
    assert other.shape == ref.shape
    err = rel_err(ref, other)
    assert err <= 1e-5, err
    assert np.max(np.abs(ref - other)) <= 2e-3
