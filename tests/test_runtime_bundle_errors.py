"""A damaged or foreign bundle is refused by Runtime() with a clear error, never a crash."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

import minmo_rt
from _bundles import minmo_bundle


@pytest.fixture()
def bundle_copy(tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(minmo_bundle("chunked"), dst)
    return dst


def _manifest(b):
    return json.loads((b / "manifest.json").read_text())


def _write_manifest(b, m):
    (b / "manifest.json").write_text(json.dumps(m))


def _weights(b, name="llm"):
    return b / _manifest(b)["modules"][name]["weights"]


def test_intact_bundle_loads(bundle_copy):
    rt = minmo_rt.Runtime(str(bundle_copy))
    assert set(rt.modules) >= {"frontend", "encoder", "projector", "llm", "duplex"}


def test_missing_file(bundle_copy):
    os.remove(_weights(bundle_copy))
    with pytest.raises(minmo_rt.BundleError, match="llm.safetensors"):
        minmo_rt.Runtime(str(bundle_copy))


def test_truncated_file(bundle_copy):
    p = _weights(bundle_copy)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(minmo_rt.BundleError, match="truncated"):
        minmo_rt.Runtime(str(bundle_copy))


def test_tampered_file(bundle_copy):
    p = _weights(bundle_copy)
    data = bytearray(p.read_bytes())
    data[-5] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(minmo_rt.BundleError, match="SHA-256"):
        minmo_rt.Runtime(str(bundle_copy))


def test_unknown_major_version(bundle_copy):
    m = _manifest(bundle_copy)
    m["format_version"] = "7.0"
    _write_manifest(bundle_copy, m)
    with pytest.raises(minmo_rt.UnsupportedVersionError, match="7"):
        minmo_rt.Runtime(str(bundle_copy))


@pytest.mark.parametrize("path", ["../outside.safetensors", "/etc/passwd"])
def test_path_leaving_bundle(bundle_copy, path):
    m = _manifest(bundle_copy)
    m["modules"]["llm"]["weights"] = path
    _write_manifest(bundle_copy, m)
    with pytest.raises(minmo_rt.BundleError, match="bundle"):
        minmo_rt.Runtime(str(bundle_copy))


def test_foreign_json(bundle_copy):
    (bundle_copy / "manifest.json").write_text('{"hello": "world"}')
    with pytest.raises(minmo_rt.BundleError):
        minmo_rt.Runtime(str(bundle_copy))
    (bundle_copy / "manifest.json").write_text("not json at all {")
    with pytest.raises(minmo_rt.BundleError):
        minmo_rt.Runtime(str(bundle_copy))


def test_not_a_directory(tmp_path):
    with pytest.raises(minmo_rt.BundleError):
        minmo_rt.Runtime(str(tmp_path / "nope"))


def test_run_module_bad_inputs():
    rt = minmo_rt.Runtime(minmo_bundle("chunked"))
    with pytest.raises(minmo_rt.MinmoError, match="no module"):
        rt.run_module("vocoder", {})
    with pytest.raises(minmo_rt.InvalidInputError, match="embeds"):
        rt.run_module("llm", {"wrong": np.zeros((2, 3), np.float32)})
    hidden = rt.manifest["modules"]["llm"]["config"]["hidden_size"]
    with pytest.raises(minmo_rt.InvalidInputError, match="shape"):
        rt.run_module("llm", {"embeds": np.zeros((2, hidden + 1), np.float32)})
    with pytest.raises(minmo_rt.InvalidInputError, match="float32"):
        rt.run_module("llm", {"embeds": np.zeros((2, hidden), np.float64)})
