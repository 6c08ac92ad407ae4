"""minmo-tiny: the shipped trained model through the runtime (WER gate), its agreement with the
PyTorch reference, the data generator and the training recipe (the last two need espeak-ng)."""
import json
import os

import numpy as np
import pytest
import torch

import minmo_rt
from minmo_rt import Runtime, read_wav
from minmo_rt.bench.wer import OnnxPipeline, native_transcribe
from minmo_rt.export import cli as export_cli
from minmo_rt.training import data as D
from minmo_rt.training.evaluate import normalize, turn_f1, wer, word_errors

ASSETS = os.path.join(os.path.dirname(minmo_rt.__file__), "assets")
CKPT = os.path.join(ASSETS, "minmo_tiny")
HELDOUT = os.path.join(ASSETS, "minmo_tiny_heldout")
needs_espeak = pytest.mark.skipif(not D.espeak_available(), reason="espeak-ng is not installed")


def _heldout():
    with open(os.path.join(HELDOUT, "transcripts.json")) as f:
        rows = json.load(f)
    return [(read_wav(os.path.join(HELDOUT, r["file"]))[0], r) for r in rows]


@pytest.fixture(scope="module")
def bundle_paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    out = {}
    for mode in ("full", "chunked"):
        path = str(root / mode)
        assert export_cli.main(["build", CKPT, "-o", path, "--streaming", mode, "--no-onnx", "-q"]) == 0
        out[mode] = path
    return out


@pytest.fixture(scope="module")
def bundles(bundle_paths):
    return {mode: Runtime(path) for mode, path in bundle_paths.items()}


def test_shipped_assets_exist():
    meta = json.load(open(os.path.join(CKPT, "minmo.json")))
    assert set(meta["modules"]) == {"frontend", "encoder", "projector", "llm", "duplex"}
    assert meta["modules"]["encoder"]["arch"] == "sensevoice_large"
    size = sum(os.path.getsize(os.path.join(CKPT, f)) for f in os.listdir(CKPT))
    assert size < 16e6
    assert len(_heldout()) >= 5


def test_prompt_matches_training(bundles):
    """The runtime's ASR prompt ids are the ones the model was trained on."""
    from tokenizers import Tokenizer

    from minmo_rt.training.model import PromptIds

    prompt = PromptIds(Tokenizer.from_file(os.path.join(CKPT, "tokenizer.json")))
    for rt in bundles.values():
        prefix, suffix, stops = rt.prompt_ids("asr")
        assert prefix == prompt.prefix and suffix == prompt.suffix and prompt.im_end in stops


@pytest.mark.parametrize("mode", ["full", "chunked"])
def test_heldout_wer_native(bundles, mode):
    refs, hyps, probs, labels = [], [], [], []
    for wave, row in _heldout():
        text, p_turn = native_transcribe(bundles[mode], wave, chunk_ms=160)
        refs.append(row["text"])
        hyps.append(text)
        probs.append(p_turn)
        labels.append(D.turn_labels(len(p_turn), row["speech_end"]))
    score = wer(refs, hyps)
    # The target, 5 % (4 of these 94 words). The shipped model makes no error on these 16
    # files (1.3 % / 2.6 % full / chunked on the 381-word bench set, training/README.md).
    assert score <= 0.05, list(zip(refs, hyps))
    assert turn_f1(probs, labels)["f1"] >= 0.8


