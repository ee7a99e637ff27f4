"""Training a run: ``train_run`` = check → prepare (``siamkit.plan``) → fit (``siamkit.training.loop``) → evaluate
(``siamkit.evaluate.run``) → write the run folder (``siamkit.rundir``). The CLI and ``siamkit.train`` are thin
layers over it; using a trained run is ``siamkit.runs``."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from siamkit import distributed
from siamkit.checks import check_run
from siamkit.config import RunConfig, dump_config, to_dict
from siamkit.data.readers import stratified_sample
from siamkit.data.transforms import Preprocess
from siamkit.devices import resolve_device
from siamkit.distances import get_distance
from siamkit.errors import CheckpointError
from siamkit.evaluate.evaluator import embed_images
from siamkit.evaluate.metrics import retrieval_metrics
from siamkit.evaluate.run import evaluate_prepared, initial_model, write_metrics
from siamkit.files import atomic_write_csv, atomic_write_text, made_folder, next_free
from siamkit.models.siamese import SiameseNet, count_parameters
from siamkit.plan import Plan, Prepared, prepare
from siamkit.rundir import RunDir, weights_metadata
from siamkit.training.checkpoint import load_state, save_weights
from siamkit.training.loop import FitData, FitHooks, FitResult, fit

log = logging.getLogger(__name__)
MAX_MONITOR_IMAGES = 4000  # the per-epoch validation retrieval monitor uses at most this many images


def train_run(
    cfg: RunConfig, resume: bool = False, run_dir: Path | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None, force: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Train and evaluate; write config.yaml, config-sources.json, history.csv, metrics.json, model.safetensors,
    plots and report.html. ``on_epoch`` sees each epoch's history row (see ``fit``). ``cfg`` is not changed: the
    run's resolved config is written with it (and returned by ``siamkit.plan.prepare``).

    With ``resume`` the run continues from its ``last.pt``; a finished run without one is refused unless ``force``
    (retraining would overwrite its model). A run that fails leaves nothing behind when no epoch finished (its new
    folder is removed); after one, the folder stays, resumable, with ``FAILED`` saying why and no ``metrics.json``,
    so that ``siamkit train`` never takes it for a finished run."""
    check_run(cfg)  # names, combinations and the device, before any data is read
    info, dist_device = distributed.setup(cfg.train.device)
    plan = prepare(cfg)
    cfg = plan.cfg
    if info.enabled:  # same initial weights on every rank (built above), then each rank its own random draws
        seed_rank(cfg.train.seed, info.rank, plan.prepared.preprocess)
    device = dist_device or resolve_device(cfg.train.device)
    run = RunDir(run_folder(cfg, run_dir, resume=resume, force=force))
    resumable = run.state.is_file
    with made_folder(run.path, keep=resumable) if info.is_main else contextlib.nullcontext(run.path):
        if info.is_main:
            dump_config(cfg, run.config)
            if not run.config_sources.is_file():  # a resumed run's config is all its own: the first record stays
                atomic_write_text(run.config_sources, json.dumps(plan.prepared.sources, indent=2) + "\n")
        try:
            metrics = _train_and_evaluate(plan, run, device, info, resume=resume, on_epoch=on_epoch)
        except BaseException as exc:
            if info.is_main and resumable():
                _mark_failed(run, exc)
            raise
    run.failed.unlink(missing_ok=True)
    distributed.barrier()  # the run directory is complete before any rank returns
    return {"run_dir": str(run.path), **metrics}


def run_folder(cfg: RunConfig, given: Path | None, *, resume: bool, force: bool) -> Path:
    """The run's folder (rank 0's choice, for every rank): ``given``, the named run to resume, or a new free name;
    a resume whose state is unreadable, missing, or whose finished model would be overwritten fails here, before
    the folder is touched."""
    out = given or (Path(cfg.runs_dir) / cfg.name if resume else unique_run_dir(cfg.runs_dir, cfg.name))
    run = RunDir(distributed.broadcast_object(str(out)))
    if resume and run.state.is_file():
        load_state(run.state)
    elif resume:
        if not run.path.is_dir():
            raise CheckpointError(f"nothing to resume: {run.path} not found; check --name and --runs-dir")
        if run.weights.is_file() and not force:
            raise CheckpointError(f"{run.path} is a finished run with no last.pt to resume from, and retraining "
                                  "would overwrite its model: pass --force to retrain it, or use another "
                                  "--name")  # fmt: skip
    return run.path


def unique_run_dir(runs_dir: str, name: str) -> Path:
    base = RunDir(Path(runs_dir) / name)
    if not base.weights.exists() and not base.state.exists():
        return base.path
    return next_free(base.path)


def _mark_failed(run: RunDir, exc: BaseException) -> None:
    """A run that failed after an epoch finished stays (resumable), marked ``FAILED`` with the reason."""
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    atomic_write_text(run.failed, f"training stopped: {reason}\nresume with: siamkit train --name {run.path.name} "
                      f"--runs-dir {run.path.parent} --resume\n")  # fmt: skip


