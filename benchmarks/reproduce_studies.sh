#!/usr/bin/env bash
# Reproduces the sources' two studies on Fashion-MNIST with a fixed CPU budget and copies the tables the
# commands write into docs/studies/ (issue "Studies and reports"):
#   - seed-003 (source C): triplet and contrastive losses × margins 0.1, 1, 10; TPR at FPR on train and validation
#   - seed-002 (source B): random search over lr, margin, StepLR step_size and gamma, and epochs
# Budget: 20,000 training images, the default convnet; see docs/studies/README.md.
#   bash benchmarks/reproduce_studies.sh [RUNS_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs/studies}
SK=.venv/bin/siamkit
COMMON=(--data fashion-mnist --runs-dir "$RUNS" --set data.limit=20000 --set data.val_fraction=0.1
        --set eval.n_pairs=20000 --set train.progress=false -q)
$SK study margins --name seed003-margins --losses triplet contrastive --margins 0.1 1 10 --epochs 3 "${COMMON[@]}"
cp "$RUNS/seed003-margins/tables.md" docs/studies/seed003-margins.md
$SK study search --name seed002-random --strategy random --trials 8 --seed 2 \
  --param train.lr=0.0001,0.001,0.01 --param loss.params.margin=0.5,1,2 --param train.step_size=1,2 \
  --param train.gamma=0.1,0.5 --param train.epochs=2,3 --set train.scheduler=step \
  --set loss.miner=all-pairs "${COMMON[@]}"
cp "$RUNS/seed002-random/tables.md" docs/studies/seed002-random.md
