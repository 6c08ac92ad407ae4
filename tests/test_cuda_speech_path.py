"""The speech-to-text path on the CUDA backend: the input projector on the device (alone, and chained
with the speech encoder's blocks in one graph per chunk) against the PyTorch reference and the CPU
path, on "cuda-sim" and, where a GPU is usable, on "cuda" (test_cuda_backend.py explains both)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import minmo_rt
from minmo_rt import _core
from minmo_rt.export.reference import ChunkSpec, ProjectorConfig
from minmo_rt.export.reference.projector import InputProjector as InputProjectorRef

from test_cuda_backend import ENC_CFG, BF16_TOL, device, encoder_reference, encoder_weights  # noqa: F401 (fixtures)
from test_llm_modules import randomize, rel_err, save

TL, TA = _core.testing_llm, _core.testing_audio

# 2 layers, 4 heads of 32 (the attention kernels' smallest head), ffn not a multiple of 8 rows' worth
PROJ_CFG = ProjectorConfig(encoder_dim=128, hidden_dim=96, output_dim=128, n_layers=2, n_heads=4, ffn_dim=200)
CHUNKS = {"chunk8_left1": ChunkSpec("chunked", 8, 1), "chunk8_left4": ChunkSpec("chunked", 8, 4),
          "chunk20_left2": ChunkSpec("chunked", 20, 2), "chunk2_left0": ChunkSpec("chunked", 2, 0)}


@pytest.fixture(scope="module")
def projector(tmp_path_factory):
    torch.manual_seed(0)
    ref = InputProjectorRef(PROJ_CFG)
    randomize(ref, seed=3)
    return ref, save(ref, tmp_path_factory.mktemp("proj") / "projector.safetensors")


def reference(ref: InputProjectorRef, chunk: ChunkSpec, frames: np.ndarray) -> np.ndarray:
    m = InputProjectorRef(ref.cfg, chunk)
    m.load_state_dict(ref.state_dict())
    with torch.no_grad():
        return m.eval()(torch.from_numpy(frames)).numpy()


@pytest.mark.parametrize("mode", list(CHUNKS))
@pytest.mark.parametrize("T", [1, 7, 8, 33, 80])
def test_projector_vs_reference_and_streamed(projector, device, mode, T):
    ref, path = projector
    chunk = CHUNKS[mode]
    frames = np.random.default_rng(T).standard_normal((T, PROJ_CFG.encoder_dim)).astype(np.float32)
    want = reference(ref, chunk, frames)
    conf, cj = json.dumps(PROJ_CFG.to_dict()), json.dumps(chunk.to_dict())
    offline = TL.projector_offline(path, conf, cj, frames, device)
    assert offline.shape == want.shape and rel_err(offline, want) <= BF16_TOL
    for sched in ([1] * T, [3, 0, 5, 2, 9], [T]):
        out, counts = TL.projector_streamed(path, conf, cj, frames, sched, device)
        assert sum(counts) == want.shape[0]
        # the same chunks, whatever the push schedule: the same bf16 arithmetic on the sim
        if device == "cuda-sim":
            np.testing.assert_array_equal(out, offline)
        else:
            assert rel_err(out, offline) <= 1e-3  # the same chunks through the same kernels
    # a token is out as soon as its chunk's frames are in: 2 * Ct frames per chunk
    ct = chunk.chunk_frames // 2
    _, counts = TL.projector_streamed(path, conf, cj, frames, [1] * T, device)
    assert counts[:T] == [ct if (i + 1) % (2 * ct) == 0 else 0 for i in range(T)]


def test_projector_configurations_the_kernels_lack(projector, tmp_path):
    _, path = projector
    frames = np.zeros((10, PROJ_CFG.encoder_dim), np.float32)
    conf = json.dumps(PROJ_CFG.to_dict())
    with pytest.raises(minmo_rt.BundleError, match="chunked streaming only"):
        TL.projector_offline(path, conf, json.dumps(ChunkSpec("full").to_dict()), frames, "cuda-sim")
    # MinMo's 8 heads of 448 (3584 wide): not run by the attention kernels
    wide = ProjectorConfig(encoder_dim=16, hidden_dim=16, output_dim=8 * 48, n_layers=1, n_heads=8, ffn_dim=16)
    wide_path = save(InputProjectorRef(wide), tmp_path / "wide.safetensors")
    with pytest.raises(minmo_rt.BundleError, match="8 heads of dimension 48 are not run by the CUDA attention"):
        TL.projector_offline(wide_path, json.dumps(wide.to_dict()), json.dumps(CHUNKS["chunk8_left1"].to_dict()),
                             np.zeros((4, 16), np.float32), "cuda-sim")
    # the CPU runs both
    TL.projector_offline(path, conf, json.dumps(ChunkSpec("full").to_dict()), frames, "cpu")


def test_projector_state_holds_the_turn(projector):
    """The device projector's K/V caches hold 2048 tokens of a turn: beyond that, CacheFull (not garbage)."""
    _, path = projector
    conf, cj = json.dumps(PROJ_CFG.to_dict()), json.dumps(CHUNKS["chunk8_left1"].to_dict())
    frames = np.zeros((2 * 2048 + 8, PROJ_CFG.encoder_dim), np.float32)
    with pytest.raises(minmo_rt.CacheFullError, match="holds 2048 tokens"):
        TL.projector_streamed(path, conf, cj, frames, [len(frames)], "cuda-sim")


