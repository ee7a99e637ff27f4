"""The fit loop (SPEC §5): optimiser, scheduler, best-validation checkpoint, early stopping, resume.

No global state: everything arrives as arguments, so the same loop can run per process under DDP.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from siamkit.config import TrainConfig
from siamkit.data.batch import LabelBatch
from siamkit.data.cache import ImageArray
from siamkit.data.transforms import Preprocess
from siamkit.devices import keep_freed_memory
from siamkit.distributed import (
    SINGLE,
    DistInfo,
    Gatherer,
    all_reduce_sum,
    convert_sync_batchnorm,
    gather_objects,
    wrap_model,
)
from siamkit.errors import ConfigError, TrainingError
from siamkit.losses.base import SiameseLoss
from siamkit.losses.miners import AllPairs, AllTriplets
from siamkit.models.siamese import SiameseNet
from siamkit.models.transfer import param_groups
from siamkit.registry import Registry
from siamkit.training.batches import BatchSource, ClassBatches, ShardedBatches, make_batch
from siamkit.training.checkpoint import load_state, save_state

log = logging.getLogger(__name__)
MONITORS = ("auto", "val_loss", "map_at_r", "precision_at_1")
ValMetrics = Callable[[SiameseNet], dict[str, float]]


def resolve_monitor(name: str, has_metrics: bool) -> str:
    """The quantity that selects the checkpoint: ``auto`` → ``map_at_r`` when retrieval metrics exist."""
    if name not in MONITORS:
        raise ConfigError(f"unknown train.monitor {name!r}; choose one of: {', '.join(MONITORS)}")
    if name == "auto":
        return "map_at_r" if has_metrics else "val_loss"
    if name != "val_loss" and not has_metrics:
        raise ConfigError(
            f"train.monitor={name} needs class labels on the validation images (this data has none); use val_loss"
        )
    return name


OPTIMIZERS: Registry[torch.optim.Optimizer] = Registry("train.optimizer")
"""``train.optimizer``: factories ``(params, cfg: TrainConfig) → Optimizer`` (``lr``, ``weight_decay``,
``momentum`` from the config)."""
SCHEDULERS: Registry[torch.optim.lr_scheduler.LRScheduler | None] = Registry("train.scheduler")
"""``train.scheduler``: factories ``(optimizer, cfg: TrainConfig) → LRScheduler | None``, stepped once per epoch."""


@OPTIMIZERS.register("adam")
def _adam(params: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam (Kingma & Ba, 2015) with L2 weight decay. Every optimiser here uses PyTorch's multi-tensor
    (``foreach``) update on every device — one call per step over all parameters, the default only on CUDA."""
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)


@OPTIMIZERS.register("adamw")
def _adamw(params: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (Loshchilov & Hutter, 2019): decoupled weight decay."""
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)


@OPTIMIZERS.register("sgd")
def _sgd(params: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with (heavy-ball) momentum ``train.momentum``."""
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True)


@SCHEDULERS.register("none")
def _constant(opt: torch.optim.Optimizer, cfg: TrainConfig) -> None:
    return None


@SCHEDULERS.register("step")
def _step(opt: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """lr_t = lr_0·γ^⌊t / step_size⌋."""
    return torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)


@SCHEDULERS.register("exponential")
def _exponential(opt: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """lr_t = lr_0·γ^t."""
    return torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.gamma)


