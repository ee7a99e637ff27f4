"""End-to-end jobs on run directories: ``train_run`` (data → model → fit → evaluate → runs/<name>/) and
``evaluate_run``. The CLI and ``siamkit.train`` are thin layers over these; using a trained run is ``siamkit.runs``."""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from siamkit import distributed
from siamkit.checks import check_run
from siamkit.config import RunConfig, dump_config, from_dict, to_dict
from siamkit.data.cache import ImageArray, as_tensor
from siamkit.data.faces import CHIP_SIZE, face_alignment, resolve_mode
from siamkit.data.imageset import ImageSet
from siamkit.data.readers import DatasetBundle, load_dataset, stratified_sample
from siamkit.data.samplers import PKSampler
from siamkit.data.splits import Splits, make_splits
from siamkit.data.transforms import Preprocess, channel_stats
from siamkit.data.tuples import TupleSampler, fixed_tuples
from siamkit.devices import resolve_device
from siamkit.distances import as_dissimilarity, get_distance
from siamkit.errors import CheckpointError, ConfigError, DataError
from siamkit.evaluate.evaluator import (
    EvalResult,
    embed_images,
    evaluate_embeddings,
    evaluate_split,
    parse_threshold_rule,
    pixel_embeddings,
    threshold_metrics,
)
from siamkit.evaluate.metrics import retrieval_metrics
from siamkit.files import atomic_write_bytes, atomic_write_csv, atomic_write_text, made_folder, next_free
from siamkit.losses import create_loss
from siamkit.losses.base import SiameseLoss
from siamkit.losses.selfsup import SelfSupervised
from siamkit.models.pretrained import backbone_preset
from siamkit.models.siamese import SiameseNet, build_model, count_parameters
from siamkit.recipes import apply_recipe, loss_trait
from siamkit.rundir import RunDir, weights_metadata
from siamkit.runs.artifact import LoadedRun, load_run
from siamkit.thresholds import run_threshold_info, with_warning
from siamkit.training.batches import BatchSource, ClassBatches, FixedBatches, TupleBatches, table_plan
from siamkit.training.checkpoint import save_weights
from siamkit.training.loop import FitData, FitHooks, FitResult, fit
from siamkit.training.pretrained_start import apply_pretrained_defaults, init_identity_head

log = logging.getLogger(__name__)
SCORES = RunDir.SCORES  # studies.settings reads it from here (to move to RunDir)
MAX_TRAIN_EVAL = 10000  # training-set verification metrics use at most this many images
MAX_MONITOR_IMAGES = 4000  # the per-epoch validation retrieval monitor uses at most this many images


@dataclass
class Prepared:
    cfg: RunConfig
    bundle: DatasetBundle
    splits: Splits
    preprocess: Preprocess
    input_shape: tuple[int, int, int]
    recipe_reason: str = ""
    """Why ``cfg.recipe`` (``siamkit.recipes.resolve_recipe``)."""


