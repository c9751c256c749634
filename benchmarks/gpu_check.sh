#!/usr/bin/env bash
# One self-contained GPU check (no downloads, a few minutes on an H100 / H200): DiT-XL/2 at 256 px in bf16,
# eager and compiled, printing step time, images/s, peak memory and MFU, then the roofline (MFU against the
# card's dense peak and against its own measured bf16 GEMM at the model's shapes). Run from a checkout, installed or
# not (it needs torch, einops, numpy, pillow, scikit-learn and rich): bash benchmarks/gpu_check.sh [BATCH]
set -euo pipefail
cd "$(dirname "$0")/.."
batch="${1:-64}"
python=".venv/bin/python"; [ -x "$python" ] || python=python3
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv,noheader
timeout 240 "$python" benchmarks/gpu_throughput.py --batch "$batch" --steps 20
timeout 300 "$python" benchmarks/gpu_throughput.py --batch "$batch" --steps 20 --compile
timeout 300 "$python" benchmarks/roofline.py --sizes DiT-XL/2 --precision bf16-mixed --batch "$batch" --kinds mmdit
timeout 400 "$python" benchmarks/roofline.py --sizes DiT-XL/2 --precision bf16-mixed --batch "$batch" --kinds mmdit \
  --compile --no-profile
