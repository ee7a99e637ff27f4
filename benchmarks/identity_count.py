"""How many training identities a learned similarity needs before it beats the descriptor on new ones: the
measurement behind ``recipe: auto``'s ``MIN_METRIC_IDENTITIES``. One split of a many-identity folder (default: a
fresh glyph set, script-disjoint); the validation and test identities stay fixed and the training identities are
a seeded random subset of N. Per N and recipe, one JSON line: validation and test MAP@R and 5-/20-way 1-shot of
the trained model, beside the descriptor's and the pixels' on the same identities.

    .venv/bin/python benchmarks/identity_count.py --counts 5,10,20,40,80,160 --recipes metric,open-set
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from typing import Any

import numpy as np

from siamkit.config import load_config
from siamkit.data.glyphs import write_glyph_folders
from siamkit.data.readers import load_dataset
from siamkit.data.splits import make_splits
from siamkit.training.pipeline import train_run


def figures(m: dict[str, Any]) -> dict[str, Any]:
    e = m.get("episodes") or {}
    return {"map_at_r": round(m["map_at_r"], 4),
            **{k: round(v["accuracy"], 4) for k, v in e.items() if "accuracy" in v}}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="a grouped or class-per-folder folder (default: a fresh glyph set)")
    p.add_argument("--counts", default="5,10,20,40,80,160")
    p.add_argument("--recipes", default="metric,open-set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or f"{tmp}/glyphs"
        if args.data is None:
            write_glyph_folders(data, seed=args.seed)
        base = load_config(None, [f"data.source={data}"])
        bundle = load_dataset(base.data)
        splits = make_splits(bundle, base.data, base.train.seed)
        assert splits.identities is not None, "needs an identity split"
        names = bundle.images.class_names
        index = {n: i for i, n in enumerate(names)}
        ids = {part: [index[n] for n in v] for part, v in splits.identities.items()}
        rng = np.random.default_rng(args.seed)
        order = rng.permutation(ids["train"])
        for n in (int(c) for c in args.counts.split(",")):
            train = sorted(order[:n].tolist())
            for recipe in args.recipes.split(","):
                overrides = [
                    f"data.source={data}", f"recipe={recipe}", "data.split=identity", "train.progress=false",
                    "eval.tsne_points=0", f"data.train_classes={','.join(map(str, train))}",
                    f"data.val_classes={','.join(map(str, ids['validation']))}",
                    f"data.test_classes={','.join(map(str, ids['test']))}", *args.overrides,
                ]  # fmt: skip
                with tempfile.TemporaryDirectory() as runs:
                    cfg = load_config(None, [*overrides, f"runs_dir={runs}", "name=run"])
                    t0 = time.perf_counter()
                    r = train_run(cfg)
                    wall = time.perf_counter() - t0
                base_m = r["baselines"]
                print(json.dumps({
                    "benchmark": "identity_count", "train_identities": n, "recipe": recipe,
                    "best_epoch": r["best_epoch"], "images_per_second": r["images_per_second"],
                    "wall_seconds": round(wall, 1),
                    "validation": figures(r["validation"]), "test": figures(r["test"]),
                    "descriptor_validation": figures(base_m["descriptor"]["validation"]),
                    "descriptor_test": figures(base_m["descriptor"]["test"]),
                    "pixels_test": figures(base_m["pixels"]["test"]),
                }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
