"""C++ readers of weight files (.safetensors) and bundle manifests, on files written from Python."""
from __future__ import annotations

import hashlib
import json
import os
import struct

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file as save_np
from safetensors.torch import save_file as save_torch

from minmo_rt import _core


# ---------------------------------------------------------------------------- safetensors

def test_dtypes_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    f32 = rng.standard_normal((3, 5)).astype(np.float32)
    f16 = np.array([0.0, -0.0, 1.0, -2.5, 65504.0, 6.1e-5, 5.96e-8, 3e-6, np.inf, -np.inf], np.float16)
    bf16 = torch.randn(4, 7).to(torch.bfloat16)
    f64 = rng.standard_normal(6)
    i64 = np.array([[1, -2], [2**40, 7]], np.int64)
    i32 = np.array([5, -6, 2**31 - 1], np.int32)
    path = str(tmp_path / "w.safetensors")
    save_torch({
        "a.f32": torch.from_numpy(f32), "a.f16": torch.from_numpy(f16), "b.bf16": bf16,
        "b.f64": torch.from_numpy(f64), "ids": torch.from_numpy(i64), "i32": torch.from_numpy(i32),
        "scalar": torch.tensor(3.5), "empty": torch.zeros(0, 4),
    }, path, metadata={"format": "pt"})
    d = _core.load_safetensors(path)
    assert set(d) == {"a.f32", "a.f16", "b.bf16", "b.f64", "ids", "i32", "scalar", "empty"}
    np.testing.assert_array_equal(d["a.f32"], f32)
    assert d["a.f16"].dtype == np.float32
    np.testing.assert_array_equal(d["a.f16"], f16.astype(np.float32))
    assert np.signbit(d["a.f16"][1])
    np.testing.assert_array_equal(d["b.bf16"], bf16.float().numpy())
    np.testing.assert_array_equal(d["b.f64"], f64.astype(np.float32))
    assert d["ids"].dtype == np.int64 and d["i32"].dtype == np.int64
    np.testing.assert_array_equal(d["ids"], i64)
    np.testing.assert_array_equal(d["i32"], i32)
    assert d["scalar"].shape == () and d["scalar"] == 3.5
    assert d["empty"].shape == (0, 4)


def test_f16_nan_and_all_bit_patterns(tmp_path):
    bits = np.arange(0, 2**16, dtype=np.uint32).astype(np.uint16)
    h = bits.view(np.float16)
    path = str(tmp_path / "h.safetensors")
    save_np({"h": h}, path)
    got = _core.load_safetensors(path)["h"]
    ref = h.astype(np.float32)
    nan = np.isnan(ref)
    assert np.array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint32), ref[~nan].view(np.uint32))


def write_raw(path, header: dict, data: bytes, header_len=None):
    hb = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb) if header_len is None else header_len))
        f.write(hb)
        f.write(data)
    return str(path)


def good_header():
    return {"x": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
            "y": {"dtype": "F16", "shape": [3], "data_offsets": [16, 22]}}


def test_raw_writer_is_valid(tmp_path):
    p = write_raw(tmp_path / "ok.safetensors", good_header(), bytes(22))
    d = _core.load_safetensors(p)
    assert d["x"].shape == (2, 2) and d["y"].shape == (3,)


@pytest.mark.parametrize("case,match", [
    ("short_file", "too short"),
    ("huge_header_len", "header length"),
    ("bad_json", "invalid JSON"),
    ("not_object", "not a JSON object"),
    ("truncated", "out of range"),
    ("offset_out_of_range", "out of range"),
    ("size_mismatch", "needs 16"),
    ("overlap", "overlap"),
    ("bad_dtype", "unsupported dtype"),
    ("negative_dim", "negative"),
    ("missing_field", "data_offsets"),
    ("reversed_offsets", "out of range"),
])
def test_corrupt_files(tmp_path, case, match):
    p = tmp_path / f"{case}.safetensors"
    h = good_header()
    if case == "short_file":
        p.write_bytes(b"\x01\x02")
    elif case == "huge_header_len":
        write_raw(p, h, bytes(22), header_len=10**9)
    elif case == "bad_json":
        hb = b'{"x": {"dtype": "F32", '
        p.write_bytes(struct.pack("<Q", len(hb)) + hb)
    elif case == "not_object":
        write_raw(p, [1, 2], b"")
    elif case == "truncated":
        write_raw(p, h, bytes(20))
    elif case == "offset_out_of_range":
        h["y"]["data_offsets"] = [16, 1000]
        write_raw(p, h, bytes(22))
    elif case == "size_mismatch":
        h["x"]["data_offsets"] = [0, 12]
        write_raw(p, h, bytes(22))
    elif case == "overlap":
        h["y"]["data_offsets"] = [10, 16]
        write_raw(p, h, bytes(22))
    elif case == "bad_dtype":
        h["x"]["dtype"] = "F8_E9"
        write_raw(p, h, bytes(22))
    elif case == "negative_dim":
        h["x"]["shape"] = [-2, -2]
        write_raw(p, h, bytes(22))
    elif case == "missing_field":
        del h["x"]["data_offsets"]
        write_raw(p, h, bytes(22))
    elif case == "reversed_offsets":
        h["x"]["data_offsets"] = [16, 0]
        write_raw(p, h, bytes(22))
    with pytest.raises(_core.BundleError, match=match) as ei:
        _core.load_safetensors(str(p))
    assert p.name in str(ei.value)
    if case in ("truncated", "offset_out_of_range", "size_mismatch", "bad_dtype", "negative_dim"):
        assert "'" + ("y" if case in ("truncated", "offset_out_of_range") else "x") + "'" in str(ei.value)


