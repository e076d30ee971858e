#!/usr/bin/env bash
# The issue-7 GPU measurements as one prepared run, meant to fit the device tool's 10-minute
# call (not yet run on a GPU: no machine has been lent to this project). Run from the repository root on a machine with CUDA and torch:
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]      # JSON + log into OUT_DIR (default benchmarks/results)
#
# 1. this engine vs higher, ResNet18 84 px, standard vs ACDC-net, scopes all/atoms, both orders,
#    meta-batch 4, sequential tasks (learn2learn needs its compiled extension; add it with
#    --implementations when it is installed there);
# 2. the same engine rows with the meta-batch batched by torch.func.vmap;
# 3. meta-gradient accuracy of float32 and bf16 autocast against float64 on the GPU.
# The machine goes into every JSON (device_name, torch version); benchmarks/report.py puts
# maml_step_gpu*.json and precision_gpu.json into docs/performance.md when they are copied into
# benchmarks/results/.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-benchmarks/results}
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT_DIR/gpu_machine.txt"
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT_DIR/gpu_machine.txt"
"$PYTHON" benchmarks/maml_step.py --device cuda --backbones resnet18 --convs standard,acdc-net \
    --implementations engine,higher --meta-batch 4 --repeats 3 --rounds 1 --threads 0 --timeout 300 \
    --out "$OUT_DIR/maml_step_gpu.json" 2>&1 | tee "$OUT_DIR/gpu_check.log"
"$PYTHON" benchmarks/maml_step.py --device cuda --backbones resnet18 --convs standard,acdc-net \
    --implementations engine --task-batching vmap --meta-batch 4 --repeats 3 --rounds 1 --threads 0 --timeout 300 \
    --out "$OUT_DIR/maml_step_gpu_vmap.json" 2>&1 | tee -a "$OUT_DIR/gpu_check.log"
"$PYTHON" benchmarks/precision.py --device cuda --backbones conv4,resnet18 \
    --out "$OUT_DIR/precision_gpu.json" 2>&1 | tee -a "$OUT_DIR/gpu_check.log"
