"""siamkit against pytorch-metric-learning (PML) on Fashion-MNIST, one run after the other, under the protocol
of ``benchmarks/fashion_mnist.py`` (train on 60k less a 5 % validation slice, evaluate on the 10k test split).

- ``pml``: the same backbone and embedding head as siamkit's default, trained the way PML's examples do it:
  ``TripletMarginLoss(margin=0.2)`` + ``TripletMarginMiner(margin=0.2, type_of_triplets="semihard")`` on
  ``MPerClassSampler`` batches (m = K images per class) from a ``DataLoader``; same optimiser, schedule, epochs,
  and the same checkpoint choice (the epoch with the best validation MAP@R).
- ``siamkit-triplet``: the same loss and miner in siamkit (``triplet`` + ``semi-hard`` on P×K batches).
- ``siamkit-default``: siamkit's default recipe.

Prints one JSON line per run. Needs ``pip install pytorch-metric-learning`` (an optional benchmark dependency).

    .venv/bin/python benchmarks/peers.py
    .venv/bin/python benchmarks/peers.py --runs pml siamkit-triplet --epochs 3
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import protocol_overrides, result_line

from siamkit.config import RunConfig, load_config
from siamkit.devices import resolve_device
from siamkit.errors import SiamkitError
from siamkit.evaluate.run import evaluate_prepared
from siamkit.models.siamese import build_model, count_parameters
from siamkit.plan import prepare_data
from siamkit.training.optim import build_optimizer, build_scheduler
from siamkit.training.pipeline import retrieval_monitor, train_run

RUNS = ("pml", "siamkit-triplet", "siamkit-default")
TRIPLET = ["loss.name=triplet", "loss.params={margin: 0.2}", "loss.miner=semi-hard", "loss.miner_params={margin: 0.2}"]


def train_pml(
    cfg: RunConfig, channels_last: bool, recipe: str = "triplet", with_untrained: bool = False
) -> dict[str, Any]:
    """PML's loss, miner and sampler around siamkit's data, model and evaluation. ``recipe``: ``triplet``
    (``TripletMarginLoss(0.2)`` + semi-hard ``TripletMarginMiner``) or ``multi-similarity``
    (``MultiSimilarityLoss()`` + ``MultiSimilarityMiner()``, both at PML's defaults: α 2, β 50, base 0.5, ε 0.1)."""
    from pytorch_metric_learning import losses, miners, samplers
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(cfg.train.seed)
    prep = prepare_data(cfg)
    cfg = prep.cfg
    device = resolve_device(cfg.train.device)
    model = build_model(cfg.model, prep.input_shape[0]).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    train = prep.splits.train.images
    labels = torch.from_numpy(train.labels)
    batch_size = cfg.sampling.p * cfg.sampling.k
    sampler = samplers.MPerClassSampler(labels, m=cfg.sampling.k, batch_size=batch_size,
                                        length_before_new_iter=len(labels))  # fmt: skip
    loader = DataLoader(TensorDataset(train.images, labels), batch_size=batch_size, sampler=sampler, drop_last=True)
    if recipe == "multi-similarity":
        loss_func, miner = losses.MultiSimilarityLoss(), miners.MultiSimilarityMiner()
    else:
        loss_func = losses.TripletMarginLoss(margin=0.2)
        miner = miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")
    opt = build_optimizer(model.parameters(), cfg.train)
    sched = build_scheduler(opt, cfg.train)
    seconds, seen = 0.0, 0
    # the best epoch by validation MAP@R, as PML's tester hooks keep it, and as siamkit's train.monitor=auto does
    monitor = retrieval_monitor(prep, device)
    assert monitor is not None
    best_map, best_epoch, best_state = -1.0, 0, None
    model.train()
    for epoch in range(1, cfg.train.epochs + 1):
        t0 = time.perf_counter()
        for x, y in loader:
            x = prep.preprocess(x.to(device)).contiguous(memory_format=fmt)
            y = y.to(device)
            emb = model.embed(x)
            loss = loss_func(emb, y, miner(emb, y))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(x)
        if sched is not None:
            sched.step()
        seconds += time.perf_counter() - t0
        if not math.isfinite(float(loss.detach())):
            raise FloatingPointError("PML loss became non-finite")
        val_map = monitor(model)["map_at_r"]
        model.train()
        if val_map > best_map:
            best_map, best_epoch = val_map, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert best_state is not None
    model.load_state_dict(best_state)
    model.to(memory_format=torch.contiguous_format)
    untrained = build_model(cfg.model, prep.input_shape[0]) if with_untrained else None
    with tempfile.TemporaryDirectory() as out:
        metrics = evaluate_prepared(model, prep, device, threshold=None, out_dir=Path(out), untrained=untrained)
    return {**metrics, "trainable_parameters": count_parameters(model), "epochs_run": cfg.train.epochs,
            "best_epoch": best_epoch,
            "train_seconds": round(seconds, 2), "images_per_second": round(seen / seconds, 1)}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    p.add_argument("--epochs", type=int, help="default: siamkit's default recipe's")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--pairs", type=int, default=50000)
    p.add_argument("--pml-channels-last", action="store_true",
                   help="give the PML run siamkit's channels-last format too (isolates that speed-up)")  # fmt: skip
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    base = protocol_overrides(args.data, args.val_fraction, args.pairs)
    if args.epochs:
        base.append(f"train.epochs={args.epochs}")
    for run in args.runs:
        overrides = [*base, *(TRIPLET if run != "siamkit-default" else []), *args.overrides]
        try:
            with tempfile.TemporaryDirectory() as runs:
                cfg = load_config(None, [*overrides, f"runs_dir={runs}", f"name={run}"])
                t0 = time.perf_counter()
                r = train_pml(cfg, args.pml_channels_last) if run == "pml" else train_run(cfg)
                wall = time.perf_counter() - t0
        except (SiamkitError, ImportError) as exc:
            print(f"peers.py: error: {run}: {exc}", file=sys.stderr)
            return 2
        line = result_line("peers", run, cfg, r, wall)
        if run == "pml":
            line.update(sampler="MPerClassSampler", pml_channels_last=args.pml_channels_last)
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
