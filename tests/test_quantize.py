"""Weight-only quantization at export (export/quantize.py) and quantized bundles in the C++ runtime."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

import minmo_rt
from minmo_rt.export import cli
from minmo_rt.export.bundle import build_reference_modules, load_manifest
from minmo_rt.export.checkpoints import synthetic
from minmo_rt.export.quantize import (QUANT_MODES, QuantError, awq_search, dequantize_weight, quantize_weight,
                                      roundtrip)
from minmo_rt.export.verify import QUANT_TOLERANCES, verify_bundle

core = minmo_rt._core

# Stated tolerance of a quantized test MinMo's LLM against fp32 (relative logits error); measured
# 0.0016 / 0.011 / 0.026 at export.
LOOSE = {"int8": 0.01, "fp8": 0.04, "int4": 0.1}


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ---- formats ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode,bound", [("int8", 0.01), ("fp8", 0.04), ("int4", 0.12)])
def test_roundtrip_error_bounds(mode, bound):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(97, 384, generator=g) * torch.rand(97, 1, generator=g) * 3
    parts = quantize_weight(w, mode)
    d = dequantize_weight(parts)
    assert rel(d, w) < bound
    err = (d - w).abs()
    if mode == "int8":  # round to nearest: at most half a step per element
        assert bool((err <= parts["weight_scale"][:, None] * 0.5 + 1e-7).all())
    elif mode == "int4":
        step = parts["weight_scale"].float().repeat_interleave(128, dim=1)
        assert bool((err <= step * 0.5 + 1e-6).all())
    else:  # e4m3: 3 mantissa bits -> relative error <= 2^-4 above the subnormal range
        normal = (w.abs() / parts["weight_scale"][:, None]) >= 2.0 ** -6
        assert bool((err[normal] <= w.abs()[normal] * 2.0 ** -4 + 1e-7).all())


def test_int4_layout_low_nibble_first_and_group_fallback():
    w = torch.arange(64, dtype=torch.float32).view(1, 64) - 20.0  # K = 64 -> groups of 64
    p = quantize_weight(w, "int4")
    assert p["weight"].shape == (1, 32) and p["weight_scale"].shape == (1, 1) and p["weight_scale"].dtype == torch.bfloat16
    codes = torch.round(w / p["weight_scale"].float() + p["weight_zero"].float()).clamp(0, 15).to(torch.uint8)
    assert int(p["weight"][0, 0]) == int(codes[0, 0]) | (int(codes[0, 1]) << 4)
    with pytest.raises(QuantError, match="multiple of 32"):
        quantize_weight(torch.zeros(2, 40), "int4")
    with pytest.raises(QuantError, match="unknown quantization mode"):
        quantize_weight(torch.zeros(2, 64), "int3")


def test_awq_scaling_helps_with_outlier_channels():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(64, 256, generator=g)
    x = torch.randn(300, 256, generator=g)
    x[:, :8] *= 30.0  # a few salient input channels, as in LLM activations
    s, alpha, err = awq_search(x, [w])
    plain = rel(x @ roundtrip(w, "int4").T, x @ w.T)
    assert alpha > 0 and err < 0.8 * plain
    assert s.shape == (256,) and bool((s[:8] > s[8:].max()).all())


# ---- bundles ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("quant")
    ckpt = str(root / "minmo-ckpt")
    synthetic.write_minmo_checkpoint(ckpt, seed=0)
    out = {}
    for mode in (None,) + QUANT_MODES:
        path = str(root / (mode or "fp32"))
        args = ["build", ckpt, "-o", path, "--no-onnx", "-q"] + (["--quant", mode] if mode else [])
        assert cli.main(args) == 0
        out[mode or "fp32"] = path
    return out


def llm_inputs(bundle, rows, seed=0):
    ref = build_reference_modules(bundle, ["llm"])["llm"]
    rng = np.random.default_rng(seed)
    ids = torch.from_numpy(rng.integers(0, ref.cfg.vocab_size, size=rows))
    with torch.no_grad():
        return ref, ref.embed(ids).numpy().astype(np.float32)


@pytest.mark.parametrize("mode", QUANT_MODES)
def test_manifest_records_quant(bundles, mode):
    man = load_manifest(bundles[mode], verify=True)
    llm = man["modules"]["llm"]
    assert llm["quant"] == mode and llm["quant_config"]["method"] == "weight-only"
    assert all(m["quant"] == "none" for n, m in man["modules"].items() if n != "llm")
    assert 1e-5 < llm["quant_check"]["logits_rel_err"] < LOOSE[mode] <= QUANT_TOLERANCES[mode]
    if mode == "int4":
        assert llm["quant_config"]["group_size"] == 128 and llm["quant_config"]["awq"]["calibration_rows"] > 64
    cpp = core.load_manifest(bundles[mode], True)
    assert cpp["modules"]["llm"]["quant"] == mode
    st = core.load_safetensors(os.path.join(bundles[mode], llm["weights"]))
    w = st["model.layers.0.mlp.down_proj.weight"]
    assert w.dtype == {"int8": np.int8, "fp8": np.uint8, "int4": np.uint8}[mode]
    fp32_size = os.path.getsize(os.path.join(bundles["fp32"], llm["weights"]))
    assert os.path.getsize(os.path.join(bundles[mode], llm["weights"])) < fp32_size


@pytest.mark.parametrize("mode", QUANT_MODES)
@pytest.mark.parametrize("rows", [1, 5, 13])  # decode (fused dequant-dot) and prefill (scratch + GEMM) paths
def test_quantized_llm_runs_in_runtime(bundles, mode, rows):
    ref, embeds = llm_inputs(bundles[mode], rows)
    with torch.no_grad():
        ref_logits = ref(torch.from_numpy(embeds))[0].numpy()
    fp32_ref = build_reference_modules(bundles["fp32"], ["llm"])["llm"]
    with torch.no_grad():
        fp32_logits = fp32_ref(torch.from_numpy(embeds))[0].numpy()
    got = minmo_rt.Runtime(bundles[mode]).run_module("llm", {"embeds": embeds})["logits"]
    assert rel(got, ref_logits) < 1e-4  # tight: the reference computes with the same dequantized weights
    assert rel(got, fp32_logits) < LOOSE[mode]  # loose: quantization error
    assert rel(got, fp32_logits) > 1e-5  # the weights really are quantized


def test_verify_reports_quant_error(bundles):
    rows = verify_bundle(bundles["int4"])
    assert all(r.ok for r in rows), [r for r in rows if not r.ok]
    q = [r for r in rows if "vs fp32" in r.output]
    assert {r.output.split()[0] for r in q} == {"logits", "hidden"} and all(r.module == "llm" for r in q)


def test_bad_quant_mode_and_manifest(bundles, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["build", "x", "-o", str(tmp_path / "b"), "--quant", "int3"])
    assert e.value.code == 2 and "invalid choice: 'int3'" in capsys.readouterr().err
    from minmo_rt.export.bundle import write_bundle
    with pytest.raises(QuantError, match="unknown quantization mode 'int3'"):
        write_bundle([], str(tmp_path / "c"), quant="int3")
    # a manifest naming an unknown quant is refused by the C++ reader with the reason
    man = json.loads(open(os.path.join(bundles["int8"], "manifest.json")).read())
    man["modules"]["llm"]["quant"] = "int3"
    with pytest.raises(minmo_rt.MinmoError, match='unknown "quant" int3 \\(expected none, int8, int4 or fp8\\)'):
        _load_modified(bundles["int8"], man, tmp_path)


def _load_modified(bundle, man, tmp_path):
    import shutil
    dst = tmp_path / "mod"
    shutil.copytree(bundle, dst)
    (dst / "manifest.json").write_text(json.dumps(man))
    core.load_manifest(str(dst), False)


def test_verify_simulates_each_mode_on_fp32_bundle(bundles, capsys, tmp_path):
    out_json = tmp_path / "v.json"
    assert cli.main(["verify", bundles["fp32"], "--quant-modes", "int8,int4,fp8", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    for mode in QUANT_MODES:
        assert f"logits ({mode} vs fp32, simulated)" in out and f"logits ({mode} vs bf16, simulated)" in out
    rows = {r["output"]: r["rel_err"] for r in json.loads(out_json.read_text())["rows"] if r["module"] == "llm"}
    bf16 = rows["logits (bf16 weights vs fp32, simulated)"]
    assert 1e-5 < bf16 < 0.02  # the bf16 floor is real and small
    assert rows["logits (int4 vs fp32, simulated)"] > bf16  # int4 costs more than bf16 rounding
    assert cli.main(["verify", bundles["int8"], "--quant-modes", "int4"]) == 2
    assert "already quantized (int8)" in capsys.readouterr().err
    assert cli.main(["verify", bundles["fp32"], "--quant-modes", "int5"]) == 2
    assert "unknown quantization mode 'int5'" in capsys.readouterr().err


def test_int4_leaves_linears_with_odd_widths_in_fp32():
    from minmo_rt.export.quantize import dequantize_state_dict, quantize_qwen2
    from minmo_rt.export.reference import Qwen2Config
    from minmo_rt.export.reference.qwen2 import Qwen2Decoder

    cfg = dict(vocab_size=50, hidden_size=48, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
               num_key_value_heads=1, head_dim=32, rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = Qwen2Decoder(Qwen2Config.from_dict(cfg))
    sd = model.state_dict()
    out, info = quantize_qwen2(sd, cfg, "int4", torch.randn(40, 48))
    p = "model.layers.0."
    # inputs of width 48 (q/k/v, gate/up) are not a multiple of 32: fp32; o_proj (64) and down (64) are int4
    assert sorted(info["skipped"]) == sorted(p + n for n in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                             "mlp.gate_proj", "mlp.up_proj"))
    assert out[p + "mlp.down_proj.weight"].dtype == torch.uint8 and out[p + "self_attn.q_proj.weight"].dtype == torch.float32
    deq = dequantize_state_dict(out)
    assert set(deq) == set(sd)


@pytest.mark.parametrize("damage,match", [
    (lambda t: t.__setitem__("model.layers.0.self_attn.q_proj.weight_scale",
                             t["model.layers.0.self_attn.q_proj.weight_scale"][:-1].clone()), "weight_scale"),
    (lambda t: t.__setitem__("model.layers.0.mlp.up_proj.weight",
                             t["model.layers.0.mlp.up_proj.weight"].view(torch.uint8).clone()), "has dtype U8"),
])
def test_runtime_rejects_malformed_quantized_weights(bundles, tmp_path, damage, match):
    import shutil

    from safetensors.torch import load_file, save_file

    dst = tmp_path / "b"
    shutil.copytree(bundles["int8"], dst)
    path = dst / "weights" / "llm.safetensors"
    t = load_file(str(path))
    damage(t)
    save_file(t, str(path))
    with pytest.raises(minmo_rt.BundleError, match=match):
        minmo_rt.Runtime(str(dst), verify_files=False)


@pytest.mark.parametrize("mode", QUANT_MODES)
def test_exported_tensors_feed_the_cuda_gemv_contract(mode):
    """The bundle's quantized tensors are exactly what kernels/include/minmo_kernels/gemv.h expects:
    its CPU twins (the CUDA kernels' oracle) on them equal x @ dequantize(W)^T."""
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "kernels" / "python"))
    import minmo_kernels_ctypes as mk

    k = mk.Kernels(mk.build(root / "build" / "kernels-py"))
    g = torch.Generator().manual_seed(3)
    n, kk, batch = 67, 384, 3
    parts = quantize_weight(torch.randn(n, kk, generator=g), mode)
    x = torch.randn(batch, kk, generator=g).to(torch.bfloat16)
    ref = (x.float() @ dequantize_weight(parts).T).numpy()
    xb = x.view(torch.int16).numpy().view(np.uint16).copy()
    y = np.zeros((batch, n), np.uint16)
    w = parts["weight"].view(torch.uint8).numpy() if mode == "fp8" else parts["weight"].numpy()
    if mode == "int4":
        sc = parts["weight_scale"].view(torch.int16).numpy().view(np.uint16).copy()
        k.cpu.gemv_int4(xb.ctypes.data, w.ctypes.data, sc.ctypes.data, parts["weight_zero"].numpy().ctypes.data,
                        y.ctypes.data, batch, n, kk, 128)
    else:
        sc = parts["weight_scale"].numpy()
        getattr(k.cpu, f"gemv_{mode}")(xb.ctypes.data, w.ctypes.data, sc.ctypes.data, y.ctypes.data, batch, n, kk)
    got = (y.astype(np.uint32) << 16).view(np.float32)
    assert rel(got, ref) < 4e-3  # bf16 output rounding


@pytest.mark.parametrize("mode", QUANT_MODES)
def test_quantized_bundle_streams_like_its_reference(bundles, mode):
    """A full streaming session (audio in, greedy text out; decode steps take the fused path,
    the prompt prefill the dequantize + GEMM path) gives the tokens of the PyTorch reference
    on the dequantized weights, for any push schedule."""
    from test_session import _reference, _run, _speechlike

    rt = minmo_rt.Runtime(bundles[mode])
    audio = _speechlike(1.37, seed=1)
    ref_tokens, ref_duplex = _reference(bundles[mode], audio)
    tokens, duplex, _ = _run(rt, audio, [audio.size])
    assert tokens == ref_tokens and len(tokens) > 0
    np.testing.assert_allclose(duplex, ref_duplex, rtol=0, atol=1e-5)
    assert _run(rt, audio, [1111, 2900, 517])[0] == tokens
