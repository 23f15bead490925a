#!/usr/bin/env bash
# GPU checks of compile-readiness (issue 18), prepared for a machine with one CUDA GPU; under 10 minutes.
#
#   bash benchmarks/gpu_check.sh            # after scripts/setup.sh (uses .venv), or PYTHON=python bash ...
#
# 1. tests/test_compile.py on the GPU machine (fullgraph per block and whole transformer, aot_eager);
# 2. benchmarks/compile.py on CUDA, bf16, the hidden-384 PixArt-shaped model: eager vs compiled (inductor)
#    x hooked vs unhooked, whole transformer and per block; compile time, graphs, breaks, host syncs per
#    generation (aten._local_scalar_dense), CUDA-event timings -> benchmarks/results/compile_gpu.json;
# 3. the same whole-transformer variants with mode="reduce-overhead" (CUDA graphs): the compiled output's
#    difference from eager shows whether cached outputs survive graph replays
#    -> benchmarks/results/compile_gpu_cudagraphs.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check.sh needs a CUDA GPU (torch.cuda.is_available() is False)')"
"$PY" -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"
timeout 240 "$PY" -m pytest -q tests/test_compile.py -x
timeout 240 "$PY" benchmarks/compile.py --device cuda --dtype bf16 --models midsize --repeats 10 \
  --out benchmarks/results/compile_gpu.json
timeout 150 "$PY" benchmarks/compile.py --device cuda --dtype bf16 --models midsize --scopes model --repeats 10 \
  --mode reduce-overhead --out benchmarks/results/compile_gpu_cudagraphs.json
echo "gpu_check: done (results in benchmarks/results/compile_gpu*.json)"
