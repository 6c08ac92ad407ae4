"""ONNX graphs of a bundle vs the PyTorch reference rebuilt from the same bundle (ONNX Runtime)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from _bundles import minmo_bundle_with_onnx
from minmo_rt.export import cli
from minmo_rt.export.bundle import build_reference_modules, load_manifest
from minmo_rt.export.checkpoints import synthetic
from minmo_rt.export.onnx_export import ONNX_PARTS, OPSET, example_inputs, reference_outputs

ort = pytest.importorskip("onnxruntime")


def _session(path):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _check_bundle(bundle, lengths):
    import onnx

    man = load_manifest(bundle, verify=True)
    refs = build_reference_modules(bundle)
    for name, entry in man["modules"].items():
        path = os.path.join(bundle, entry["onnx"])
        model = onnx.load(path)
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
        assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)  # single file
        chk = entry["onnx_check"]
        assert chk["ok"] and chk["opset"] == OPSET and chk["tolerance"] <= 1e-4
        sess = _session(path)
        outs = [o.name for o in sess.get_outputs()]
        arch = entry["arch"] + (f":{ONNX_PARTS[entry['arch']][0]}" if entry["arch"] in ONNX_PARTS else "")  # main graph
        for i, length in enumerate(lengths.get(entry["arch"], [None])):
            inputs = example_inputs(arch, refs[name], seed=100 + i, length=length)
            got = sess.run(outs, inputs)
            ref = reference_outputs(arch, refs[name], inputs)
            for n, g, r in zip(outs, got, ref):
                assert g.shape == tuple(r.shape), (name, n)
                assert _rel(g, r.numpy()) <= 1e-4, (name, n, _rel(g, r.numpy()))


def test_minmo_bundle_onnx_chunked():
    bundle = minmo_bundle_with_onnx("chunked")
    lengths = {"whisper_logmel": [3217, 16000], "sensevoice_large": [3, 64, 131], "projector": [1, 17, 64],
               "qwen2": [1, 12], "duplex": [1, 30]}
    _check_bundle(bundle, lengths)
    # the LLM step graph with an empty cache (first prefill) and a growing one
    man = load_manifest(bundle)
    llm = build_reference_modules(bundle, modules=["llm"])["llm"]
    sess = _session(os.path.join(bundle, man["modules"]["llm"]["onnx"]))
    cfg = man["modules"]["llm"]["config"]
    rng = np.random.default_rng(0)
    embeds = rng.standard_normal((9, cfg["hidden_size"])).astype(np.float32)
    empty = np.zeros((cfg["num_hidden_layers"], 0, cfg["num_key_value_heads"], cfg["head_dim"]), np.float32)
    logits_a, _, k, v = sess.run(None, {"embeds": embeds[:6], "past_key": empty, "past_value": empty})
    logits_b, _, k, v = sess.run(None, {"embeds": embeds[6:], "past_key": k, "past_value": v})
    assert k.shape[1] == 9
    with torch.no_grad():
        ref, _, _ = llm(torch.from_numpy(embeds))
    assert _rel(np.concatenate([logits_a, logits_b]), ref.numpy()) <= 1e-4


def test_sensevoice_bundle_onnx(tmp_path):
    ckpt = tmp_path / "sv"
    synthetic.write_funasr_sensevoice(str(ckpt), {"n_blocks": 2, "n_tp_blocks": 1}, seed=4)
    out = tmp_path / "b"
    assert cli.main(["build", str(ckpt), "-o", str(out), "-q", "--target", "onnx", "--streaming", "chunked"]) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["target"] == "onnx" and set(man["modules"]) == {"frontend", "encoder"}
    _check_bundle(str(out), {"kaldi_fbank": [400, 4321, 16000], "sensevoice_small": [1, 9, 50]})
