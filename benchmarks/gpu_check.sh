#!/usr/bin/env bash
# One-shot check of the CUDA path on a machine with a GPU and no internet, made to finish in one call
# on a machine nobody has seen: a preflight first (what is missing, and what to do), then steps each
# with its own time limit inside a total of 9 minutes (sized for an H100-class GPU: the build ~4
# minutes, the CUDA tests, compute-sanitizer if present, the benchmarks on CUDA, the rest of the
# suite with what time is left). A failing or timed-out step is recorded and the script goes on;
# benchmark rows are written as they are measured, so a time limit loses nothing measured; one
# summary at the end lists every step: passed, FAILED, TIMED OUT or skipped (and why).
#   bash benchmarks/gpu_check.sh [OUT_DIR]              # default OUT_DIR benchmarks/results/gpu
#   bash benchmarks/gpu_check.sh --dry-run [OUT_DIR]    # preflight and the plan only; no GPU needed
#   PYTHON=/path/to/python3 TORCH_CUDA_ARCH_LIST=9.0 bash benchmarks/gpu_check.sh /tmp/out
#   PEER_WHEELS=wheels/ bash benchmarks/gpu_check.sh    # a folder holding the wheels named in
#       requirements-peers.txt (pip wheel --no-deps -r requirements-peers.txt -w wheels/ where
#       there is internet: norse is an sdist, so it must be built into a wheel there): installs them
#       offline, so the peer tests and benchmarks run on CUDA too.
#   GPU_CHECK_BUDGET=540 (seconds, all steps together)
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT=${1:-benchmarks/results/gpu}
PY=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET:-540}
START=$(date +%s)
mkdir -p "$OUT"
: > "$OUT/summary.log"
SUMMARY=()
status=0

note() { echo "$*" | tee -a "$OUT/summary.log"; }

# step NAME LIMIT_S COMMAND...: runs it under `timeout` (the smaller of LIMIT_S and what is left of
# the budget), logs to $OUT/NAME.log, records the outcome and goes on.
step() {
  local name=$1 limit=$2; shift 2
  local left=$(( BUDGET - ($(date +%s) - START) ))
  if [ "$DRY" = 1 ]; then
    SUMMARY+=("$name: would run (limit ${limit} s): $*")
    return 0
  fi
  if [ "$left" -lt 20 ]; then
    SUMMARY+=("$name: skipped (out of time: ${left} s of the ${BUDGET} s budget left)")
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  note "== $name (limit ${limit} s): $*"
  local begin=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$? took=$(( $(date +%s) - begin ))
  tail -n 25 "$OUT/$name.log"
  if [ $rc -eq 0 ]; then
    SUMMARY+=("$name: passed (${took} s)")
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    SUMMARY+=("$name: TIMED OUT after ${took} s (log: $OUT/$name.log)"); status=1
  else
    SUMMARY+=("$name: FAILED, exit $rc after ${took} s (log: $OUT/$name.log)"); status=1
  fi
  return $rc
}

finish() {
  note ""
  note "== summary ($(( $(date +%s) - START )) s of a ${BUDGET} s budget)"
  for line in "${SUMMARY[@]}"; do note "  $line"; done
  note "results in $OUT; overall exit $status"
  exit $status
}

# --- Preflight: everything the build and the steps need, said before any time is spent.
preflight_args=()
[ "$DRY" = 1 ] && preflight_args=(--no-gpu)
if ! command -v "$PY" > /dev/null 2>&1; then
  note "preflight: $PY not found (set PYTHON=/path/to/python3)"; exit 2
fi
"$PY" benchmarks/gpu_preflight.py "${preflight_args[@]}" 2>&1 | tee -a "$OUT/summary.log"
if [ "${PIPESTATUS[0]}" -ne 0 ]; then
  note "preflight failed: nothing was run"; exit 2
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv > "$OUT/gpu.txt" 2>&1 || true
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  TORCH_CUDA_ARCH_LIST=$("$PY" -c "import torch; p = torch.cuda.get_device_capability(); print(f'{p[0]}.{p[1]}')" 2>/dev/null || echo 9.0)
fi
MAX_ELEMENTS=$("$PY" benchmarks/gpu_preflight.py --max-elements 2>/dev/null || echo 134217728)
note "arch list $TORCH_CUDA_ARCH_LIST; benchmark cases capped at $MAX_ELEMENTS elements (free GPU memory)"
export TORCH_CUDA_ARCH_LIST SNN_CUDA_BUILD_CUDA=1 SNN_CUDA_EXPECT_CUDA_KERNEL=1 MAX_JOBS=${MAX_JOBS:-16}

