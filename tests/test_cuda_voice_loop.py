"""The voice LM's 5:15 interleave block as one device loop (runtime/src/backends/cuda/qwen2_cuda.h
SampleLoop): after the block's pending rows are prefilled, one graph replay samples the 15 speech
tokens on the device (minmo_sample_ras_loop_bf16, the reference ras_sample with its SplitMix64
state on the device), feeds each token's embedding row and runs the decode steps.

On "cuda-sim" (and "cuda" where a GPU is usable) the loop is checked against the same device's
per-step path (logits copied out, ras_sample on the host; MINMO_VOICE_LOOP=0): the same tokens and
the same generator state after every stream. The CPU backend's tokens are not the reference here:
its fp32 logits differ from the device's bf16 ones (test_cuda_backend.py holds those numbers)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import minmo_rt
from minmo_rt import _core
from minmo_rt.export.checkpoints import synthetic
from minmo_rt.export.reference import SplitMix64, VoiceLMConfig
from minmo_rt.export.reference.voice_decoder import VoiceLM as VoiceLMRef

from test_cuda_backend import VOICE_CFG, device, step_kind  # noqa: F401  (fixtures: cuda-sim and cuda, step kinds)
from test_llm_modules import save

TV = _core.testing_voice


def _voice_lm(tmp_path_factory, cfg: VoiceLMConfig, name: str, seed: int = 0):
    torch.manual_seed(seed)
    lm = synthetic.perturb_(VoiceLMRef(cfg), 3).eval()
    return save(lm, tmp_path_factory.mktemp(name) / "voice_lm.safetensors"), json.dumps(cfg.to_dict())


@pytest.fixture(scope="module")
def voice(tmp_path_factory):
    return _voice_lm(tmp_path_factory, VOICE_CFG, "voice_loop")


def _text(n: int, seed: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    return (0.5 * torch.randn(n, VOICE_CFG.hidden_size, generator=g)).numpy()


def _speak(path, cfg, seed, device, text, capacity=512):
    s = TV.VoiceStream(path, cfg, seed, capacity, device)
    s.push_text(text)
    s.end_text()
    while s.step() != TV.ENDED:
        pass
    return s


def _draws(seed: int, state: int, limit: int) -> int:
    """SplitMix64 draws from `seed` to `state`."""
    r = SplitMix64(seed)
    for n in range(limit + 1):
        if r.state == state:
            return n
        r.next()
    raise AssertionError(f"state {state:#x} is not within {limit} draws of seed {seed}")


@pytest.mark.parametrize("seed", [7, 8, 21, 1234])
def test_block_loop_tokens_equal_the_per_step_path(voice, device, step_kind, seed, monkeypatch):
    path, cfg = voice
    text = _text(17, seed)  # 3 interleave blocks (45 tokens on the device), then the final phase
    loop = _speak(path, cfg, seed, device, text)
    assert loop.device_loop["enabled"] and loop.device_loop["blocks"] == 3
    assert loop.device_loop["captures"] == 1 and loop.device_loop["launches"] == 3
    monkeypatch.setenv("MINMO_VOICE_LOOP", "0")
    host = _speak(path, cfg, seed, device, text)
    assert not host.device_loop["enabled"] and host.device_loop["note"] == "MINMO_VOICE_LOOP=0"
    assert host.device_loop["blocks"] == 0
    assert loop.tokens == host.tokens and len(loop.tokens) > 45
    assert loop.rng_state == host.rng_state  # the device advanced the generator as the host does
    draws = _draws(seed, loop.rng_state, 2 * len(loop.tokens))
    assert draws - len(loop.tokens) >= 3  # RAS redraws (second draws) happened


def test_state_reused_by_the_next_stream_keeps_its_graph(voice, device):
    """A session's next response reuses the LM state: the loop graph is captured once per state and
    replayed once per block; the restarted stream draws what a fresh one draws."""
    path, cfg = voice
    s = _speak(path, cfg, 5, device, _text(11, 1))
    assert s.device_loop["captures"] == 1 and s.device_loop["launches"] == 2
    s.restart(9)
    s.push_text(_text(11, 2))
    s.end_text()
    while s.step() != TV.ENDED:
        pass
    assert s.device_loop["captures"] == 1 and s.device_loop["launches"] == 4 and s.device_loop["blocks"] == 2
    fresh = _speak(path, cfg, 9, device, _text(11, 2))
    assert s.tokens == fresh.tokens and s.rng_state == fresh.rng_state


def test_streamed_text_and_need_text(voice, device):
    """Text pushed in pieces (kNeedText between blocks) gives the tokens of text pushed at once."""
    path, cfg = voice
    text = _text(12, 4)
    s = TV.VoiceStream(path, cfg, 3, 512, device)
    assert s.step() == TV.NEED_TEXT
    got = []
    for a, b in [(0, 3), (3, 7), (7, 12)]:
        s.push_text(text[a:b])
        while (t := s.step()) >= 0:
            got.append(t)
        assert t == TV.NEED_TEXT
    s.end_text()
    while (t := s.step()) != TV.ENDED:
        got.append(t)
    assert got == s.tokens == _speak(path, cfg, 3, device, text).tokens
    assert s.device_loop["blocks"] == 2


def test_config_the_kernel_lacks_keeps_the_per_step_path(tmp_path_factory, device):
    """top_k above the sampling kernel's 64: no device loop (the reason is given), per-step sampling."""
    cfg = VoiceLMConfig(**{**VOICE_CFG.to_dict(), "top_k": 80})
    path, cj = _voice_lm(tmp_path_factory, cfg, "voice_topk80")
    s = _speak(path, cj, 2, device, _text(11, 3))
    assert not s.device_loop["enabled"] and "top_k 80" in s.device_loop["note"]
    assert s.device_loop["blocks"] == 0 and len(s.tokens) >= 30


