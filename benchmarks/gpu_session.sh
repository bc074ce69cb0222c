#!/usr/bin/env bash
# The GPU checks of one lent-GPU session, in one call (see benchmarks/README.md), within $BUDGET seconds (default
# 520). Run from the repository root on a machine whose python3 has a CUDA build of JAX, with CHAOSGD_DATA pointing
# at a folder that holds mnist/. Stages, each stopped at its deadline (sweeps and grids resume where they stopped;
# the boundary stage picks grids that fit its time, and has 60 s of grace for its images):
#   1. the engine against the float64 product of cuBLAS (same-run limit) at K = 60 and 240, and where an epoch goes
#      (a profile of the device's kernels);
#   2. the full mnist-tanh preset at paper scale, 50 initial conditions per task (one task per learning rate);
#   3. the trainability boundary at the largest grids that fit (benchmarks/boundary_gpu.py);
#   4. the mnist-sigmoid preset at paper scale (figure 9) in the time left.
# Writes under $OUT (at most 8 files): session.log, results.tar.gz (the small results and the run folders without
# their task files) and each sweep's tasks/ as tasks-NAME.tar.xz.NN pieces of < 16 MB.
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT" /tmp/gpu/results
export PYTHONPATH=$PWD/src:$PWD/benchmarks PYTHONUNBUFFERED=1
R=/tmp/gpu/results
begin=$(date +%s)
left() { echo $(( $1 - ($(date +%s) - begin) )); }
stage() { echo; echo "== $1 at $(( $(date +%s) - begin )) s"; }
BUDGET=${BUDGET:-520}

stage environment
python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv

stage engine
timeout $(( BUDGET * 21 / 100 )) python3 benchmarks/engine_throughput.py --ks 60 240 --loop-ks 0 --epochs 20 --repeats 3 \
    --out "$R/engine_throughput_gpu.json" > "$R/engine.log" 2>&1
echo "engine benchmark exit $?"; tail -4 "$R/engine.log"
timeout $(( BUDGET * 12 / 100 )) python3 benchmarks/engine_profile.py --k 240 --epochs 5 --top 20 > "$R/engine_profile.log" 2>&1
echo "profile exit $?"; tail -22 "$R/engine_profile.log"

sweep() {  # name, deadline (seconds from the start)
    local t; t=$(left "$2")
    if [ "$t" -lt 30 ]; then echo "$1: no time left"; return; fi
    local start; start=$(date +%s)
    # Each compilation logged with its time (2026-12-04: tasks whose copies stop at several epochs ran 2-5 times
    # slower per network-epoch than the others, cause not yet measured).
    JAX_LOG_COMPILES=1 timeout "$t" python3 -m chaosgd.cli sweep "$1" --device gpu --block 50 --out "/tmp/gpu/$1" \
        --quiet > "$R/$1-sweep.log" 2>&1
    echo "$1 exit $? after $(( $(date +%s) - start )) s (limit $t s); compilations logged:" \
        "$(grep -c 'Finished XLA compilation' "$R/$1-sweep.log")"
    grep -v 'compil' "$R/$1-sweep.log" | tail -22
    echo "task files: $(ls /tmp/gpu/$1/tasks 2>/dev/null | grep -c 'npz$')"
}

stage mnist-tanh
sweep mnist-tanh $(( BUDGET * 7 / 10 ))

stage boundary
t=$(left $(( BUDGET * 88 / 100 )))
if [ "$t" -gt 20 ]; then
    timeout $(( t + 60 )) python3 benchmarks/boundary_gpu.py --seconds "$t" --out "$R/boundary" \
        --cache /tmp/gpu/boundary-cache > "$R/boundary.log" 2>&1
    echo "boundary exit $?"; grep -v '%|' "$R/boundary.log" | tail -8
fi

stage mnist-sigmoid
sweep mnist-sigmoid $(( BUDGET - 25 ))

stage pack
for name in mnist-tanh mnist-sigmoid; do
    [ -d "/tmp/gpu/$name/tasks" ] || continue
    tar cf - -C "/tmp/gpu/$name" tasks | xz -T0 -3 | split -b 15900000 -d - "$OUT/tasks-$name.tar.xz."
    mkdir -p "$R/$name" && find "/tmp/gpu/$name" -maxdepth 1 -type f -exec cp {} "$R/$name/" \;
done
tar czf "$OUT/results.tar.gz" -C /tmp/gpu results
ls -la "$OUT"
echo "done at $(( $(date +%s) - begin )) s"
