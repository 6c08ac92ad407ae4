"""The full-duplex predictor on the CUDA backend (runtime/src/backends/cuda/duplex_cuda.*): against
the PyTorch reference and the CPU predictor, streamed in varied push sizes, and in sessions, where
it reads the CUDA LLM's hidden states on the device. On "cuda-sim" (each kernel replaced by its CPU
twin) and, with a GPU, on "cuda" (skipped otherwise)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import torch

import minmo_rt
from minmo_rt import _core
from minmo_rt.export.reference import DuplexConfig

from test_cuda_backend import BF16_TOL, device  # noqa: F401  (the device fixture)
from test_cuda_speech_path import tiny  # noqa: F401  (the minmo-tiny bundle fixture)
from test_llm_modules import make_duplex, rel_err, save

TL = _core.testing_llm

# head_dim 64 (the decoder's test shapes), GQA group 2; 150 positions span three 64-row chunks.
CFG = DuplexConfig(llm_hidden=96, hidden_size=128, intermediate_size=160, num_attention_heads=2,
                   num_key_value_heads=1, head_dim=64, rope_theta=10000.0, rms_norm_eps=1e-6)
T = 150


@pytest.fixture(scope="module")
def duplex(tmp_path_factory):
    return make_duplex(CFG, 5, 0.1, tmp_path_factory.mktemp("duplex") / "duplex.safetensors")


@pytest.fixture(scope="module")
def hidden_and_ref(duplex):
    ref = duplex[0]
    hidden = np.random.default_rng(9).standard_normal((T, CFG.llm_hidden)).astype(np.float32)
    with torch.no_grad():
        turn, barge, _ = ref(torch.from_numpy(hidden))
    return hidden, turn.numpy(), barge.numpy()


# one chunk, single rows (decode attention), chunks across the 64-row boundary, > 64 rows per push
@pytest.mark.parametrize("schedule", [[T], [1], [3, 5, 2], [17, 1], [70, 80]])
def test_device_duplex_vs_reference_and_cpu(duplex, hidden_and_ref, device, schedule):
    _, path, cfg = duplex
    hidden, want_turn, want_barge = hidden_and_ref
    sizes = (schedule * T)[:T]
    turn, barge = TL.duplex_streamed(path, cfg, hidden, sizes, device=device)
    assert turn.shape == (T,) and barge.shape == (T,)
    # bf16 weights and activations, measured on cuda-sim: rel. error <= 0.0049 (p_turn) / 0.0039 (p_barge)
    # against the reference, max abs difference to the CPU predictor 0.0080 / 0.0099
    assert rel_err(turn, want_turn) <= BF16_TOL and rel_err(barge, want_barge) <= BF16_TOL
    cpu_turn, cpu_barge = TL.duplex_streamed(path, cfg, hidden, sizes)
    assert rel_err(turn, cpu_turn) <= BF16_TOL and rel_err(barge, cpu_barge) <= BF16_TOL
    assert np.abs(turn - cpu_turn).max() <= 0.02 and np.abs(barge - cpu_barge).max() <= 0.02
    one_turn, one_barge = TL.duplex_streamed(path, cfg, hidden, [T], device=device)
    assert rel_err(turn, one_turn) <= BF16_TOL and rel_err(barge, one_barge) <= BF16_TOL
    # not a constant: the probabilities follow the input
    assert turn.std() > 0.01 and barge.std() > 0.01


def test_device_duplex_errors(duplex, device, tmp_path):
    ref, path, cfg = duplex
    hidden = np.zeros((10, CFG.llm_hidden), np.float32)
    with pytest.raises(minmo_rt.CacheFullError, match="KV cache full: 8 of 9"):
        TL.duplex_streamed(path, cfg, hidden, [4, 4, 2], capacity=9, device=device)
    with pytest.raises(minmo_rt.InvalidInputError, match="96 columns"):
        TL.duplex_streamed(path, cfg, hidden[:, :10], [1], device=device)
    sd_path = save(ref, tmp_path / "d.safetensors", drop=("turn_head.bias",))
    with pytest.raises(minmo_rt.MinmoError, match=r"turn_head\.bias"):
        TL.duplex_streamed(sd_path, cfg, hidden, [1], device=device)
    narrow = json.dumps({**CFG.to_dict(), "head_dim": 16, "num_attention_heads": 8})
    with pytest.raises(minmo_rt.BundleError, match="heads of dimension 16"):
        TL.duplex_streamed(path, narrow, hidden, [1], device=device)


def _session_run(rt, audio, rate, pushes):
    """One asr turn pushed in pieces of `pushes` samples (cycled): (duplex events, response token ids)."""
    with rt.session(task="asr") as s:
        at, i = 0, 0
        while at < len(audio):
            n = pushes[i % len(pushes)]
            s.push(audio[at:at + n], rate)
            at, i = at + n, i + 1
        s.end_of_turn()
        events = list(s.events())
    duplex = np.array([(e.time_ms, e.p_turn, e.p_barge) for e in events if e.kind == "duplex"])
    return duplex, [e.token_id for e in events if e.kind == "text"]


@pytest.mark.parametrize("pushes", [[2560], [1280, 4000, 640]])
def test_tiny_session_duplex_on_the_device(tiny, device, pushes):  # noqa: F811
    """minmo-tiny through the device: the predictor runs there on the LLM's hidden states, and the
    session's Duplex events equal the CPU's within bf16 rounding, in the same order and times."""
    from minmo_rt import cli as minmo_cli

    rt = minmo_rt.Runtime(tiny, device=device)
    assert rt.module_devices["duplex"] == rt.module_devices["llm"] == device
    assert "duplex" not in rt.cpu_fallbacks
    audio, rate = minmo_rt.read_wav(minmo_cli.DEMO_WAV)
    cpu, cpu_text = _session_run(minmo_rt.Runtime(tiny), audio, rate, pushes)
    dev, dev_text = _session_run(rt, audio, rate, pushes)
    assert dev_text == cpu_text and len(cpu) > 10
    assert dev.shape == cpu.shape
    np.testing.assert_array_equal(dev[:, 0], cpu[:, 0])
    # measured on cuda-sim (57 events): max abs difference 0.0038 (p_turn), 0.0061 (p_barge); rel. 0.0022
    assert np.abs(dev[:, 1:] - cpu[:, 1:]).max() <= 0.03
    assert rel_err(dev[:, 1:], cpu[:, 1:]) <= BF16_TOL
    # the offline module (run_module) on the device against the CPU's
    hidden = np.random.default_rng(1).standard_normal((20, 128)).astype(np.float32)
    got = rt.run_module("duplex", {"hidden": hidden})
    want = minmo_rt.Runtime(tiny).run_module("duplex", {"hidden": hidden})
    assert rel_err(got["p_turn"], want["p_turn"]) <= BF16_TOL
    assert rel_err(got["p_barge"], want["p_barge"]) <= BF16_TOL


def test_duplex_falls_back_to_the_cpu_with_a_reason(tiny, tmp_path):  # noqa: F811
    """A predictor whose heads the kernels lack runs on the CPU behind the device LLM, with the reason."""
    bundle = str(tmp_path / "tiny-narrow-duplex")
    shutil.copytree(tiny, bundle)
    with open(os.path.join(bundle, "manifest.json")) as f:
        manifest = json.load(f)
    entry = manifest["modules"]["duplex"]
    cfg = DuplexConfig(**{**entry["config"], "num_attention_heads": 4, "head_dim": 16})
    ref, weights, _ = make_duplex(cfg, 2, 0.08, os.path.join(bundle, entry["weights"]))
    entry["config"] = cfg.to_dict()
    with open(weights, "rb") as f:
        data = f.read()
    manifest["files"][entry["weights"]] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    with open(os.path.join(bundle, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    rt = minmo_rt.Runtime(bundle, device="cuda-sim")
    assert rt.module_devices["duplex"] == "cpu" and rt.module_devices["llm"] == "cuda-sim"
    assert "heads of dimension 16" in rt.cpu_fallbacks["duplex"]
    hidden = np.random.default_rng(3).standard_normal((7, 128)).astype(np.float32)
    got = rt.run_module("duplex", {"hidden": hidden})
    with torch.no_grad():
        want_turn, _, _ = ref(torch.from_numpy(hidden))
    assert rel_err(got["p_turn"], want_turn.numpy()) <= 1e-4