def test_truncated_real_file(tmp_path):
    p = tmp_path / "t.safetensors"
    save_np({"w": np.ones((64, 64), np.float32)}, str(p))
    raw = p.read_bytes()
    p.write_bytes(raw[:-100])
    with pytest.raises(_core.BundleError, match="'w'.*out of range"):
        _core.load_safetensors(str(p))


def test_missing_file(tmp_path):
    with pytest.raises(_core.BundleError, match="nope.safetensors"):
        _core.load_safetensors(str(tmp_path / "nope.safetensors"))


# ---------------------------------------------------------------------------- manifest

def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def make_bundle(root, version="1.0", mutate=None):
    """A small bundle written the way the exporter writes one (manifest schema 1.x)."""
    os.makedirs(root / "weights", exist_ok=True)
    os.makedirs(root / "tokenizer", exist_ok=True)
    save_np({"embed": np.arange(12, dtype=np.float32).reshape(3, 4)}, str(root / "weights" / "llm.safetensors"))
    (root / "tokenizer" / "tokenizer.json").write_text('{"model": {}}')
    files = {}
    for rel in ["weights/llm.safetensors", "tokenizer/tokenizer.json"]:
        files[rel] = {"size": os.path.getsize(root / rel), "sha256": sha256(root / rel)}
    man = {
        "format": "minmo-bundle", "format_version": version, "mode": "llm", "sample_rate": 16000,
        "streaming": {"encoder_attention": "chunked", "chunk_frames": 16, "left_chunks": 2},
        "tokenizer": {"kind": "hf-tokenizers", "file": "tokenizer/tokenizer.json", "eos_id": 2},
        "modules": {"llm": {"arch": "qwen2", "config": {"hidden_size": 4, "num_hidden_layers": 1, "rope_theta": 1e6},
                            "dtype": "float32", "quant": "none", "weights": "weights/llm.safetensors"}},
        "files": files,
    }
    if mutate:
        mutate(man)
    (root / "manifest.json").write_text(json.dumps(man, indent=1))
    return str(root)


def test_manifest_roundtrip(tmp_path):
    b = make_bundle(tmp_path / "b")
    m = _core.load_manifest(b)
    assert (m["major"], m["minor"], m["mode"], m["sample_rate"]) == (1, 0, "llm", 16000)
    assert m["streaming"] == {"encoder_attention": "chunked", "chunk_frames": 16, "left_chunks": 2}
    assert m["tokenizer"]["kind"] == "hf-tokenizers" and m["tokenizer"]["eos_id"] == 2
    assert m["tokenizer_path"] == os.path.realpath(os.path.join(b, "tokenizer/tokenizer.json"))
    llm = m["modules"]["llm"]
    assert llm["arch"] == "qwen2" and llm["dtype"] == "float32" and llm["quant"] == "none"
    assert llm["config"] == {"hidden_size": 4, "num_hidden_layers": 1, "rope_theta": 1e6}
    assert llm["weights_path"] == os.path.realpath(os.path.join(b, "weights/llm.safetensors"))
    assert llm["onnx_path"] == ""
    assert m["files"]["weights/llm.safetensors"]["sha256"] == sha256(os.path.join(b, "weights/llm.safetensors"))
    assert m["raw"] == json.load(open(os.path.join(b, "manifest.json")))
    np.testing.assert_array_equal(_core.load_safetensors(llm["weights_path"])["embed"].ravel(), np.arange(12))


def test_newer_minor_version_is_accepted(tmp_path):
    m = _core.load_manifest(make_bundle(tmp_path / "b", version="1.7"))
    assert (m["major"], m["minor"]) == (1, 7)


