"""Fashion-MNIST benchmark: train on the 60k training split (a small validation slice carved from it for
checkpoint selection and the threshold), evaluate on the 10k test split: leave-one-out retrieval and
50k genuine + 50k impostor pairs (seeded). Prints one JSON line.

    .venv/bin/python benchmarks/fashion_mnist.py                      # the default recipe
    .venv/bin/python benchmarks/fashion_mnist.py --loss triplet --set loss.miner=semi-hard
    .venv/bin/python benchmarks/fashion_mnist.py --recipe seed --epochs 3
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

from common import add_run_arguments, metric_keys, parse_run_arguments, protocol_overrides, result_line

from siamkit.config import load_config
from siamkit.errors import SiamkitError
from siamkit.training.pipeline import train_run

RECIPES = {
    "default": [],  # siamkit's defaults: the measured default recipe
    # SPEC §3.2 + source A: seed CNN, one positive + one negative per image, contrastive m = 1, 48-d, Adam 1e-3
    "seed": [
        "model.backbone=seed_cnn",
        "model.embedding_dim=48",
        "model.normalize=false",
        "loss.name=contrastive",
        "loss.params={margin: 1.0}",
        "loss.miner=null",
        "loss.miner_params={}",
        "sampling.pairs=per-image",
        "train.lr=0.001",
        "train.scheduler=none",
    ],
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", choices=sorted(RECIPES), default="default")
    p.add_argument("--loss")
    p.add_argument("--backbone")
    p.add_argument("--epochs", type=int, help="default: the recipe's (siamkit's default: 10)")
    p.add_argument("--data", default="fashion-mnist", help="fashion-mnist or a folder with its IDX files")
    p.add_argument("--val-fraction", type=float, default=0.05)
    add_run_arguments(p)
    args = parse_run_arguments(p)
    overrides = [*protocol_overrides(args.data, args.val_fraction, args.pairs), *RECIPES[args.recipe]]
    if args.epochs:
        overrides.append(f"train.epochs={args.epochs}")
    if args.loss:
        overrides.append(f"loss.name={args.loss}")
    if args.backbone:
        overrides.append(f"model.backbone={args.backbone}")
    overrides += args.overrides
    try:
        with tempfile.TemporaryDirectory() as runs:
            cfg = load_config(None, [*overrides, f"runs_dir={runs}", f"name=bench-{args.recipe}"])
            t0 = time.perf_counter()
            r = train_run(cfg)
            wall = time.perf_counter() - t0
    except SiamkitError as exc:
        print(f"fashion_mnist.py: error: {exc}", file=sys.stderr)
        return 2
    line = {**result_line("fashion_mnist", args.recipe, cfg, r, wall), "overrides": args.overrides}
    line["baselines"] = {name: metric_keys(b["test"]) for name, b in r.get("baselines", {}).items()}
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
