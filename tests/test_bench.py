"""minmo-bench end to end on small bundles: the JSON report has every documented key and the
numbers are measured (positive), not that they are fast. Benchmarks are not tests of speed."""
from __future__ import annotations

import json
import math

from _bundles import ctc_bundle, minmo_bundle_with_onnx

from minmo_rt.bench.cli import main

TOP_KEYS = {"bundle", "manifest_summary", "machine", "device", "threads", "audio", "stages", "rtf",
            "decode_tokens_per_s", "bandwidth", "comparison", "timestamp"}
MACHINE_KEYS = {"platform", "cpu_model", "cores", "python", "numpy", "onnxruntime", "torch"}
STAGE_KEYS = {"count", "total_ms", "p50_ms", "p99_ms", "mean_ms"}


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def _run(tmp_path, bundle, *extra):
    out = tmp_path / "bench.json"
    assert main([bundle, "--runs", "1", "--warmup", "0", "--json", str(out), *extra]) == 0
    return json.loads(out.read_text())


def _check_common(report, stages):
    assert TOP_KEYS <= set(report)
    assert MACHINE_KEYS <= set(report["machine"])
    assert report["device"] == "cpu" and report["threads"] >= 1
    assert _positive(report["audio"]["seconds"]) and report["audio"]["path"].endswith(".wav")
    assert "modules" in report["manifest_summary"]
    for name in stages:
        s = report["stages"][name]
        assert STAGE_KEYS <= set(s), name
        assert s["count"] >= 1, name
        assert _positive(s["p50_ms"]) and s["p99_ms"] >= s["p50_ms"] and _positive(s["mean_ms"]), name
    assert _positive(report["rtf"])
    assert _positive(report["bandwidth"]["host_copy_gb_s"])


def test_bench_minmo_bundle_json(tmp_path, capsys):
    bundle = minmo_bundle_with_onnx()
    report = _run(tmp_path, bundle, "--max-new-tokens", "6")
    printed = capsys.readouterr().out
    assert "p50 ms" in printed and "ORT/native" in printed
    _check_common(report, ["frontend", "encoder", "projector", "llm_prefill", "duplex", "first_token", "decode"])
    assert _positive(report["decode_tokens_per_s"])
    bw = report["bandwidth"]
    assert bw["embedding_bytes"] > 0 and 0 < bw["bytes_per_token"] <= bw["llm_weight_bytes"]
    assert _positive(bw["achieved_gb_s"]) and _positive(bw["percent_of_host_copy"])
    cmp = report["comparison"]
    assert {"frontend", "encoder", "projector", "llm_prefill", "llm_decode", "duplex"} <= set(cmp)
    with_onnx = {n for n, m in report["manifest_summary"]["modules"].items() if m["onnx"]}
    assert with_onnx, "the bundle should carry ONNX files"
    for name, row in cmp.items():
        assert {"native_ms", "onnxruntime_ms", "torch_ms", "ratio"} <= set(row)
        assert _positive(row["native_ms"]), name
        assert _positive(row["torch_ms"]), (name, row["notes"])
        module = "llm" if name.startswith("llm_") else name
        if module in with_onnx:
            assert _positive(row["onnxruntime_ms"]) and _positive(row["ratio"]), (name, row["notes"])
        else:
            assert row["onnxruntime_ms"] is None and row["notes"], name


def test_bench_ctc_bundle_json(tmp_path):
    report = _run(tmp_path, ctc_bundle(), "--no-onnx")
    _check_common(report, ["frontend", "ctc"])
    assert report["decode_tokens_per_s"] is None and report["bandwidth"]["achieved_gb_s"] is None
    cmp = report["comparison"]
    assert set(cmp) == {"frontend", "encoder"}
    for name, row in cmp.items():
        assert _positive(row["native_ms"]) and _positive(row["torch_ms"]), (name, row["notes"])
        assert row["onnxruntime_ms"] is None and any("--no-onnx" in n for n in row["notes"])


def test_bench_rejects_bad_arguments(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["some-bundle", "--runs", "0"])
    assert main(["/nonexistent/bundle", "--runs", "1", "--warmup", "0", "--no-onnx"]) == 2
    assert "error" in capsys.readouterr().err


def test_speech_bench_per_chunk_series():
    """The speech section's per-chunk series on a CosyVoice2-layout bundle: voice LM, token2wav and
    their sum per chunk, the flatness fits, and the growth the voice LM's attention implies."""
    import numpy as np
    import pytest

    from _bundles import cosyvoice2_runtime
    from minmo_rt.bench.speech import tts_chunks, voice_lm_growth_model
    from minmo_rt.export.reference import VoiceLMConfig

    rt, _ = cosyvoice2_runtime()
    per = tts_chunks(rt, chunks=22, speaker=np.ones(192, np.float32))
    assert per["chunks"] == 22 and per["speech_tokens"] >= 22 * 15
    assert len(per["token2wav_per_chunk_ms"]) >= 21  # the last chunk waits for its lookahead
    assert per["chunk_total_per_chunk_ms"] == [a + b for a, b in zip(per["voice_lm_per_chunk_ms"], per["token2wav_per_chunk_ms"])]
    for key in ("voice_lm_flatness", "token2wav_flatness", "chunk_total_flatness"):
        assert _positive(per[key]["first10_mean_ms"]) and _positive(per[key]["last10_over_first10"]), key
    # attention over a growing cache: more growth at small widths, little at CosyVoice2-0.5B's
    small = per["voice_lm_growth_model"]["this_bundle"]
    full = per["voice_lm_growth_model"]["cosyvoice2_0p5b"]
    assert small["macs_last10_over_first10"] > full["macs_last10_over_first10"] > 1.0
    assert 1.0 < full["bytes_last10_over_first10"] < 1.05
    no_attention = VoiceLMConfig(num_attention_heads=1, num_key_value_heads=1, head_dim=1, hidden_size=4096).to_dict()
    assert voice_lm_growth_model(no_attention)["macs_last10_over_first10"] == pytest.approx(1.0, abs=1e-3)
