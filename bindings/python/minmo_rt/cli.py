"""``minmo``: stream audio through a bundle (``minmo transcribe``) or run the demo (``minmo demo``)."""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

ASSETS = os.path.join(os.path.dirname(__file__), "assets")
DEMO_WAV = os.path.join(ASSETS, "demo_turn_on_lights.wav")
DEMO_TEXT = "turn on the kitchen lights please four seven one nine"  # what DEMO_WAV says
TINY_CHECKPOINT = os.path.join(ASSETS, "minmo_tiny")


def stream_file(bundle: str, wav: str, task: str, chunk_ms: int, max_new_tokens: int, show_duplex: bool,
                device: str = "cpu") -> str:
    """Push ``wav`` in ``chunk_ms`` pieces as a microphone would, printing events as they happen."""
    from . import Runtime, read_wav

    rt = Runtime(bundle, device=device)
    if device != "cpu":
        on = [n for n, d in rt.module_devices.items() if d == device]
        print(f"  on {device}: {', '.join(on) or 'nothing'}; the rest on the CPU")
        for name, why in rt.cpu_fallbacks.items():
            print(f"  {name} stays on the CPU: {why}")
    audio, rate = read_wav(wav)
    step = max(1, int(rate * chunk_ms / 1000))
    with rt.session(task=task, max_new_tokens=max_new_tokens) as s:
        for start in range(0, len(audio), step):
            s.push(audio[start:start + step], rate)
            for ev in s.events(generate=False):
                if ev.kind == "duplex" and show_duplex:
                    print(f"  [{ev.time_ms:7.0f} ms] turn-taking p={ev.p_turn:.3f}  barge-in p={ev.p_barge:.3f}")
        t0 = time.perf_counter()
        s.end_of_turn()
        print("  [end of speech] response: ", end="", flush=True)
        first = None
        for ev in s.events():
            if ev.kind in ("text", "tag"):
                if first is None:
                    first = (time.perf_counter() - t0) * 1000
                print(ev.text if ev.kind == "text" else f"{ev.text} ", end="", flush=True)
        print()
        if first is not None:
            print(f"  first text token {first:.1f} ms after end of speech")
        return s.text


def speak_file(bundle: str, wav: str, out_wav: str, max_new_tokens: int, seed: int = 0, device: str = "cpu") -> dict:
    """Speech-to-speech: push ``wav``, speak the response; the audio chunks are written to ``out_wav``
    (bundles with flow + hift), else the speech tokens are reported."""
    from . import Runtime, read_wav
    from .session import write_events_wav

    rt = Runtime(bundle, device=device)
    audio, rate = read_wav(wav)
    has_audio = "flow" in rt.modules and "hift" in rt.modules
    speaker = np.random.default_rng(seed).standard_normal(192).astype(np.float32)  # no speaker encoder: a random voice
    with rt.session(max_new_tokens=max_new_tokens, speak=True, speaker=speaker if has_audio else None,
                    speech_seed=seed, speech_output="audio" if has_audio else "tokens") as s:
        s.push(audio, rate)
        t0 = time.perf_counter()
        s.end_of_turn()
        events, first_text, first_audio, n_text = [], None, None, 0
        for ev in s.events():
            events.append(ev)
            now = (time.perf_counter() - t0) * 1000
            if ev.kind == "text":
                n_text += 1
                first_text = first_text if first_text is not None else now
            if ev.kind == "audio" and first_audio is None:
                first_audio = now
                print(f"  first audio chunk ({ev.samples.size} samples at {ev.sample_rate} Hz) after {n_text} text tokens")
        n_speech = len(s.speech_tokens)
    info = {"text_tokens": n_text, "speech_tokens": n_speech, "first_text_ms": first_text, "first_audio_ms": first_audio}
    if has_audio:
        n = write_events_wav(out_wav, events)
        info["wav"], info["seconds"] = out_wav, n / 24000.0
        print(f"  wrote {out_wav}: {n / 24000.0:.2f} s of speech ({n_speech} speech tokens for {n_text} text tokens; "
              f"NOISE: random weights)")
    else:
        print(f"  {n_speech} speech tokens for {n_text} text tokens (bundle has no flow/hift: no audio written)")
    return info


