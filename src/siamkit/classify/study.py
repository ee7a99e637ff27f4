"""The CIFAR-10 block-CNN classification study (SPEC §3.3, §7): train BaseCNN with a block string under Adam
and ExponentialLR, keep the best-validation-accuracy weights, and write a run directory with every figure;
``compare`` runs a family of block strings under one budget and tabulates them.

Data: ``cifar10`` (the cache, ``$SIAMKIT_CIFAR10`` or a download), a folder of CIFAR-10 python batches, or
``fashion-mnist``, the offline stand-in (padded to 32×32, three channels; the output says so). Validation is a
fixed count per class carved from the training set (1,000 in source B); augmentation (preset ``cifar``, SPEC
§2.5) is applied to training batches only.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from siamkit.classify import figures
from siamkit.data.cache import ImageArray
from siamkit.data.cifar import STAND_IN_NOTE, fashion_stand_in, load_cifar10
from siamkit.data.imageset import ImageSet
from siamkit.data.readers import read_fashion_mnist
from siamkit.data.splits import split_indices
from siamkit.data.transforms import CIFAR10_MEAN, CIFAR10_STD, Preprocess, augment_preset, channel_stats
from siamkit.devices import resolve_device
from siamkit.errors import ConfigError, DataError
from siamkit.evaluate import plots
from siamkit.files import atomic_write_csv, atomic_write_text
from siamkit.models.blocks import BaseCNN, parse_blocks
from siamkit.models.siamese import count_parameters
from siamkit.report import write_report
from siamkit.rundir import RunDir
from siamkit.training.checkpoint import save_weights

log = logging.getLogger(__name__)


@dataclass
class ClassifyConfig:
    blocks: str = "AAAAAAAA"
    data: str = "cifar10"
    """``cifar10``, a folder of CIFAR-10 python batches, or ``fashion-mnist`` (the offline stand-in)."""
    val_per_class: int = 1000
    limit: int | None = None
    """Train on the first N images of the training part only (quick runs)."""
    epochs: int = 20
    budget_seconds: float | None = None
    """Stop training once this many seconds of training have passed (checked after every batch)."""
    batch_size: int = 64
    lr: float = 1e-3
    gamma: float = 0.95
    """ExponentialLR: lr_t = lr·γ^t, stepped per epoch."""
    augment: str = "cifar"
    seed: int = 0
    device: str = "auto"
    channels_last: bool = True
    runs_dir: str = "runs"
    name: str | None = None
    tsne_points: int = 1000
    test_limit: int | None = None
    """Score test accuracy on the first N test images only (None: all of them)."""
    progress: bool = True

    def __post_init__(self) -> None:
        parse_blocks(self.blocks)
        augment_preset(self.augment)
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("classify: --epochs and --batch-size must be at least 1")


@dataclass
class StudyData:
    name: str
    train: ImageSet
    val: ImageSet
    test: ImageSet | None
    mean: list[float]
    std: list[float]
    note: str | None


@dataclass
class Trained:
    """What training left: the model with its best-validation-accuracy weights loaded, the class ``names``, the
    per-epoch ``history``, and the budget used (``seconds`` of training, ``seen`` images, ``out_of_time``)."""

    model: BaseCNN
    names: list[str]
    history: list[dict[str, float]]
    best_acc: float
    best_epoch: int
    seconds: float
    seen: int
    out_of_time: bool


def load_study_data(cfg: ClassifyConfig) -> StudyData:
    note = None
    if cfg.data == "fashion-mnist":
        train, test = read_fashion_mnist()
        train, test = fashion_stand_in(train), fashion_stand_in(test) if test is not None else None
        note = STAND_IN_NOTE
    else:
        train, test = load_cifar10(None if cfg.data == "cifar10" else cfg.data)
    rng = np.random.default_rng(cfg.seed)
    keep, held = split_indices(train.labels, "per-class", 0.0, cfg.val_per_class, rng)
    tr, val = train.subset(keep), train.subset(held)
    if cfg.limit is not None:
        tr = tr.subset(rng.permutation(len(tr))[: cfg.limit])
    if len(np.unique(tr.labels)) < 2:
        raise DataError("classify: the training part holds fewer than 2 classes; raise --limit")
    if note is None:
        mean, std = list(CIFAR10_MEAN), list(CIFAR10_STD)
    else:
        mean, std = channel_stats(tr.images)
    return StudyData("fashion-mnist-32 (stand-in)" if note else "cifar10", tr, val, test, mean, std, note)


@torch.no_grad()
def predict(model: BaseCNN, images: ImageArray, pre: Preprocess, device: torch.device, bs: int = 256) -> Any:
    """Logits and penultimate features of ``images`` (uint8), in eval mode."""
    model.eval()
    logits, feats = [], []
    for i in range(0, len(images), bs):
        x = pre(images[i : i + bs].to(device))
        f = model.features(x)
        feats.append(f.cpu())
        logits.append(model.classifier(f).cpu() if model.classifier is not None else f.cpu())
    return torch.cat(logits), torch.cat(feats)


def confusion(true: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(true * n + pred, minlength=n * n).reshape(n, n)


def most_confused(cm: np.ndarray) -> tuple[int, int, int]:
    """The unordered class pair with the most mistakes either way: (a, b, count)."""
    off = cm + cm.T
    np.fill_diagonal(off, -1)
    a, b = np.unravel_index(int(off.argmax()), off.shape)
    return int(min(a, b)), int(max(a, b)), int(off[a, b])


def train_classifier(cfg: ClassifyConfig, data: StudyData | None = None) -> dict[str, Any]:
    """Train one BaseCNN; write the run directory; return its metrics."""
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    data = data or load_study_data(cfg)
    names = data.train.class_names or [str(i) for i in range(int(data.train.labels.max()) + 1)]
    n_classes = max(len(names), int(data.train.labels.max()) + 1)
    out = Path(cfg.runs_dir) / (cfg.name or f"classify-{cfg.blocks}")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RunDir(out).config, yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    if data.note:
        log.warning("%s", data.note)
    device = resolve_device(cfg.device)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = BaseCNN(cfg.blocks, n_classes, in_channels=data.train.shape[0]).to(device).to(memory_format=fmt)
    aug = augment_preset(cfg.augment)
    pre_train = Preprocess(data.mean, data.std, aug, seed=cfg.seed)
    pre_eval = Preprocess(data.mean, data.std)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.gamma)
    x_all, y_all = data.train.images, torch.from_numpy(data.train.labels)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict[str, float]] = []
    best_acc, best_epoch, best_state = -1.0, 0, None
    seconds, seen, out_of_time = 0.0, 0, False
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        perm = torch.randperm(len(x_all), generator=gen)
        t0 = time.perf_counter()
        loss_sum, correct, n = 0.0, 0, 0
        steps = range(0, len(perm), cfg.batch_size)
        for i in tqdm(steps, desc=f"{cfg.blocks} epoch {epoch}", leave=False, disable=None if cfg.progress else True):
            idx = perm[i : i + cfg.batch_size]
            x = pre_train(x_all[idx].to(device), train=True).contiguous(memory_format=fmt)
            y = y_all[idx].to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            n += len(idx)
            if cfg.budget_seconds is not None and seconds + time.perf_counter() - t0 >= cfg.budget_seconds:
                out_of_time = True
                break
        sched.step()
        seconds += time.perf_counter() - t0
        seen += n
        val_logits, _ = predict(model, data.val.images, pre_eval, device)
        val_y = torch.from_numpy(data.val.labels)
        val_loss = float(F.cross_entropy(val_logits, val_y))
        val_acc = float((val_logits.argmax(1) == val_y).float().mean())
        history.append({"epoch": epoch, "train_loss": loss_sum / max(n, 1), "train_accuracy": correct / max(n, 1),
                        "val_loss": val_loss, "val_accuracy": val_acc, "lr": opt.param_groups[0]["lr"] / cfg.gamma,
                        "seconds": round(time.perf_counter() - t0, 2), "images": n})  # fmt: skip
        log.info("%s epoch %d: train acc %.4f  val acc %.4f  (%d images)", cfg.blocks, epoch,
                 history[-1]["train_accuracy"], val_acc, n)  # fmt: skip
        if val_acc > best_acc:
            best_acc, best_epoch = val_acc, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if out_of_time:
            log.info("%s: training budget of %.0f s reached in epoch %d", cfg.blocks, cfg.budget_seconds, epoch)
            break
    assert best_state is not None
    model.load_state_dict(best_state)
    model.to(memory_format=torch.contiguous_format)
    trained = Trained(model, names, history, best_acc=best_acc, best_epoch=best_epoch, seconds=seconds, seen=seen,
                      out_of_time=out_of_time)  # fmt: skip
    return _finish(cfg, data, trained, device, out)


def _finish(cfg: ClassifyConfig, data: StudyData, trained: Trained, device: torch.device, out: Path) -> dict[str, Any]:
    """Score the kept model on validation (and test), save it, its history, figures, metrics and report."""
    model, names, history, seconds = trained.model, trained.names, trained.history, trained.seconds
    pre_eval = Preprocess(data.mean, data.std)
    val_logits, val_feats = predict(model, data.val.images, pre_eval, device)
    pred = val_logits.argmax(1).numpy()
    cm = confusion(data.val.labels, pred, len(names))
    a, b, count = most_confused(cm)
    metrics: dict[str, Any] = {
        "blocks": cfg.blocks, "dataset": data.name, "note": data.note,
        "trainable_parameters": count_parameters(model), "train_seconds": round(seconds, 2),
        "images_per_second": round(trained.seen / seconds, 1) if seconds else 0.0, "epochs_run": len(history),
        "budget_reached": trained.out_of_time, "best_epoch": trained.best_epoch,
        "best_val_accuracy": round(trained.best_acc, 4),
        "most_confused": {"classes": [a, b], "names": [names[a], names[b]], "count": count},
        "confusion_matrix": cm.tolist(), "class_names": names,
        "split_sizes": {"train": len(data.train), "validation": len(data.val)},
    }  # fmt: skip
    if data.test is not None and cfg.test_limit != 0:
        n_test = len(data.test) if cfg.test_limit is None else min(cfg.test_limit, len(data.test))
        test_logits, _ = predict(model, data.test.images[:n_test], pre_eval, device)
        metrics["test_accuracy"] = round(float((test_logits.argmax(1).numpy() == data.test.labels[:n_test]).mean()), 4)
        metrics["test_images"] = n_test
    save_weights(model, RunDir(out).weights, {
        "format": "siamkit-classifier-v1", "blocks": cfg.blocks, "num_classes": str(len(names)),
        "input_shape": json.dumps(list(data.train.shape)), "mean": json.dumps(data.mean), "std": json.dumps(data.std),
    })  # fmt: skip
    atomic_write_csv(RunDir(out).history, list(history[0]), history)
    _figures(cfg, data, trained, cm=cm, val_feats=val_feats.numpy(), out=out)
    atomic_write_text(RunDir(out).metrics, json.dumps(metrics, indent=2) + "\n")
    write_report(out)
    return {"run_dir": str(out), **metrics}


FIGURES = ("curves.png", "confusion.png", "tsne.png", "feature_maps.png", "samples.png", "val_classes.png",
           "augment.png")  # fmt: skip


def _figures(
    cfg: ClassifyConfig, data: StudyData, trained: Trained, *, cm: np.ndarray, val_feats: np.ndarray, out: Path
) -> None:  # fmt: skip
    """The run's figures (``FIGURES``): curves, confusion, t-SNE of ``val_feats``, feature maps, samples, classes,
    augmentations."""
    model, names, history = trained.model, trained.names, trained.history
    rng = np.random.default_rng(cfg.seed)
    figures.plot_curves(history, out / "curves.png")
    figures.plot_confusion(cm, names, out / "confusion.png")
    pick = np.sort(rng.permutation(len(val_feats))[: cfg.tsne_points])
    title = f"t-SNE of penultimate features ({len(pick)} validation images)"
    points = plots.tsne_2d(val_feats[pick], cfg.seed)
    plots.plot_embedding_map(points, data.val.labels[pick], out / "tsne.png", title, names)
    pre = Preprocess(data.mean, data.std)
    figures.plot_feature_maps(model, pre(data.val.images[:1]), out / "feature_maps.png")
    grid = rng.permutation(len(data.train))[:32]
    suffix = f" — {data.note}" if data.note else ""
    figures.plot_image_grid(data.train.images[torch.from_numpy(grid)], data.train.labels[grid], names,
                            out / "samples.png", f"Random training images{suffix}")  # fmt: skip
    figures.plot_class_distribution(data.val.labels, names, out / "val_classes.png", "Validation class distribution")
    aug = augment_preset(cfg.augment)
    one = data.train.images[:1]
    if aug.enabled:
        from siamkit.data.transforms import BatchAugment

        augmenter = BatchAugment(aug, torch.Generator().manual_seed(cfg.seed))
        previews = augmenter(one.expand(7, -1, -1, -1).float() / 255.0)
    else:
        previews = one.float() / 255.0
    figures.plot_augmentations(one[0], previews, out / "augment.png")


def compare(cfg: ClassifyConfig, block_list: list[str]) -> dict[str, Any]:
    """Train each block string under ``cfg`` (one budget for all) on the same data; write ``compare.csv``,
    ``compare.json`` and ``compare.md`` under ``runs_dir/<name>``."""
    data = load_study_data(cfg)
    base = Path(cfg.runs_dir) / (cfg.name or "classify-compare")
    rows = []
    for blocks in block_list:
        one = dataclasses.replace(cfg, blocks=blocks, runs_dir=str(base), name=blocks)
        r = train_classifier(one, data)
        rows.append({
            "block": blocks, "params": r["trainable_parameters"], "train_seconds": r["train_seconds"],
            "epochs": r["epochs_run"], "best_val_accuracy": r["best_val_accuracy"],
            "most_confused": "↔".join(r["most_confused"]["names"]), "confused_count": r["most_confused"]["count"],
        })  # fmt: skip
    result = {"dataset": data.name, "note": data.note, "budget_seconds": cfg.budget_seconds, "epochs": cfg.epochs,
              "limit": cfg.limit, "rows": rows, "dir": str(base)}  # fmt: skip
    atomic_write_csv(base / "compare.csv", list(rows[0]), rows)
    atomic_write_text(base / "compare.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(base / "compare.md", compare_table(result, markdown=True) + "\n")
    return result


def compare_table(result: dict[str, Any], markdown: bool = False) -> str:
    from siamkit.tables import markdown_table, text_table

    head = ["block", "params", "time (s)", "epochs", "best val acc", "most confused pair"]
    rows = [[r["block"], f"{r['params']:,}", f"{r['train_seconds']:.1f}", str(r["epochs"]),
             f"{r['best_val_accuracy']:.4f}", f"{r['most_confused']} ({r['confused_count']})"]
            for r in result["rows"]]  # fmt: skip
    notes = [f"dataset: {result['dataset']}"] + ([result["note"]] if result.get("note") else [])
    return "\n".join([*notes, (markdown_table if markdown else text_table)(head, rows)])