@SCHEDULERS.register("cosine")
def _cosine(opt: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine annealing to 0 over ``train.epochs`` (Loshchilov & Hutter, 2017, without restarts)."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))


def build_optimizer(params: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser ``cfg.optimizer`` (registered in ``OPTIMIZERS``) over ``params``."""
    return OPTIMIZERS.get(cfg.optimizer)(params, cfg)


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The learning-rate schedule ``cfg.scheduler`` (registered in ``SCHEDULERS``), or None for a constant rate."""
    return SCHEDULERS.get(cfg.scheduler)(opt, cfg)


@dataclass
class FitData:
    """What a fit trains and validates on: uint8 images ``(N, C, H, W)`` with the batch plans over them
    (``training.batches``), and the preprocessing (normalisation; augmentation of training batches)."""

    preprocess: Preprocess
    train_images: ImageArray
    train_source: BatchSource
    val_images: ImageArray
    val_source: BatchSource


@dataclass
class FitHooks:
    """Callbacks of a fit: ``val_metrics(model)`` (retrieval metrics on the validation split, for
    ``train.monitor``), ``on_best(model, epoch, val_loss)`` when a new best epoch is kept, ``on_epoch(row)`` after
    every epoch (a study's pruner raises from it)."""

    val_metrics: ValMetrics | None = None
    on_best: Callable[[SiameseNet, int, float], None] | None = None
    on_epoch: Callable[[dict[str, float]], None] | None = None


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    """The validation loss of the kept epoch."""
    monitor: str = "val_loss"
    best_score: float = math.inf
    """The monitored value of the kept epoch, as minimised (a retrieval metric negated)."""
    train_seconds: float = 0.0
    images_seen: int = 0
    stopped_early: bool = False
    initial_score: float | None = None
    """The monitored value of the initial weights (epoch 0), as minimised; None when not measured."""

    @property
    def images_per_second(self) -> float:
        return self.images_seen / self.train_seconds if self.train_seconds > 0 else 0.0


@torch.no_grad()
def validation_loss(
    model: SiameseNet, loss_fn: SiameseLoss, images: ImageArray, source: BatchSource, preprocess: Preprocess,
    device: torch.device, channels_last: bool = False,
) -> float:  # fmt: skip
    """Mean loss over the fixed validation batches, in eval mode, never augmented.

    A mining loss is scored over *every* valid tuple of each batch (the ``all`` / ``all-pairs`` miner): the
    average over the tuples a miner keeps is no yardstick, since as the model improves fewer, harder tuples
    are kept (batch-all, semi-hard) and that average can rise."""
    model.eval()
    miner, gather = loss_fn.miner, loss_fn.gather
    loss_fn.gather = None  # every rank scores the whole validation plan itself
    if miner is not None:
        loss_fn.miner = AllTriplets() if miner.output == "triplets" else AllPairs()
    total, n = 0.0, 0
    try:
        for b in source.plan(0):
            batch = make_batch(images, b, preprocess, device, train=False, channels_last=channels_last)
            total += float(loss_fn(model, batch)) * len(b.index)
            n += len(b.index)
    finally:
        loss_fn.miner, loss_fn.gather = miner, gather
        model.train()
    return total / max(n, 1)


def fit(
    model: SiameseNet, loss_fn: SiameseLoss, cfg: TrainConfig, data: FitData, device: torch.device,
    hooks: FitHooks | None = None, state_path: Path | None = None, resume: bool = False,
    dist_info: DistInfo | None = None,
) -> FitResult:  # fmt: skip
    """Train ``model`` for ``cfg.epochs``; keep (and restore at the end) the weights of the best epoch by
    ``cfg.monitor`` (the validation loss, or a retrieval metric that ``val_metrics`` computes on the validation
    split); stop after ``cfg.patience`` epochs without improvement. With ``resume`` and an existing
    ``state_path``, continue from the last finished epoch.

    Distributed (``dist_info.enabled``, under torchrun): the model trains inside DistributedDataParallel, each
    rank on its share of every global batch, and the loss sees the rows of all ranks; only rank 0 writes
    ``state_path`` and calls ``on_best``. ``on_epoch(row)`` sees every epoch's history row (a study's pruner
    raises from it to stop a hopeless trial)."""
    from tqdm import tqdm

    preprocess, train_images, train_source = data.preprocess, data.train_images, data.train_source
    val_images, val_source = data.val_images, data.val_source
    hooks = hooks or FitHooks()
    val_metrics, on_best, on_epoch = hooks.val_metrics, hooks.on_best, hooks.on_epoch
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    if cfg.keep_freed_memory and device.type == "cpu":
        keep_freed_memory()
    model.to(device)
    model.to(memory_format=fmt)
    loss_fn.to(device)
    if cfg.unfreeze_epoch and not cfg.freeze_backbone:
        raise ConfigError("train.unfreeze_epoch is set but train.freeze_backbone is false; set both or neither")
    info = dist_info or SINGLE
    if cfg.sync_batchnorm and info.enabled:
        model = convert_sync_batchnorm(model, device)  # type: ignore[assignment]
    if cfg.freeze_backbone:
        model.freeze_backbone()
    if not any(p.requires_grad for p in [*model.parameters(), *loss_fn.parameters()]):
        raise ConfigError(
            "the model has nothing to train (model.embedding_dim=0 and a backbone without trainable "
            "parameters): set model.embedding_dim above 0 for a trained head, or train the backbone "
            "(train.freeze_backbone=false; for hog, backbone_args residual: true)"
        )
    opt = build_optimizer(param_groups(model, cfg.lr, cfg.backbone_lr, list(loss_fn.parameters())), cfg)
    if info.enabled:
        loss_fn.gather = Gatherer(info)
        if isinstance(train_source, ClassBatches) and train_source.sampler.p % info.world_size:
            log.warning("sampling.p=%d is not divisible by the world size %d: ranks share classes in a batch",
                        train_source.sampler.p, info.world_size)  # fmt: skip
        train_source = ShardedBatches(train_source, info.rank, info.world_size)
    sched = build_scheduler(opt, cfg)
    # mixed precision (train.amp): float16 with a gradient scaler on a GPU, bfloat16 on the CPU; evaluation stays
    # in float32
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler("cuda") if cfg.amp and device.type == "cuda" else None
    result = FitResult(monitor=resolve_monitor(cfg.monitor, val_metrics is not None))
    best_state = copy.deepcopy(model.state_dict())
    bad_epochs, start_epoch = 0, 1
    if resume and state_path is not None and state_path.is_file():
        st = load_state(state_path)
        model.load_state_dict(st["model"])
        loss_fn.load_state_dict(st["loss"])
        opt.load_state_dict(st["optimizer"])
        if sched is not None and st.get("scheduler"):
            sched.load_state_dict(st["scheduler"])
        if scaler is not None and st.get("scaler"):
            scaler.load_state_dict(st["scaler"])
        best_state = st["best_model"]
        result.history = list(st["history"])
        result.best_epoch, result.best_val_loss = int(st["best_epoch"]), float(st["best_val_loss"])
        result.best_score = float(st.get("best_score", result.best_val_loss))
        result.train_seconds, result.images_seen = float(st["train_seconds"]), int(st["images_seen"])
        bad_epochs, start_epoch = int(st["bad_epochs"]), int(st["epoch"]) + 1
        _restore_rng(st.get("rng"), preprocess, info)
        log.info("resumed from %s at epoch %d", state_path, start_epoch)
    ssl = loss_fn.self_supervised
    if ssl is not None and preprocess.augment is None:
        raise ConfigError("loss.ssl_weight needs two different views of each image: set data.augment.enabled=true")
    if val_metrics is not None and start_epoch == 1 and result.monitor != "val_loss":
        # the initial weights are a candidate too: on identities never trained on, training can make things
        # worse, and then the honest choice is the model before it (said at the end)
        result.initial_score = -val_metrics(model)[result.monitor]
        result.best_score = result.initial_score
        log.info("epoch 0 (initial weights): val %s %.4f", result.monitor, -result.initial_score)
    model.train()
    train_model: Any = wrap_model(model, info, device) if info.enabled else model
    for epoch in range(start_epoch, cfg.epochs + 1):
        if cfg.patience and bad_epochs >= cfg.patience:
            result.stopped_early = True
            break
        if (
            cfg.freeze_backbone
            and cfg.unfreeze_epoch
            and epoch >= cfg.unfreeze_epoch
            and epoch in (cfg.unfreeze_epoch, start_epoch)
        ):
            model.unfreeze_backbone(cfg.unfreeze_stages)
            if info.enabled:  # DDP synchronises the parameters that trained when it was built: build it anew
                train_model = wrap_model(model, info, device)
            log.info("epoch %d: backbone unfrozen (%s)", epoch,
                     f"last {cfg.unfreeze_stages} stages" if cfg.unfreeze_stages else "all stages")  # fmt: skip
        t0 = time.perf_counter()
        plan = train_source.plan(epoch)
        total, n, n_images = torch.zeros((), device=device), 0, 0
        bar = tqdm(
            plan, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", leave=False,
            disable=None if cfg.progress and info.is_main else True,
        )  # fmt: skip
        for b in bar:
            batch = make_batch(train_images, b, preprocess, device, train=True, channels_last=cfg.channels_last,
                               second_view=ssl is not None)  # fmt: skip
            with torch.autocast(device.type, dtype=amp_dtype, enabled=cfg.amp):
                loss = loss_fn(train_model, batch)
                if ssl is not None and isinstance(batch, LabelBatch) and batch.view is not None:
                    loss = loss + ssl(train_model, batch.x, batch.view)
            if not torch.isfinite(loss):
                raise TrainingError(f"the loss became {float(loss)} at epoch {epoch}: training diverged; lower "
                                    f"train.lr (now {cfg.lr:g})")  # fmt: skip
            opt.zero_grad(set_to_none=True)
            if scaler is not None:  # float16 gradients: scaled against underflow, unscaled before the step
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            total += loss.detach() * len(b.index)  # summed on the device: no sync per step
            n += len(b.index)
            n_images += b.n_images
            if bar.n % 20 == 0:
                bar.set_postfix(loss=f"{float(total) / n:.4f}")
        lr = opt.param_groups[0]["lr"]
        if sched is not None:
            sched.step()
        train_seconds = time.perf_counter() - t0
        result.train_seconds += train_seconds
        result.images_seen += int(all_reduce_sum(n_images, device))  # every rank's images
        val = validation_loss(model, loss_fn, val_images, val_source, preprocess, device, cfg.channels_last)
        row = {"epoch": epoch, "train_loss": float(total) / max(n, 1), "val_loss": val}
        if val_metrics is not None:
            row.update({f"val_{k}": v for k, v in val_metrics(model).items()})
            model.train()
        row.update({"lr": lr, "seconds": train_seconds})
        result.history.append(row)
        score = val if result.monitor == "val_loss" else -row[f"val_{result.monitor}"]
        shown = "" if result.monitor == "val_loss" else f"  val {result.monitor} {-score:.4f}"
        log.info("epoch %d: train %.4f  val %.4f%s  (%.1fs)", epoch, row["train_loss"], val, shown, train_seconds)
        if score < result.best_score:
            result.best_score, result.best_val_loss, result.best_epoch, bad_epochs = score, val, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
            if on_best is not None and info.is_main:
                on_best(model, epoch, val)
        else:
            bad_epochs += 1
        if on_epoch is not None:
            on_epoch(row)
        rng = gather_objects(_rng_state(preprocess))  # every rank's draws, so that a resumed run continues them
        if state_path is not None and info.is_main:
            save_state(state_path, {
                "rng": rng,
                "model": model.state_dict(), "loss": loss_fn.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict() if sched is not None else {}, "best_model": best_state,
                "scaler": scaler.state_dict() if scaler is not None else {},
                "history": result.history, "best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
                "best_score": result.best_score,
                "train_seconds": result.train_seconds, "images_seen": result.images_seen,
                "bad_epochs": bad_epochs, "epoch": epoch,
            })  # fmt: skip
    if cfg.patience and bad_epochs >= cfg.patience and not result.stopped_early and len(result.history) < cfg.epochs:
        result.stopped_early = True
    if result.stopped_early and result.history:
        log.info("stopped early at epoch %d: no gain in %d epochs on validation %s (best: epoch %d; "
                 "train.patience=%d, 0 turns this off)", result.history[-1]["epoch"], cfg.patience,
                 _monitor_name(result.monitor),
                 result.best_epoch, cfg.patience)  # fmt: skip
    if result.best_epoch == 0 and result.history:
        log.warning("no epoch beat the initial weights on validation %s: keeping the untrained network — training "
                    "did not generalise to the validation identities (try fewer epochs, a lower train.lr, "
                    "augmentation or loss.ssl_weight)", result.monitor)  # fmt: skip
    model.load_state_dict(best_state)
    model.to(memory_format=fmt)  # as a reloaded checkpoint is (runs.artifact.load_run): identical evaluation numbers
    return result


def _rng_state(preprocess: Preprocess) -> dict[str, Any]:
    """This process's random state: torch's CPU (and CUDA) generators (dropout, mining ties) and the augmentation
    generator. Batch plans are seeded per epoch and need none."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "augment": preprocess.rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(states: list[dict[str, Any]] | None, preprocess: Preprocess, info: DistInfo) -> None:
    """Put back the random state saved after the last finished epoch, this rank's own: 2 epochs, a crash and a
    resumed third are then the same run as 3 uninterrupted epochs."""
    if not states:
        log.warning("the checkpoint holds no random state (written by an older siamkit): the resumed epochs draw "
                    "other augmentations and dropout masks than an uninterrupted run would")  # fmt: skip
        return
    if len(states) != info.world_size:
        log.warning("the checkpoint was written by %d processes and is resumed by %d: random draws restart",
                    len(states), info.world_size)  # fmt: skip
        return
    st = states[info.rank]
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])
    preprocess.set_rng_state(st["augment"])


def count_trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _monitor_name(monitor: str) -> str:
    """``map_at_r`` as a person writes it: MAP@R (``precision_at_1``: P@1)."""
    return {"map_at_r": "MAP@R", "precision_at_1": "P@1", "val_loss": "loss"}.get(monitor, monitor)