def prepare_data(cfg: RunConfig) -> Prepared:
    """Load and split the data; resolve normalisation statistics into ``cfg`` (written with the run). A backbone
    with pretrained weights sets the input size, channels and normalisation its weights expect, unless the
    config sets them."""
    preset = backbone_preset(cfg.model.backbone, cfg.model.backbone_args)
    if cfg.train.freeze_backbone and preset is None and cfg.model.backbone not in FIXED_BACKBONES:
        log.warning("train.freeze_backbone=true on %s without pretrained weights: the backbone stays at its random "
                    "initial weights and only the head trains; give model.backbone_args.weights (or pretrained) or "
                    "drop train.freeze_backbone", cfg.model.backbone)  # fmt: skip
    cfg.data.faces = resolve_mode(cfg.data.faces, cfg.model.backbone)  # the run records what it read
    if cfg.data.faces == "align" and cfg.data.image_size is None:
        cfg.data.image_size = CHIP_SIZE
    if preset is not None:
        cfg.data.image_size = cfg.data.image_size or preset.input_size
        cfg.data.channels = cfg.data.channels or preset.channels
        if cfg.data.mean is None or cfg.data.std is None:
            cfg.data.mean, cfg.data.std = list(preset.mean), list(preset.std)
        log.info("input %d×%d, %d channels, normalisation of the %s weights", cfg.data.image_size,
                 cfg.data.image_size, cfg.data.channels, cfg.model.backbone)  # fmt: skip
    parse_threshold_rule(cfg.eval.threshold)  # a bad rule fails now, not after training
    with face_alignment(cfg.data.faces):
        bundle = load_dataset(cfg.data)
    splits = make_splits(bundle, cfg.data, cfg.train.seed)
    if training_input(cfg, bundle, splits):  # the input chosen from all images differs: decode again
        with face_alignment(cfg.data.faces):
            bundle = load_dataset(cfg.data)
        splits = make_splits(bundle, cfg.data, cfg.train.seed)
    reason = apply_recipe(cfg, splits.method, len(np.unique(splits.train.images.labels)))
    apply_pretrained_defaults(cfg)  # dlib-face: the model before training is the pretrained one
    if loss_trait(cfg, "needs_sigmoid_head", False):  # the model is built with the head the loss trains
        cfg.model.sigmoid_head = True
    explicit: frozenset[str] | None = getattr(cfg, "explicit_keys", None)
    if not loss_trait(cfg, "normalized_embedding", True) and explicit is not None and "model.normalize" not in \
            explicit and cfg.model.normalize:  # fmt: skip
        cfg.model.normalize = False  # evaluated in the geometry the loss trains (FDT/FDC: z = o·U)
        log.info("loss %s trains unnormalised embeddings: model.normalize=false", cfg.loss.name)
    train_images = splits.train.images.images
    if cfg.data.mean is None or cfg.data.std is None:  # a value the config gives is kept, the other computed
        mean, std = channel_stats(train_images)
        cfg.data.mean = cfg.data.mean if cfg.data.mean is not None else mean
        cfg.data.std = cfg.data.std if cfg.data.std is not None else std
    c, h, w = splits.train.images.shape
    if len(cfg.data.mean) != c or len(cfg.data.std) != c:
        got = len(cfg.data.mean) if len(cfg.data.mean) != c else len(cfg.data.std)
        raise ConfigError(f"data.mean/data.std need {c} values (one per channel), got {got}")
    cfg.data.channels = c
    if cfg.data.image_size is None and h == w:
        cfg.data.image_size = h
    pre = Preprocess(cfg.data.mean, cfg.data.std, cfg.data.augment, seed=cfg.train.seed)
    log.info("input %d×%d×%d (channels × height × width) from %s", c, h, w, bundle.name)
    return Prepared(cfg, bundle, splits, pre, (c, h, w), reason)


FIXED_BACKBONES = ("hog",)
"""Backbones whose features are fixed by design (a descriptor): freezing them is no mistake."""
FILE_LAYOUTS = ("folder", "flat", "labels-csv")
"""Layouts whose input size and channels are chosen from the files' headers when the config leaves them unset."""


def training_input(cfg: RunConfig, bundle: DatasetBundle, splits: Splits) -> bool:
    """On an identity split of image files, set ``data.channels`` / ``data.image_size`` (whichever the config left
    unset) to what the **training** identities' images alone give (``auto_channels``, ``auto_size``): the test
    identities' images must not choose the input. True when that differs from the input decoded (from every
    image's header) and the data must be decoded again. A non-square training size that differs cannot be
    written to ``data.image_size``: kept as decoded, said in one line."""
    from siamkit.data.readers import auto_channels, auto_size, read_headers

    auto_c, auto_s = cfg.data.channels is None, cfg.data.image_size is None
    paths = splits.train.images.paths
    if splits.method != "identity" or bundle.layout not in FILE_LAYOUTS or not paths or not (auto_c or auto_s):
        return False
    used_c, used_h, used_w = (int(v) for v in bundle.images.images.shape[1:])
    files = [Path(p) for p in paths]
    headers = read_headers(files)
    c = (auto_channels(files, headers) or used_c) if auto_c else used_c
    h, w = (auto_size(files, headers) or (used_h, used_w)) if auto_s else (used_h, used_w)
    if (h, w) != (used_h, used_w) and h != w:
        log.warning("the training identities' images give a %d×%d input, the run keeps %d×%d (from every image): "
                    "set data.image_size to choose", h, w, used_h, used_w)  # fmt: skip
        h, w = used_h, used_w
    if (c, h, w) == (used_c, used_h, used_w):
        return False
    log.info("input %d×%d×%d from the training identities' images (every image gave %d×%d×%d): decoding again",
             c, h, w, used_c, used_h, used_w)  # fmt: skip
    cfg.data.channels = c
    if (h, w) != (used_h, used_w):
        cfg.data.image_size = h
    return True


