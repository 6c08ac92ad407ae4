#!/usr/bin/env bash
# Prepares build/gpu-carry on this (build) machine: what kernels/tests/gpu_check.sh needs to check
# the runtime's CUDA backend on a GPU machine that has the CUDA driver but none of this project's
# build dependencies (OpenBLAS, nlohmann/json, the Python packages):
#   minmo_cuda_check           runtime/tools (see tools/tools.h), built with CUDA
#   libscipy_openblas.so       found through the binary's $ORIGIN rpath
#   tiny-fp32/                 the shipped minmo-tiny exported whole, plus session.json (its ASR prompt
#                              ids) and demo.f32 (the demo WAV as raw float32) for the session check
#   tiny-{int8,int4,fp8}/      minmo-tiny with its LLM quantized (manifest + llm weights)
#   small/                     the synthetic "small" MinMo (random weights; manifest + voice_lm)
# Usage: make gpu-carry (builds the binary for sm_90, CARRY_ARCH=87 for Orin, then runs this with its
# path); about 50 MiB; pass carry: ["build/gpu-carry"] to the device call.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=$ROOT/.venv/bin/python
DEST=$ROOT/build/gpu-carry
BIN=${1:-$ROOT/build/cuda-check/runtime/minmo_cuda_check}
[ -x "$BIN" ] || { echo "$BIN not built: make gpu-carry (needs nvcc)" >&2; exit 1; }
rm -rf "$DEST" && mkdir -p "$DEST"
cp "$BIN" "$DEST/minmo_cuda_check" && strip "$DEST/minmo_cuda_check"
cp "$("$PY" -c 'import scipy_openblas32 as s; print(s.get_lib_dir())')/libscipy_openblas.so" "$DEST/"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# keep <bundle>: its manifest.json and the weights of the listed modules
keep() {
  local src=$1 dst=$2; shift 2
  mkdir -p "$dst/weights"
  cp "$src/manifest.json" "$dst/"
  for m in "$@"; do cp "$src/weights/$m.safetensors" "$dst/weights/"; done
}
TINY=$ROOT/bindings/python/minmo_rt/assets/minmo_tiny
"$PY" -m minmo_rt.export.cli build "$TINY" -o "$DEST/tiny-fp32" --no-onnx -q
"$PY" - "$DEST/tiny-fp32" <<'PYEOF'
import json, os, sys
import numpy as np
import minmo_rt
from minmo_rt.cli import DEMO_TEXT, DEMO_WAV

bundle = sys.argv[1]
rt = minmo_rt.Runtime(bundle)
prefix, suffix, stops = rt.prompt_ids("asr")
audio, rate = minmo_rt.read_wav(DEMO_WAV)
assert rate == rt.sample_rate, (rate, rt.sample_rate)
np.ascontiguousarray(audio, np.float32).tofile(os.path.join(bundle, "demo.f32"))
with open(os.path.join(bundle, "session.json"), "w") as f:
    json.dump({"prefix_ids": prefix, "suffix_ids": suffix, "stop_ids": stops, "max_new_tokens": 48, "text": DEMO_TEXT}, f)
PYEOF
for mode in int8 int4 fp8; do
  "$PY" -m minmo_rt.export.cli build "$TINY" -o "$TMP/tiny-$mode" --no-onnx -q --quant "$mode"
  keep "$TMP/tiny-$mode" "$DEST/tiny-$mode" llm
done
"$PY" -c "from minmo_rt.export.checkpoints.synthetic import write_minmo_checkpoint as w; w('$TMP/small-ckpt', sizes='small', seed=0)"
"$PY" -m minmo_rt.export.cli build "$TMP/small-ckpt" -o "$TMP/small" --no-onnx -q
keep "$TMP/small" "$DEST/small" voice_lm
du -sh "$DEST"