# ---- the encoder's blocks and the projector chained on the device ------------------------------

@pytest.mark.parametrize("mode", ["chunk8_left1", "chunk8_left4", "chunk20_left2"])
@pytest.mark.parametrize("T", [5, 64, 150])
def test_encoder_and_projector_chained(encoder_weights, projector, device, mode, T):
    """mel -> encoder -> projector with both on the device (one graph per chunk, frames never on the
    host) against the reference modules and against the CPU path, for several push schedules."""
    enc_state, enc_path = encoder_weights
    proj_ref, proj_path = projector
    chunk = CHUNKS[mode]
    mel, frames = encoder_reference(enc_state, chunk, T)
    want = reference(proj_ref, chunk, frames)
    args = (enc_path, json.dumps(ENC_CFG.to_dict()), proj_path, json.dumps(PROJ_CFG.to_dict()),
            json.dumps(chunk.to_dict()), mel)
    cpu, cpu_counts, fused = TA.speech_tokens_streamed(*args, [T], "cpu")
    assert not fused and rel_err(cpu, want) <= 1e-4
    for sched in ([T], [1] * T, [int(v) | 1 for v in np.random.default_rng(T).integers(5, 40, size=6)]):
        out, counts, fused = TA.speech_tokens_streamed(*args, sched, device)
        assert fused and out.shape == want.shape and sum(counts) == want.shape[0]
        assert rel_err(out, want) <= BF16_TOL and rel_err(out, cpu) <= BF16_TOL
    # tokens come out chunk by chunk while mel arrives, as on the CPU
    _, dev_counts, _ = TA.speech_tokens_streamed(*args, [4] * (T // 4), device)
    _, cpu_counts, _ = TA.speech_tokens_streamed(*args, [4] * (T // 4), "cpu")
    assert dev_counts == cpu_counts


# ---- runtime and sessions -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from minmo_rt import cli as minmo_cli
    from minmo_rt.export import cli

    bundle = str(tmp_path_factory.mktemp("tiny") / "tiny")
    assert cli.main(["build", minmo_cli.TINY_CHECKPOINT, "-o", bundle, "--no-onnx", "-q"]) == 0
    return bundle


def test_tiny_speech_to_text_through_the_device_path(tiny, device):
    """minmo-tiny on the device: encoder, projector and LLM there, the same transcript as the CPU, and
    the audio tokens the LLM receives match the CPU's within bf16 rounding."""
    from minmo_rt import cli as minmo_cli

    rt = minmo_rt.Runtime(tiny, device=device)
    devices = rt.module_devices
    assert devices["encoder"] == devices["projector"] == devices["llm"] == device
    assert "projector" not in rt.cpu_fallbacks
    audio, rate = minmo_rt.read_wav(minmo_cli.DEMO_WAV)
    texts = {}
    for name, r in (("cpu", minmo_rt.Runtime(tiny)), (device, rt)):
        with r.session(task="asr") as s:
            s.push(audio, rate)
            s.end_of_turn()
            texts[name] = "".join(e.text for e in s.events() if e.kind == "text")
    assert texts["cpu"] == texts[device] == minmo_cli.DEMO_TEXT
    frames = np.random.default_rng(0).standard_normal((37, 128)).astype(np.float32)
    dev_tok = rt.run_module("projector", {"frames": frames})["tokens"]
    cpu_tok = minmo_rt.Runtime(tiny).run_module("projector", {"frames": frames})["tokens"]
    assert rel_err(dev_tok, cpu_tok) <= BF16_TOL


# ---- output projector ---------------------------------------------------------------------------

def test_output_projector_on_the_device(device):
    """The synthetic MinMo bundle's output projector on the device against its reference module, and a
    speaking session that uses it (semantic vectors per text token) on the device."""
    from _bundles import minmo_bundle
    from minmo_rt.export.bundle import build_reference_modules

    bundle = minmo_bundle("chunked")
    rt = minmo_rt.Runtime(bundle, device=device)
    assert rt.module_devices["output_projector"] == device and "output_projector" not in rt.cpu_fallbacks
    ref = build_reference_modules(bundle)["output_projector"]
    rng = np.random.default_rng(4)
    embeds = rng.standard_normal((5, ref.cfg.embed_dim)).astype(np.float32)
    hidden = rng.standard_normal((5, ref.cfg.llm_hidden)).astype(np.float32)
    got = rt.run_module("output_projector", {"token_embeds": embeds, "hidden": hidden})["semantic"]
    with torch.no_grad():
        want = ref(torch.from_numpy(embeds), torch.from_numpy(hidden)).numpy()
    assert got.shape == want.shape and rel_err(got, want) <= BF16_TOL
    with pytest.raises(minmo_rt.InvalidInputError, match="token_embeds must be"):
        rt.run_module("output_projector", {"token_embeds": hidden[:, :3], "hidden": hidden})
    t = np.arange(int(16000 * 0.8)) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    s = rt.session(max_new_tokens=6, speak=True, speech_output="tokens", speech_seed=1)
    s.push(audio, 16000)
    s.end_of_turn()
    events = list(s.events())
    n_text = sum(e.kind == "text" for e in events)
    assert n_text >= 1 and events[-1].kind == "end"
    assert rt.module_devices["voice_lm"] != device or any(e.kind == "speech_token" for e in events)


def test_where_the_speech_path_runs_and_why_not():
    """The synthetic MinMo bundle on cuda-sim: chunked, its projector runs on the device behind a CPU
    encoder (whose 16-wide heads the kernels lack); full attention keeps both on the CPU, with reasons."""
    from _bundles import minmo_bundle

    rt = minmo_rt.Runtime(minmo_bundle("chunked"), device="cuda-sim")
    assert rt.module_devices["projector"] == "cuda-sim" and rt.module_devices["encoder"] == "cpu"
    assert "heads of dimension 16" in rt.cpu_fallbacks["encoder"] and "projector" not in rt.cpu_fallbacks
    full = minmo_rt.Runtime(minmo_bundle("full"), device="cuda-sim")
    assert full.module_devices["projector"] == full.module_devices["encoder"] == "cpu"
    assert "chunked streaming only" in full.cpu_fallbacks["projector"]
    # the device projector behind the CPU encoder gives the CPU's transcript of the same audio
    t = np.arange(int(16000 * 1.2)) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    texts = []
    for r in (minmo_rt.Runtime(minmo_bundle("chunked")), rt):
        with r.session(task="asr", max_new_tokens=8) as s:
            s.push(audio, 16000)
            s.end_of_turn()
            texts.append([e.token_id for e in s.events() if e.kind == "text"])
    assert texts[0] == texts[1] and texts[0]


@pytest.mark.parametrize("heads,head_dim", [(2, 448), (1, 320)])
def test_projector_wide_heads(tmp_path, device, heads, head_dim):
    """MinMo's projector has 8 heads of 448: the window attention and the QKV append run head dims up
    to 512 (multiples of 64 above 256); here 2 x 448 and 1 x 320 with small other sizes."""
    cfg = ProjectorConfig(encoder_dim=32, hidden_dim=48, output_dim=heads * head_dim, n_layers=1, n_heads=heads,
                          ffn_dim=64)
    torch.manual_seed(0)
    ref = InputProjectorRef(cfg)
    randomize(ref, seed=9, std=0.05)
    path = save(ref, tmp_path / "wide.safetensors")
    chunk = CHUNKS["chunk8_left1"]
    frames = np.random.default_rng(1).standard_normal((29, 32)).astype(np.float32)
    got = TL.projector_offline(path, json.dumps(cfg.to_dict()), json.dumps(chunk.to_dict()), frames, device)
    assert rel_err(got, reference(ref, chunk, frames)) <= BF16_TOL
