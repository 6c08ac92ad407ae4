"""``minmo-bench BUNDLE``: per-stage streaming latency, real-time factor, decode tokens/s and
memory bandwidth achieved, plus a per-module side-by-side with ONNX Runtime and PyTorch eager.
Prints tables and (with ``--json``) writes one JSON report. See bench/README.md."""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from typing import Callable, Optional

import numpy as np

from .bundleinfo import decode_bytes_per_token, manifest_summary
from .compare import compare, native_inputs
from .machine import host_copy_rate, last_level_cache_bytes, machine_info
from .stats import fmt, table
from .streaming import run_streaming


def default_audio() -> str:
    from .. import __file__ as pkg_file

    return os.path.join(os.path.dirname(pkg_file), "assets", "demo_turn_on_lights.wav")


def _load_audio(path: str, model_rate: int) -> tuple[np.ndarray, int, np.ndarray]:
    """(samples at the file's rate, that rate, the same audio at the model's rate)."""
    from ..audio import Resampler, read_wav

    audio, rate = read_wav(path)
    at_model = Resampler(rate, model_rate)(audio, last=True) if rate != model_rate else audio
    return audio, rate, np.ascontiguousarray(at_model, np.float32)


def run_bench(bundle: str, *, audio_path: Optional[str] = None, runs: int = 5, warmup: int = 1,
              chunk_ms: float = 160.0, threads: Optional[int] = None, onnx: bool = True, torch: bool = True,
              max_new_tokens: int = 16, speech_chunks: int = 50, device: str = "cpu",
              log: Callable[[str], None] = print) -> dict:
    """Run the whole bench on ``bundle`` and return the JSON report (also printed via ``log``).
    ``device``: the Runtime's device ("cuda" puts the LLM on the GPU; the ONNX Runtime and PyTorch
    columns stay on the CPU)."""
    from .. import Runtime

    threads = int(threads or os.cpu_count() or 1)
    audio_path = os.path.abspath(audio_path or default_audio())
    t_start = time.perf_counter()
    rt = Runtime(bundle, device=device, num_threads=threads)
    from .. import _core

    device_info = _core.device_info(device)
    manifest = rt.manifest
    audio, rate, wave = _load_audio(audio_path, rt.sample_rate)
    seconds = audio.size / rate
    ctc = rt.mode == "asr-ctc"
    log(f"minmo-bench: {rt.bundle_dir}")
    log(f"  mode {rt.mode}, modules {', '.join(rt.modules)}; device {device} ({device_info}), {threads} threads")
    if device != "cpu":
        log("  on " + device + ": " + ", ".join(n for n, d in rt.module_devices.items() if d == device)
            + "; everything else on the CPU")
    log(f"  audio {os.path.basename(audio_path)}: {seconds:.2f} s, pushed in {chunk_ms:g} ms chunks; "
        f"{runs} runs after {warmup} warm-up")

    # 1. streaming latency
    st = run_streaming(rt, audio, rate, runs=runs, warmup=warmup, chunk_ms=chunk_ms, max_new_tokens=max_new_tokens)
    stages = st["stages"]
    rows = [[name, str(s["count"]), fmt(s["p50_ms"]), fmt(s["p99_ms"]), fmt(s["mean_ms"])]
            for name, s in stages.items()]
    log("")
    log("Streaming latency (per call, pooled over runs)")
    log(table(["stage", "calls", "p50 ms", "p99 ms", "mean ms"], rows))
    ft = stages.get("first_token") or {}
    if ft.get("p50_ms") is not None:
        log(f"end of speech -> first text token: p50 {fmt(ft['p50_ms'])} ms, p99 {fmt(ft['p99_ms'])} ms")
    elif st["first_event_wall"]["p50_ms"] is not None:
        fw = st["first_event_wall"]
        log(f"end of speech -> first text/tag event (wall time seen from Python): p50 {fmt(fw['p50_ms'])} ms, "
            f"p99 {fmt(fw['p99_ms'])} ms")
    if st["rtf"] is not None:
        log(f"real-time factor: {st['rtf']:.3f} (audio-path compute {fmt(st['audio_path_ms_per_run'])} ms "
            f"per {fmt(st['audio_ms_per_run'], 0)} ms of audio)")

    # decode throughput and bandwidth
    decode = stages.get("decode") or {}
    tps = st["decode_tokens_per_s"]
    bw = {"bytes_per_token": None, "decode_p50_ms": decode.get("p50_ms"), "achieved_gb_s": None}
    info = None if ctc else decode_bytes_per_token(rt.bundle_dir, manifest)
    if info:
        bw.update(info)
    copy = host_copy_rate()
    bw.update({"host_copy_gb_s": copy["copy_gb_s"], "host_read_gb_s": copy["read_gb_s"],
               "host_copy_array_bytes": copy["array_bytes"], "percent_of_host_copy": None})
    if info and decode.get("p50_ms") and device == "cpu":
        bw["achieved_gb_s"] = info["bytes_per_token"] / (decode["p50_ms"] / 1000.0) / 1e9
        bw["percent_of_host_copy"] = 100.0 * bw["achieved_gb_s"] / copy["copy_gb_s"]
        llc = last_level_cache_bytes()
        bw["last_level_cache_bytes"] = llc
        # Weights that fit in the CPU cache are read from it, not from DRAM: not a bandwidth figure.
        bw["cache_resident"] = bool(llc and info["bytes_per_token"] <= llc)
    if tps is not None:
        log(f"decode: {tps:.1f} tokens/s ({st['generated_tokens']} tokens over {runs} runs)")
    if device != "cpu" and decode.get("p50_ms"):
        log(f"decode on {device}: p50 {fmt(decode['p50_ms'])} ms per token, host round trip included (the GPU's "
            f"bandwidth at full MinMo size: bench/gpu/decode_bench.py)")
    elif bw["achieved_gb_s"] is not None:
        log(f"bandwidth achieved by decode: {bw['achieved_gb_s']:.2f} GB/s "
            f"({bw['bytes_per_token'] / 1e6:.1f} MB of LLM weights per token / p50 {fmt(decode['p50_ms'])} ms) = "
            f"{bw['percent_of_host_copy']:.0f}% of host memory copy {copy['copy_gb_s']:.2f} GB/s "
            f"(numpy copy of {copy['array_bytes'] >> 20} MB, read+write, best of 3)")
        if bw["cache_resident"]:
            log(f"  note: the weights fit in the CPU's {bw['last_level_cache_bytes'] >> 20} MB cache, so decode reads "
                f"them from cache: this is not a memory-bandwidth figure")
    elif not ctc:
        log("bandwidth achieved: not measured (no decode steps or no llm weights)")
    else:
        log(f"host memory copy: {copy['copy_gb_s']:.2f} GB/s (no LLM in a CTC bundle: no decode bandwidth)")

    # 2. side-by-side
    log("")
    log(f"Per module, one utterance ({seconds:.2f} s): p50 over {runs} calls after {warmup} warm-up")
    inputs = native_inputs(rt, wave)
    cmp_rows = compare(rt, inputs, runs=runs, warmup=warmup, threads=threads,
                       native_decode_ms=None if ctc else decode.get("p50_ms"), use_onnx=onnx, use_torch=torch)
    log(table(["module", "native p50 ms", "onnxruntime p50 ms", "torch p50 ms", "ORT/native"],
              [[r.name, fmt(r.native_ms), fmt(r.onnxruntime_ms), fmt(r.torch_ms),
                "-" if r.ratio is None else f"{r.ratio:.2f}x"] for r in cmp_rows]))
    for line in _footnotes(cmp_rows):
        log(f"  note: {line}")
    speech = None
    if "voice_lm" in rt.modules and speech_chunks > 0:
        speech = _speech_section(rt, audio, rate, log, chunks=speech_chunks)
    log(f"(bench wall time {time.perf_counter() - t_start:.1f} s)")

    return {
        "bundle": rt.bundle_dir,
        "manifest_summary": manifest_summary(rt.bundle_dir, manifest),
        "machine": machine_info(),
        "device": device,
        "device_info": device_info,
        "module_devices": rt.module_devices,
        "threads": threads,
        "run_config": {"runs": runs, "warmup": warmup, "chunk_ms": chunk_ms, "max_new_tokens": max_new_tokens,
                       "onnx": onnx, "torch": torch},
        "audio": {"path": audio_path, "seconds": seconds, "sample_rate": rate},
        "stages": stages,
        "first_token_ms": ft.get("p50_ms"),
        "first_event_wall_ms": st["first_event_wall"],
        "rtf": st["rtf"],
        "decode_tokens_per_s": tps,
        "generated_tokens": st["generated_tokens"],
        "bandwidth": bw,
        "comparison": {r.name: r.to_json() for r in cmp_rows},
        "speech": speech,
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _speech_section(rt, audio, rate, log, chunks: int = 50) -> dict:
    from .speech import speak_turn, tts_chunks

    speaker = np.random.default_rng(0).standard_normal(192).astype(np.float32)
    log("")
    log(f"Speech generation (voice LM 5:15, token2wav chunks of 15 tokens), chunks 1..{chunks}")
    per = tts_chunks(rt, chunks=chunks, speaker=speaker)
    out = {"tts": per}
    rows = [["voice LM per 15 tokens", str(per["voice_lm_per_chunk"]["count"]), fmt(per["voice_lm_per_chunk"]["p50_ms"]),
             fmt(per["voice_lm_per_chunk"]["p99_ms"])]]
    if per["token2wav_per_chunk"]["count"]:
        rows.append(["token2wav per chunk", str(per["token2wav_per_chunk"]["count"]), fmt(per["token2wav_per_chunk"]["p50_ms"]),
                     fmt(per["token2wav_per_chunk"]["p99_ms"])])
    if rt.mode == "minmo":
        turn = speak_turn(rt, audio, rate, speaker=speaker)
        out["speak_turn"] = turn
        rows.insert(0, ["semantic vector (per text token)", str(turn["semantic_vectors"]["count"]),
                        fmt(turn["semantic_vectors"]["p50_ms"]), fmt(turn["semantic_vectors"]["p99_ms"])])
        log(f"first speech token after first text token: {fmt(turn['first_speech_token_after_first_text_ms'])} ms; "
            f"first audio packet: {fmt(turn['first_audio_after_first_text_ms'])} ms")
    log(table(["stage", "calls", "p50 ms", "p99 ms"], rows))
    for key in ("voice_lm_flatness", "token2wav_flatness", "chunk_total_flatness"):
        f = per.get(key)
        if f:
            log(f"{key.split('_flatness')[0]} cost vs chunk index: slope {f['slope_ms_per_chunk']:+.3f} ms/chunk, "
                f"median of the last 10 chunks / chunks 2-11 = {f['last10_over_first10']:.2f}")
    g = per["voice_lm_growth_model"]
    log(f"voice LM growth its full-context attention implies (last 10 / chunks 2-11, nothing recomputed): this bundle "
        f"{g['this_bundle']['macs_last10_over_first10']:.2f} in MACs; CosyVoice2-0.5B size "
        f"{g['cosyvoice2_0p5b']['macs_last10_over_first10']:.2f} in MACs, {g['cosyvoice2_0p5b']['bytes_last10_over_first10']:.3f} in bytes read")
    if per["rtf"] is not None:
        log(f"speech RTF (compute wall / speech duration): {per['rtf']:.3f}")
    return out


def _footnotes(rows) -> list[str]:
    """Row notes as lines; a note every row shares is said once."""
    if not rows:
        return []
    common = set(rows[0].notes).intersection(*(set(r.notes) for r in rows[1:]))
    out = sorted(common)
    for r in rows:
        out += [f"{r.name}: {n}" for n in r.notes if n not in common]
    return out


def _wer_main(args) -> int:
    from .. import MinmoError
    from .wer import run_wer

    if args.wer_n < 1:
        print("minmo-bench: error: --wer-n must be >= 1", file=sys.stderr)
        return 2
    engines = ("native",) if args.no_onnx else ("native", "onnx")
    try:
        modes = [m.strip() for m in (args.quant_modes or "").split(",") if m.strip()]
        bad = [m for m in modes if m not in ("int8", "int4", "fp8")]
        if bad or (modes and args.bundle):
            raise ValueError(f"--quant-modes takes int8,int4,fp8 and needs a checkpoint, not a BUNDLE (got {modes})")
        report = run_wer(bundle=args.bundle, checkpoint=args.checkpoint, workdir=args.workdir, seed=args.wer_seed,
                         n=args.wer_n, engines=engines, chunk_ms=args.chunk_ms, threads=args.threads,
                         quant_modes=modes, device=args.device)
    except (MinmoError, ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"minmo-bench: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="minmo-bench", description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", nargs="?", help="bundle directory made by minmo-export build (optional with --wer)")
    p.add_argument("--audio", default=None, help="WAV to stream (default: the shipped demo WAV)")
    p.add_argument("--json", default=None, metavar="OUT", help="write the report as JSON here")
    p.add_argument("--runs", type=int, default=5, help="timed runs / calls (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up runs / calls (default 1)")
    p.add_argument("--chunk-ms", type=float, default=160.0, help="microphone chunk size (default 160)")
    p.add_argument("--threads", type=int, default=None, help="compute threads for every engine (default: all cores)")
    p.add_argument("--max-new-tokens", type=int, default=16, help="tokens generated per run (default 16)")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime column")
    p.add_argument("--speech-chunks", type=int, default=50,
                   help="speech chunks timed in the speech section (bundles with a voice_lm; 0: skip it)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch eager column")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "cuda-sim"),
                   help="runtime device: cuda runs the LLM on the GPU (default cpu); cuda-sim is the CUDA "
                        "backend on the kernels' CPU twins (slow; a functional check, not a timing)")
    w = p.add_argument_group("accuracy gate (--wer)", "WER and turn-taking F1 on held-out synthetic speech; "
                             "without BUNDLE: full and chunked bundles of --checkpoint (default: minmo-tiny)")
    w.add_argument("--wer", action="store_true", help="run the accuracy gate instead of the latency bench")
    w.add_argument("--checkpoint", default=None, help="MinMo checkpoint to build bundles from (default: shipped minmo-tiny)")
    w.add_argument("--wer-seed", type=int, default=1000, help="seed of the held-out utterances (training uses 1 and 2)")
    w.add_argument("--wer-n", type=int, default=100, help="held-out utterances (default 100)")
    w.add_argument("--workdir", default="out/wer", help="where the bundles of --checkpoint are built")
    w.add_argument("--quant-modes", default=None, metavar="M[,M]",
                   help="also score the checkpoint with its LLM quantized in each mode (int8,int4,fp8; native engine)")
    args = p.parse_args(argv)
    if args.wer:
        return _wer_main(args)
    if not args.bundle:
        p.error("BUNDLE is required (except with --wer)")
    if args.runs < 1 or args.warmup < 0 or args.chunk_ms <= 0 or (args.threads is not None and args.threads < 1):
        p.error("need --runs >= 1, --warmup >= 0, --chunk-ms > 0, --threads >= 1")
    from .. import MinmoError

    try:
        report = run_bench(args.bundle, audio_path=args.audio, runs=args.runs, warmup=args.warmup,
                           chunk_ms=args.chunk_ms, threads=args.threads, onnx=not args.no_onnx,
                           torch=not args.no_torch, max_new_tokens=args.max_new_tokens,
                           speech_chunks=args.speech_chunks, device=args.device)
    except (MinmoError, ValueError, FileNotFoundError) as e:
        print(f"minmo-bench: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        d = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(d, exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
