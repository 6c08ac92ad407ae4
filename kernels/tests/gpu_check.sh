#!/usr/bin/env bash
# Device check for the CUDA kernels, in one go on a GPU machine (needs CUDA toolkit, CMake, a C++
# compiler with OpenMP, python3 with torch; transformers optional):
#   1. configure + build kernels/ standalone for CUDA_ARCH (default 90: H100/H200)
#   2. run the GPU-vs-CPU-twin harness (all shapes)
#   3. run the harness under compute-sanitizer memcheck (small shapes), and racecheck on the
#      fused kernels' small cases
#   4. when build/gpu-carry exists (`make gpu-carry` on the build machine): the runtime's CUDA
#      backend (minmo_cuda_check) against its CPU backend: minmo-tiny's LLM in every quant mode, a
#      voice LM, a whole streaming turn of minmo-tiny (same response tokens; where each module ran,
#      the duplex probabilities' max |device - CPU|, end of turn -> first token), the chunked encoder
#      at SenseVoice-Large size (checked and timed per 320 ms chunk), alone and with MinMo's input
#      projector chained in the same graph (tokens checked), HiFT's decode at CosyVoice2 size
#      (checked, first-chunk window timed); then prefill / decode timings
#      at Qwen2.5-7B (with a 256-row prompt) and CosyVoice2-0.5B voice LM sizes (fused and unfused);
#      the decoder check again under compute-sanitizer memcheck
#      (the voice LM checks also run a 15-token interleave block through the device loop graph,
#      its tokens checked against per-step host sampling and timed: "15 speech tokens <= 4 ms")
#   5. run bench/gpu/decode_bench.py, then bench/gpu/latency_table.py (the paper's latency table at
#      full MinMo sizes), each within what is left of DEADLINE_S (570 s from the start, so that one
#      device call of 600 s holds everything)
# Switches: RT_SKIP="qwen2_7b hift_cosyvoice2" skips those runtime checks by name, BENCHES=0 skips
# step 5, DEADLINE_S (570) is the whole run's time. TARBALL=path keeps a .tgz of $OUT current after
# every step (the device tool returns at most 8 files, and whatever is there when a call is cut off).
# Results go to $OUT (default ./gpu_check_out): harness.txt, memcheck.txt, racecheck.txt,
# decode_bench.json, bench.txt, latency_table.json, latency.txt, runtime_*.json, runtime.txt, build.txt,
# summary.txt. Exit status: non-zero when the build, the harness, memcheck, racecheck or a runtime
# check failed (the benches' own errors are recorded in their JSON).
# Usage: bash kernels/tests/gpu_check.sh       (from the repository root or anywhere)
set -u -o pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${OUT:-$ROOT/gpu_check_out}
ARCH=${CUDA_ARCH:-90}
BUILD=${BUILD_DIR:-$ROOT/build/kernels-gpu}
PY=${PYTHON:-}
if [ -z "$PY" ]; then  # the first interpreter that has torch
  for cand in python3 python /opt/conda/bin/python /usr/bin/python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import torch' >/dev/null 2>&1; then PY=$cand; break; fi
  done
fi
PY=${PY:-python3}
JOBS=${JOBS:-$(nproc)}
mkdir -p "$OUT"
export PATH="$PATH:/usr/local/cuda/bin"
T0=$(date +%s)
pack() { [ -z "${TARBALL:-}" ] || { tar czf "$TARBALL.part" -C "$OUT" . && mv "$TARBALL.part" "$TARBALL"; }; }
stamp() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/summary.txt"; pack; }
left() { echo $(( ${DEADLINE_S:-570} - ($(date +%s) - T0) )); }  # seconds left of the call's time
: > "$OUT/summary.txt"

