#!/usr/bin/env bash
# The built-in engine vs plain generate() on a Llama-3-8B-shaped model with random bf16 weights
# (bench_gpu.py says what is measured). Needs an NVIDIA GPU and a Python with torch (CUDA build)
# and transformers; nothing is downloaded. Extra arguments go to bench_gpu.py (--smoke: the CPU
# check with a tiny config; --json FILE: keep the figures).
set -euo pipefail
cd "$(dirname "$0")/../.."

has_cuda_torch() {
  "$1" -c 'import torch, transformers, sys; sys.exit(0 if torch.cuda.is_available() else 1)' \
    >/dev/null 2>&1
}

PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  for candidate in .venv/bin/python python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 && has_cuda_torch "$candidate"; then
      PY="$candidate"
      break
    fi
  done
fi
if [[ -z "$PY" ]]; then
  if [[ " $* " == *" --smoke "* ]]; then
    PY="$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)"
  else
    echo "gpu.sh: no Python with a CUDA build of torch and transformers (set PYTHON=...)" >&2
    exit 2
  fi
fi
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec timeout 300 "$PY" bench/studio/bench_gpu.py "$@"
