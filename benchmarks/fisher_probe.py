"""What FDT/FDC training does to the embedding, epoch by epoch (docs/loss-comparison.md).

On the validation split (at most 2,000 images) after every epoch: the mean norm of the features ``o`` and of the
projection ``z = o·U`` the loss trains, the effective rank of ``z`` ((Σσ)² / Σσ² of its centred singular values),
and leave-one-out P@1 and MAP@R of ``z``. Epoch 0 is the initial network. Prints one JSON line.

    .venv/bin/python benchmarks/fisher_probe.py --set loss.name=fdt --set loss.miner=batch-hard --epochs 5
    .venv/bin/python benchmarks/fisher_probe.py --set loss.name=fdt --set "loss.params={lam: 1.0}" --epochs 5
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from siamkit.config import load_config
from siamkit.evaluate.metrics import retrieval_metrics
from siamkit.models.siamese import SiameseNet
from siamkit.plan import prepare
from siamkit.training.loop import FitData, FitHooks, fit


def probe(model: SiameseNet, images: torch.Tensor, labels, preprocess) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        o = model.features(preprocess(images))
        z = o @ model.head.weight.T
    model.train()
    sv = torch.linalg.svdvals(z - z.mean(0))
    r = retrieval_metrics(z, labels, (1,))
    return {
        "o_norm": round(float(o.norm(dim=1).mean()), 4),
        "z_norm": round(float(z.norm(dim=1).mean()), 4),
        "effective_rank": round(float(sv.sum() ** 2 / (sv**2).sum()), 2),
        "precision_at_1": round(r["precision_at_1"], 4),
        "map_at_r": round(r["map_at_r"], 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    overrides = ["train.progress=false", "train.patience=0", "train.monitor=val_loss", f"train.epochs={args.epochs}",
                 *args.overrides]  # fmt: skip
    cfg = load_config(None, overrides)
    plan = prepare(cfg)
    cfg, prep, model, loss = plan.cfg, plan.prepared, plan.model, plan.loss
    s = prep.splits
    train_source, val_source = plan.train_batches, plan.val_batches
    images, labels = s.val.images.images[:2000], s.val.images.labels[:2000]
    rows = [{"epoch": 0, **probe(model, images, labels, prep.preprocess)}]

    def on_epoch(row: dict[str, float]) -> None:
        rows.append({"epoch": int(row["epoch"]), "train_loss": round(row["train_loss"], 4),
                     **probe(model, images, labels, prep.preprocess)})  # fmt: skip

    t0 = time.perf_counter()
    data = FitData(prep.preprocess, s.train.images.images, train_source, s.val.images.images, val_source)
    fit(model, loss, cfg.train, data, torch.device("cpu"), hooks=FitHooks(on_epoch=on_epoch))
    print(json.dumps({"benchmark": "fisher_probe", "dataset": prep.bundle.name, "overrides": args.overrides,
                      "seconds": round(time.perf_counter() - t0, 1), "epochs": rows}))  # fmt: skip


if __name__ == "__main__":
    main()
