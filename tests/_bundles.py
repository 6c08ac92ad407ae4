"""Small bundles built once per test run from the synthetic checkpoints (real formats, random weights)."""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile

_ROOT = tempfile.mkdtemp(prefix="minmo-test-bundles-")
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)


@functools.lru_cache(maxsize=None)
def minmo_bundle(streaming: str = "chunked") -> str:
    from minmo_rt.export import cli
    from minmo_rt.export.checkpoints.synthetic import write_minmo_checkpoint

    ckpt = os.path.join(_ROOT, "minmo-ckpt")
    if not os.path.isdir(ckpt):
        write_minmo_checkpoint(ckpt, seed=0)
    out = os.path.join(_ROOT, f"minmo-{streaming}")
    if not os.path.exists(os.path.join(out, "manifest.json")):
        assert cli.main(["build", ckpt, "-o", out, "--streaming", streaming, "--no-onnx"]) == 0
    return out


@functools.lru_cache(maxsize=None)
def ctc_bundle() -> str:
    from minmo_rt.export import cli
    from minmo_rt.export.checkpoints.synthetic import write_funasr_sensevoice

    ckpt = os.path.join(_ROOT, "sensevoice-ckpt")
    write_funasr_sensevoice(ckpt, seed=0)
    out = os.path.join(_ROOT, "sensevoice")
    if not os.path.exists(os.path.join(out, "manifest.json")):
        assert cli.main(["build", ckpt, "-o", out, "--no-onnx"]) == 0
    return out


@functools.lru_cache(maxsize=None)
def minmo_bundle_with_onnx(streaming: str = "chunked") -> str:
    """Like :func:`minmo_bundle`, with the ONNX files the export writes by default (for the bench's
    ONNX Runtime column)."""
    from minmo_rt.export import cli
    from minmo_rt.export.checkpoints.synthetic import write_minmo_checkpoint

    ckpt = os.path.join(_ROOT, "minmo-ckpt")
    if not os.path.isdir(ckpt):
        write_minmo_checkpoint(ckpt, seed=0)
    out = os.path.join(_ROOT, f"minmo-{streaming}-onnx")
    if not os.path.exists(os.path.join(out, "manifest.json")):
        assert cli.main(["build", ckpt, "-o", out, "--streaming", streaming]) == 0
    return out


@functools.lru_cache(maxsize=None)
def cosyvoice2_bundle() -> tuple:
    """(bundle dir, checkpoint dir) of a small CosyVoice2-layout checkpoint (cascade text-to-speech)."""
    from minmo_rt.export import cli
    from minmo_rt.export.checkpoints.synthetic import write_cosyvoice2_checkpoint

    ckpt = os.path.join(_ROOT, "cosyvoice2-ckpt")
    if not os.path.isdir(ckpt):
        write_cosyvoice2_checkpoint(ckpt, seed=0, prompt_tokens=6)
    out = os.path.join(_ROOT, "cosyvoice2")
    if not os.path.exists(os.path.join(out, "manifest.json")):
        assert cli.main(["build", ckpt, "-o", out, "--no-onnx"]) == 0
    return out, ckpt


def cosyvoice2_runtime() -> tuple:
    """(Runtime, checkpoint dir) over :func:`cosyvoice2_bundle`; skips the calling test where this
    runtime build has no token2wav (flow / hift) modules."""
    import pytest

    import minmo_rt

    bundle, ckpt = cosyvoice2_bundle()
    try:
        return minmo_rt.Runtime(bundle), ckpt
    except minmo_rt.BundleError as e:
        if "cosyvoice2_flow" in str(e):
            pytest.skip("this runtime build has no token2wav (flow / hift) modules")
        raise
