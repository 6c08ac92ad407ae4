"""The runtime's CUDA backend (runtime/src/backends/cuda) against the PyTorch reference and the CPU
backend.

Every test runs on "cuda-sim" (the backend's own code, buffers, weight formats and launch
sequence, with each kernel replaced by its CPU twin) and, where a GPU is usable, on "cuda" (the
same tests with the real kernels, CUDA graphs and streams; skipped otherwise). The activations are
bf16 on this backend, so it is held to bf16 tolerances, not the CPU backend's fp32 ones."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import minmo_rt
from minmo_rt import _core
from minmo_rt.export import cli
from minmo_rt.export.bundle import build_reference_modules
from minmo_rt.export.checkpoints import synthetic
from minmo_rt.export.quantize import QUANT_MODES
from minmo_rt.export.reference import ChunkSpec, Qwen2Config, SenseVoiceLargeConfig, VoiceLMConfig
from minmo_rt.export.reference.encoder_large import SenseVoiceLargeEncoder as SenseVoiceLargeEncoderRef
from minmo_rt.export.reference.voice_decoder import VoiceLM as VoiceLMRef
from minmo_rt.export.reference.voice_decoder import generate_speech_tokens

from test_llm_modules import make_qwen, ref_forward, rel_err, save

TL = _core.testing_llm

# bf16 activations and weights through 2-3 layers: measured 0.009 on the sim (logits and hidden); a
# quantized bundle against the fp32 reference on its dequantized weights 0.006 (int4 group scales
# are rounded to bf16 on this backend).
BF16_TOL = 0.03


def _device_or_skip(device: str) -> str:
    try:
        _core.device_info(device)
    except minmo_rt.DeviceError as e:
        pytest.skip(f"{device}: {e}")
    return device


@pytest.fixture(params=["cuda-sim", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request):
    return _device_or_skip(request.param)


@pytest.fixture(params=["fused", "unfused"])
def step_kind(request, monkeypatch):
    """The decode-step kernels (read when a model loads; the default depends on its size)."""
    monkeypatch.setenv("MINMO_CUDA_FUSED", "1" if request.param == "fused" else "0")
    return request.param


CFG = Qwen2Config(vocab_size=97, hidden_size=128, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=64, rope_theta=10000.0, rms_norm_eps=1e-6,
                  tie_word_embeddings=False, max_position_embeddings=512)


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    ref = make_qwen(CFG, 0)
    return ref, save(ref, tmp_path_factory.mktemp("qwen64") / "llm.safetensors"), json.dumps(CFG.to_dict())


def run_segments(runner, embeds: np.ndarray, segments) -> tuple[np.ndarray, np.ndarray]:
    logits, hidden, at = [], [], 0
    for n in segments:
        lg, hd = runner.forward(embeds[at:at + n])
        logits.append(lg)
        hidden.append(hd)
        at += n
    return np.concatenate(logits), np.concatenate(hidden)


# Chunks through the GEMM (>= 9 rows, Gemm::kMinRows: cuBLAS on a GPU, its gemv twin on the sim) and
# through the 8-row batched products, a decode run (graph replays), single rows between prefills.
GEMM_ROWS = 9
SEGMENTS = [[40], [1] * 12, [8, 9, 1, 1, 21], [3, 1, 16, 1, 7, 12], [5, 8, 2]]


@pytest.mark.parametrize("segments", SEGMENTS, ids=lambda s: "-".join(map(str, s[:6])))
def test_decoder_vs_reference(qwen, device, step_kind, segments):
    ref, path, cfg = qwen
    T = sum(segments)
    embeds = ref.embed(torch.tensor(np.random.default_rng(3).integers(0, CFG.vocab_size, T))).detach().numpy()
    want_logits, want_hidden = ref_forward(ref, torch.from_numpy(embeds))
    runner = TL.Qwen2Runner(path, cfg, 64, device)
    assert runner.device == device
    logits, hidden = run_segments(runner, embeds, segments)
    assert logits.shape == (T, CFG.vocab_size) and hidden.shape == (T, CFG.hidden_size)
    assert rel_err(logits, want_logits) <= BF16_TOL
    assert rel_err(hidden, want_hidden) <= BF16_TOL
    assert runner.length == T
    one = TL.Qwen2Runner(path, cfg, 64, device)  # the same positions in chunks of 8 rows (no GEMM)
    one_logits, _ = run_segments(one, embeds, [8] * (T // 8) + [T % 8])
    if device == "cuda-sim" and step_kind == "unfused" and max(segments) < GEMM_ROWS:
        # the twins compute every row alone: the schedule changes nothing
        np.testing.assert_array_equal(logits, one_logits)
    else:  # split-K attention and batched products reassociate sums; the GEMM's gated product rounds
        # gate and up to bf16 before the SiLU; the fused decode step also rounds to bf16 at other
        # points than the chunk path
        # (0.006 measured for each of the last two)
        bf16_rounding_moved = step_kind == "fused" or max(segments) >= GEMM_ROWS
        assert rel_err(logits, one_logits) <= (1.5e-2 if bf16_rounding_moved else 5e-3)


def test_greedy_generation_matches_reference(qwen, device, step_kind):
    """Every token the device picks is the reference's argmax on the same sequence, up to a bf16
    near-tie (this random model has top-2 gaps of 0.2 % of a logit); with clear margins the
    sequences are identical."""
    ref, path, cfg = qwen
    prompt = [3, 17, 42, 5, 88, 0, 96, 23, 11]
    runner = TL.Qwen2Runner(path, cfg, 32, device)
    got = runner.generate(np.array(prompt), 12)
    assert runner.length == len(prompt) + 11
    logits, _ = ref_forward(ref, ref.embed(torch.tensor(prompt + got[:-1])).detach())
    steps = np.asarray(logits)[len(prompt) - 1:]
    clear = 0
    for i, tok in enumerate(got):
        row = steps[i]
        best, second = row.max(), np.sort(row)[-2]
        assert row[tok] >= best - 0.01 * abs(best), (i, tok, int(row.argmax()))
        if second < best - 0.05 * abs(best):  # a clear margin: exactly the reference's token
            assert tok == int(row.argmax()), (i, tok)
            clear += 1
    assert clear >= 6


def test_last_only_cache_full_and_rollback(qwen, device, step_kind):
    ref, path, cfg = qwen
    embeds = ref.embed(torch.arange(12) % CFG.vocab_size).detach().numpy()
    runner = TL.Qwen2Runner(path, cfg, 12, device)
    full, _ = runner.forward(embeds[:10])
    runner.reset()
    last, hidden = runner.forward(embeds[:10], last_only=True)
    assert last.shape == (1, CFG.vocab_size) and hidden.shape == (10, CFG.hidden_size)
    np.testing.assert_array_equal(last[0], full[-1])
    with pytest.raises(minmo_rt.CacheFullError, match="10 of 12 positions used, cannot append 3 more"):
        runner.forward(embeds[:3])
    assert runner.length == 10  # nothing consumed
    step_a, _ = runner.forward(embeds[10:11])
    runner.truncate(10)  # roll back one position and redo it: same result
    step_b, _ = runner.forward(embeds[10:11])
    np.testing.assert_array_equal(step_a, step_b)
    with pytest.raises(minmo_rt.InvalidInputError):
        runner.truncate(12)
    empty_logits, empty_hidden = runner.forward(np.zeros((0, CFG.hidden_size), np.float32))
    assert empty_logits.shape == (0, CFG.vocab_size) and empty_hidden.shape == (0, CFG.hidden_size)


@pytest.mark.parametrize("variant", [
    dict(tie_word_embeddings=True),
    dict(num_attention_heads=4, num_key_value_heads=4),  # MHA
    dict(num_attention_heads=8, num_key_value_heads=1, hidden_size=96, head_dim=64),  # group 8, q width != hidden
    dict(head_dim=128, num_attention_heads=2, num_key_value_heads=1, intermediate_size=72),  # odd widths
], ids=["tied", "mha", "group8", "d128"])
def test_config_variants(tmp_path, device, variant):
    cfg = Qwen2Config.from_dict({**CFG.to_dict(), **variant})
    ref = make_qwen(cfg, 5)
    path = save(ref, tmp_path / "llm.safetensors", drop=("lm_head.weight",) if cfg.tie_word_embeddings else ())
    embeds = ref.embed(torch.tensor(np.random.default_rng(4).integers(0, cfg.vocab_size, 19))).detach().numpy()
    want_logits, want_hidden = ref_forward(ref, torch.from_numpy(embeds))
    runner = TL.Qwen2Runner(path, json.dumps(cfg.to_dict()), 32, device)
    logits, hidden = run_segments(runner, embeds, [11, 1, 7])
    assert rel_err(logits, want_logits) <= BF16_TOL
    assert rel_err(hidden, want_hidden) <= BF16_TOL


def rt_llm_weights(bundle: str) -> str:
    import os

    with open(os.path.join(bundle, "manifest.json")) as f:
        return os.path.join(bundle, json.load(f)["modules"]["llm"]["weights"])


# ---- quantized bundles --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def llm_bundles(tmp_path_factory):
    """An LLM-only bundle (Hugging Face Qwen2 folder, head_dim 64) in fp32 and every quantized mode."""
    root = tmp_path_factory.mktemp("cuda-quant")
    ckpt = str(root / "hf")
    synthetic.write_hf_qwen2(ckpt, dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, head_dim=64), seed=1)
    out = {}
    for mode in ("fp32",) + QUANT_MODES:
        path = str(root / mode)
        args = ["build", ckpt, "-o", path, "--no-onnx", "-q"] + ([] if mode == "fp32" else ["--quant", mode])
        assert cli.main(args) == 0
        out[mode] = path
    return out


@pytest.mark.parametrize("mode", ("fp32",) + QUANT_MODES)
def test_quantized_bundle_vs_reference(llm_bundles, device, mode, step_kind):
    ref = build_reference_modules(llm_bundles[mode], ["llm"])["llm"]  # fp32 on the (dequantized) weights
    ids = torch.from_numpy(np.random.default_rng(0).integers(0, ref.cfg.vocab_size, 13))
    with torch.no_grad():
        embeds = ref.embed(ids).numpy().astype(np.float32)
        want = ref(torch.from_numpy(embeds))[0].numpy()
    rt = minmo_rt.Runtime(llm_bundles[mode], device=device)
    assert rt.module_devices == {"llm": device}
    got = rt.run_module("llm", {"embeds": embeds})
    assert rel_err(got["logits"], want) <= BF16_TOL
    runner_logits = run_segments(TL.Qwen2Runner(rt_llm_weights(llm_bundles[mode]), json.dumps(rt.manifest["modules"]["llm"]["config"]),
                                                16, device), embeds, [4, 1, 1, 1, 6])[0]  # decode steps in every format
    assert rel_err(runner_logits, want) <= BF16_TOL
    cpu = minmo_rt.Runtime(llm_bundles[mode]).run_module("llm", {"embeds": embeds})
    assert rel_err(got["logits"], cpu["logits"]) <= BF16_TOL
    assert rel_err(got["hidden"], cpu["hidden"]) <= BF16_TOL


def test_int4_bundle_with_unquantized_linears(tmp_path, device):
    """An int4 export leaves linears whose input width is not a multiple of 32 in fp32 (here q/k/v and
    gate/up, K = 80): those products run bf16, o/down int4, in one model."""
    ckpt = str(tmp_path / "hf")
    synthetic.write_hf_qwen2(ckpt, dict(hidden_size=80, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=1, head_dim=64), seed=2)
    path = str(tmp_path / "int4")
    assert cli.main(["build", ckpt, "-o", path, "--no-onnx", "-q", "--quant", "int4"]) == 0
    ref = build_reference_modules(path, ["llm"])["llm"]
    ids = torch.from_numpy(np.random.default_rng(1).integers(0, ref.cfg.vocab_size, 10))
    with torch.no_grad():
        embeds = ref.embed(ids).numpy().astype(np.float32)
        want = ref(torch.from_numpy(embeds))[0].numpy()
    got = minmo_rt.Runtime(path, device=device).run_module("llm", {"embeds": embeds})["logits"]
    assert rel_err(got, want) <= BF16_TOL


# ---- voice LM (CosyVoice2's Qwen2 body with its llm_decoder head) -------------------------------

VOICE_CFG = VoiceLMConfig(vocab_size=300, hidden_size=128, intermediate_size=192, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=64, speech_token_size=200,
                          max_position_embeddings=1024)


@pytest.fixture(scope="module")
def voice(tmp_path_factory):
    torch.manual_seed(0)
    lm = synthetic.perturb_(VoiceLMRef(VOICE_CFG), 3).eval()
    return lm, save(lm, tmp_path_factory.mktemp("voice64") / "voice_lm.safetensors"), json.dumps(VOICE_CFG.to_dict())


def test_voice_lm_logits_vs_reference(voice, device):
    lm, path, cfg = voice
    with torch.no_grad():
        x = torch.cat([lm.sos(), lm.text_embed([3, 5, 7, 250, 1]), lm.task_id(), lm.speech_embed([0, 199, 17, 201])])
        want = lm.step_logits(x)[0].numpy()
    got = _core.testing_voice.voice_logits(path, cfg, x.numpy(), device)
    assert got.shape == (11, VOICE_CFG.speech_token_size + 3)
    assert rel_err(got, want) <= BF16_TOL


def test_voice_lm_stream_on_device(voice, device, step_kind):
    """The 5:15 interleave stream with the body and speech head on the device: each interleave block
    drawn by the device loop (test_cuda_voice_loop.py), the final phase sampled on the host."""
    lm, path, cfg = voice
    s = _core.testing_voice.VoiceStream(path, cfg, 7, 256, device)
    assert s.device == device
    vec = (0.5 * torch.randn(11, VOICE_CFG.hidden_size, generator=torch.Generator().manual_seed(2))).numpy()
    s.push_text(vec)
    s.end_text()
    while s.step() != _core.testing_voice.ENDED:
        pass
    ref = generate_speech_tokens(lm, torch.from_numpy(vec), seed=7)
    # bf16 logits move some draws of the sampler (first difference here at token 5), so the
    # sequences are not compared token by token: test_voice_lm_logits_vs_reference holds the numbers.
    assert s.tokens[:5] == ref[:5]
    assert 2 * 15 <= len(s.tokens) <= VOICE_CFG.max_token_text_ratio * 11
    assert all(0 <= t < VOICE_CFG.speech_token_size for t in s.tokens)


def test_runtime_reports_cpu_fallbacks():
    """device='cuda-sim' on the synthetic MinMo bundle: modules whose shapes the kernels lack stay on the
    CPU, and the runtime says which and why."""
    from _bundles import minmo_bundle

    rt = minmo_rt.Runtime(minmo_bundle(), device="cuda-sim")
    devices = rt.module_devices
    assert devices["encoder"] == "cpu"
    assert devices["flow"] == "cuda-sim" and "flow" not in rt.cpu_fallbacks  # encoder + estimator (test_cuda_flow.py)
    for name in ("llm", "voice_lm"):
        if devices[name] == "cpu":
            assert "not run by the CUDA attention kernels" in rt.cpu_fallbacks[name]
        else:
            assert devices[name] == "cuda-sim" and name not in rt.cpu_fallbacks
    assert minmo_rt.Runtime(minmo_bundle()).cpu_fallbacks == {}


# ---- errors -------------------------------------------------------------------------------------

def test_unknown_device_is_rejected(llm_bundles):
    with pytest.raises(minmo_rt.InvalidInputError, match="unknown device 'tpu'"):
        minmo_rt.Runtime(llm_bundles["fp32"], device="tpu")
    with pytest.raises(minmo_rt.InvalidInputError, match="unknown device 'gpu'"):
        TL.Qwen2Runner("x.safetensors", "{}", 4, "gpu")


def test_cuda_without_a_gpu_says_why(llm_bundles):
    try:
        _core.device_info("cuda")
    except minmo_rt.DeviceError:
        pass
    else:
        pytest.skip("a GPU is usable here")
    with pytest.raises(minmo_rt.DeviceError, match="cuda-sim"):
        minmo_rt.Runtime(llm_bundles["fp32"], device="cuda")


def test_shape_the_kernels_do_not_run_is_a_bundle_error(tmp_path):
    cfg = Qwen2Config.from_dict({**CFG.to_dict(), "head_dim": 16})
    path = save(make_qwen(cfg, 1), tmp_path / "llm.safetensors")
    with pytest.raises(minmo_rt.BundleError, match="not run by the CUDA attention kernels"):
        TL.Qwen2Runner(path, json.dumps(cfg.to_dict()), 8, "cuda-sim")
    TL.Qwen2Runner(path, json.dumps(cfg.to_dict()), 8, "cpu")  # the CPU backend runs it


# ---- the standalone tool ------------------------------------------------------------------------

def _cuda_check_tool() -> str:
    import os

    tool = os.path.join(os.path.dirname(__file__), "..", "build", "cuda-check", "runtime", "minmo_cuda_check")
    if not os.path.exists(tool):
        pytest.skip("minmo_cuda_check not built (make cuda-compile builds it where nvcc is installed)")
    return tool


def test_cuda_check_decoder_on_sim(tmp_path):
    """minmo_cuda_check decoder (runtime/tools): the device decoder against the CPU backend on random
    weights, both decode-step kinds timed, as JSON."""
    import subprocess

    tool = _cuda_check_tool()
    out = tmp_path / "bench.json"
    r = subprocess.run([tool, "decoder", "--size", "small", "--device", "cuda-sim", "--ctx", "16", "--steps", "2",
                        "--fused", "both", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert report["device"] == "cuda-sim" and report["weight_format"] == "bf16"
    for variant in ("fused", "unfused"):
        assert report["check"][variant]["logits_rel_err_vs_cpu"] < 0.02
        t = report["timings"][variant]
        assert t["decode"]["16"]["count"] == 2 and t["prefill"]["rows"] == 9
    bad = subprocess.run([tool, "decoder", "--size", "huge", "--device", "cuda-sim"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--size must be" in bad.stderr
    assert subprocess.run([tool], capture_output=True).returncode == 2


def test_cuda_check_encoder_on_sim(tmp_path):
    """minmo_cuda_check encoder: the chunked encoder's blocks on the device against the CPU encoder,
    random weights, timed per push that completes a chunk."""
    import subprocess

    out = tmp_path / "enc.json"
    r = subprocess.run([_cuda_check_tool(), "encoder", "--size", "small", "--device", "cuda-sim", "--chunks", "3",
                        "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert report["frames"] == 3 * 8 + 2 and report["check"]["frames_rel_err_vs_cpu"] < 0.02
    assert report["push_with_a_chunk"]["count"] == 3
    proj = report["projector"]  # chained after the blocks: one graph per chunk
    assert proj["device"] == "cuda-sim" and proj["tokens"] == 13 and proj["push_with_a_chunk"]["count"] == 3
    assert proj["check"]["tokens_rel_err_vs_cpu"] < 0.02


def test_cuda_check_session_on_sim(tmp_path):
    """minmo_cuda_check session: minmo-tiny's streaming turn on the CPU and on cuda-sim gives the same
    response tokens (the demo WAV, its ASR prompt ids as the Python layer makes them)."""
    import os
    import subprocess

    from minmo_rt import cli as minmo_cli

    tool = _cuda_check_tool()
    bundle = str(tmp_path / "tiny")
    assert cli.main(["build", minmo_cli.TINY_CHECKPOINT, "-o", bundle, "--no-onnx", "-q"]) == 0
    rt = minmo_rt.Runtime(bundle)
    prefix, suffix, stops = rt.prompt_ids("asr")
    audio, _ = minmo_rt.read_wav(minmo_cli.DEMO_WAV)
    np.ascontiguousarray(audio, np.float32).tofile(tmp_path / "demo.f32")
    (tmp_path / "session.json").write_text(json.dumps({"prefix_ids": prefix, "suffix_ids": suffix, "stop_ids": stops}))
    out = tmp_path / "session_report.json"
    r = subprocess.run([tool, "session", "--bundle", bundle, "--audio", str(tmp_path / "demo.f32"), "--prompt",
                        str(tmp_path / "session.json"), "--device", "cuda-sim", "--runs", "2", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert report["tokens_match"] and report["backends"]["cuda-sim"]["module_devices"]["llm"] == "cuda-sim"
    assert rt.tokenizer.decode(report["backends"]["cpu"]["tokens"]).strip() == minmo_cli.DEMO_TEXT
    assert report["backends"]["cuda-sim"]["stages"]["first_token"]["count"] == 2
    assert os.path.getsize(tmp_path / "demo.f32") == 4 * audio.size


def test_bench_and_transcribe_on_sim(tmp_path, capsys):
    """minmo-bench --device and minmo transcribe --device: minmo-tiny's LLM on cuda-sim end to end."""
    from minmo_rt import cli as minmo_cli
    from minmo_rt.bench import cli as bench_cli

    bundle = str(tmp_path / "tiny")
    assert cli.main(["build", minmo_cli.TINY_CHECKPOINT, "-o", bundle, "--no-onnx", "-q"]) == 0
    out = tmp_path / "bench.json"
    assert bench_cli.main([bundle, "--device", "cuda-sim", "--runs", "1", "--warmup", "0", "--no-onnx",
                           "--no-torch", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["device"] == "cuda-sim" and report["module_devices"]["llm"] == "cuda-sim"
    assert report["first_token_ms"] > 0 and report["bandwidth"]["achieved_gb_s"] is None  # not host memory
    capsys.readouterr()
    assert minmo_cli.main(["transcribe", bundle, minmo_cli.DEMO_WAV, "--device", "cuda-sim"]) == 0
    assert minmo_cli.DEMO_TEXT in capsys.readouterr().out


def test_state_too_large_for_the_device_is_a_device_error(qwen):
    """A KV cache the device cannot hold: DeviceError naming the size, and nothing half-made."""
    _, path, cfg = qwen
    with pytest.raises(minmo_rt.DeviceError, match="cannot allocate"):
        TL.Qwen2Runner(path, cfg, 2**30, "cuda-sim")  # 2^30 positions: 1 TiB of bf16 KV cache
    assert TL.Qwen2Runner(path, cfg, 8, "cuda-sim").capacity == 8


def test_concurrent_states_share_one_model(llm_bundles, device):
    """Sessions on several threads share the device weights; each state has its own stream and buffers,
    so concurrent calls give what sequential ones give."""
    from concurrent.futures import ThreadPoolExecutor

    rt = minmo_rt.Runtime(llm_bundles["int8"], device=device)
    hidden = rt.manifest["modules"]["llm"]["config"]["hidden_size"]
    inputs = [np.random.default_rng(i).standard_normal((n, hidden)).astype(np.float32) for i, n in
              enumerate([1, 9, 3, 17, 1, 5])]
    sequential = [rt.run_module("llm", {"embeds": x})["logits"] for x in inputs]
    with ThreadPoolExecutor(max_workers=3) as pool:
        concurrent = list(pool.map(lambda x: rt.run_module("llm", {"embeds": x})["logits"], inputs))
    for a, b in zip(sequential, concurrent):
        if device == "cuda-sim":
            np.testing.assert_array_equal(a, b)
        else:
            assert rel_err(b, a) <= 1e-6


def test_session_turns_reuse_the_device_state(tmp_path):
    """One session, three turns of the same speech on cuda-sim: the KV cache and its captured decode
    graph are reset between turns, not remade, and every turn transcribes the same."""
    from minmo_rt import cli as minmo_cli

    bundle = str(tmp_path / "tiny")
    assert cli.main(["build", minmo_cli.TINY_CHECKPOINT, "-o", bundle, "--no-onnx", "-q"]) == 0
    audio, rate = minmo_rt.read_wav(minmo_cli.DEMO_WAV)
    texts = []
    with minmo_rt.Runtime(bundle, device="cuda-sim").session(task="asr") as s:
        for _ in range(3):
            s.push(audio, rate)
            s.end_of_turn()
            texts.append("".join(e.text for e in s.events() if e.kind == "text"))
    assert texts == [minmo_cli.DEMO_TEXT] * 3


# ---- speech encoder (SenseVoice-Large style blocks on the device, chunked streaming) -------------

ENC_CFG = SenseVoiceLargeConfig(n_mels=128, d_model=128, n_heads=4, n_blocks=2, fsmn_kernel=15)
ENC_CHUNKS = {"chunk8_left1": ChunkSpec("chunked", 8, 1), "chunk8_left4": ChunkSpec("chunked", 8, 4),
              "chunk10_left2": ChunkSpec("chunked", 10, 2)}  # 10 rows: products in slices of 8


@pytest.fixture(scope="module")
def encoder_weights(tmp_path_factory):
    from test_audio_modules import randomize as randomize_enc, save as save_enc

    enc = randomize_enc(SenseVoiceLargeEncoderRef(ENC_CFG), seed=5)
    return enc.state_dict(), save_enc(tmp_path_factory.mktemp("enc"), "encoder", enc.state_dict())


def encoder_reference(state: dict, chunk: ChunkSpec, T: int) -> tuple[np.ndarray, np.ndarray]:
    """Random mel [T, n_mels] (seeded by T) and the reference encoder's frames for it."""
    mel = (0.5 * np.random.default_rng(T).standard_normal((T, ENC_CFG.n_mels))).astype(np.float32)
    ref_enc = SenseVoiceLargeEncoderRef(ENC_CFG, chunk)
    ref_enc.load_state_dict(state)
    with torch.no_grad():
        return mel, ref_enc.eval()(torch.from_numpy(mel)).numpy()


@pytest.mark.parametrize("mode", list(ENC_CHUNKS))
@pytest.mark.parametrize("T", [3, 37, 101, 150])
def test_encoder_vs_reference_and_streamed(encoder_weights, device, mode, T):
    state, path = encoder_weights
    chunk = ENC_CHUNKS[mode]
    mel, ref = encoder_reference(state, chunk, T)
    conf, cj = json.dumps(ENC_CFG.to_dict()), json.dumps(chunk.to_dict())
    TA = _core.testing_audio
    offline = TA.sensevoice_large_run(path, conf, cj, mel, device)
    assert offline.shape == ref.shape and rel_err(offline, ref) <= BF16_TOL
    for sched in ([1] * T, [int(v) | 1 for v in np.random.default_rng(T).integers(5, 40, size=6)], [T]):
        out, _ = TA.sensevoice_large_streamed(path, conf, cj, mel, sched, device)
        # the convolutions run on the device too, chunk by chunk whatever the push schedule
        if device == "cuda-sim":
            np.testing.assert_array_equal(out, offline)
        else:
            assert out.shape == offline.shape and rel_err(out, offline) <= 1e-3


def test_encoder_configurations_the_kernels_lack(encoder_weights):
    _, path = encoder_weights
    conf, mel = json.dumps(ENC_CFG.to_dict()), np.zeros((20, ENC_CFG.n_mels), np.float32)
    TA = _core.testing_audio
    with pytest.raises(minmo_rt.BundleError, match="chunked streaming only"):
        TA.sensevoice_large_run(path, conf, json.dumps({"encoder_attention": "full"}), mel, "cuda-sim")
    with pytest.raises(minmo_rt.BundleError, match="shorter than the FSMN's left context"):
        TA.sensevoice_large_run(path, conf, json.dumps(ChunkSpec("chunked", 4, 2).to_dict()), mel, "cuda-sim")
    # the CPU backend runs both
    TA.sensevoice_large_run(path, conf, json.dumps(ChunkSpec("chunked", 4, 2).to_dict()), mel, "cpu")


# ---- the GPU's rules, enforced by the sim -----------------------------------------------------------

@pytest.mark.parametrize("rule, message", [
    ("host_pointer_kernel", "bias_act_bf16 argument 1 is not device memory"),
    ("pageable_copy_in_graph", "pageable host memory"),
    ("sync_in_graph", "synchronise inside a graph capture"),
    ("device_as_host", "host side of a copy is device memory"),
    ("host_value_in_graph", "graph replay enqueued different work"),
])
def test_sim_refuses_what_a_gpu_would_fault_on(rule, message):
    """cuda-sim runs on host memory, so it checks what a GPU would enforce (device pointers for
    kernels, pinned copies and no synchronisation in a graph, frozen graph arguments) and runs
    work only at a sync, as a GPU finishes it asynchronously; every backend test above runs under
    these checks."""
    assert TL.cuda_sim_rule("none") == (-1.0, 0.0)  # queued until the sync, as on a GPU
    with pytest.raises(minmo_rt.MinmoError, match=message):
        TL.cuda_sim_rule(rule)
