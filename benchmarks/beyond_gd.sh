#!/usr/bin/env bash
# The paper's open problems on a CPU, as the README's "Beyond full-batch gradient descent" table reports them: the
# presets mnist-sgd (eta x batch size), mnist-momentum (eta x beta) and mnist-adam (eta x batch size) at quick
# scale. Each holds its full-batch baseline (batch 10,000 = the whole quick training set; beta = 0). Resumable:
# rerun to finish. Each run's results.csv and config.toml are copied to benchmarks/results/beyond/; reports stay in
# the run folders. The summary table: .venv/bin/python benchmarks/reproduction_summary.py benchmarks/results/beyond
#
# Run:  DATA=<folder holding mnist/> RUNS=<output folder, default runs> bash benchmarks/beyond_gd.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DATA:?set DATA to a folder holding mnist/}"
RUNS=${RUNS:-runs}
CHAOSGD=${CHAOSGD:-.venv/bin/chaosgd}
OUT=benchmarks/results/beyond
mkdir -p "$OUT"
for preset in mnist-momentum mnist-sgd mnist-adam; do
  "$CHAOSGD" sweep "$preset" --quick --data-dir "$DATA" --out "$RUNS/$preset-quick" --quiet
  cp "$RUNS/$preset-quick/results.csv" "$OUT/$preset-quick-results.csv"
  cp "$RUNS/$preset-quick/config.toml" "$OUT/$preset-quick-config.toml"
done
# SGD with B = 100 recorded every step (100 records an epoch; 10 a epoch leave its exponents unresolved from
# eta = 2.5): 3 epochs, eta = 1, 2.5, 5.
"$CHAOSGD" sweep mnist-sgd --quick --data-dir "$DATA" --name mnist-sgd-b100-every-step --set training.axis=none \
  --set 'training.axis_values=[]' --set training.batch_size=100 --set training.records_per_epoch=100 \
  --set training.epochs=3 --set 'training.etas=[1, 2.5, 5]' --out "$RUNS/mnist-sgd-b100-every-step" --quiet
cp "$RUNS/mnist-sgd-b100-every-step/results.csv" "$OUT/mnist-sgd-b100-every-step-results.csv"
cp "$RUNS/mnist-sgd-b100-every-step/config.toml" "$OUT/mnist-sgd-b100-every-step-config.toml"