def make_loss(cfg: RunConfig, num_classes: int = 0, embedding_dim: int | None = None) -> SiameseLoss:
    """The configured loss; ``num_classes`` and ``embedding_dim`` (default: ``model.embedding_dim``) fill the
    parameters of losses that ask for them (proxies, class centres). A loss that needs the sigmoid head has
    already turned ``model.sigmoid_head`` on (``prepare_data``), before the model is built."""
    dim = embedding_dim if embedding_dim is not None else cfg.model.embedding_dim
    context: dict[str, object] = {"num_classes": num_classes, "embedding_dim": dim}
    loss = create_loss(cfg.loss.name, cfg.loss.params, cfg.loss.miner, cfg.loss.miner_params, context)
    if cfg.loss.ssl_weight:
        if loss.input_kind != "labels":
            raise ConfigError("loss.ssl_weight needs labelled (P×K) batches: use a mining or proxy loss")
        loss.self_supervised = SelfSupervised(cfg.loss.ssl_weight, cfg.loss.ssl_temperature)
    return loss


def batch_sources(cfg: RunConfig, loss: SiameseLoss, splits: Splits) -> tuple[BatchSource, BatchSource]:
    """Training and validation batches for ``loss``: P×K batches when it mines, else sampled tuples."""
    seed, s = cfg.train.seed, splits
    if loss.input_kind == "labels" and s.train.tuples is not None:
        if loss.miner is None:
            raise DataError(f"loss {cfg.loss.name!r} needs labelled images, but the data is a pairs/triplets CSV")
        log.warning("the data is a pairs/triplets CSV with no class labels to mine: training on its tuples instead")
        loss.set_miner(None)
    if loss.input_kind == "labels":
        train = ClassBatches(PKSampler(s.train.images.labels, cfg.sampling.p, cfg.sampling.k, seed, "training"))
        val = ClassBatches(PKSampler(s.val.images.labels, cfg.sampling.p, cfg.sampling.k, seed + 1, "validation"))
        return train, FixedBatches(val.plan(0))
    kind = loss.input_kind
    sampler = TupleSampler(s.train.images.labels, s.train.tuples, kind, cfg.sampling, seed)
    val_table = fixed_tuples(s.val.images.labels, s.val.tuples, kind, cfg.sampling.val_tuples, seed + 1)
    return TupleBatches(sampler, cfg.train.batch_size, seed), FixedBatches(
        table_plan(val_table, cfg.train.batch_size, None)
    )


def unique_run_dir(runs_dir: str, name: str) -> Path:
    base = Path(runs_dir) / name
    if not RunDir(base).weights.exists() and not RunDir(base).state.exists():
        return base
    return next_free(base)


