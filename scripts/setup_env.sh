#!/usr/bin/env bash
# Creates .venv (if missing), installs the development set (with the peer libraries the tests
# compare against) and builds snn_cuda into it.
# Idempotent: a second run only rebuilds what changed. Used by the README's quick start and by CI.
#   PYTHON=python3.11 bash scripts/setup_env.sh     # choose the interpreter
#   SNN_CUDA_BUILD_CUDA=0 bash scripts/setup_env.sh  # skip the CUDA kernels (see setup.py)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet -r requirements.txt
# snnTorch, SpikingJelly and Norse, the oracles of the parity tests (see the file for why --no-deps).
.venv/bin/python -m pip install --quiet --no-deps -r requirements-peers.txt
# --no-build-isolation: build against the torch just installed, not a second one.
.venv/bin/python -m pip install --quiet --no-build-isolation --no-deps -e .
.venv/bin/python -c "import snn_cuda, torch; cuda = torch._C._dispatch_has_kernel_for_dispatch_key('snn_cuda::spiking_recurrence_fwd', 'CUDA'); print(f'snn_cuda {snn_cuda.__version__} built against torch {torch.__version__}; CUDA kernels: {\"yes\" if cuda else \"no\"}')"