@pytest.mark.parametrize("device", ["cuda-sim", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_heldout_wer_cuda_backend(bundle_paths, device):
    """The same gate with the LLM on the CUDA backend (bf16; "cuda-sim": its code on the kernels' CPU
    twins; "cuda" where a GPU is usable)."""
    from minmo_rt import DeviceError, _core

    try:
        _core.device_info(device)
    except DeviceError as e:
        pytest.skip(str(e))
    rt = Runtime(bundle_paths["chunked"], device=device)
    assert rt.module_devices["llm"] == device and not rt.cpu_fallbacks
    refs, hyps = [], []
    for wave, row in _heldout():
        refs.append(row["text"])
        hyps.append(native_transcribe(rt, wave, chunk_ms=160)[0])
    assert wer(refs, hyps) <= 0.05, list(zip(refs, hyps))


@needs_espeak
def test_verify_reports_wer(bundle_paths, tmp_path, capsys):
    """minmo-export verify --wer: the trained model passes its WER bound; a random-weight bundle with
    the same modules fails it (the row can fail)."""
    from minmo_rt.export.checkpoints.synthetic import write_minmo_checkpoint

    out = tmp_path / "verify.json"
    assert export_cli.main(["verify", bundle_paths["chunked"], "--wer", "6", "--json", str(out)]) == 0
    rows = [r for r in json.loads(out.read_text())["rows"] if r["module"] == "pipeline"]
    assert len(rows) == 1 and rows[0]["ok"] and rows[0]["rel_err"] <= 0.05 and "fp32, cpu" in rows[0]["output"]
    rand_ckpt, rand = str(tmp_path / "rand-ckpt"), str(tmp_path / "rand")
    write_minmo_checkpoint(rand_ckpt, seed=0)
    assert export_cli.main(["build", rand_ckpt, "-o", rand, "--no-onnx", "-q"]) == 0
    capsys.readouterr()
    assert export_cli.main(["verify", rand, "--wer", "2"]) == 1
    assert "WER native (fp32, cpu)" in capsys.readouterr().out


@needs_espeak
def test_wer_gate_per_quant_mode(tmp_path):
    """minmo-bench --wer --quant-modes: every mode scored by the native engine; int8 stays within the
    target on this small set."""
    from minmo_rt.bench import cli as bench_cli

    out = tmp_path / "wer.json"
    assert bench_cli.main(["--wer", "--wer-n", "4", "--no-onnx", "--quant-modes", "int8,int4",
                           "--workdir", str(tmp_path / "w"), "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert sorted((r["encoder_attention"], r["quant"]) for r in results) == sorted(
        (m, q) for m in ("full", "chunked") for q in ("none", "int8", "int4"))
    assert all(r["engines"]["native"]["wer"] <= 0.05 for r in results if r["quant"] in ("none", "int8"))
    assert bench_cli.main(["--wer", "--quant-modes", "int3", "--no-onnx"]) == 2


@pytest.mark.slow
def test_heldout_wer_onnx(tmp_path):
    path = str(tmp_path / "onnx_chunked")
    assert export_cli.main(["build", CKPT, "-o", path, "--streaming", "chunked", "-q"]) == 0
    pipe = OnnxPipeline(Runtime(path))
    pairs = [(row["text"], pipe.transcribe(wave)[0]) for wave, row in _heldout()]
    assert wer(*zip(*pairs)) <= 0.05, pairs  # the target, as in test_heldout_wer_native


def test_streaming_runtime_matches_pytorch_reference(bundles):
    """Greedy transcript ids and duplex probabilities: runtime session (chunked, 160 ms pushes) vs
    the reference modules run offline on the whole turn."""
    from minmo_rt.export.checkpoints.minmo import load_minmo
    from minmo_rt.export.checkpoints.archs import make_module
    from minmo_rt.export.reference import ChunkSpec, WhisperFrontendConfig, WhisperLogMelFrontend
    from minmo_rt.training.model import PromptIds, MinmoTiny, TinySizes
    from tokenizers import Tokenizer

    ck = load_minmo(CKPT)
    mods = {m.name: m for m in ck.modules}
    sizes = TinySizes(encoder=make_module("sensevoice_large", mods["encoder"].config).cfg,
                      projector=make_module("projector", mods["projector"].config).cfg,
                      llm={k: v for k, v in mods["llm"].config.items() if k != "vocab_size"},
                      duplex={k: v for k, v in mods["duplex"].config.items() if k != "llm_hidden"})
    model = MinmoTiny(sizes, mods["llm"].config["vocab_size"]).eval()
    for name in ("encoder", "projector", "llm", "duplex"):
        getattr(model, name).load_state_dict(mods[name].state_dict)
    model.set_chunked(True)
    prompt = PromptIds(Tokenizer.from_file(os.path.join(CKPT, "tokenizer.json")))
    frontend = WhisperLogMelFrontend(WhisperFrontendConfig(**mods["frontend"].config))
    wave, row = _heldout()[0]
    ref_ids, ref_turn = model.greedy(frontend(torch.from_numpy(wave)), prompt)
    rt = bundles["chunked"]
    text, p_turn = native_transcribe(rt, wave, chunk_ms=160)
    assert rt.tokenizer.encode(text) == rt.tokenizer.encode(prompt.decode(ref_ids))
    assert normalize(text) == normalize(prompt.decode(ref_ids))
    np.testing.assert_allclose(np.asarray(p_turn), ref_turn.numpy(), atol=2e-3)


def test_metrics():
    assert word_errors("a b c".split(), "a x c d".split()) == 2
    assert wer(["four seven", "turn on"], ["four seven", "turn off the"]) == pytest.approx(2 / 4)
    assert normalize("Turn ON, please.") == ["turn", "on", "please"]
    f = turn_f1([[0.1, 0.9, 0.8]], [[0, 1, 0]])
    assert f["precision"] == 0.5 and f["recall"] == 1.0


def test_spec_sampling_is_deterministic():
    phrases = D.load_phrases()
    assert len(phrases) >= 200
    a = [D.sample_spec(5, i, phrases) for i in range(50)]
    assert a == [D.sample_spec(5, i, phrases) for i in range(50)]
    assert a != [D.sample_spec(6, i, phrases) for i in range(50)]
    digits = [s.text for s in a if all(w in D.DIGIT_WORDS for w in s.text.split())]
    assert digits and all(1 <= len(t.split()) <= 12 for t in digits)


@needs_espeak
def test_render_is_deterministic_and_labelled():
    spec = D.sample_spec(3, 0, D.load_phrases())
    w1, end1 = D.render(spec)
    w2, end2 = D.render(spec)
    assert np.array_equal(w1, w2) and end1 == end2
    assert w1.dtype == np.float32 and np.abs(w1).max() <= 1.0
    tail = len(w1) - end1
    assert abs(tail - int(spec.tail_s * D.SAMPLE_RATE)) <= 1
    lab = D.turn_labels(len(w1) // D.SAMPLES_PER_AUDIO_TOKEN, end1)
    assert lab[0] == 0 and lab[-1] == 1 and np.all(np.diff(lab) >= 0)


@needs_espeak
def test_training_recipe_runs(tmp_path):
    """Two optimizer steps of the recipe on a handful of utterances: the checkpoint it writes is
    a MinMo checkpoint the exporter accepts (not a quality check)."""
    from minmo_rt.training import train

    out = str(tmp_path / "run")
    assert train.main(["--out", out, "--train-size", "8", "--val-size", "4", "--steps", "2", "--batch-size", "4",
                       "--workers", "1", "--log-every", "1", "--eval-every", "1"]) == 0
    rows = [json.loads(x) for x in open(os.path.join(out, "train_log.jsonl"))]
    assert [r["step"] for r in rows] == [0, 1] and all(np.isfinite(r["loss"]) for r in rows)
    assert export_cli.main(["build", os.path.join(out, "checkpoint"), "-o", str(tmp_path / "b"), "--no-onnx", "-q"]) == 0
