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
# 3. meta-gradient accuracy of float32 and bf16 autocast against float64 on the GPU;
# 4. second order in bounded memory (issue 34): ResNet34 ACDC-net at 224 px, 5 and 10 inner steps,
#    plain second order vs recomputed inner steps (--recompute-inner-steps) vs first order, peak
#    CUDA memory and time per meta-step;
# 5. the device path for real: the tests that run with CUDA (no host synchronisation inside the
#    inner loop, plain and recomputed, under torch.cuda.set_sync_debug_mode("error")), a short
#    run_maml.py meta-training with --recompute-inner-steps and a one-epoch pretrain.py, both on
#    the built-in dataset, each leaving its run directory (summary.json: time, peak memory).
# Every step has a time limit (the sum is 9.5 minutes) so the script ends inside the device
# tool's 10-minute call even if a step hangs; a step cut short leaves its log lines. The machine
# goes into every JSON (device_name, torch version); benchmarks/report.py puts
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
timeout 170 "$PYTHON" benchmarks/maml_step.py --device cuda --backbones resnet18 --convs standard,acdc-net \
    --implementations engine,higher --meta-batch 4 --repeats 3 --rounds 1 --threads 0 --timeout 300 \
    --out "$OUT_DIR/maml_step_gpu.json" 2>&1 | tee "$OUT_DIR/gpu_check.log"
timeout 90 "$PYTHON" benchmarks/maml_step.py --device cuda --backbones resnet18 --convs standard,acdc-net \
    --implementations engine --task-batching vmap --meta-batch 4 --repeats 3 --rounds 1 --threads 0 --timeout 300 \
    --out "$OUT_DIR/maml_step_gpu_vmap.json" 2>&1 | tee -a "$OUT_DIR/gpu_check.log"
timeout 70 "$PYTHON" benchmarks/precision.py --device cuda --backbones conv4,resnet18 \
    --out "$OUT_DIR/precision_gpu.json" 2>&1 | tee -a "$OUT_DIR/gpu_check.log"
timeout 110 "$PYTHON" benchmarks/maml_step.py --device cuda --backbones resnet34 --convs acdc-net --scopes all \
    --orders second,second-recompute,first --image-sizes 224 --inner-steps 5,10 --implementations engine \
    --meta-batch 1 --repeats 2 --rounds 1 --threads 0 --timeout 60 \
    --out "$OUT_DIR/maml_step_gpu_recompute.json" 2>&1 | tee -a "$OUT_DIR/gpu_check.log"
timeout 30 "$PYTHON" -m pytest -q -p no:cacheprovider tests/meta/test_maml_engine.py -k cuda \
    2>&1 | tee -a "$OUT_DIR/gpu_check.log"
timeout 50 "$PYTHON" run_maml.py --dataset builtin --backbone resnet18 --acdc net --image-size 32 --iterations 10 \
    --meta-batch 2 --val-every 10 --val-episodes 10 --test-episodes 20 --recompute-inner-steps --device cuda \
    --quiet --out "$OUT_DIR/gpu_maml_run" 2>&1 | tee -a "$OUT_DIR/gpu_check.log"
timeout 50 "$PYTHON" pretrain.py --dataset builtin --backbone resnet18 --acdc net --image-size 32 \
    --pretrain-epochs 1 --pretrain-batch 256 --val-episodes 10 --device cuda --quiet --out "$OUT_DIR/gpu_pretrain_run" \
    2>&1 | tee -a "$OUT_DIR/gpu_check.log"