def demo(args) -> int:
    from .export import cli as export_cli
    from .export.checkpoints.synthetic import write_minmo_checkpoint
    from .bench import cli as bench_cli

    work = os.path.abspath(args.workdir)
    bundle = os.path.join(work, "bundle")
    print("=" * 78)
    print("minmo-rt demo: minmo-tiny, a small MinMo (SenseVoice-Large style encoder, projector, Qwen2,")
    print("duplex head) trained from scratch on synthetic espeak-ng speech: digit strings and short")
    print("commands (training/README.md). It knows that domain only.")
    print("=" * 78)
    print(f"1/4 export: bundle of {args.checkpoint} -> {bundle}")
    rc = export_cli.main(["build", args.checkpoint, "-o", bundle, "--force"])
    if rc:
        return rc
    print(f"\n2/4 stream: {os.path.basename(args.audio)} pushed in {args.chunk_ms} ms chunks")
    stream_file(bundle, args.audio, "asr", args.chunk_ms, args.max_new_tokens, show_duplex=True, device=args.device)
    if os.path.abspath(args.audio) == os.path.abspath(DEMO_WAV):
        print(f"  (the WAV says: {DEMO_TEXT})")
    print("\n3/4 speak: speech out (output projector -> voice LM 5:15 -> token2wav). minmo-tiny has no")
    print("  speech modules yet, so this step uses a second bundle with RANDOM weights: the text and the")
    print("  spoken response are noise; the streaming and timings are real.")
    speech_bundle = os.path.join(work, "speech_bundle")
    write_minmo_checkpoint(os.path.join(work, "speech_checkpoint"), seed=0)
    rc = export_cli.main(["build", os.path.join(work, "speech_checkpoint"), "-o", speech_bundle, "--force"])
    if rc:
        return rc
    speak_file(speech_bundle, args.audio, os.path.join(work, "response.wav"), args.max_new_tokens, device=args.device)
    print("\n4/4 bench: per-stage latency")
    return bench_cli.main([bundle, "--audio", args.audio, "--json", os.path.join(work, "bench.json"), "--device",
                           args.device])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="minmo", description="Stream speech through a minmo-rt bundle.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="export the shipped minmo-tiny model, stream the shipped WAV through it, print latencies")
    d.add_argument("--checkpoint", default=TINY_CHECKPOINT, help="MinMo checkpoint to export (default: minmo-tiny)")
    d.add_argument("--workdir", default="out/demo", help="where the bundle and bench JSON go")
    d.add_argument("--audio", default=DEMO_WAV, help="WAV file to stream (default: the shipped one)")
    d.add_argument("--chunk-ms", type=int, default=160, help="microphone chunk size")
    d.add_argument("--max-new-tokens", type=int, default=48)
    d.add_argument("--device", default="cpu", choices=("cpu", "cuda", "cuda-sim"),
                   help="cuda: the LLM, voice LM and encoder on the GPU (default cpu)")
    t = sub.add_parser("transcribe", help="stream a WAV file through a bundle and print the response")
    t.add_argument("bundle")
    t.add_argument("audio")
    t.add_argument("--task", default="asr", help="asr | emotion | lid | event | translate:<lang> | ask:<question>")
    t.add_argument("--chunk-ms", type=int, default=160)
    t.add_argument("--max-new-tokens", type=int, default=128)
    t.add_argument("--duplex", action="store_true", help="print turn-taking probabilities as they arrive")
    t.add_argument("--device", default="cpu", choices=("cpu", "cuda", "cuda-sim"),
                   help="cuda: the LLM on the GPU (default cpu)")
    args = parser.parse_args(argv)
    from . import MinmoError

    try:
        if args.cmd == "demo":
            return demo(args)
        stream_file(args.bundle, args.audio, args.task, args.chunk_ms, args.max_new_tokens, args.duplex, args.device)
        return 0
    except (MinmoError, ValueError, FileNotFoundError) as e:
        print(f"minmo: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