# cuBLAS for the runtime's prefill and HiFT products (dlopen'd): the system's, else the toolkit's or
# the nvidia-cublas wheel's.
if [ -z "${MINMO_CUBLAS:-}" ] && ! ldconfig -p 2>/dev/null | grep -q 'libcublas\.so\.1[23] '; then
  CUBLAS=$(ls /usr/local/cuda*/lib64/libcublas.so.1[23] /usr/local/cuda*/targets/*/lib/libcublas.so.1[23] 2>/dev/null | head -1)
  [ -z "$CUBLAS" ] && CUBLAS=$("$PY" -c 'import glob, nvidia, os; print((sorted(glob.glob(os.path.join(list(nvidia.__path__)[0], "**", "libcublas.so.1[23]"), recursive=True)) or [""])[0])' 2>/dev/null)
  [ -n "$CUBLAS" ] && export MINMO_CUBLAS=$CUBLAS
fi
{ echo "MINMO_CUBLAS=${MINMO_CUBLAS:-(system)}"; nvidia-smi; nvcc --version; cmake --version | head -1; "$PY" -c 'import torch; print("torch", torch.__version__, torch.version.cuda)'; } \
  > "$OUT/env.txt" 2>&1
stamp "env: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1); $(nvcc --version 2>/dev/null | tail -1)"

GEN=()
command -v ninja >/dev/null 2>&1 && [ ! -f "$BUILD/CMakeCache.txt" ] && GEN=(-G Ninja)
if cmake -S "$ROOT/kernels" -B "$BUILD" ${GEN[@]+"${GEN[@]}"} -DCMAKE_BUILD_TYPE=Release -DMINMO_CUDA=ON \
     -DCMAKE_CUDA_ARCHITECTURES="$ARCH" > "$OUT/build.txt" 2>&1 &&
   cmake --build "$BUILD" -j "$JOBS" >> "$OUT/build.txt" 2>&1; then
  stamp "build: ok (sm_$ARCH)"
else
  stamp "build: FAILED"; tail -n 60 "$OUT/build.txt"; exit 1
fi

timeout 120 "$BUILD/minmo_kernels_cuda_test" > "$OUT/harness.txt" 2>&1
HARNESS=$?
stamp "harness: rc=$HARNESS, $(tail -n 1 "$OUT/harness.txt" | head -c 200)"
grep -E "^FAIL|failed cases|^  " "$OUT/harness.txt" | head -n 40

SAN=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$SAN" ]; then
  timeout 150 "$SAN" --tool memcheck --error-exitcode 3 "$BUILD/minmo_kernels_cuda_test" --small > "$OUT/memcheck.txt" 2>&1
  MEMCHECK=$?
  stamp "memcheck: rc=$MEMCHECK, $(grep -E 'ERROR SUMMARY' "$OUT/memcheck.txt" | tail -n 1)"
  [ "$MEMCHECK" -ne 0 ] && grep -E "=========|FAIL" "$OUT/memcheck.txt" | head -n 40
  # Shared-memory hazards of the fused kernels (staged K/V tiles, split-K partials, last-block tails).
  timeout 150 "$SAN" --tool racecheck --error-exitcode 3 "$BUILD/minmo_kernels_cuda_test" --small --filter fused \
    > "$OUT/racecheck.txt" 2>&1
  RACECHECK=$?
  stamp "racecheck (fused): rc=$RACECHECK, $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/racecheck.txt" | tail -n 1)"
  [ "$RACECHECK" -ne 0 ] && grep -E "=========|FAIL" "$OUT/racecheck.txt" | head -n 40
else
  MEMCHECK=0
  RACECHECK=0
  stamp "memcheck: compute-sanitizer not found, skipped"
fi

RUNTIME=0
CARRY=$ROOT/build/gpu-carry
if [ -x "$CARRY/minmo_cuda_check" ]; then
  : > "$OUT/runtime.txt"
  rt() {  # rt NAME SUBCOMMAND ARGS...: one check / bench, JSON to runtime_NAME.json
    local name=$1; shift
    case " ${RT_SKIP:-} " in *" $name "*) stamp "runtime $name: skipped (RT_SKIP)"; return;; esac
    echo "== $name: $*" >> "$OUT/runtime.txt"
    local limit; limit=$(left); [ "$limit" -gt 200 ] && limit=200; [ "$limit" -lt 20 ] && limit=20
    timeout "$limit" "$CARRY/minmo_cuda_check" "$@" --device cuda --json "$OUT/runtime_$name.json" \
      > /dev/null 2>> "$OUT/runtime.txt"
    local rc=$?
    [ $rc -ne 0 ] && RUNTIME=$rc
    stamp "runtime $name: rc=$rc, $(sed -n '/^== '"$name"':/,$p' "$OUT/runtime.txt" | grep -E '^decoder:|^check|^decode at|^prefill|decode step:$|^voice block|^response|^duplex|^cpu:|^cuda:|^encoder|_window:|vs CPU decode|^first push|^first chunk|vs CPU flow|^device vs CPU encoder|^steady chunk' | tr '\n' ';')"
  }
  for mode in fp32 int8 int4 fp8; do rt "tiny_$mode" decoder --bundle "$CARRY/tiny-$mode" --ctx 128 --steps 16 --fused both; done
  rt small_voice_lm decoder --bundle "$CARRY/small" --module voice_lm --ctx 128 --steps 16 --fused both
  rt tiny_session session --bundle "$CARRY/tiny-fp32" --audio "$CARRY/tiny-fp32/demo.f32" \
    --prompt "$CARRY/tiny-fp32/session.json" --runs 10
  rt encoder_large encoder --size large --chunks 12
  rt hift_cosyvoice2 hift --frames 36 --runs 20
  rt flow_encoder flow-encoder --runs 20
  rt flow_cosyvoice2 flow --runs 20
  rt voice_lm_0p5b decoder --size voice-0.5b --ctx 128,1024 --steps 32 --prefill 6 --fused both
  rt qwen2_7b decoder --size 7b --ctx 128,1024 --steps 32 --long-prefill 256
  if [ -n "$SAN" ] && [[ " ${RT_SKIP:-} " != *" runtime_memcheck "* ]]; then  # the backend's own launches and copies under memcheck (small shapes)
    timeout 200 "$SAN" --tool memcheck --error-exitcode 3 "$CARRY/minmo_cuda_check" decoder --device cuda \
      --bundle "$CARRY/small" --module voice_lm --ctx 40 --steps 4 --blocks 2 --fused both \
      > "$OUT/runtime_memcheck.txt" 2>&1
    RMC=$?
    [ $RMC -ne 0 ] && RUNTIME=$RMC
    stamp "runtime memcheck: rc=$RMC, $(grep -E 'ERROR SUMMARY' "$OUT/runtime_memcheck.txt" | tail -n 1)"
  fi
else
  stamp "runtime: build/gpu-carry not found (make gpu-carry on the build machine), skipped"
fi

# The benches get what is left of the call's time: the runtime checks above are new on every GPU
# run, the benches' numbers older.
BENCH=0; LATENCY=0
if [ "${BENCHES:-1}" = 0 ]; then stamp "benches: skipped (BENCHES=0)"
elif [ "$(left)" -gt 100 ]; then
timeout $(( $(left) / 2 )) "$PY" "$ROOT/bench/gpu/decode_bench.py" --lib "$BUILD/libminmo_kernels.so" --out "$OUT/decode_bench.json" \
  ${BENCH_ARGS:---budget-s $(( $(left) / 3 ))} > "$OUT/bench.txt" 2>&1
BENCH=$?
stamp "bench: rc=$BENCH"
grep -E "^\[|    " "$OUT/bench.txt" | grep -v "^    \"" | head -n 80
grep -E "Error|error" "$OUT/bench.txt" | head -n 20
else stamp "bench: skipped, $(left) s left"; fi
if [ "${BENCHES:-1}" = 0 ]; then :
elif [ "$(left)" -gt 60 ]; then
timeout $(( $(left) - 10 )) "$PY" "$ROOT/bench/gpu/latency_table.py" --lib "$BUILD/libminmo_kernels.so" --out "$OUT/latency_table.json" \
  ${LATENCY_ARGS:---budget-s $(( $(left) * 3 / 4 ))} > "$OUT/latency.txt" 2>&1
LATENCY=$?
stamp "latency table: rc=$LATENCY"
grep -E "^\[|^    [a-z]|^latency|^stage|^[a-z0-9_]+ +[0-9.]+ /|^first audio" "$OUT/latency.txt" | head -n 60
grep -E "Error|error" "$OUT/latency.txt" | head -n 20
else stamp "latency table: skipped, $(left) s left"; fi

stamp "done: harness=$HARNESS memcheck=$MEMCHECK racecheck=$RACECHECK bench=$BENCH latency=$LATENCY runtime=$RUNTIME"
[ "$HARNESS" -eq 0 ] && [ "$MEMCHECK" -eq 0 ] && [ "$RACECHECK" -eq 0 ] && [ "$RUNTIME" -eq 0 ]
