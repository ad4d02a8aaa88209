#!/usr/bin/env bash
# Train-step throughput of the torchvision architectures per precision (see bench/gpu_check.py); at most ~5 min on a
# GPU. Without CUDA it runs the tiny CPU mode.
set -euo pipefail
cd "$(dirname "$0")/.."
if python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    timeout 300 python bench/gpu_check.py
else
    timeout 900 python bench/gpu_check.py --tiny  # a smoke test of the script, not a measurement
fi
