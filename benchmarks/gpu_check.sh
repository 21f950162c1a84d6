#!/usr/bin/env bash
# One-shot check of the CUDA path on a machine with a GPU and no internet (an estimated 7 minutes
# on an H200; never run yet): builds snn_cuda with its CUDA kernels against that machine's
# python3/torch, runs the whole test suite (the CUDA tests included), then the benchmarks on CUDA.
# Logs, JSON and plots go to the folder given as the first argument (default benchmarks/results/gpu).
#   bash benchmarks/gpu_check.sh [OUT_DIR]
#   PYTHON=/path/to/python3 TORCH_CUDA_ARCH_LIST=9.0 bash benchmarks/gpu_check.sh /tmp/out
#   PEER_WHEELS=wheels/ bash benchmarks/gpu_check.sh   # a folder holding the wheels named in
#       requirements-peers.txt (pip download --no-deps -r requirements-peers.txt -d wheels/ where
#       there is internet): installs them offline, so the peer tests and benchmark run on CUDA too;
#       without them those tests skip and the benchmark leaves the peers out, saying so.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/gpu}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
status=0
step() {  # step NAME COMMAND...: runs it, logs to $OUT/NAME.log, remembers a failure, goes on
  local name=$1; shift
  echo "== $name: $*" | tee -a "$OUT/summary.log"
  local begin=$(date +%s)
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "   exit $rc after $(( $(date +%s) - begin )) s" | tee -a "$OUT/summary.log"
  tail -n 40 "$OUT/$name.log"
  [ $rc -eq 0 ] || status=1
  return $rc
}
: > "$OUT/summary.log"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.txt" 2>&1 || true
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  TORCH_CUDA_ARCH_LIST=$("$PY" -c "import torch; p = torch.cuda.get_device_capability(); print(f'{p[0]}.{p[1]}')" 2>/dev/null || echo 9.0)
fi
export TORCH_CUDA_ARCH_LIST SNN_CUDA_BUILD_CUDA=1 MAX_JOBS=${MAX_JOBS:-16}
step build "$PY" -m pip install --no-build-isolation --no-deps --no-index -e . || exit 1
if [ -n "${PEER_WHEELS:-}" ]; then
  step peers "$PY" -m pip install --no-deps --no-index --find-links "$PEER_WHEELS" -r requirements-peers.txt
fi
step tests "$PY" -m pytest tests -q -rs -x -p no:cacheprovider
step bench_recurrence "$PY" benchmarks/bench_recurrence.py --device cuda \
  --dtype float32 float16 bfloat16 float64 --T 32 128 512 --lanes 10000 100000 1000000 10000000 \
  --max-elements 2000000000 --max-reference-elements 300000000 --repeats 10 --warmup 3 \
  --json "$OUT/bench_recurrence.json" --plot "$OUT/bench_recurrence.png"
step bench_training "$PY" benchmarks/bench_training.py --device cuda --repeats 10 --warmup 3 \
  --shapes 128x1000x100 128x1000x1000 128x10000x100 --json "$OUT/bench_training.json"
step bench_peers "$PY" benchmarks/bench_peers.py --device cuda --repeats 10 --warmup 3 \
  --json "$OUT/bench_peers.json"
step bench_dropin "$PY" benchmarks/bench_dropin.py --device cuda --repeats 10 --warmup 3 \
  --json "$OUT/bench_dropin.json"
echo "results in $OUT; overall exit $status" | tee -a "$OUT/summary.log"
exit $status