# --- Build. Nothing else can run without it.
if ! step build 300 "$PY" -m pip install --no-build-isolation --no-deps --no-index -e .; then
  [ "$DRY" = 1 ] || finish
fi
if [ -n "${PEER_WHEELS:-}" ]; then
  step peers 60 "$PY" -m pip install --no-deps --no-index --find-links "$PEER_WHEELS" -r requirements-peers.txt
else
  SUMMARY+=("peers: skipped (no PEER_WHEELS: the peer tests skip and the benchmarks leave the peers out)")
fi

# --- The CUDA tests first, as their own step, without -x: every failure is reported.
step cuda_tests 150 "$PY" -m pytest tests/test_cuda.py tests/test_cuda_build.py \
  tests/test_if.py::test_if_cuda_matches_cpu tests/test_synaptic.py::test_synaptic_cuda_matches_cpu \
  tests/test_norse.py::test_norse_cuda_matches_cpu tests/test_norse.py::test_lsnn_cuda_matches_cpu \
  tests/test_plif.py::test_plif_cuda_matches_cpu tests/test_rleaky.py::test_rleaky_cuda_matches_cpu \
  tests/test_alif.py::test_alif_cuda_matches_cpu \
  -q -rs -p no:cacheprovider
SANITIZER=$(command -v compute-sanitizer || true)
if [ -z "$SANITIZER" ] && [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/compute-sanitizer" ]; then
  SANITIZER=$CUDA_HOME/bin/compute-sanitizer
fi
if [ -n "$SANITIZER" ]; then
  # Small, fast cases only: the tools slow kernels down 10-100x.
  SMALL="chunk_boundaries or opcheck or empty or non_contiguous or current_stream or deterministic"
  for tool in memcheck racecheck initcheck; do
    step "sanitizer_$tool" 60 "$SANITIZER" --tool "$tool" --error-exitcode 1 \
      "$PY" -m pytest tests/test_cuda.py -q -p no:cacheprovider -k "$SMALL"
  done
else
  SUMMARY+=("sanitizer: skipped (compute-sanitizer not found)")
fi

# --- Benchmarks on CUDA (row by row into their JSON files).
step bench_recurrence 90 "$PY" benchmarks/bench_recurrence.py --device cuda \
  --dtype float32 float16 bfloat16 float64 --T 32 128 512 --lanes 10000 100000 1000000 10000000 \
  --max-elements "$MAX_ELEMENTS" --max-reference-elements 300000000 --repeats 5 --warmup 2 \
  --json "$OUT/bench_recurrence.json" --plot "$OUT/bench_recurrence.png"
step bench_dropin 45 "$PY" benchmarks/bench_dropin.py --device cuda --repeats 5 --warmup 2 \
  --json "$OUT/bench_dropin.json"
step bench_peers 45 "$PY" benchmarks/bench_peers.py --device cuda --repeats 5 --warmup 2 \
  --json "$OUT/bench_peers.json"
step bench_training 45 "$PY" benchmarks/bench_training.py --device cuda --repeats 5 --warmup 2 \
  --shapes 128x1000x100 128x1000x1000 128x10000x100 --json "$OUT/bench_training.json"
step resources 30 "$PY" benchmarks/cuda_resources.py --model --json "$OUT/cuda_resources.json"

# --- The rest of the suite, with what time is left (CI runs it on CPU already).
step other_tests 120 "$PY" -m pytest tests -q -rs -p no:cacheprovider \
  --ignore=tests/test_cuda.py --ignore=tests/test_cuda_build.py \
  --deselect tests/test_if.py::test_if_cuda_matches_cpu \
  --deselect tests/test_synaptic.py::test_synaptic_cuda_matches_cpu \
  --deselect tests/test_norse.py::test_norse_cuda_matches_cpu \
  --deselect tests/test_norse.py::test_lsnn_cuda_matches_cpu \
  --deselect tests/test_plif.py::test_plif_cuda_matches_cpu \
  --deselect tests/test_rleaky.py::test_rleaky_cuda_matches_cpu \
  --deselect tests/test_alif.py::test_alif_cuda_matches_cpu
finish
