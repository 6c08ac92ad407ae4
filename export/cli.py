"""``minmo-export``: build, inspect and verify minmo-rt bundles.

    minmo-export build CHECKPOINT... -o BUNDLE [--streaming full|chunked] [--quant int8|int4|fp8] [--no-onnx] [--force]
    minmo-export inspect BUNDLE [--json]
    minmo-export verify BUNDLE [--json OUT] [--seed N] [--quant-modes int8,int4,fp8]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional

EPILOG_BUILD = """\
checkpoint formats (detected per SOURCE folder):
  hf-qwen2            Hugging Face Qwen2/Qwen2.5: config.json, *.safetensors, tokenizer.json -> llm
  funasr-sensevoice   FunASR SenseVoice-Small: model.pt, config.yaml, am.mvn, *.bpe.model -> frontend + encoder
  minmo               MinMo layout: minmo.json + <module>.safetensors + tokenizer.json (see
                      minmo_rt/export/checkpoints/README.md)
Several SOURCEs are merged (e.g. a SenseVoice folder + a Qwen2.5 folder); a module given twice is refused.

examples:
  minmo-export build ./SenseVoiceSmall -o bundles/sensevoice
  minmo-export build ./minmo-ckpt -o bundles/minmo --streaming chunked --chunk-frames 8 --left-chunks 4
