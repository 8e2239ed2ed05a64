#!/usr/bin/env bash
# Train and test every CamVid ablation row of docs/results.md (configs/ablation_<row>.toml), one after
# the other. Resumable: a row whose runs/ablation_<row>/test.json exists is skipped, and a row cut off
# mid-training resumes bitwise from its last epoch checkpoint. Then: python tools/ablation_table.py
#   nohup tools/run_ablations.sh > runs/ablations.log 2>&1 &
set -euo pipefail
TDL=${TDL:-.venv/bin/tinydeeplab}
for row in ${ROWS:-os16 class_weights os32 mismatched v3 os8}; do
    run=runs/ablation_$row
    if [[ -f $run/test.json ]]; then echo "== $row: done"; continue; fi
    echo "== $row: train ($(date -u +%H:%M:%S))"
    $TDL train --config configs/ablation_$row.toml      # resumes from $run/checkpoint.npz when one exists
    echo "== $row: test ($(date -u +%H:%M:%S))"
    $TDL evaluate --checkpoint $run/checkpoint.npz --dataset camvid --data ../shared/data/camvid \
        --split test --json $run/test.json --figure $run/test_predictions.png
done
echo "== all rows done ($(date -u +%H:%M:%S))"
