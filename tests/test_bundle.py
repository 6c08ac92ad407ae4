"""Bundle writer (``minmo-export build``), manifest schema, inspect, reference rebuild, verify."""
from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import torch

from minmo_rt.export import cli
from minmo_rt.export.bundle import (SCHEMA_PATH, BundleError, build_reference_modules, load_manifest,
                                    validate_manifest)
from minmo_rt.export.checkpoints import load_checkpoint, synthetic


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    synthetic.write_minmo_checkpoint(str(root / "minmo"), seed=0)
    synthetic.write_funasr_sensevoice(str(root / "sensevoice"), seed=1)
    synthetic.write_hf_qwen2(str(root / "qwen2"), seed=2)
    # an llm that fits the minmo projector / duplex (hidden 128) for a two-source MinMo bundle
    synthetic.write_hf_qwen2(str(root / "qwen2-128"), {"hidden_size": 128, "head_dim": 32, "intermediate_size": 256}, seed=3)
    meta = json.loads((root / "minmo" / "minmo.json").read_text())
    shutil.copytree(root / "minmo", root / "minmo-nollm")
    del meta["modules"]["llm"]
    (root / "minmo-nollm" / "minmo.json").write_text(json.dumps(meta))
    os.remove(root / "minmo-nollm" / "llm.safetensors")
    os.remove(root / "minmo-nollm" / "tokenizer.json")
    return root


def build(*args) -> int:
    return cli.main(["build", *map(str, args), "-q"])


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def check_bundle_files(bundle) -> dict:
    man = json.loads(open(os.path.join(bundle, "manifest.json")).read())
    import jsonschema

    jsonschema.validate(man, json.load(open(SCHEMA_PATH)))
    on_disk = {os.path.relpath(os.path.join(d, f), bundle).replace(os.sep, "/")
               for d, _, fs in os.walk(bundle) for f in fs} - {"manifest.json"}
    assert set(man["files"]) == on_disk
    for rel, entry in man["files"].items():
        p = os.path.join(bundle, rel)
        assert os.path.getsize(p) == entry["size"], rel
        assert _sha(p) == entry["sha256"], rel
    for m in man["modules"].values():
        assert m["weights"] in man["files"] and m["dtype"] == "float32" and m["quant"] == "none"
    return man


def test_minmo_bundle(sources, tmp_path):
    out = tmp_path / "b"
    assert build(sources / "minmo", "-o", out, "--no-onnx") == 0
    man = check_bundle_files(out)
    assert man["format"] == "minmo-bundle" and man["format_version"] == "1.0" and man["mode"] == "minmo"
    assert man["created_by"].startswith("minmo-export ")
    assert man["streaming"] == {"encoder_attention": "chunked", "chunk_frames": 8, "left_chunks": 4}
    assert man["tokenizer"]["kind"] == "hf-tokenizers" and man["tokenizer"]["file"] == "tokenizer/tokenizer.json"
    assert man["prompt"] == {"template": "chatml", "system": "You are a helpful assistant.",
                             "audio_bos": "<|audio_bos|>", "audio_eos": "<|audio_eos|>"}
    assert list(man["modules"]) == ["frontend", "encoder", "projector", "llm", "duplex", "output_projector", "voice_lm",
                                    "flow", "hift"]
    assert not any("onnx" in m for m in man["modules"].values())
    # weights = the checkpoint's tensors, under the reference names; params counted from them
    ck = load_checkpoint(str(sources / "minmo"))
    from safetensors.torch import load_file

    for m in ck.modules:
        stored = load_file(str(out / "weights" / f"{m.name}.safetensors"))
        assert set(stored) == set(m.state_dict)
        assert all(torch.equal(stored[k], m.state_dict[k]) for k in stored)
        assert man["modules"][m.name]["params"] == sum(v.numel() for v in stored.values())
    refs = build_reference_modules(str(out))
    assert refs["encoder"].chunk.chunked and refs["projector"].chunk.chunk_frames == 8
    with torch.no_grad():
        feats = refs["frontend"](torch.randn(8000) * 0.1)
        tokens = refs["projector"](refs["encoder"](feats))
        logits, hidden, _ = refs["llm"](tokens)
        p_turn, _, _ = refs["duplex"](hidden)
    assert logits.shape == (tokens.shape[0], man["modules"]["llm"]["config"]["vocab_size"])
    assert p_turn.shape == (tokens.shape[0],)


