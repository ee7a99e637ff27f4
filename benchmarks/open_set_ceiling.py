"""The ceiling of any checkpoint rule on the open-set splits (docs/open-set.md): train siamkit's recipe on the
training identities exactly as ``siamkit train`` does, but after every epoch score the *test* identities (leave-one-
out over their images of the test file, as ``open_set.py``) — and report the best epoch by the test figure itself.
No rule that looks only at validation identities can keep a better epoch than that oracle; when even the oracle
stays below the target, the recipe (not the checkpoint rule) is what falls short.

``--rotations 4`` also measures a lever for few training identities: each training identity becomes four, one per
quarter turn (a turned T-shirt is told apart from an upright one), as Omniglot's few-class protocols do; 2 uses
half turns only (non-square inputs). One JSON line per split, then one with the means.

    .venv/bin/python benchmarks/open_set_ceiling.py --folds standard
    .venv/bin/python benchmarks/open_set_ceiling.py --folds standard --rotations 4
    .venv/bin/python benchmarks/open_set_ceiling.py --train-classes 0,2,4,6,8 --test-classes 1,3,5,7,9 \
        --set train.lr=2e-4
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

import torch
import torch.nn.functional as F
from common import add_run_arguments, parse_run_arguments
from open_set import STANDARD

from siamkit.config import load_config
from siamkit.data.batch import Batch, LabelBatch
from siamkit.evaluate.evaluator import embed_images, pixel_embeddings
from siamkit.evaluate.metrics import retrieval_metrics
from siamkit.losses.base import SiameseLoss
from siamkit.models.siamese import SiameseNet, build_model
from siamkit.plan import batch_sources, make_loss, prepare_data
from siamkit.training.loop import FitData, FitHooks, fit


class RotatedIdentities:
    """Wraps a loss on labelled batches: every image is turned by a random multiple of ``360/turns`` degrees and
    its label becomes ``label * 4 + quarter turns``, so each identity is ``turns`` identities to tell apart."""

    def __init__(self, loss: SiameseLoss, turns: int, seed: int) -> None:
        self.loss, self.turns, self.step = loss, turns, 4 // turns
        self.gen = torch.Generator().manual_seed(seed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loss, name)

    def _rotated(self, batch: Batch) -> Batch:
        if not isinstance(batch, LabelBatch):
            return batch
        q = torch.randint(0, self.turns, (len(batch.labels),), generator=self.gen) * self.step
        x = batch.x.clone()  # keeps the memory format; each group of one turn is turned at once
        for k in range(self.step, 4, self.step):
            rows = (q == k).to(x.device)
            x[rows] = torch.rot90(batch.x[rows], k, (2, 3))
        return LabelBatch(x, batch.labels * 4 + q.to(batch.labels.device))

    def __call__(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        return self.loss(model, self._rotated(batch))

    def score_all(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """Validation scores the rotated identities too (every valid tuple, as for any loss)."""
        return self.loss.score_all(model, self._rotated(batch))


def run_split(args: argparse.Namespace, train: str, test: str) -> dict[str, Any]:
    overrides = [f"data.source={args.data}", "data.split=identity", f"data.train_classes={train!r}",
                 f"data.test_classes={test!r}", "train.progress=false", "train.patience=0", "train.monitor=val_loss",
                 *args.overrides]  # fmt: skip
    cfg = load_config(None, overrides)
    torch.manual_seed(cfg.train.seed)
    prep = prepare_data(cfg)
    cfg, s = prep.cfg, prep.splits
    model: SiameseNet = build_model(cfg.model, prep.input_shape[0])
    loss = make_loss(cfg, s.n_classes * (4 if args.rotations > 1 else 1), model.embedding_dim)
    train_source, val_source = batch_sources(cfg, loss, s)
    if args.rotations > 1:
        if loss.input_kind != "labels":
            raise SystemExit("--rotations needs a loss on labelled batches (P×K)")
        loss = RotatedIdentities(loss, args.rotations, cfg.train.seed)  # type: ignore[assignment]
    test_images, test_labels = s.test.images.images, s.test.images.labels

    def figures(vectors: torch.Tensor) -> dict[str, float]:
        m = retrieval_metrics(F.normalize(vectors, dim=1), test_labels)
        return {"precision_at_1": round(m["precision_at_1"], 4), "map_at_r": round(m["map_at_r"], 4)}

    def score() -> dict[str, float]:
        return figures(embed_images(model, test_images, prep.preprocess))

    pixels = figures(pixel_embeddings(test_images))
    rows = [{"epoch": 0, **score()}]
    hooks = FitHooks(on_epoch=lambda row: rows.append({"epoch": int(row["epoch"]), **score()}))
    data = FitData(prep.preprocess, s.train.images.images, train_source, s.val.images.images, val_source)
    res = fit(model, loss, cfg.train, data, torch.device("cpu"), hooks=hooks)  # type: ignore[arg-type]
    best = max(rows, key=lambda r: r["map_at_r"])
    return {
        "benchmark": "open_set_ceiling", "recipe": cfg.recipe, "train_classes": train, "test_classes": test,
        "rotations": args.rotations, "overrides": args.overrides, "train_seconds": round(res.train_seconds, 1),
        "pixels": pixels, "epochs": rows, "oracle_epoch": best["epoch"],
        "oracle_map_at_r_over_pixels": round(best["map_at_r"] / pixels["map_at_r"], 3),
        "oracle_precision_at_1_over_pixels": round(best["precision_at_1"] / pixels["precision_at_1"], 3),
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--train-classes")
    p.add_argument("--test-classes")
    p.add_argument("--folds", choices=["standard"])
    p.add_argument("--rotations", type=int, default=1, choices=[1, 2, 4], help="identities per training identity")
    add_run_arguments(p)
    args = parse_run_arguments(p)
    if not args.folds and not (args.train_classes and args.test_classes):
        p.error("give --train-classes and --test-classes, or --folds standard")
    splits = STANDARD if args.folds else [(args.train_classes, args.test_classes)]
    ratios = []
    for train, test in splits:
        line = run_split(args, train, test)
        ratios.append(line["oracle_map_at_r_over_pixels"])
        print(json.dumps(line), flush=True)
    print(json.dumps({"benchmark": "open_set_ceiling", "rotations": args.rotations, "overrides": args.overrides,
                      "oracle_map_at_r_over_pixels": {"mean": round(statistics.fmean(ratios), 3),
                                                      "min": min(ratios), "max": max(ratios)}}))  # fmt: skip


if __name__ == "__main__":
    main()