@pytest.mark.parametrize("version", ["7.0", "2.1", "0.9"])
def test_unknown_major_version(tmp_path, version):
    b = make_bundle(tmp_path / "b", version=version)
    with pytest.raises(_core.UnsupportedVersionError, match=f"version {version} is not supported.*1.x"):
        _core.load_manifest(b)
    assert issubclass(_core.UnsupportedVersionError, _core.BundleError)


@pytest.mark.parametrize("mutate,match", [
    (lambda m: m.update(format="something-else"), "minmo-bundle"),
    (lambda m: m.update(format_version="one"), "format_version"),
    (lambda m: m.pop("modules"), "modules"),
    (lambda m: m["modules"]["llm"].update(weights="weights/other.safetensors"), "not listed"),
    (lambda m: m["files"]["weights/llm.safetensors"].update(sha256="xyz"), "hex"),
    (lambda m: m["modules"]["llm"].pop("arch"), "arch"),
])
def test_schema_violations(tmp_path, mutate, match):
    with pytest.raises(_core.BundleError, match=match):
        _core.load_manifest(make_bundle(tmp_path / "b", mutate=mutate))


@pytest.mark.parametrize("bad", ["../outside.bin", "/etc/passwd", "weights/../../x", "a/../../b"])
@pytest.mark.parametrize("where", ["files", "weights", "onnx", "tokenizer"])
def test_paths_may_not_leave_the_bundle(tmp_path, bad, where):
    def mutate(m):
        if where == "files":
            m["files"][bad] = {"size": 1, "sha256": "0" * 64}
        elif where == "weights":
            m["modules"]["llm"]["weights"] = bad
            m["files"][bad] = {"size": 1, "sha256": "0" * 64}
        elif where == "onnx":
            m["modules"]["llm"]["onnx"] = bad
        else:
            m["tokenizer"]["file"] = bad
    with pytest.raises(_core.BundleError, match="leaves the bundle|must be relative"):
        _core.load_manifest(make_bundle(tmp_path / "b", mutate=mutate), verify=False)


def test_symlink_escape(tmp_path):
    outside = tmp_path / "secret.bin"
    outside.write_bytes(b"secret")
    b = tmp_path / "b"
    make_bundle(b)
    os.symlink(outside, b / "weights" / "link.bin")

    def mutate(m):
        m["files"]["weights/link.bin"] = {"size": 6, "sha256": sha256(outside)}
    make_bundle(b, mutate=mutate)
    with pytest.raises(_core.BundleError, match="leaves the bundle"):
        _core.load_manifest(str(b))


def test_symlink_inside_bundle_is_fine(tmp_path):
    b = tmp_path / "b"
    make_bundle(b)
    os.symlink("llm.safetensors", b / "weights" / "alias.safetensors")
    make_bundle(b, mutate=lambda m: m["files"].update(
        {"weights/alias.safetensors": dict(m["files"]["weights/llm.safetensors"])}))
    _core.load_manifest(str(b))


def test_sha_mismatch_names_the_file(tmp_path):
    b = make_bundle(tmp_path / "b")
    p = os.path.join(b, "weights/llm.safetensors")
    raw = bytearray(open(p, "rb").read())
    raw[-1] ^= 0xFF
    open(p, "wb").write(bytes(raw))
    with pytest.raises(_core.BundleError, match=r"weights/llm\.safetensors: SHA-256 mismatch"):
        _core.load_manifest(b)
    _core.load_manifest(b, verify=False)  # structure alone is still fine


def test_truncation_names_the_file(tmp_path):
    b = make_bundle(tmp_path / "b")
    p = os.path.join(b, "weights/llm.safetensors")
    size = os.path.getsize(p)
    with open(p, "r+b") as f:
        f.truncate(size - 10)
    with pytest.raises(_core.BundleError, match=rf"weights/llm\.safetensors is truncated \({size - 10} of {size} bytes\)"):
        _core.load_manifest(b)


def test_missing_and_grown_files(tmp_path):
    b = make_bundle(tmp_path / "b")
    with open(os.path.join(b, "tokenizer/tokenizer.json"), "a") as f:
        f.write(" ")
    with pytest.raises(_core.BundleError, match="tokenizer/tokenizer.json has the wrong size"):
        _core.load_manifest(b)
    os.remove(os.path.join(b, "tokenizer/tokenizer.json"))
    with pytest.raises(_core.BundleError, match="tokenizer/tokenizer.json is missing"):
        _core.load_manifest(b)


def test_not_a_bundle(tmp_path):
    with pytest.raises(_core.BundleError, match="not found"):
        _core.load_manifest(str(tmp_path / "nothing"))
    with pytest.raises(_core.BundleError, match="no manifest.json"):
        _core.load_manifest(str(tmp_path))
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(_core.BundleError, match="not valid JSON"):
        _core.load_manifest(str(tmp_path))