def test_sensevoice_bundle(sources, tmp_path):
    out = tmp_path / "b"
    assert build(sources / "sensevoice", "-o", out, "--no-onnx") == 0
    man = check_bundle_files(out)
    assert man["mode"] == "asr-ctc" and "prompt" not in man
    assert man["streaming"]["encoder_attention"] == "full"  # public checkpoints: full attention
    assert man["tokenizer"]["kind"] == "sentencepiece" and man["tokenizer"]["file"].endswith(".bpe.model")
    assert man["modules"]["encoder"]["ctc"] == {"blank_id": 0}
    refs = build_reference_modules(str(out))
    ck = load_checkpoint(str(sources / "sensevoice"))
    fe = ck.module("frontend").state_dict
    for k in ("mel_banks", "window", "cmvn_shift", "cmvn_scale"):  # every frontend buffer is persisted
        np.testing.assert_array_equal(getattr(refs["frontend"], k).float().numpy(), fe[k].numpy())


def test_qwen2_bundle_and_combination(sources, tmp_path):
    assert build(sources / "qwen2", "-o", tmp_path / "llm", "--no-onnx") == 0
    man = check_bundle_files(tmp_path / "llm")
    assert man["mode"] == "llm" and list(man["modules"]) == ["llm"]
    assert man["tokenizer"]["eos_id"] == man["tokenizer"]["special_tokens"]["<|im_end|>"]
    # SenseVoice + Qwen2: both tokenizers kept, the LLM's is the bundle's
    assert build(sources / "sensevoice", sources / "qwen2", "-o", tmp_path / "combo", "--no-onnx") == 0
    man = check_bundle_files(tmp_path / "combo")
    assert man["mode"] == "partial" and set(man["modules"]) == {"frontend", "encoder", "llm"}
    assert man["tokenizer"]["kind"] == "hf-tokenizers"
    assert man["modules"]["encoder"]["tokenizer"]["kind"] == "sentencepiece"
    assert [s["format"] for s in man["sources"]] == ["funasr-sensevoice", "hf-qwen2"]
    # MinMo modules + a Hugging Face LLM of the right width -> a full MinMo bundle from two sources
    assert build(sources / "minmo-nollm", sources / "qwen2-128", "-o", tmp_path / "two", "--no-onnx") == 0
    man = check_bundle_files(tmp_path / "two")
    assert man["mode"] == "minmo" and man["streaming"]["encoder_attention"] == "chunked"
    assert man["prompt"]["audio_bos"] == "<|audio_bos|>"


def test_conflicts_are_refused(sources, tmp_path, capsys):
    assert build(sources / "minmo", sources / "qwen2", "-o", tmp_path / "x", "--no-onnx") == 2
    assert "module 'llm' is provided by both" in capsys.readouterr().err
    assert build(sources / "minmo-nollm", sources / "qwen2", "-o", tmp_path / "x", "--no-onnx") == 2
    err = capsys.readouterr().err
    assert "projector output_dim 128 != llm hidden_size 64" in err and "duplex llm_hidden" in err
    assert build(sources / "qwen2", sources / "qwen2", "-o", tmp_path / "x") == 2
    assert "given twice" in capsys.readouterr().err
    assert build(sources / "sensevoice", "-o", tmp_path / "x", "--quant", "int8", "--no-onnx") == 2
    assert "this bundle has no llm module" in capsys.readouterr().err
    assert build(sources / "minmo", "-o", sources / "minmo" / "bundle") == 2
    assert "overlap" in capsys.readouterr().err
    (tmp_path / "junk").mkdir()
    assert build(tmp_path / "junk", "-o", tmp_path / "y") == 2
    assert "cannot tell the format" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x") and not os.path.exists(tmp_path / "y")