def train_run(
    cfg: RunConfig, resume: bool = False, run_dir: Path | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None, force: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Train and evaluate; write config.yaml, history.csv, metrics.json, model.safetensors, plots and
    report.html. ``on_epoch`` sees each epoch's history row (see ``fit``).

    With ``resume`` the run continues from its ``last.pt``; a finished run without one is refused unless ``force``
    (retraining would overwrite its model). A run that fails leaves nothing behind when no epoch finished (its new
    folder is removed); after one, the folder stays, resumable, with ``FAILED`` saying why and no ``metrics.json``,
    so that ``siamkit train`` never takes it for a finished run."""
    check_run(cfg)  # names, combinations and the device, before any data is read
    info, dist_device = distributed.setup(cfg.train.device)
    torch.manual_seed(cfg.train.seed)
    cfg.data.source = absolute_source(cfg.data.source)  # the saved config works from any folder
    prep = prepare_data(cfg)
    s = prep.splits
    n_classes = s.n_classes
    model = build_model(cfg.model, prep.input_shape[0])
    if init_identity_head(model, cfg.model.backbone):
        log.info("embedding head initialised to the identity: the model before training is %s's", cfg.model.backbone)
    loss_fn = make_loss(cfg, n_classes, model.embedding_dim)
    untrained = copy.deepcopy(model).eval()  # the "untrained network" baseline: these very initial weights
    if info.enabled:  # same initial weights on every rank (built above), then each rank its own random draws
        seed_rank(cfg.train.seed, info.rank, prep.preprocess)
    device = dist_device or resolve_device(cfg.train.device)
    out = run_dir or (Path(cfg.runs_dir) / cfg.name if resume else unique_run_dir(cfg.runs_dir, cfg.name))
    out = Path(distributed.broadcast_object(str(out)))  # rank 0's choice: one run directory for all ranks
    run = RunDir(out)
    if resume and run.state.is_file():
        from siamkit.training.checkpoint import load_state

        load_state(run.state)  # an unreadable state fails now, before the run folder is touched
    if resume and not run.state.is_file():
        if not out.is_dir():
            raise CheckpointError(f"nothing to resume: {out} not found; check --name and --runs-dir")
        if run.weights.is_file() and not force:
            raise CheckpointError(f"{out} is a finished run with no last.pt to resume from, and retraining would "
                                  "overwrite its model: pass --force to retrain it, or use another --name")  # fmt: skip
    resumable = run.state.is_file
    with made_folder(out, keep=resumable) if info.is_main else contextlib.nullcontext(out):
        if info.is_main:
            dump_config(cfg, run.config)
        try:
            metrics = _train_and_evaluate(cfg, prep, model, loss_fn, untrained, device, out, info, resume, on_epoch)
        except BaseException as exc:
            if info.is_main and resumable():
                _mark_failed(out, exc)
            raise
    run.failed.unlink(missing_ok=True)
    distributed.barrier()  # the run directory is complete before any rank returns
    return {"run_dir": str(out), **metrics}


def _mark_failed(out: Path, exc: BaseException) -> None:
    """A run that failed after an epoch finished stays (resumable), marked ``FAILED`` with the reason."""
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    atomic_write_text(RunDir(out).failed, f"training stopped: {reason}\nresume with: siamkit train --name {out.name} "
                      f"--runs-dir {out.parent} --resume\n")  # fmt: skip


def _train_and_evaluate(
    cfg: RunConfig, prep: Prepared, model: SiameseNet, loss_fn: SiameseLoss, untrained: SiameseNet,
    device: torch.device, out: Path, info: distributed.DistInfo, resume: bool,
    on_epoch: Callable[[dict[str, float]], None] | None,
) -> dict[str, Any]:  # fmt: skip
    s = prep.splits
    train_source, val_source = batch_sources(cfg, loss_fn, s)
    log.info("training %s (%s, %s trainable parameters) on %s, device %s", cfg.model.backbone, cfg.loss.name,
             f"{count_parameters(model):,}", prep.bundle.name, device)  # fmt: skip

    def on_best(m: SiameseNet, epoch: int, val: float) -> None:
        save_weights(m, RunDir(out).weights, weights_metadata(to_dict(cfg), prep.input_shape, None))

    data = FitData(prep.preprocess, s.train.images.images, train_source, s.val.images.images, val_source)
    hooks = FitHooks(retrieval_monitor(prep, device), on_best, on_epoch)
    result = fit(model, loss_fn, cfg.train, data, device, hooks, RunDir(out).state, resume, info)
    log.info("evaluating the kept model (epoch %d) on validation, test and training images, with the raw-pixel and "
             "untrained baselines…", result.best_epoch)  # fmt: skip
    metrics = evaluate_prepared(model, prep, device, threshold=None, out_dir=out, untrained=untrained)
    metrics.update(_fit_summary(result, model, prep))
    if result.initial_score is None and resume and result.monitor != "val_loss":
        metrics.update(_initial_score(prep, device, untrained, result.monitor))
    if info.enabled:
        metrics["world_size"] = info.world_size
    if info.is_main:
        save_weights(model, RunDir(out).weights, weights_metadata(to_dict(cfg), prep.input_shape, metrics["threshold"]))
        _write_history(result, out)
        _write_metrics(metrics, out)
        from siamkit.evaluate import plots

        plots.plot_history(result.history, RunDir(out).loss_curve, result.best_epoch, result.monitor,
                           ssl_weight=cfg.loss.ssl_weight)  # fmt: skip
        from siamkit.report import write_report

        log.info("report: %s", write_report(out))
    return metrics


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


def initial_model(cfg: RunConfig) -> str:
    """What the run's "untrained" baseline is: ``pretrained`` when the backbone starts from trained weights
    (``dlib-face``, a torchvision/timm network with weights), else ``untrained`` (random initial weights)."""
    return "pretrained" if backbone_preset(cfg.model.backbone, cfg.model.backbone_args) is not None else "untrained"


def split_summary(splits: Splits) -> dict[str, Any]:
    """How the data was split, for metrics.json and the report: the method and, for identity splits, the
    identities of each part."""
    out: dict[str, Any] = {"split": splits.method}
    if splits.identities is not None:
        out["identities"] = splits.identities
    return out


def evaluate_prepared(
    model: SiameseNet,
    prep: Prepared,
    device: torch.device,
    threshold: float | None,
    out_dir: Path | None = None,
    untrained: SiameseNet | None = None,
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Metrics on train (subsampled), validation and test; the threshold is calibrated on validation unless
    given. Writes the ROC and distance plots into ``out_dir`` (default: the run directory from the caller).
    ``baselines`` holds the same validation and test metrics (same pairs, same retrieval protocol) of the raw
    pixels and of ``untrained`` (the network before training), each with its own validation threshold.
    ``threshold_info`` says where the threshold holds (``siamkit.thresholds``): chosen here, on the validation
    pairs, or — a given ``threshold`` — ``provenance`` (the run's, e.g. a calibration), with this test split's
    rates."""
    cfg, s, seed = prep.cfg, prep.splits, prep.cfg.train.seed
    started = time.perf_counter()
    model.to(device)
    log.info("  validation: %s images…", f"{len(s.val.images):,}")
    val = evaluate_split(model, s.val.images, s.val.tuples, prep.preprocess, cfg.eval, None, seed + 11, device)
    chosen_here = threshold is None
    if threshold is None:
        threshold = val.pairs.choose_threshold(cfg.eval.threshold)
    val.metrics.update(threshold_metrics(val.pairs, threshold))
    log.info("  test: %s images%s…", f"{len(s.test.images):,}",
             ", N-way K-shot episodes" if cfg.eval.episodes and s.test.images.has_labels else "")  # fmt: skip
    test = evaluate_split(model, s.test.images, s.test.tuples, prep.preprocess, cfg.eval, threshold, seed + 13, device,
                          episodes=True)  # fmt: skip
    # what an oracle threshold chosen on the test pairs would give: how well the calibration transfers
    test.metrics["verification_accuracy_best"] = test.pairs.accuracy_at()[1]
    train_images = s.train.images
    if s.train.tuples is None and len(train_images) > MAX_TRAIN_EVAL:
        pick = np.random.default_rng(seed).choice(len(train_images), MAX_TRAIN_EVAL, replace=False)
        train_images = train_images.subset(np.sort(pick))
    log.info("  train: %s images…", f"{len(train_images):,}")
    train = evaluate_split(model, train_images, s.train.tuples, prep.preprocess, cfg.eval, threshold, seed + 17, device)
    target = out_dir or Path(cfg.runs_dir) / cfg.name
    if distributed.current().is_main:
        log.info("plots: ROC, distances, neighbours%s…", ", t-SNE" if cfg.eval.tsne_points else "")
        _plots(target, {"train": train, "validation": val, "test": test}, threshold, s.test.images, cfg)
    baselines = baseline_metrics(prep, device, untrained)
    log.info("evaluation took %.0f s", time.perf_counter() - started)
    base = validation_provenance(cfg.eval.threshold, threshold, val, s) if chosen_here or not provenance else provenance
    run = out_dir.parent if out_dir is not None and out_dir.name.startswith("eval") else out_dir
    info = with_test_rates(base, threshold, test, s, str(run or "RUN"))
    return {"threshold": threshold, "threshold_rule": info.get("rule", cfg.eval.threshold), "threshold_info": info,
            "test": test.metrics, "validation": val.metrics, "train": train.metrics, **split_summary(s),
            "baselines": baselines}  # fmt: skip


def validation_provenance(rule: str, threshold: float, val: EvalResult, s: Splits) -> dict[str, Any]:
    """Where a threshold chosen on the validation pairs by ``rule`` holds there (``siamkit.thresholds``)."""
    ids = (s.identities or {}).get("validation")
    where = "the run's validation identities" if ids else "the run's validation images"
    return {"threshold": threshold, "rule": rule, "set_on": where, "identities": len(ids) if ids else None,
            "genuine_pairs": val.pairs.distinct(1), "impostor_pairs": val.pairs.distinct(0),
            **_rates(val, threshold)}  # fmt: skip


def with_test_rates(
    info: dict[str, Any], threshold: float, test: EvalResult, s: Splits, run: str = "RUN"
) -> dict[str, Any]:  # fmt: skip
    """``info`` with the rates of ``threshold`` on the test pairs (``test``) and its deploy warning (naming
    ``run`` in its example command)."""
    ids = (s.identities or {}).get("test")
    where = f"the run's {len(ids)} test identities (never seen in training)" if ids else "the run's test images"
    new = {"on": where, **_rates(test, threshold), "impostor_pairs": test.pairs.distinct(0)}
    return with_warning({**info, "threshold": threshold, "test": new}, run)


def _rates(result: EvalResult, threshold: float) -> dict[str, float]:
    m = threshold_metrics(result.pairs, threshold)
    return {"false_accept_rate": m["false_accept_rate"], "false_reject_rate": m["false_reject_rate"]}


BASELINE_NAMES = {"pixels": "raw pixels", "untrained": "untrained network", "descriptor": "descriptor"}
MAX_PIXEL_VALUES = 400_000_000  # raw-pixel baseline: at most this many float32 values per split (1.6 GB)


def baseline_metrics(prep: Prepared, device: torch.device, untrained: SiameseNet | None) -> dict[str, Any]:
    """Validation and test metrics of the raw-pixel embedding (flattened, L2-normalised pixels at the run's input
    size) and of the untrained network, on the pairs and retrieval protocol the trained model is scored on. Each
    baseline's threshold is calibrated on its own validation pairs."""
    cfg, s, seed = prep.cfg, prep.splits, prep.cfg.train.seed
    n = max(len(s.val.images), len(s.test.images))
    embedders = baseline_embedders(n, prep.input_shape, untrained, prep.preprocess, cfg.eval.batch_size, device)
    out: dict[str, Any] = {}
    for name, embed in embedders.items():
        log.info("  baseline %s: validation and test…", BASELINE_NAMES.get(name, name))
        val = evaluate_embeddings(embed(s.val.images.images), s.val.images, s.val.tuples, cfg.eval, None, seed + 11)
        thr = val.pairs.choose_threshold(cfg.eval.threshold)
        val.metrics.update(threshold_metrics(val.pairs, thr))
        test = evaluate_embeddings(embed(s.test.images.images), s.test.images, s.test.tuples, cfg.eval, thr, seed + 13,
                                   episodes=True)  # fmt: skip
        out[name] = {"threshold": thr, "validation": val.metrics, "test": test.metrics}
    if untrained is not None:
        untrained.cpu()
    return out


def baseline_embedders(
    n: int, shape: tuple[int, ...], untrained: SiameseNet | None, preprocess: Preprocess, batch_size: int,
    device: torch.device,
) -> dict[str, Callable[[ImageArray], torch.Tensor]]:  # fmt: skip
    """The baselines' embedding functions for ``n`` images of ``shape``: raw pixels (unless too large to hold) and
    ``untrained`` (when given)."""
    embedders: dict[str, Callable[[ImageArray], torch.Tensor]] = {}
    if n * int(np.prod(shape)) <= MAX_PIXEL_VALUES:
        embedders["pixels"] = pixel_embeddings
    else:
        log.info("raw-pixel baseline skipped: %d images of %s values are too large", n, "×".join(map(str, shape)))
    if untrained is not None:
        net = untrained

        def embed_untrained(images: ImageArray) -> torch.Tensor:
            return embed_images(net, images, preprocess, batch_size, device)

        embedders["untrained"] = embed_untrained
    embedders["descriptor"] = functools.partial(descriptor_embeddings, batch_size=batch_size)
    return embedders


@torch.no_grad()
def descriptor_embeddings(images: ImageArray, batch_size: int = 512) -> torch.Tensor:
    """The descriptor baseline ``(N, 621)``: the fixed histogram of oriented gradients (``GradientHistogram``, 9
    bins over 7/4/2 grids; nothing learned) of uint8 images ``(N, C, H, W)`` at the run's input size — what a
    classical pipeline would compare, and where the ``hog`` backbone starts."""
    from siamkit.models.descriptors import GradientHistogram

    hog = GradientHistogram().eval()
    out = [hog(as_tensor(images[s : s + batch_size]).float() / 255.0) for s in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.empty(0, hog.num_features)


def _plots(out: Path, results: dict[str, EvalResult], threshold: float, test_images: ImageSet, cfg: RunConfig) -> None:
    """ROC, distance distributions, nearest neighbours of 5 random test queries and a t-SNE map of the test
    embeddings; the pair distances go to ``scores.npz`` (a study overlays its runs' ROC curves from them)."""
    from siamkit.evaluate import plots  # matplotlib: imported when the first figure is drawn

    curves = {k: (r.pairs.labels, r.pairs.distances) for k, r in results.items()}
    plots.plot_roc(curves, out / "roc.png", threshold)
    t = results["test"].pairs
    plots.plot_distances(t.labels, t.distances, threshold, out / "distances.png", "test")
    buf = io.BytesIO()
    np.savez_compressed(
        buf, **{f"{k}_{f}": getattr(r.pairs, f) for k, r in results.items() for f in ("distances", "labels")}
    )
    atomic_write_bytes(RunDir(out).scores, buf.getvalue())
    emb = results["test"].embeddings
    if emb is None or len(emb) < 3:
        return
    rng = np.random.default_rng(cfg.train.seed)
    names = test_images.class_names
    queries = np.sort(rng.choice(len(emb), min(5, len(emb)), replace=False))
    distance = get_distance(cfg.eval.distance)
    d = as_dissimilarity(distance.matrix(emb[torch.from_numpy(queries)], emb), distance)
    d[torch.arange(len(queries)), torch.from_numpy(queries)] = float("inf")
    k = min(10, len(emb) - 1)
    near = torch.topk(d, k, dim=1, largest=False)
    indices = near.indices.numpy()
    needed = np.unique(np.concatenate([queries, indices.ravel()]))  # read only the images the figure shows
    images = test_images.images[torch.from_numpy(needed)].numpy()
    plots.plot_neighbours(images, test_images.labels[needed], np.searchsorted(needed, queries),
                          np.searchsorted(needed, indices), near.values.numpy(), out / "neighbours.png",
                          names, threshold=threshold)  # fmt: skip
    if cfg.eval.tsne_points > 0:
        pick = np.sort(rng.permutation(len(emb))[: cfg.eval.tsne_points])
        pts = plots.tsne_2d(emb[pick].numpy(), cfg.train.seed)
        title = f"t-SNE of {len(pick)} test embeddings"
        plots.plot_embedding_map(pts, test_images.labels[pick], out / "tsne.png", title, names)


def _write_history(result: FitResult, out: Path) -> None:
    atomic_write_csv(RunDir(out).history, list(result.history[0]) if result.history else ["epoch"], result.history)


def _write_metrics(metrics: dict[str, Any], out: Path) -> None:
    atomic_write_text(RunDir(out).metrics, json.dumps(metrics, indent=2, default=float) + "\n")


def evaluate_run(
    run_dir: str | Path,
    data: str | None = None,
    overrides: list[str] | None = None,
    as_test: bool = False,
    trust_code: bool = False,
) -> dict[str, Any]:
    """Re-evaluate a trained run (on its own data, or on ``data``) with its saved threshold; writes
    ``eval/metrics.json`` and plots inside the run directory. With ``as_test``, all of ``data`` is test data (no
    split, no training or validation rows), scored into a new ``eval-<data name>`` folder of the run.
    ``trust_code``: import code the run's files name (``siamkit.runs.artifact.load_run``)."""
    from siamkit.config import set_key
    from siamkit.runs.named import resolve_run_dir

    run_dir = resolve_run_dir(run_dir)  # a pretrained name (dlib-face) is a run folder too
    run = load_run(run_dir, trust_code=trust_code)
    cfg_dict = to_dict(run.cfg)
    if data is not None:
        cfg_dict["data"]["source"] = absolute_source(data)
        cfg_dict["data"]["layout"] = "auto"
        cfg_dict["data"]["limit"] = None
        for key in ("train_classes", "val_classes", "test_classes"):  # the run's identity lists name its own data
            cfg_dict["data"][key] = None
    for item in overrides or []:
        check_eval_override(item)
        set_key(cfg_dict, item)
    cfg: RunConfig = from_dict(RunConfig, cfg_dict)
    cfg.data.image_size = run.input_shape[1]
    cfg.data.channels = run.input_shape[0]
    if as_test:
        if data is None:
            raise ConfigError("--as-test scores a held-out dataset: give it with --data DIR")
        return _evaluate_as_test(Path(run_dir), run, cfg)
    torch.manual_seed(cfg.train.seed)
    prep = prepare_data(cfg)
    prep.preprocess = run.preprocess  # the training statistics, not the new data's
    device = resolve_device(cfg.train.device)
    out = Path(run_dir) / "eval"
    with made_folder(out):
        torch.manual_seed(cfg.train.seed)
        untrained = build_model(cfg.model, run.input_shape[0]).eval()  # a fresh initialisation with the run's seed
        init_identity_head(untrained, cfg.model.backbone)  # dlib-face: the pretrained model, as in training
        metrics = evaluate_prepared(run.model, prep, device, run.threshold, out_dir=out, untrained=untrained,
                                    provenance=run_threshold_info(run_dir))  # fmt: skip
        metrics["dataset"] = prep.bundle.name
        _write_metrics(metrics, out)
    return {"run_dir": str(run_dir), "eval_dir": str(out), **metrics}


EVAL_KEYS = ("eval.", "data.", "train.device=", "train.seed=", "train.progress=")
"""What ``siamkit eval --set`` may change: how and on what the run is scored, never the model it scores (nor its
input size), which the untrained baseline is rebuilt from."""


def check_eval_override(item: str) -> None:
    """Refuse an ``eval`` override outside :data:`EVAL_KEYS` (``model.*`` would rebuild a different untrained
    baseline beside the run's own trained model) in one line naming the key."""
    key = item.partition("=")[0].strip()
    if not item.strip().startswith(EVAL_KEYS) or key in ("data.image_size", "data.channels"):
        raise ConfigError(
            f"--set {key}: eval scores the run's own model at its own input size; only eval.*, data.* (not "
            "data.image_size or data.channels), train.device and train.seed may be set — to change the model, "
            "train a new run"
        )


def absolute_source(source: str) -> str:
    """A data source as saved with a run: an existing path made absolute (the run then evaluates from any folder);
    a built-in name (digits, fashion-mnist, cifar10) as is."""
    if source in ("digits", "fashion-mnist", "cifar10"):
        return source
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else source


def _evaluate_as_test(run_dir: Path, run: LoadedRun, cfg: RunConfig) -> dict[str, Any]:
    """All of ``cfg.data.source`` scored as test data with the run's threshold, beside the raw-pixel and
    untrained-network baselines (on the same pairs; without validation data they get no threshold of their own)."""
    from siamkit.calibration import all_images

    with face_alignment(resolve_mode(cfg.data.faces, cfg.model.backbone)):
        bundle = load_dataset(cfg.data)
    images = bundle.images if bundle.tuples is not None else all_images(bundle)
    tuples = bundle.tuples.as_pairs() if bundle.tuples is not None else None
    if tuples is None and not images.has_labels:
        raise DataError(f"{bundle.name}: images without class labels cannot be scored; give labelled folders or a "
                        "pairs CSV")  # fmt: skip
    device = resolve_device(cfg.train.device)
    seed = cfg.train.seed
    test = evaluate_split(run.model, images, tuples, run.preprocess, cfg.eval, run.threshold, seed + 13, device,
                          episodes=True)  # fmt: skip
    test.metrics["verification_accuracy_best"] = test.pairs.accuracy_at()[1]
    torch.manual_seed(seed)
    untrained = build_model(cfg.model, run.input_shape[0]).eval()
    init_identity_head(untrained, cfg.model.backbone)
    embedders = baseline_embedders(len(images), run.input_shape, untrained, run.preprocess, cfg.eval.batch_size,
                                   device)  # fmt: skip
    baselines: dict[str, Any] = {}
    for name, embed in embedders.items():
        b = evaluate_embeddings(embed(images.images), images, tuples, cfg.eval, None, seed + 13, episodes=True)
        baselines[name] = {"test": b.metrics}
    info = run_threshold_info(run_dir)
    if info is not None and run.threshold is not None:
        rates = _rates(test, run.threshold)
        new = {"on": f"{bundle.name} (all of it, as test data)", **rates, "impostor_pairs": test.pairs.distinct(0)}
        info = with_warning({**info, "threshold": run.threshold, "test": new}, str(run_dir))
    metrics = {"threshold": run.threshold, "threshold_info": info, "as_test": True, "initial_model": initial_model(cfg),
               "data": cfg.data.source, "dataset": bundle.name,
               "test": test.metrics, "split_sizes": {"test": len(images)}, "baselines": baselines}  # fmt: skip
    with made_folder(next_free(run_dir / f"eval-{_slug(bundle.name)}")) as out:
        _plots(out, {"test": test}, run.threshold if run.threshold is not None else test.pairs.accuracy_at()[0],
               images, cfg)  # fmt: skip
        _write_metrics(metrics, out)
    return {"run_dir": str(run_dir), "eval_dir": str(out), **metrics}


def _slug(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name or name).strip("._") or "data"
