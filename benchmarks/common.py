"""Shared by the Fashion-MNIST benchmarks: the protocol's config overrides and the JSON result line."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from siamkit.config import RunConfig


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """--pairs, --threads and --set, shared by the training benchmarks."""
    p.add_argument("--pairs", type=int, default=50000, help="genuine and impostor evaluation pairs, each")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")


def parse_run_arguments(p: argparse.ArgumentParser) -> argparse.Namespace:
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def protocol_overrides(data: str, val_fraction: float, pairs: int) -> list[str]:
    """Train on the 60k training split less a validation slice; evaluate on the 10k test split."""
    return [f"data.source={data}", f"data.val_fraction={val_fraction}", f"eval.n_pairs={pairs}", "train.progress=false"]


def result_line(benchmark: str, recipe: str, cfg: RunConfig, r: dict[str, Any], wall: float) -> dict[str, Any]:
    """One JSON-able line: recipe, speed and the test-split metrics of a finished run."""
    test = r["test"]
    return {
        "benchmark": benchmark, "recipe": recipe, "loss": cfg.loss.name, "loss_params": cfg.loss.params,
        "miner": cfg.loss.miner, "miner_params": cfg.loss.miner_params, "backbone": cfg.model.backbone,
        "embedding_dim": cfg.model.embedding_dim, "trainable_parameters": r["trainable_parameters"],
        "epochs_run": r["epochs_run"], "best_epoch": r.get("best_epoch"), "train_seconds": r["train_seconds"],
        "images_per_second": r["images_per_second"], "wall_seconds": round(wall, 1),
        "torch_threads": torch.get_num_threads(),
        **metric_keys(test),
        "tpr_at_fpr_conservative": {str(t["fpr"]): round(t["tpr_conservative"], 4) for t in test["tpr_at_fpr"]},
        "n_genuine": test["n_genuine"], "n_impostor": test["n_impostor"],
    }  # fmt: skip


def metric_keys(test: dict[str, Any]) -> dict[str, Any]:
    """The headline test metrics of a run or a baseline, rounded."""
    return {
        "precision_at_1": round(test["precision_at_1"], 4), "r_precision": round(test["r_precision"], 4),
        "map_at_r": round(test["map_at_r"], 4), "auc": round(test["auc"], 4), "eer": round(test["eer"], 4),
        "tpr_at_fpr": {str(t["fpr"]): round(t["tpr_interpolated"], 4) for t in test["tpr_at_fpr"]},
        "verification_accuracy": round(test["verification_accuracy"], 4), "episodes": episode_keys(test),
    }  # fmt: skip


def episode_keys(test: dict[str, Any]) -> dict[str, float]:
    """The N-way K-shot accuracies of a split's metrics (``"20way1shot": 0.95``, …), rounded."""
    return {k: round(v["accuracy"], 4) for k, v in (test.get("episodes") or {}).items() if "accuracy" in v}