def test_overwrite_rules_and_streaming_flags(sources, tmp_path, capsys):
    out = tmp_path / "b"
    out.mkdir()  # an empty directory is fine
    assert build(sources / "minmo", "-o", out, "--no-onnx") == 0
    first = json.loads((out / "manifest.json").read_text())
    assert build(sources / "minmo", "-o", out, "--no-onnx", "--streaming", "full") == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert json.loads((out / "manifest.json").read_text()) == first
    assert build(sources / "minmo", "-o", out, "--no-onnx", "--force", "--streaming", "full", "--left-chunks", "2") == 0
    man = check_bundle_files(out)
    assert man["streaming"] == {"encoder_attention": "full", "chunk_frames": 8, "left_chunks": 2}
    assert build(sources / "minmo", "-o", out, "--no-onnx", "--force", "--chunk-frames", "6") == 0
    assert check_bundle_files(out)["streaming"] == {"encoder_attention": "chunked", "chunk_frames": 6, "left_chunks": 4}
    assert build(sources / "minmo", "-o", out, "--no-onnx", "--force", "--chunk-frames", "5") == 2
    assert "chunk_frames" in capsys.readouterr().err
    # --force never deletes a directory that is not a bundle
    other = tmp_path / "precious"
    other.mkdir()
    (other / "thesis.txt").write_text("keep me")
    assert build(sources / "minmo", "-o", other, "--no-onnx", "--force") == 2
    assert "does not hold a bundle" in capsys.readouterr().err
    assert (other / "thesis.txt").read_text() == "keep me"
    leftovers = [n for n in os.listdir(tmp_path) if ".tmp-" in n or ".old-" in n]
    assert leftovers == []


def test_failed_build_leaves_nothing(sources, tmp_path, monkeypatch):
    import minmo_rt.export.onnx_export as ox

    def boom(*a, **k):
        raise RuntimeError("ONNX export of x does not match the reference")

    monkeypatch.setattr(ox, "export_module", boom)
    assert build(sources / "qwen2", "-o", tmp_path / "b") == 2
    assert os.listdir(tmp_path) == []