def _train_and_evaluate(
    plan: Plan, run: RunDir, device: torch.device, info: distributed.DistInfo, *, resume: bool,
    on_epoch: Callable[[dict[str, float]], None] | None,
) -> dict[str, Any]:  # fmt: skip
    cfg, prep, model = plan.cfg, plan.prepared, plan.model
    log.info("training %s (%s, %s trainable parameters) on %s, device %s", cfg.model.backbone, cfg.loss.name,
             f"{count_parameters(model):,}", prep.bundle.name, device)  # fmt: skip

    untested = weights_metadata(to_dict(cfg), prep.input_shape, None)  # the same for every kept epoch

    def on_best(m: SiameseNet, epoch: int, val: float) -> None:
        save_weights(m, run.weights, untested)

    s = prep.splits
    data = FitData(prep.preprocess, s.train.images.images, plan.train_batches, s.val.images.images, plan.val_batches)
    hooks = FitHooks(retrieval_monitor(prep, device), on_best, on_epoch)
    result = fit(model, plan.loss, cfg.train, data, device, hooks=hooks, state_path=run.state, resume=resume,
                 dist_info=info)  # fmt: skip
    log.info("evaluating the kept model (epoch %d) on validation, test and training images, with the raw-pixel and "
             "untrained baselines…", result.best_epoch)  # fmt: skip
    metrics = evaluate_prepared(model, prep, device, threshold=None, out_dir=run.path, untrained=plan.untrained)
    metrics.update(_fit_summary(result, model, prep))
    if result.initial_score is None and resume and result.monitor != "val_loss":
        metrics.update(_initial_score(prep, device, plan.untrained, result.monitor))
    if info.enabled:
        metrics["world_size"] = info.world_size
    if info.is_main:
        _write_run(run, plan, result, metrics)
    return metrics


def _write_run(run: RunDir, plan: Plan, result: FitResult, metrics: dict[str, Any]) -> None:
    """The finished run's weights (with the training threshold), history, metrics, loss curve and report."""
    cfg = plan.cfg
    save_weights(plan.model, run.weights, weights_metadata(to_dict(cfg), plan.prepared.input_shape,
                                                           metrics["threshold"]))  # fmt: skip
    atomic_write_csv(run.history, list(result.history[0]) if result.history else ["epoch"], result.history)
    write_metrics(metrics, run.path)
    from siamkit.evaluate import plots

    plots.plot_history(result.history, run.loss_curve, result.best_epoch, result.monitor,
                       ssl_weight=cfg.loss.ssl_weight)  # fmt: skip
    from siamkit.report import write_report

    log.info("report: %s", write_report(run.path))


def seed_rank(seed: int, rank: int, preprocess: Preprocess) -> None:
    """Seed this rank's dropout (torch's generator) and augmentation with ``distributed.rank_seed``: ranks that
    shared one seed would draw identical masks and augmentations for different images."""
    s = distributed.rank_seed(seed, rank)
    torch.manual_seed(s)
    preprocess.reseed(s)


def retrieval_monitor(prep: Prepared, device: torch.device) -> Callable[[SiameseNet], dict[str, float]] | None:
    """Per-epoch leave-one-out P@1 and MAP@R on the validation split (None when its images have no labels)."""
    val, cfg = prep.splits.val, prep.cfg
    if val.tuples is not None or not val.images.has_labels or len(np.unique(val.images.labels)) < 2:
        return None
    distance = get_distance(cfg.eval.distance)
    images = val.images
    if len(images) > MAX_MONITOR_IMAGES:  # a fixed stratified sample: the per-epoch cost stays bounded
        images = images.subset(stratified_sample(images.labels, MAX_MONITOR_IMAGES, cfg.train.seed))

    def compute(model: SiameseNet) -> dict[str, float]:
        emb = embed_images(model, images.images, prep.preprocess, cfg.eval.batch_size, device)
        if not bool(torch.isfinite(emb).all()):  # a diverged model ranks nothing: the worst score, never the best
            log.warning("validation embeddings hold NaN or infinite values: this epoch scores P@1 = MAP@R = 0")
            return {"precision_at_1": 0.0, "map_at_r": 0.0}
        r = retrieval_metrics(emb, images.labels, (1,), distance=distance)
        return {"precision_at_1": r["precision_at_1"], "map_at_r": r["map_at_r"]}

    return compute


def _initial_score(prep: Prepared, device: torch.device, untrained: SiameseNet, monitor: str) -> dict[str, float]:
    """``initial_val_<monitor>`` of a resumed run, whose loop scored the initial weights before the interruption:
    ``untrained`` holds those very weights (the same seed), so the score is the one the first run saw."""
    compute = retrieval_monitor(prep, device)
    if compute is None:
        return {}
    score = compute(untrained.to(device))[monitor]
    return {f"initial_val_{monitor}": score}


def _fit_summary(result: FitResult, model: SiameseNet, prep: Prepared) -> dict[str, Any]:
    return {
        "dataset": prep.bundle.name,
        "input_shape": list(prep.input_shape),
        "trainable_parameters": count_parameters(model),
        "train_seconds": round(result.train_seconds, 2),
        "images_per_second": round(result.images_per_second, 1),
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "monitor": result.monitor,
        "stopped_early": result.stopped_early,
        "split_sizes": {k: len(getattr(prep.splits, k).images) for k in ("train", "val", "test")},
        "recipe": prep.cfg.recipe,
        "recipe_reason": prep.recipe_reason,
        "initial_model": initial_model(prep.cfg),
        **({} if result.initial_score is None else {f"initial_val_{result.monitor}": -result.initial_score}),
    }
