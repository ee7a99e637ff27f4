"""Scoring a model on a run's data: ``evaluate_prepared`` (validation, test and training splits, the threshold,
the raw-pixel, untrained-network and descriptor baselines, the figures) and ``evaluate_run`` (a trained run again,
on its own data or another, ``siamkit eval``). Training calls ``evaluate_prepared`` once it has kept a model;
nothing here trains."""

from __future__ import annotations

import functools
import io
import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from siamkit import distributed
from siamkit.config import RunConfig, from_dict, to_dict
from siamkit.data.cache import ImageArray, as_tensor
from siamkit.data.faces import face_alignment, resolve_mode
from siamkit.data.imageset import ImageSet
from siamkit.data.readers import load_dataset
from siamkit.data.splits import Splits
from siamkit.data.transforms import Preprocess
from siamkit.devices import resolve_device
from siamkit.distances import as_dissimilarity, get_distance
from siamkit.errors import ConfigError, DataError
from siamkit.evaluate.evaluator import (
    EvalResult,
    embed_images,
    evaluate_embeddings,
    evaluate_split,
    pixel_embeddings,
    threshold_metrics,
)
from siamkit.files import atomic_write_bytes, atomic_write_text, made_folder, next_free
from siamkit.models.pretrained import backbone_preset
from siamkit.models.siamese import SiameseNet, build_model
from siamkit.plan import Prepared, absolute_source, prepare_data
from siamkit.rundir import RunDir
from siamkit.runs.artifact import LoadedRun, load_run
from siamkit.thresholds import run_threshold_info, with_warning
from siamkit.training.pretrained_start import init_identity_head

log = logging.getLogger(__name__)
MAX_TRAIN_EVAL = 10000  # training-set verification metrics use at most this many images


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
    *,
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
    val = evaluate_split(model, s.val.images, s.val.tuples, prep.preprocess, cfg.eval, threshold=None, seed=seed + 11,
                         device=device)  # fmt: skip
    chosen_here = threshold is None
    if threshold is None:
        threshold = val.pairs.choose_threshold(cfg.eval.threshold)
    val.metrics.update(threshold_metrics(val.pairs, threshold))
    log.info("  test: %s images%s…", f"{len(s.test.images):,}",
             ", N-way K-shot episodes" if cfg.eval.episodes and s.test.images.has_labels else "")  # fmt: skip
    test = evaluate_split(model, s.test.images, s.test.tuples, prep.preprocess, cfg.eval, threshold=threshold,
                          seed=seed + 13, device=device, episodes=True)  # fmt: skip
    # what an oracle threshold chosen on the test pairs would give: how well the calibration transfers
    test.metrics["verification_accuracy_best"] = test.pairs.accuracy_at()[1]
    train_images = s.train.images
    if s.train.tuples is None and len(train_images) > MAX_TRAIN_EVAL:
        pick = np.random.default_rng(seed).choice(len(train_images), MAX_TRAIN_EVAL, replace=False)
        train_images = train_images.subset(np.sort(pick))
    log.info("  train: %s images…", f"{len(train_images):,}")
    train = evaluate_split(model, train_images, s.train.tuples, prep.preprocess, cfg.eval, threshold=threshold,
                           seed=seed + 17, device=device)  # fmt: skip
    target = out_dir or Path(cfg.runs_dir) / cfg.name
    if distributed.current().is_main:
        log.info("plots: ROC, distances, neighbours%s…", ", t-SNE" if cfg.eval.tsne_points else "")
        write_plots(target, {"train": train, "validation": val, "test": test}, threshold, s.test.images, cfg)
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
    embedders = baseline_embedders(n, prep.input_shape, untrained, prep.preprocess, cfg.eval.batch_size, device=device)
    out: dict[str, Any] = {}
    for name, embed in embedders.items():
        log.info("  baseline %s: validation and test…", BASELINE_NAMES.get(name, name))
        val = evaluate_embeddings(
            embed(s.val.images.images), s.val.images, s.val.tuples, cfg.eval, None, seed=seed + 11
        )
        thr = val.pairs.choose_threshold(cfg.eval.threshold)
        val.metrics.update(threshold_metrics(val.pairs, thr))
        test = evaluate_embeddings(embed(s.test.images.images), s.test.images, s.test.tuples, cfg.eval, thr,
                                   seed=seed + 13, episodes=True)  # fmt: skip
        out[name] = {"threshold": thr, "validation": val.metrics, "test": test.metrics}
    if untrained is not None:
        untrained.cpu()
    return out


def baseline_embedders(
    n: int, shape: tuple[int, ...], untrained: SiameseNet | None, preprocess: Preprocess, batch_size: int,
    *, device: torch.device,
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


def write_plots(
    out: Path, results: dict[str, EvalResult], threshold: float, test_images: ImageSet, cfg: RunConfig
) -> None:
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
                          np.searchsorted(needed, indices), near.values.numpy(), path=out / "neighbours.png",
                          names=names, threshold=threshold)  # fmt: skip
    if cfg.eval.tsne_points > 0:
        pick = np.sort(rng.permutation(len(emb))[: cfg.eval.tsne_points])
        pts = plots.tsne_2d(emb[pick].numpy(), cfg.train.seed)
        title = f"t-SNE of {len(pick)} test embeddings"
        plots.plot_embedding_map(pts, test_images.labels[pick], out / "tsne.png", title, names)


def write_metrics(metrics: dict[str, Any], out: Path) -> None:
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
    cfg = prep.cfg
    device = resolve_device(cfg.train.device)
    out = Path(run_dir) / "eval"
    with made_folder(out):
        torch.manual_seed(cfg.train.seed)
        untrained = build_model(cfg.model, run.input_shape[0]).eval()  # a fresh initialisation with the run's seed
        init_identity_head(untrained, cfg.model.backbone)  # dlib-face: the pretrained model, as in training
        metrics = evaluate_prepared(run.model, prep, device, run.threshold, out_dir=out, untrained=untrained,
                                    provenance=run_threshold_info(run_dir))  # fmt: skip
        metrics["dataset"] = prep.bundle.name
        write_metrics(metrics, out)
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
    test = evaluate_split(run.model, images, tuples, run.preprocess, cfg.eval, threshold=run.threshold,
                          seed=seed + 13, device=device, episodes=True)  # fmt: skip
    test.metrics["verification_accuracy_best"] = test.pairs.accuracy_at()[1]
    torch.manual_seed(seed)
    untrained = build_model(cfg.model, run.input_shape[0]).eval()
    init_identity_head(untrained, cfg.model.backbone)
    embedders = baseline_embedders(len(images), run.input_shape, untrained, run.preprocess, cfg.eval.batch_size,
                                   device=device)  # fmt: skip
    baselines: dict[str, Any] = {}
    for name, embed in embedders.items():
        b = evaluate_embeddings(embed(images.images), images, tuples, cfg.eval, None, seed=seed + 13, episodes=True)
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
        write_plots(out, {"test": test}, run.threshold if run.threshold is not None else test.pairs.accuracy_at()[0],
               images, cfg)  # fmt: skip
        write_metrics(metrics, out)
    return {"run_dir": str(run_dir), "eval_dir": str(out), **metrics}


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name or name).strip("._") or "data"
