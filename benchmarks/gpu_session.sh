#!/usr/bin/env bash
# The GPU checks of one lent-GPU session, in one call (see benchmarks/README.md). Run from the repository root on a
# machine whose python3 has a CUDA build of JAX, with CHAOSGD_DATA pointing at a folder that holds mnist/.
# Writes logs and results under $OUT: engine throughput against cuBLAS's float64 GEMM, GPU-vs-CPU agreement, and
# the paper-scale mnist-tanh sweep (stopped after $SWEEP_DEADLINE seconds from the start of this script; the run
# folder comes back as a tarball and can be resumed anywhere).
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
begin=$(date +%s)
python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
timeout 150 python3 benchmarks/engine_throughput.py --ks 6 60 240 --loop-ks 6 --epochs 20 --repeats 3 \
    --out "$OUT/engine_throughput_gpu.json" > "$OUT/engine.log" 2>&1
echo "engine benchmark exit $?"; tail -6 "$OUT/engine.log"
timeout 150 python3 benchmarks/gpu_agreement.py --out "$OUT/gpu_agreement.json" > "$OUT/agreement.log" 2>&1
echo "agreement exit $?"; grep -v '^ *[][0-9.e-]*,\?$' "$OUT/agreement.log" | tail -30
left=$(( ${SWEEP_DEADLINE:-480} - ($(date +%s) - begin) ))
echo "sweep: $left s left"
start=$(date +%s)
timeout "$left" python3 -m chaosgd.cli sweep mnist-tanh --device gpu --out /tmp/mnist-tanh --quiet \
    > "$OUT/sweep.log" 2>&1
echo "sweep exit $? after $(( $(date +%s) - start )) s"
tail -25 "$OUT/sweep.log"
ls /tmp/mnist-tanh/tasks | grep -c npz
tar czf "$OUT/mnist-tanh-run.tar.gz" -C /tmp mnist-tanh
ls -la "$OUT"
