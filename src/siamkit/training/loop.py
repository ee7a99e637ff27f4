"""The fit loop (SPEC §5): best-validation checkpoint, early stopping, resume (optimisers and schedules: ``optim``).

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
from siamkit.models.siamese import SiameseNet
from siamkit.models.transfer import param_groups
from siamkit.training.batches import BatchSource, ClassBatches, ShardedBatches, make_batch
from siamkit.training.checkpoint import load_state, save_state
from siamkit.training.optim import build_optimizer, build_scheduler

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
    *, device: torch.device, channels_last: bool = False,
) -> float:  # fmt: skip
    """Mean loss over the fixed validation batches, in eval mode, never augmented.

    Each batch is scored by ``loss_fn.score_all``: a mining loss over *every* valid tuple of the batch (the
    ``all`` / ``all-pairs`` miner; the average over the tuples a miner keeps is no yardstick, since as the model
    improves fewer, harder tuples are kept and that average can rise), and on this rank's rows alone (every
    rank scores the whole validation plan itself). No graph is built: nothing backpropagates from it."""
    model.eval()
    total, n = 0.0, 0
    try:
        for b in source.plan(0):
            batch = make_batch(images, b, preprocess, device, train=False, channels_last=channels_last)
            with torch.no_grad():
                total += float(loss_fn.score_all(model, batch)) * len(b.index)
            n += len(b.index)
    finally:
        model.train()
    return total / max(n, 1)


def fit(
    model: SiameseNet, loss_fn: SiameseLoss, cfg: TrainConfig, data: FitData, device: torch.device,
    *, hooks: FitHooks | None = None, state_path: Path | None = None, resume: bool = False,
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
    info, hooks = dist_info or SINGLE, hooks or FitHooks()
    state = TrainState.start(model, loss_fn, cfg, device, info, hooks=hooks)
    train_source = _shard(data.train_source, info)
    if resume and state_path is not None and state_path.is_file():
        state.restore(load_state(state_path), data.preprocess, info)
        log.info("resumed from %s at epoch %d", state_path, state.epoch + 1)
    if loss_fn.self_supervised is not None and data.preprocess.augment is None:
        raise ConfigError("loss.ssl_weight needs two different views of each image: set data.augment.enabled=true")
    if hooks.val_metrics is not None and state.epoch == 0 and state.result.monitor != "val_loss":
        state.score_initial(hooks.val_metrics)  # the initial weights are a candidate too (said at the end)
    state.model.train()
    train_model: Any = wrap_model(state.model, info, device) if info.enabled else state.model
    first = state.epoch + 1
    for epoch in range(first, cfg.epochs + 1):
        if cfg.patience and state.bad_epochs >= cfg.patience:
            state.result.stopped_early = True
            break
        if _unfreezes(cfg, epoch, first):
            train_model = _unfreeze(state.model, train_model, stages=cfg.unfreeze_stages, epoch=epoch, device=device,
                                    info=info)  # fmt: skip
        row = _train_epoch(state, train_model, data, train_source, epoch=epoch, device=device,
                           progress=cfg.progress and info.is_main)  # fmt: skip
        row = _validate(state, row, data, hooks.val_metrics, device)
        state.end_epoch(row, hooks.on_best if info.is_main else None)
        if hooks.on_epoch is not None:
            hooks.on_epoch(row)
        rng = gather_objects(_rng_state(data.preprocess))  # every rank's draws, so that a resume continues them
        if state_path is not None and info.is_main:
            save_state(state_path, state.checkpoint(rng))
    return state.finish()


@dataclass
class TrainState:
    """A fit in progress: what it trains, how, and everything a resumed run continues from (its checkpoint,
    written after every epoch, is :meth:`checkpoint`)."""

    model: SiameseNet
    loss_fn: SiameseLoss
    cfg: TrainConfig
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler | None
    scaler: torch.amp.GradScaler | None
    result: FitResult
    best_state: dict[str, Any]
    bad_epochs: int = 0
    epoch: int = 0
    """The last finished epoch."""

    @classmethod
    def start(
        cls, model: SiameseNet, loss_fn: SiameseLoss, cfg: TrainConfig, device: torch.device, info: DistInfo,
        *, hooks: FitHooks,
    ) -> TrainState:  # fmt: skip
        """The model on ``device`` (frozen backbone, synchronised BatchNorm as configured) with a new optimiser,
        schedule and gradient scaler; the checks that need the built model."""
        if cfg.keep_freed_memory and device.type == "cpu":
            keep_freed_memory()
        model.to(device)
        model.to(memory_format=_memory_format(cfg))
        loss_fn.to(device)
        if cfg.unfreeze_epoch and not cfg.freeze_backbone:
            raise ConfigError("train.unfreeze_epoch is set but train.freeze_backbone is false; set both or neither")
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
        # mixed precision (train.amp): float16 with a gradient scaler on a GPU, bfloat16 on the CPU; evaluation
        # stays in float32
        scaler = torch.amp.GradScaler("cuda") if cfg.amp and device.type == "cuda" else None
        result = FitResult(monitor=resolve_monitor(cfg.monitor, hooks.val_metrics is not None))
        return cls(model, loss_fn, cfg, opt, build_scheduler(opt, cfg), scaler, result,
                   copy.deepcopy(model.state_dict()))  # fmt: skip

    def restore(self, st: dict[str, Any], preprocess: Preprocess, info: DistInfo) -> None:
        """Continue from checkpoint ``st`` (written by :meth:`checkpoint`), random state included."""
        self.model.load_state_dict(st["model"])
        self.loss_fn.load_state_dict(st["loss"])
        self.opt.load_state_dict(st["optimizer"])
        if self.sched is not None and st.get("scheduler"):
            self.sched.load_state_dict(st["scheduler"])
        if self.scaler is not None and st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        self.best_state = st["best_model"]
        r = self.result
        r.history = list(st["history"])
        r.best_epoch, r.best_val_loss = int(st["best_epoch"]), float(st["best_val_loss"])
        r.best_score = float(st.get("best_score", r.best_val_loss))
        r.train_seconds, r.images_seen = float(st["train_seconds"]), int(st["images_seen"])
        self.bad_epochs, self.epoch = int(st["bad_epochs"]), int(st["epoch"])
        _restore_rng(st.get("rng"), preprocess, info)

    def checkpoint(self, rng: list[dict[str, Any]]) -> dict[str, Any]:
        """What :meth:`restore` continues from (``rng``: every rank's random state)."""
        r = self.result
        return {
            "rng": rng,
            "model": self.model.state_dict(), "loss": self.loss_fn.state_dict(), "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict() if self.sched is not None else {}, "best_model": self.best_state,
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "history": r.history, "best_epoch": r.best_epoch, "best_val_loss": r.best_val_loss,
            "best_score": r.best_score, "train_seconds": r.train_seconds, "images_seen": r.images_seen,
            "bad_epochs": self.bad_epochs, "epoch": self.epoch,
        }  # fmt: skip

    def score_initial(self, val_metrics: ValMetrics) -> None:
        """Epoch 0: the initial weights' monitored score, the one to beat. On identities never trained on,
        training can make things worse, and then the honest choice is the model before it."""
        r = self.result
        r.initial_score = r.best_score = -val_metrics(self.model)[r.monitor]
        log.info("epoch 0 (initial weights): val %s %.4f", r.monitor, -r.initial_score)

    def end_epoch(self, row: dict[str, float], on_best: Callable[[SiameseNet, int, float], None] | None) -> None:
        """Log the epoch's row, keep its weights when its monitored score is the best yet (and call
        ``on_best``), count it towards early stopping otherwise."""
        r, epoch = self.result, int(row["epoch"])
        r.history.append(row)
        score = row["val_loss"] if r.monitor == "val_loss" else -row[f"val_{r.monitor}"]
        shown = "" if r.monitor == "val_loss" else f"  val {r.monitor} {-score:.4f}"
        log.info("epoch %d: train %.4f  val %.4f%s  (%.1fs)", epoch, row["train_loss"], row["val_loss"], shown,
                 row["seconds"])  # fmt: skip
        if score < r.best_score:
            r.best_score, r.best_val_loss, r.best_epoch, self.bad_epochs = score, row["val_loss"], epoch, 0
            self.best_state = copy.deepcopy(self.model.state_dict())
            if on_best is not None:
                on_best(self.model, epoch, row["val_loss"])
        else:
            self.bad_epochs += 1
        self.epoch = epoch

    def finish(self) -> FitResult:
        """The kept epoch's weights put back, and what the fit ended with said."""
        r, cfg = self.result, self.cfg
        if cfg.patience and self.bad_epochs >= cfg.patience and not r.stopped_early and len(r.history) < cfg.epochs:
            r.stopped_early = True
        if r.stopped_early and r.history:
            log.info("stopped early at epoch %d: no gain in %d epochs on validation %s (best: epoch %d; "
                     "train.patience=%d, 0 turns this off)", r.history[-1]["epoch"], cfg.patience,
                     _monitor_name(r.monitor), r.best_epoch, cfg.patience)  # fmt: skip
        if r.best_epoch == 0 and r.history:
            log.warning("no epoch beat the initial weights on validation %s: keeping the untrained network — "
                        "training did not generalise to the validation identities (try fewer epochs, a lower "
                        "train.lr, augmentation or loss.ssl_weight)", r.monitor)  # fmt: skip
        self.model.load_state_dict(self.best_state)
        # as a reloaded checkpoint is (runs.artifact.load_run): identical evaluation numbers
        self.model.to(memory_format=_memory_format(cfg))
        return r


def _memory_format(cfg: TrainConfig) -> torch.memory_format:
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


def _shard(source: BatchSource, info: DistInfo) -> BatchSource:
    """This rank's share of every global batch (the source itself on one process)."""
    if not info.enabled:
        return source
    if isinstance(source, ClassBatches) and source.sampler.p % info.world_size:
        log.warning("sampling.p=%d is not divisible by the world size %d: ranks share classes in a batch",
                    source.sampler.p, info.world_size)  # fmt: skip
    return ShardedBatches(source, info.rank, info.world_size)


def _unfreezes(cfg: TrainConfig, epoch: int, first: int) -> bool:
    """Whether the frozen backbone starts training at ``epoch``: ``train.unfreeze_epoch``, or the ``first``
    epoch of a run resumed past it."""
    return bool(cfg.freeze_backbone and cfg.unfreeze_epoch and epoch >= cfg.unfreeze_epoch
                and epoch in (cfg.unfreeze_epoch, first))  # fmt: skip


def _unfreeze(
    model: SiameseNet, train_model: Any, *, stages: int, epoch: int, device: torch.device, info: DistInfo
) -> Any:  # fmt: skip
    """The backbone's last ``stages`` stages (0: all) train too from now; under DDP the wrapper is rebuilt (it
    synchronises the parameters that trained when it was built)."""
    model.unfreeze_backbone(stages)
    log.info("epoch %d: backbone unfrozen (%s)", epoch,
             f"last {stages} stages" if stages else "all stages")  # fmt: skip
    return wrap_model(model, info, device) if info.enabled else train_model


def _train_epoch(
    state: TrainState, train_model: Any, data: FitData, source: BatchSource, *, epoch: int, device: torch.device,
    progress: bool,
) -> dict[str, float]:  # fmt: skip
    """One pass over the epoch's batch plan: forward, loss (plus the self-supervised term), backward, step; the
    schedule steps after it. The row of the epoch's history so far (mean training loss, rate, seconds)."""
    from tqdm import tqdm

    cfg, loss_fn, opt, scaler = state.cfg, state.loss_fn, state.opt, state.scaler
    ssl = loss_fn.self_supervised
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    t0 = time.perf_counter()
    total, n, n_images = torch.zeros((), device=device), 0, 0
    ssl_total = torch.zeros((), device=device)  # the weighted self-supervised term's part of ``total``
    bar = tqdm(source.plan(epoch), desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", leave=False,
               disable=None if progress else True)  # fmt: skip
    for b in bar:
        batch = make_batch(data.train_images, b, data.preprocess, device, train=True,
                           channels_last=cfg.channels_last, second_view=ssl is not None)  # fmt: skip
        with torch.autocast(device.type, dtype=amp_dtype, enabled=cfg.amp):
            loss = loss_fn(train_model, batch)
            if ssl is not None and isinstance(batch, LabelBatch) and batch.view is not None:
                extra = ssl(train_model, batch.x, batch.view)
                ssl_total += extra.detach() * len(b.index)
                loss = loss + extra
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
    if state.sched is not None:
        state.sched.step()
    seconds = time.perf_counter() - t0
    state.result.train_seconds += seconds
    state.result.images_seen += int(all_reduce_sum(n_images, device))  # every rank's images
    row = {"epoch": epoch, "train_loss": float(total) / max(n, 1)}
    if ssl is not None:  # the two terms apart: train_loss is their sum
        row["train_self_supervised_loss"] = float(ssl_total) / max(n, 1)
        row["train_supervised_loss"] = row["train_loss"] - row["train_self_supervised_loss"]
    return {**row, "lr": lr, "seconds": seconds}


def _validate(
    state: TrainState, row: dict[str, float], data: FitData, val_metrics: ValMetrics | None, device: torch.device
) -> dict[str, float]:  # fmt: skip
    """The epoch's row with its validation loss and (``val_metrics``) retrieval metrics, in the history's
    column order."""
    val = validation_loss(state.model, state.loss_fn, data.val_images, data.val_source, data.preprocess,
                          device=device, channels_last=state.cfg.channels_last)  # fmt: skip
    out = {k: v for k, v in row.items() if k not in ("lr", "seconds")} | {"val_loss": val}
    if val_metrics is not None:
        out.update({f"val_{k}": v for k, v in val_metrics(state.model).items()})
        state.model.train()
    return {**out, "lr": row["lr"], "seconds": row["seconds"]}


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


def _monitor_name(monitor: str) -> str:
    """``map_at_r`` as a person writes it: MAP@R (``precision_at_1``: P@1)."""
    return {"map_at_r": "MAP@R", "precision_at_1": "P@1", "val_loss": "loss"}.get(monitor, monitor)