"""


class CliError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minmo-export", description="Build, inspect and verify minmo-rt bundles "
                                "(a bundle = manifest.json + fp32 safetensors weights + ONNX graphs + tokenizer).")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="{build,inspect,verify}")
    b = sub.add_parser("build", help="make a bundle from one or more checkpoint folders", epilog=EPILOG_BUILD,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Load each checkpoint folder, merge their modules and write a bundle. The bundle "
                       "is written into a temporary folder next to BUNDLE and renamed into place when complete.")
    b.add_argument("sources", nargs="+", metavar="SOURCE", help="checkpoint folder(s); the format is detected")
    b.add_argument("-o", "--output", required=True, metavar="BUNDLE", help="bundle folder to create")
    b.add_argument("--target", choices=["cpu", "onnx"], default="cpu",
                   help="cpu: weights for the native runtime (+ ONNX unless --no-onnx); onnx: ONNX graphs are required")
    b.add_argument("--no-onnx", action="store_true", help="skip the ONNX export (faster; the bench's ONNX Runtime column is then empty)")
    b.add_argument("--streaming", choices=["full", "chunked"], default=None,
                   help="encoder attention: full = whole-turn context; chunked = chunks with left context (streams "
                   "exactly). Default: what the checkpoint says, else full")
    b.add_argument("--chunk-frames", type=int, default=None, metavar="N", help="encoder frames per chunk (even, >= 2; default 8)")
    b.add_argument("--left-chunks", type=int, default=None, metavar="N", help="chunks of left context (default 4)")
    b.add_argument("--quant", choices=["int8", "int4", "fp8"], default=None,
                   help="weight-only quantization of the LLM's decoder linears: int8 (per output channel), int4 "
                   "(groups of 128, AWQ scales from calibration audio), fp8 (e4m3, per output channel); see "
                   "minmo_rt/export/quantize.py")
    b.add_argument("--force", action="store_true", help="replace BUNDLE if it already holds a bundle")
    b.add_argument("--seed", type=int, default=0, help="seed of the random inputs of the ONNX checks")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bars or summary")
    i = sub.add_parser("inspect", help="show a bundle's modules, sizes and streaming settings; check its files",
                       description="Print what a bundle holds and check every listed file's size and SHA-256 "
                       "(exit code 1 if a file is missing or modified).")
    i.add_argument("bundle", metavar="BUNDLE")
    i.add_argument("--json", action="store_true", help="print JSON instead of a table")
    v = sub.add_parser("verify", help="run every module in the C++ runtime and in the PyTorch reference; compare",
                       description="Run each module of BUNDLE through minmo_rt.Runtime.run_module and through the "
                       "PyTorch reference rebuilt from the bundle, on random inputs, and print the errors "
                       "(exit code 1 if any output is outside its tolerance).")
    v.add_argument("bundle", metavar="BUNDLE")
    v.add_argument("--json", metavar="OUT", default=None, help="also write the results to this JSON file")
    v.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    v.add_argument("--quant-modes", default=None, metavar="M[,M]",
                   help="also quantize the bundle's fp32 llm in memory with each mode (int8,int4,fp8) and report "
                   "its error against fp32")
    v.add_argument("--wer", type=int, default=0, metavar="N",
                   help="also transcribe N held-out synthetic utterances (minmo-tiny's domain, espeak-ng) through "
                   "the runtime and check the word error rate (speech-to-text bundles)")
    v.add_argument("--max-wer", type=float, default=0.05, help="WER bound of --wer (default 0.05)")
    v.add_argument("--wer-seed", type=int, default=1000, help="seed of the --wer utterances (training uses 1 and 2)")
    v.add_argument("--device", default="cpu", choices=("cpu", "cuda", "cuda-sim"), help="runtime device of --wer")
    return p


def cmd_build(args) -> int:
    from .bundle import check_output, write_bundle
    from .checkpoints import load_checkpoint

    if args.target == "onnx" and args.no_onnx:
        raise CliError("--target onnx needs the ONNX export; drop --no-onnx")
    override = {}
    if args.streaming:
        override["encoder_attention"] = args.streaming
    if args.chunk_frames is not None:
        override["chunk_frames"] = args.chunk_frames
    if args.left_chunks is not None:
        override["left_chunks"] = args.left_chunks
    seen = set()
    for s in args.sources:
        key = os.path.realpath(s)
        if key in seen:
            raise CliError(f"checkpoint {s} is given twice")
        seen.add(key)
    out_real = os.path.realpath(args.output)
    for s in args.sources:
        src = os.path.realpath(s)
        if out_real == src or out_real.startswith(src + os.sep) or src.startswith(out_real + os.sep):
            raise CliError(f"the output {args.output} and the checkpoint {s} overlap; write the bundle elsewhere")
    check_output(os.path.abspath(args.output), args.force)  # before the (possibly long) loading
    checkpoints = [load_checkpoint(s) for s in args.sources]
    log = (lambda *a, **k: None) if args.quiet else print
    manifest = write_bundle(checkpoints, args.output, streaming=override, onnx=not args.no_onnx, target=args.target,
                            force=args.force, progress=not args.quiet, seed=args.seed, log=log, quant=args.quant)
    if not args.quiet:
        size = sum(f["size"] for f in manifest["files"].values())
        st = manifest["streaming"]
        print(f"wrote bundle {args.output}: mode {manifest['mode']}, modules {', '.join(manifest['modules'])}, "
              f"{len(manifest['files'])} files, {size / 2**20:.1f} MiB, encoder attention {st['encoder_attention']}"
              + (f" (chunk {st['chunk_frames']}, left {st['left_chunks']})" if st["encoder_attention"] == "chunked" else ""))
        for name, m in manifest["modules"].items():
            chk = m.get("onnx_check")
            if chk:
                worst = max(o["rel_err"] for o in chk["outputs"].values())
                print(f"  onnx/{name}.onnx vs reference: rel err {worst:.1e} (tolerance {chk['tolerance']:g})")
            qc = m.get("quant_check")
            if qc:
                print(f"  {name} {m['quant']} vs fp32: logits rel err {qc['logits_rel_err']:.2e}, "
                      f"hidden rel err {qc['hidden_rel_err']:.2e}")
    return 0


def inspect_bundle(bundle: str) -> dict:
    from .bundle import load_manifest, verify_files

    m = load_manifest(bundle)
    problems = verify_files(bundle, m)
    files = m["files"]
    mods = {}
    for name, e in m["modules"].items():
        mods[name] = {"arch": e["arch"], "params": e["params"], "dtype": e["dtype"], "quant": e["quant"],
                      "weights": e["weights"], "weights_bytes": files.get(e["weights"], {}).get("size"),
                      "onnx": e.get("onnx"), "onnx_bytes": files.get(e.get("onnx") or "", {}).get("size"),
                      "onnx_ok": (e.get("onnx_check") or {}).get("ok"), "source": e.get("source")}
    return {"bundle": os.path.abspath(bundle), "format_version": m["format_version"], "created_by": m["created_by"],
            "mode": m["mode"], "target": m.get("target"), "sample_rate": m["sample_rate"], "streaming": m["streaming"],
            "tokenizer": m.get("tokenizer"), "prompt": m.get("prompt"), "modules": mods,
            "files": {"count": len(files), "bytes": sum(f["size"] for f in files.values()), "ok": not problems,
                      "problems": problems}}


def _mib(n) -> str:
    return "-" if n is None else (f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB")


def cmd_inspect(args) -> int:
    info = inspect_bundle(args.bundle)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0 if info["files"]["ok"] else 1
    st = info["streaming"]
    print(f"bundle     {info['bundle']}")
    print(f"format     minmo-bundle {info['format_version']} ({info['created_by']}), mode {info['mode']}, "
          f"target {info['target'] or '-'}, sample rate {info['sample_rate']} Hz")
    print(f"streaming  encoder attention {st['encoder_attention']}, chunk_frames {st['chunk_frames']}, left_chunks {st['left_chunks']}")
    tok = info["tokenizer"]
    if tok:
        print(f"tokenizer  {tok['kind']} {tok['file']} ({tok.get('vocab_size', '?')} tokens, eos id {tok.get('eos_id')})")
    rows = [["module", "arch", "params", "dtype", "quant", "weights", "onnx"]]
    for name, e in info["modules"].items():
        onnx = "-" if not e["onnx"] else f"{_mib(e['onnx_bytes'])} ({'checked' if e['onnx_ok'] else 'unchecked'})"
        rows.append([name, e["arch"], f"{e['params']:,}", e["dtype"], e["quant"], _mib(e["weights_bytes"]), onnx])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    f = info["files"]
    if f["ok"]:
        print(f"files      {f['count']} listed, {_mib(f['bytes'])}, all present with matching size and SHA-256")
        return 0
    print(f"files      {f['count']} listed, {len(f['problems'])} problem(s):")
    for p in f["problems"]:
        print(f"  - {p}")
    return 1


def cmd_verify(args) -> int:
    from .verify import format_table, rows_json, verify_bundle, write_json

    rows = verify_bundle(args.bundle, seed=args.seed)
    if args.quant_modes:
        from .verify import simulate_quant_rows

        rows += simulate_quant_rows(args.bundle, [m.strip() for m in args.quant_modes.split(",") if m.strip()], args.seed)
    if args.wer > 0:
        from .verify import wer_rows

        rows += wer_rows(args.bundle, args.wer, args.wer_seed, args.max_wer, args.device)
    print(format_table(rows))
    payload = rows_json(os.path.abspath(args.bundle), args.seed, rows)
    if args.json:
        write_json(args.json, payload)
    print("verify: " + ("all outputs within tolerance" if payload["ok"] else
                        f"{sum(not r.ok for r in rows)} output(s) outside tolerance"))
    return 0 if payload["ok"] else 1


def main(argv: Optional[list] = None) -> int:
    args = _parser().parse_args(argv)
    from .bundle import BundleError
    from .checkpoints import CheckpointError

    try:
        return {"build": cmd_build, "inspect": cmd_inspect, "verify": cmd_verify}[args.cmd](args)
    except (CliError, CheckpointError, BundleError, RuntimeError, OSError, ValueError) as e:  # QuantError is a ValueError
        print(f"minmo-export {args.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