def test_non_finite_logits_are_an_error_on_both_paths(tmp_path_factory, device, monkeypatch):
    cfg = VOICE_CFG
    torch.manual_seed(0)
    lm = synthetic.perturb_(VoiceLMRef(cfg), 3).eval()
    with torch.no_grad():
        lm.llm_decoder.bias[17] = float("nan")
    path = save(lm, tmp_path_factory.mktemp("voice_nan") / "voice_lm.safetensors")
    cj = json.dumps(cfg.to_dict())
    for loop in ("1", "0"):
        monkeypatch.setenv("MINMO_VOICE_LOOP", loop)
        s = TV.VoiceStream(path, cj, 1, 512, device)
        s.push_text(_text(6, 5))
        with pytest.raises(minmo_rt.MinmoError, match="non-finite"):
            s.step()


def test_text_too_long_is_cache_full(voice, device):
    path, cfg = voice
    s = TV.VoiceStream(path, cfg, 1, 64, device)
    with pytest.raises(minmo_rt.CacheFullError, match="too long to speak"):
        s.push_text(_text(5, 1))
    with pytest.raises(minmo_rt.InvalidInputError, match="text vectors must be"):
        s.push_text(np.zeros((2, 3), np.float32))


@pytest.fixture(scope="module")
def small_minmo_bundle(tmp_path_factory):
    """The synthetic MinMo checkpoint at its "small" sizes: its voice LM (head_dim 32) runs on the device."""
    from minmo_rt.export import cli
    from minmo_rt.export.checkpoints.synthetic import write_minmo_checkpoint

    d = tmp_path_factory.mktemp("minmo_small")
    write_minmo_checkpoint(str(d / "ckpt"), sizes="small", seed=0)
    assert cli.main(["build", str(d / "ckpt"), "-o", str(d / "bundle"), "--no-onnx", "-q"]) == 0
    return str(d / "bundle")


def test_speech_session_unchanged_by_the_loop(small_minmo_bundle, monkeypatch):
    """A whole speaking turn on cuda-sim: the same speech tokens with the device loop as with per-step
    sampling, and the voice LM ran on the device."""
    from test_speech_sessions import _speak as speak_turn
    from test_speech_sessions import _speechlike

    audio = _speechlike(1.1, seed=3)
    got = {}
    for loop in ("1", "0"):
        monkeypatch.setenv("MINMO_VOICE_LOOP", loop)
        rt = minmo_rt.Runtime(small_minmo_bundle, device="cuda-sim")
        assert rt.module_devices["voice_lm"] == "cuda-sim", rt.cpu_fallbacks
        s, events = speak_turn(rt, audio, max_new_tokens=12, speech_seed=5)
        got[loop] = ([e.token_id for e in events if e.kind == "speech_token"], list(s.speech_tokens))
    assert got["1"] == got["0"] and got["1"][0] == got["1"][1] and len(got["1"][0]) >= 30


def test_cuda_check_voice_block_on_sim(small_minmo_bundle, tmp_path):
    """minmo_cuda_check decoder --module voice_lm: a block through the device loop against per-step
    host sampling on the same device, timed (the GPU check of issue 5's 15-token target)."""
    import os
    import subprocess

    tool = os.path.join(os.path.dirname(__file__), "..", "build", "cuda-check", "runtime", "minmo_cuda_check")
    if not os.path.exists(tool):
        pytest.skip("minmo_cuda_check not built (make cuda-compile builds it where nvcc is installed)")
    out = tmp_path / "voice.json"
    r = subprocess.run([tool, "decoder", "--bundle", small_minmo_bundle, "--module", "voice_lm", "--device",
                        "cuda-sim", "--ctx", "16", "--steps", "2", "--blocks", "3", "--json", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    (variant,) = report["voice_block"].values()
    assert variant["check"] == {"blocks": 4, "token_mismatches": 0}
    assert variant["16"]["block"]["count"] == 3 and variant["16"]["per_step"]["count"] == 3
    assert "voice block (15 tokens) at ctx 16" in r.stderr
    bad = subprocess.run([tool, "decoder", "--bundle", small_minmo_bundle, "--module", "voice_lm", "--device",
                          "cuda-sim", "--blocks", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--blocks must be >= 1" in bad.stderr
