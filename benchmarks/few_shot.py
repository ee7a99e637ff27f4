"""Few-shot transfer on a many-identity folder, one run after the other on the same split: N-way K-shot episodes
and MAP@R on identities (and groups) never seen in training, beside the raw pixels, the untrained network and the
descriptor on the same episodes. Prints one JSON line per run.

Runs (``--runs``):
- ``siamkit-default``: ``siamkit train --data FOLDER`` with no options (``recipe: auto``).
- ``siamkit-closed-set`` / ``siamkit-open-set`` / ``siamkit-metric``: the named recipes.
- ``pml-ms``: pytorch-metric-learning's multi-similarity recipe (``MultiSimilarityLoss`` + ``MultiSimilarityMiner``
  on ``MPerClassSampler`` batches) around the same network, data, epochs and evaluation as ``siamkit-default``
  (needs ``pip install pytorch-metric-learning``).

The data defaults to the glyph set written by ``benchmarks/glyphs.py`` (built into a temporary folder when
``--data`` is not given), whose grouped folders give a script-disjoint split.

    .venv/bin/python benchmarks/few_shot.py                                   # default vs PML on fresh glyphs
    .venv/bin/python benchmarks/few_shot.py --data /tmp/glyphs --runs siamkit-default siamkit-closed-set
    .venv/bin/python benchmarks/few_shot.py --data fashion-mnist --set data.split=identity \\
        --set "data.train_classes=0,2,4,6,8" --set "data.test_classes=1,3,5,7,9" --runs siamkit-default
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from typing import Any

import torch
from common import episode_keys, metric_keys
from peers import train_pml

from siamkit.config import load_config
from siamkit.data.glyphs import write_glyph_folders
from siamkit.errors import SiamkitError
from siamkit.training.pipeline import train_run

RUNS = ("siamkit-default", "pml-ms", "siamkit-closed-set", "siamkit-open-set", "siamkit-metric")


def line(run: str, r: dict[str, Any], wall: float, cfg: Any) -> dict[str, Any]:
    test = r["test"]
    out: dict[str, Any] = {
        "benchmark": "few_shot", "run": run, "recipe": cfg.recipe, "loss": cfg.loss.name, "miner": cfg.loss.miner,
        "backbone": cfg.model.backbone, "epochs": cfg.train.epochs, "epochs_run": r.get("epochs_run"),
        "best_epoch": r.get("best_epoch"), "train_seconds": r.get("train_seconds"),
        "images_per_second": r.get("images_per_second"), "wall_seconds": round(wall, 1),
        "identities": {k: len(v) for k, v in (r.get("identities") or {}).items()},
        **metric_keys(test),
    }  # fmt: skip
    for name, b in (r.get("baselines") or {}).items():
        bt = b.get("test") or {}
        out[f"{name}_map_at_r"] = round(bt.get("map_at_r", float("nan")), 4)
        out[f"{name}_episodes"] = episode_keys(bt)
    if "pixels_map_at_r" in out:
        out["map_at_r_over_pixels"] = round(out["map_at_r"] / max(out["pixels_map_at_r"], 1e-12), 2)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="a folder (default: a fresh glyph set), or digits / fashion-mnist")
    p.add_argument("--glyph-seed", type=int, default=0, help="seed of the glyph set built when --data is not given")
    p.add_argument("--runs", nargs="+", choices=RUNS, default=["siamkit-default", "pml-ms"])
    p.add_argument("--epochs", type=int, help="every run (default: the default recipe's own)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = f"{tmp}/glyphs"
            write_glyph_folders(data, seed=args.glyph_seed)
        epochs: int | None = args.epochs
        for run in args.runs:
            overrides = [f"data.source={data}", "train.progress=false", "eval.tsne_points=0", *args.overrides]
            if run.startswith("siamkit-") and run != "siamkit-default":
                overrides.append(f"recipe={run.removeprefix('siamkit-')}")
            if epochs:
                overrides.append(f"train.epochs={epochs}")
            try:
                with tempfile.TemporaryDirectory() as runs:
                    cfg = load_config(None, [*overrides, f"runs_dir={runs}", f"name={run}"])
                    t0 = time.perf_counter()
                    if run == "pml-ms":
                        cfg = pml_config(data, args, epochs, runs)
                        r = train_pml(cfg, channels_last=True, recipe="multi-similarity", with_untrained=False)
                    else:
                        r = train_run(cfg)
                        epochs = epochs or cfg.train.epochs  # PML gets the default's epochs
                    wall = time.perf_counter() - t0
            except (SiamkitError, ImportError) as exc:
                print(f"few_shot.py: error: {run}: {exc}", file=sys.stderr)
                return 2
            print(json.dumps(line(run, r, wall, cfg)), flush=True)
    return 0


def pml_config(data: str, args: argparse.Namespace, epochs: int | None, runs: str) -> Any:
    """PML's run: the default recipe's resolved network, input, split, optimiser, schedule, P×K and epochs (its
    loss and miner are PML's own); with ``--runs pml-ms`` alone, the default recipe as ``auto`` resolves it."""
    from siamkit.data.readers import load_dataset
    from siamkit.data.splits import make_splits
    from siamkit.recipes import apply_recipe

    cfg = load_config(None, [f"data.source={data}", "train.progress=false", "eval.tsne_points=0", *args.overrides,
                             f"runs_dir={runs}", "name=pml-ms"])  # fmt: skip
    splits = make_splits(load_dataset(cfg.data), cfg.data, cfg.train.seed)
    apply_recipe(cfg, splits.method, len(set(splits.train.images.labels.tolist())))
    if epochs:
        cfg.train.epochs = epochs
    return cfg


if __name__ == "__main__":
    raise SystemExit(main())