def test_inspect(sources, tmp_path, capsys):
    out = tmp_path / "b"
    assert build(sources / "sensevoice", "-o", out, "--no-onnx") == 0
    capsys.readouterr()
    assert cli.main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    for s in ("asr-ctc", "kaldi_fbank", "sensevoice_small", "float32", "all present with matching size and SHA-256"):
        assert s in text
    assert cli.main(["inspect", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["modules"]["encoder"]["params"] > 0 and info["files"]["ok"]
    w = out / "weights" / "encoder.safetensors"
    data = bytearray(w.read_bytes())
    data[-3] ^= 0x55
    w.write_bytes(bytes(data))
    assert cli.main(["inspect", str(out)]) == 1
    assert "weights/encoder.safetensors: SHA-256 mismatch" in capsys.readouterr().out
    assert cli.main(["inspect", str(tmp_path / "nope")]) == 2


@pytest.mark.parametrize("where,bad", [("files", "../outside.bin"), ("files", "/etc/passwd"), ("weights", "weights/../../x"),
                                       ("onnx", "a/../../b"), ("tokenizer", "..\\x"), ("weights", "weights/link.safetensors")])
def test_paths_stay_inside(sources, tmp_path, where, bad):
    out = tmp_path / "b"
    assert build(sources / "qwen2", "-o", out, "--no-onnx") == 0
    man = json.loads((out / "manifest.json").read_text())
    if bad.endswith("link.safetensors"):  # a symlink that escapes
        (tmp_path / "secret").write_bytes(b"x")
        os.symlink(tmp_path / "secret", out / "weights" / "link.safetensors")
        man["files"][bad] = {"size": 1, "sha256": _sha(tmp_path / "secret")}
    if where == "files":
        man["files"][bad] = {"size": 1, "sha256": "0" * 64}
    elif where in ("weights", "onnx"):
        man["modules"]["llm"][where] = bad
        man["files"][bad] = {"size": 1, "sha256": "0" * 64}
    else:
        man["tokenizer"]["file"] = bad
    (out / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(BundleError, match="leaves the bundle|must be relative|schema"):
        load_manifest(str(out))


def test_manifest_validation_errors(sources, tmp_path):
    out = tmp_path / "b"
    assert build(sources / "qwen2", "-o", out, "--no-onnx") == 0
    good = json.loads((out / "manifest.json").read_text())
    validate_manifest(good)
    cases = [
        (lambda m: m.update(format_version="2.0"), "not supported"),
        (lambda m: m.update(format="other"), "not a minmo bundle"),
        (lambda m: m.update(mode="speaking"), "mode"),
        (lambda m: m["modules"]["llm"].update(arch="llama"), "arch"),
        (lambda m: m["modules"]["llm"]["config"].update(bogus=1), "unknown config keys"),
        (lambda m: m["files"].pop("weights/llm.safetensors"), "not listed"),
        (lambda m: m["streaming"].update(chunk_frames=3), "chunk_frames"),
    ]
    for mutate, match in cases:
        m = json.loads(json.dumps(good))
        mutate(m)
        (out / "manifest.json").write_text(json.dumps(m))
        with pytest.raises(BundleError, match=match):
            load_manifest(str(out))
    (out / "manifest.json").write_text(json.dumps(good))
    load_manifest(str(out), verify=True)


def _has_run_module() -> bool:
    try:
        import minmo_rt
        from minmo_rt import _core
    except Exception:
        return False
    return hasattr(getattr(minmo_rt, "Runtime", None), "run_module") and hasattr(getattr(_core, "Runtime", None), "run_module")


@pytest.mark.skipif(not _has_run_module(), reason="minmo_rt.Runtime.run_module is not built yet")
@pytest.mark.parametrize("kind", ["minmo", "sensevoice"])
def test_verify_cli(sources, tmp_path, capsys, kind):
    out = tmp_path / "b"
    assert build(sources / kind, "-o", out, "--no-onnx") == 0
    rc = cli.main(["verify", str(out), "--json", str(tmp_path / "v.json")])
    text = capsys.readouterr().out
    res = json.loads((tmp_path / "v.json").read_text())
    assert rc == 0, text
    assert res["ok"] and {r["module"] for r in res["rows"]} == set(json.loads((out / "manifest.json").read_text())["modules"])
    assert "max abs err" in text


@pytest.mark.parametrize("kind", ["minmo", "sensevoice"])
def test_cpp_reader_agrees_with_the_writer(sources, tmp_path, kind):
    _core = pytest.importorskip("minmo_rt._core")
    if not hasattr(_core, "load_manifest"):
        pytest.skip("C++ manifest reader not built")
    out = tmp_path / "b"
    assert build(sources / kind, "-o", out, "--no-onnx") == 0
    py = load_manifest(str(out), verify=True)
    cpp = _core.load_manifest(str(out))
    assert (cpp["major"], cpp["minor"], cpp["mode"], cpp["sample_rate"]) == (1, 0, py["mode"], py["sample_rate"])
    assert cpp["streaming"] == py["streaming"] and cpp["raw"] == py
    assert cpp["tokenizer_path"] == os.path.realpath(os.path.join(out, py["tokenizer"]["file"]))
    assert set(cpp["modules"]) == set(py["modules"])
    for name, m in py["modules"].items():
        c = cpp["modules"][name]
        assert (c["arch"], c["dtype"], c["quant"], c["config"]) == (m["arch"], m["dtype"], m["quant"], m["config"])
        assert c["weights_path"] == os.path.realpath(os.path.join(out, m["weights"]))
    assert {k: v["sha256"] for k, v in cpp["files"].items()} == {k: v["sha256"] for k, v in py["files"].items()}


def test_builds_are_reproducible(sources, tmp_path):
    for out in ("a", "b"):
        assert build(sources / "minmo", "-o", tmp_path / out, "--no-onnx") == 0
    a, b = (json.loads((tmp_path / o / "manifest.json").read_text()) for o in ("a", "b"))
    assert a["files"] == b["files"]
