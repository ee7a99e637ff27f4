"""Open-set benchmark (SPEC §10): train on some classes, evaluate on classes never seen in training, beside the
raw-pixel and untrained-network baselines on the same protocol. Validation identities (checkpoint, early
stopping, threshold) are carved from the training classes unless --val-classes names them; for sources with test
files of their own (Fashion-MNIST, IDX, CIFAR-10) the test identities' images come from those files. Prints one
JSON line.

    .venv/bin/python benchmarks/open_set.py --train-classes 0,2,4,6,8 --test-classes 1,3,5,7,9
    .venv/bin/python benchmarks/open_set.py --data digits --train-classes 5,6,7,8,9 --test-classes 0,1,2,3,4
    .venv/bin/python benchmarks/open_set.py --folds 3                    # 3 seeded random half/half splits
    .venv/bin/python benchmarks/open_set.py --folds standard             # even→odd, odd→even, 5–9→0–4
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np
from common import add_run_arguments, metric_keys, parse_run_arguments, result_line

from siamkit.config import load_config
from siamkit.errors import SiamkitError
from siamkit.training.pipeline import train_run

STANDARD = [("0,2,4,6,8", "1,3,5,7,9"), ("1,3,5,7,9", "0,2,4,6,8"), ("5,6,7,8,9", "0,1,2,3,4")]
SUMMARY_KEYS = ("precision_at_1", "map_at_r", "auc", "verification_accuracy", "verification_accuracy_best")


def run_split(args: argparse.Namespace, train: str, test: str, val: str | None) -> dict[str, Any]:
    overrides = [
        f"data.source={args.data}", "data.split=identity", f"data.train_classes={train!r}",
        f"data.test_classes={test!r}", f"eval.n_pairs={args.pairs}", "train.progress=false", "eval.tsne_points=0",
    ]  # fmt: skip
    if val:
        overrides.append(f"data.val_classes={val!r}")
    if args.epochs:
        overrides.append(f"train.epochs={args.epochs}")
    overrides += args.overrides
    with tempfile.TemporaryDirectory() as runs:
        cfg = load_config(None, [*overrides, f"runs_dir={runs}", "name=open-set"])
        t0 = time.perf_counter()
        r = train_run(cfg)
        wall = time.perf_counter() - t0
    line = result_line("open_set", cfg.recipe, cfg, r, wall)
    line["verification_accuracy_best"] = round(r["test"]["verification_accuracy_best"], 4)
    line["identities"] = r.get("identities")
    line["baselines"] = {name: metric_keys(b["test"]) for name, b in r["baselines"].items()}
    line["overrides"] = args.overrides
    return line


def fold_splits(args: argparse.Namespace) -> list[tuple[str, str]]:
    if args.folds == "standard":
        return STANDARD
    k = int(args.folds)
    n = args.classes
    splits = []
    for i in range(k):
        perm = np.random.default_rng(1000 + i).permutation(n)
        test, train = sorted(perm[: n // 2].tolist()), sorted(perm[n // 2 :].tolist())
        splits.append((",".join(map(str, train)), ",".join(map(str, test))))
    return splits


def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": round(statistics.fmean(values), 4), "std": round(statistics.pstdev(values), 4)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="fashion-mnist", help="fashion-mnist, digits, cifar10 or a folder")
    p.add_argument("--train-classes", help="names or indices, comma-separated")
    p.add_argument("--val-classes", help="default: carved from the training classes (data.val_fraction, ≥ 2)")
    p.add_argument("--test-classes")
    p.add_argument("--folds", help="'standard' (even→odd, odd→even, 5–9→0–4) or K seeded random half/half splits")
    p.add_argument("--classes", type=int, default=10, help="--folds K: how many classes the data has")
    p.add_argument("--epochs", type=int, help="default: siamkit's")
    add_run_arguments(p)
    args = parse_run_arguments(p)
    if not args.folds and not (args.train_classes and args.test_classes):
        p.error("give --train-classes and --test-classes, or --folds")
    try:
        if not args.folds:
            print(json.dumps(run_split(args, args.train_classes, args.test_classes, args.val_classes)))
            return 0
        lines = [run_split(args, train, test, None) for train, test in fold_splits(args)]
    except SiamkitError as exc:
        print(f"open_set.py: error: {exc}", file=sys.stderr)
        return 2
    summary: dict[str, Any] = {k: mean_std([ln[k] for ln in lines]) for k in SUMMARY_KEYS}
    summary["tpr_at_fpr"] = {f: mean_std([ln["tpr_at_fpr"][f] for ln in lines]) for f in lines[0]["tpr_at_fpr"]}
    summary["baselines"] = {
        name: {k: mean_std([ln["baselines"][name][k] for ln in lines]) for k in ("precision_at_1", "map_at_r", "auc")}
        for name in lines[0]["baselines"]
    }
    summary["train_seconds"] = mean_std([ln["train_seconds"] for ln in lines])
    print(json.dumps({"benchmark": "open_set_folds", "folds": len(lines), "overrides": args.overrides,
                      "summary": summary, "runs": lines}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
