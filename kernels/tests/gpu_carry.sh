#!/usr/bin/env bash
# Prepares build/gpu-carry on this (build) machine: what kernels/tests/gpu_check.sh needs to check
# the runtime's CUDA backend on a GPU machine that has the CUDA driver but none of this project's
# build dependencies (OpenBLAS, nlohmann/json, the Python packages):
#   minmo_decoder_bench        runtime/tools/decoder_bench.cc, built with CUDA (sm_87, sm_90)
#   libscipy_openblas.so       found through the binary's $ORIGIN rpath
#   tiny-{fp32,int8,int4,fp8}/ the shipped minmo-tiny exported in each mode (manifest + llm weights)
#   small/                     the synthetic "small" MinMo (random weights; manifest + voice_lm)
# Usage: bash kernels/tests/gpu_carry.sh   (after `make install cuda-compile`; about 40 MiB; pass
# `carry: ["build/gpu-carry"]` to the device call)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=$ROOT/.venv/bin/python
DEST=$ROOT/build/gpu-carry
BIN=$ROOT/build/cuda-check/runtime/minmo_decoder_bench
[ -x "$BIN" ] || { echo "build it first: make cuda-compile (needs nvcc)" >&2; exit 1; }
rm -rf "$DEST" && mkdir -p "$DEST"
cp "$BIN" "$DEST/" && strip "$DEST/minmo_decoder_bench"
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
for mode in fp32 int8 int4 fp8; do
  q=(); [ "$mode" = fp32 ] || q=(--quant "$mode")
  "$PY" -m minmo_rt.export.cli build "$TINY" -o "$TMP/tiny-$mode" --no-onnx -q "${q[@]}"
  keep "$TMP/tiny-$mode" "$DEST/tiny-$mode" llm
done
"$PY" -c "from minmo_rt.export.checkpoints.synthetic import write_minmo_checkpoint as w; w('$TMP/small-ckpt', sizes='small', seed=0)"
"$PY" -m minmo_rt.export.cli build "$TMP/small-ckpt" -o "$TMP/small" --no-onnx -q
keep "$TMP/small" "$DEST/small" voice_lm
du -sh "$DEST"
