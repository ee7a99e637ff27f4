"""A run's verification threshold after training: re-chosen on a user's own pairs (``siamkit calibrate``).

Training chooses the threshold on the validation pairs (``eval.threshold``) and stores it in the metadata of
``model.safetensors``. A calibration writes ``threshold.json`` beside the weights instead of rewriting them, so
the model's hash — which galleries and ONNX exports check — stays the same. The file holds the threshold in
use, how and on what it was chosen, and the history of the earlier ones (the training threshold first).
Every consumer of the run (``verify``, ``search``, ``serve``, ``eval``) reads it through
:func:`siamkit.runs.artifact.read_threshold`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from siamkit.errors import CheckpointError, ConfigError
from siamkit.files import atomic_write_text
from siamkit.rundir import RunDir, check_free
from siamkit.runs.artifact import read_weights
from siamkit.text import name_list
from siamkit.thresholds import too_few_impostors, with_warning

log = logging.getLogger(__name__)


@dataclass
class PairSet:
    """Pairs to score: their images, the pair table and what they are (``on``), with the identities they hold."""

    images: Any
    table: Any
    on: str
    identities: int | None = None
    class_names: list[str] | None = None


def calibrate_run(
    run_dir: str | os.PathLike[str], data: str, rule: str, backend: Any = "torch", skip_bad: bool = False,
    *, n_pairs: int | None = None, seed: int = 0, out: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (), hold_out: float = 0.0,
) -> dict[str, Any]:  # fmt: skip
    """Choose the run's threshold by ``rule`` (``accuracy``, ``fpr:<rate>`` or a number; see ``eval.threshold``)
    on the distinct pairs of ``data``: a pairs CSV with a label column (1 = same), or any labelled source (a
    class-per-folder or flat folder, IDX, ...) whose distinct pairs are drawn (up to ``n_pairs`` genuine and
    impostor each; default the run's ``eval.n_pairs``). Writes ``threshold.json`` (the previous thresholds kept in
    its history), redraws the run's ROC and distance figures at the new threshold and rewrites its report; returns
    the new threshold with where it holds (``siamkit.thresholds``): its rates on those pairs, on the run's test
    pairs (``scores.npz``) and, with ``hold_out`` (a share of the identities, or of a CSV's pairs, kept out of the
    choice), on the held-out part. ``warnings`` (also logged, one line each): calibration identities that the run
    trained or validated on, and too few distinct impostor pairs for the target rate. ``overrides``: ``data.*``
    keys (how to read ``data``) and ``eval.n_pairs``. With ``out`` (a new folder), the calibrated run is written
    there instead: a copy of the run (a pretrained name such as ``dlib-face`` needs it). Images are read as the run
    reads them, at its input size (aligned face chips with ``data.faces=align``)."""
    from siamkit.data.faces import face_alignment
    from siamkit.evaluate.evaluator import parse_threshold_rule
    from siamkit.runs.model import open_model
    from siamkit.runs.named import copy_run, is_pretrained_name, resolve_run_dir

    kind, target = parse_threshold_rule(rule)
    if not 0.0 <= hold_out < 1.0:
        raise CheckpointError(f"--hold-out {hold_out}: give the share of identities to hold out, in [0, 1)")
    if out is None and is_pretrained_name(run_dir):
        raise CheckpointError(f"{run_dir} is a pretrained model shared by every use of its name: give --out RUN "
                              "(a new folder) to write the calibrated run there")  # fmt: skip
    run_dir = resolve_run_dir(run_dir)
    model = open_model(run_dir, backend)
    meta = read_weights(RunDir(run_dir).weights)[1]  # the training threshold and config, read once
    run_cfg = json.loads(meta["config"])
    data_cfg, n_pairs = _read_settings(run_cfg, data, model.input_shape, skip_bad, n_pairs, overrides=overrides)
    with face_alignment(model.faces):
        fit_set, held_set = _pair_sets(data_cfg, model.input_shape, n_pairs, seed, hold_out)
    fit = _scores(model, fit_set, data)
    threshold = fit.choose_threshold(rule)
    entry = _entry(threshold, rule, data, fit_set, fit)
    if held_set is not None:
        entry["held_out"] = {"on": held_set.on, **_rates_at(_scores(model, held_set, data), threshold)}
    test = _run_test_rates(run_dir, threshold)
    if test is not None:
        entry["test"] = test
    names = (fit_set.class_names or []) + ((held_set.class_names or []) if held_set is not None else [])
    warnings = _warnings(run_dir, run_cfg, data, names or None, fit.distinct(0), fpr=target if kind == "fpr" else None)
    for line in warnings:
        log.warning("%s", line)
    default_rule = run_cfg.get("eval", {}).get("threshold", "accuracy")
    if out is None:
        entry = with_warning({**entry, "warnings": warnings}, str(run_dir))
        previous = _previous(run_dir, meta, default_rule)
        atomic_write_text(RunDir(run_dir).threshold, json.dumps({**entry, "history": previous}, indent=2) + "\n")
        _refresh_report(run_dir, threshold)
    else:  # only now, with the threshold chosen: a failure above leaves no folder behind
        out_dir = Path(out)
        entry = with_warning({**entry, "warnings": warnings}, str(out_dir))
        staged = copy_run(run_dir, _staging(out_dir))  # calibrated whole, then moved into place with one rename
        previous = _previous(staged, meta, default_rule)
        atomic_write_text(RunDir(staged).threshold, json.dumps({**entry, "history": previous}, indent=2) + "\n")
        _refresh_report(staged, threshold)
        if out_dir.exists():
            out_dir.rmdir()  # _staging checked that it is empty
        os.rename(staged, out_dir)
        run_dir = out_dir
    return {"run_dir": str(run_dir), "file": str(RunDir(run_dir).threshold), **entry,
            "previous_threshold": previous[-1]["threshold"] if previous else None}  # fmt: skip


def _staging(target: Path) -> Path:
    """A new hidden folder beside ``target`` for ``calibrate --out`` to fill; those a cut calibration left go."""
    import shutil
    import uuid

    check_free(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for left in target.parent.glob(f".{target.name}.calibrating-*"):
        shutil.rmtree(left, ignore_errors=True)
    return target.parent / f".{target.name}.calibrating-{uuid.uuid4().hex[:8]}"


def _entry(threshold: float, rule: str, data: str, pairs: PairSet, scores: Any) -> dict[str, Any]:
    """The calibration record: the threshold, its rule, what it was set on and its rates there."""
    from siamkit.evaluate.evaluator import threshold_metrics

    rates = threshold_metrics(scores, threshold)
    return {"threshold": threshold, "rule": rule, "data": str(Path(data).resolve()) if Path(data).exists() else data,
            "set_on": pairs.on, "identities": pairs.identities, "genuine_pairs": scores.distinct(1),
            "impostor_pairs": scores.distinct(0), "verification_accuracy": rates["verification_accuracy"],
            "false_accept_rate": rates["false_accept_rate"], "false_reject_rate": rates["false_reject_rate"],
            "calibrated_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}  # fmt: skip


def _rates_at(scores: Any, threshold: float) -> dict[str, Any]:
    from siamkit.evaluate.evaluator import threshold_metrics

    m = threshold_metrics(scores, threshold)
    return {"false_accept_rate": m["false_accept_rate"], "false_reject_rate": m["false_reject_rate"],
            "genuine_pairs": scores.distinct(1), "impostor_pairs": scores.distinct(0)}  # fmt: skip


def _scores(model: Any, pairs: PairSet, data: str) -> Any:
    """The distances of ``pairs``' distinct pairs (a repeated row of a CSV adds no evidence and is counted once)."""
    from siamkit.evaluate.evaluator import PairScores

    index, labels = distinct_rows(pairs.table.index, pairs.table.labels)
    if not ((labels == 1).any() and (labels == 0).any()):
        raise CheckpointError(f"{data}: calibration needs both genuine (label 1) and impostor (label 0) pairs in "
                              f"{pairs.on}")  # fmt: skip
    emb = model.embedder.embed(pairs.images.images)
    distances = model.distances(emb[index[:, 0]], emb[index[:, 1]]).astype(np.float64)
    return PairScores(distances, labels, index)


def distinct_rows(index: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first row of each distinct unordered pair (with its label) of ``index`` ``(M, 2)``, in their order."""
    index = np.asarray(index, np.int64)
    key = np.stack([index.min(1), index.max(1), np.asarray(labels, np.int64)], 1)
    _, first = np.unique(key, axis=0, return_index=True)
    keep = np.sort(first)
    return index[keep], np.asarray(labels)[keep]


def _read_settings(
    run_cfg: dict[str, Any], data: str, shape: tuple[int, int, int], skip_bad: bool, n_pairs: int | None,
    *, overrides: Sequence[str],
) -> tuple[Any, int]:  # fmt: skip
    """How to read ``data``: the run's data settings (faces, cache, layout rules) on the new source at the run's
    input shape, then ``overrides`` (``data.*``, ``eval.n_pairs``); and how many pairs of each kind to draw."""
    from siamkit.config import DataConfig, from_dict, set_key

    base = {k: v for k, v in (run_cfg.get("data") or {}).items() if k in DATA_KEYS_KEPT}
    tree: dict[str, Any] = {"data": {**base, "source": data, "skip_bad": skip_bad}, "eval": {}}
    for item in overrides:
        key = item.partition("=")[0].strip()
        if not (key.startswith("data.") or key == "eval.n_pairs"):
            raise ConfigError(f"calibrate --set {item!r}: only data.* keys (how to read --data) and eval.n_pairs "
                              "apply here")  # fmt: skip
        set_key(tree, item)
    cfg = from_dict(DataConfig, tree["data"], "data.")
    cfg.channels, cfg.image_size = shape[0], shape[1] if shape[1] == shape[2] else None
    pairs = n_pairs or int(tree["eval"].get("n_pairs") or (run_cfg.get("eval") or {}).get("n_pairs", 5000))
    return cfg, pairs


DATA_KEYS_KEPT = ("faces", "cache", "cache_dir", "workers", "memory_limit_mb", "flat_field", "flat_regex", "progress")
"""The run's data settings a calibration source is read with (the rest describe the run's own source)."""


def _previous(run_dir: Path, meta: dict[str, str], rule: str) -> list[dict[str, Any]]:
    """The history to keep: the current calibration's own history and entry, or the training threshold (from the
    weights' metadata ``meta``, chosen by ``rule``)."""
    path = RunDir(run_dir).threshold
    if path.is_file():
        old = json.loads(path.read_text())
        history = list(old.pop("history", []))
        return [*history, old]
    if "threshold" not in meta:
        return []
    return [{"threshold": float(meta["threshold"]), "rule": rule, "data": "the run's validation pairs (training)"}]


def _pair_sets(
    cfg: Any, shape: tuple[int, int, int], n_pairs: int, seed: int, hold_out: float
) -> tuple[PairSet, PairSet | None]:  # fmt: skip
    """The pairs to choose the threshold on and, with ``hold_out``, the held-out ones: whole identities of a
    labelled source (none of them in the other part), or a seeded share of a pairs CSV's rows (it names no
    identities)."""
    from siamkit.data.readers import detect_layout, read_tuples_csv
    from siamkit.data.tuples import fixed_tuples

    name = Path(cfg.source).name or cfg.source
    if (cfg.layout if cfg.layout != "auto" else detect_layout(cfg.source)) == "pairs-csv":
        images, table = read_tuples_csv(cfg.source, "pairs", shape[0], shape[1:], cfg.skip_bad)
        if not hold_out:
            return PairSet(images, table, f"the pairs of {name}"), None
        rows = np.random.default_rng(seed).permutation(len(table))
        cut = int(round(hold_out * len(rows)))
        held, kept = np.sort(rows[:cut]), np.sort(rows[cut:])
        return (PairSet(images, table.rows(kept), f"{len(kept):,} pairs of {name}"),
                PairSet(images, table.rows(held),
                        f"{len(held):,} held-out pairs of {name}"))  # fmt: skip
    images = labelled_images(cfg, shape)
    ids = np.unique(images.labels)
    if not hold_out:
        table = fixed_tuples(images.labels, None, "pairs", n_pairs, seed)
        return PairSet(images, table, f"the identities of {name}", len(ids), _names(images, ids)), None
    order = np.random.default_rng(seed).permutation(ids)
    cut = min(len(ids) - 2, max(2, int(round(hold_out * len(ids)))))
    if cut < 2:
        raise CheckpointError(f"{cfg.source}: {len(ids)} identities are too few to hold some out (4 needed); drop "
                              "--hold-out or give more identities")  # fmt: skip
    parts = []
    for part, what in ((order[cut:], "identities"), (order[:cut], "held-out identities")):
        sub = images.subset(np.flatnonzero(np.isin(images.labels, part)))
        table = fixed_tuples(sub.labels, None, "pairs", n_pairs, seed)
        parts.append(PairSet(sub, table, f"{len(part)} {what} of {name}", len(part), _names(images, part)))
    return parts[0], parts[1]


def _names(images: Any, ids: np.ndarray) -> list[str]:
    return [str(images.class_names[i]) for i in ids] if images.class_names else [str(i) for i in ids]


def labelled_images(cfg: Any, shape: tuple[int, int, int]) -> Any:
    """Every image of the labelled source ``cfg.source`` (its own test files too) at the run's input ``shape``
    ``(C, H, W)`` — a non-square one too: folders are decoded at it, tensor sets (IDX, ...) resized to it."""
    import dataclasses

    from siamkit.data.readers import cache_settings, detect_layout, load_dataset, read_flat, read_folder

    c, h, w = shape
    layout = cfg.layout if cfg.layout != "auto" else detect_layout(cfg.source)
    if layout == "folder":
        images = read_folder(cfg.source, c, (h, w), cfg.skip_bad, cache_settings(cfg), grouped=cfg.grouped)
    elif layout == "flat":
        images = read_flat(cfg.source, cfg.flat_field, cfg.flat_regex, c, (h, w), skip_bad=cfg.skip_bad,
                           cache=cache_settings(cfg))  # fmt: skip
    else:
        images = all_images(load_dataset(dataclasses.replace(cfg, image_size=None, channels=c)))
        images = _resized(images, (h, w))
    if not images.has_labels:
        raise CheckpointError(f"{cfg.source}: images without class labels; give a pairs CSV (path_a,path_b,label)")
    return images


def _resized(images: Any, size: tuple[int, int]) -> Any:
    """``images`` (an in-memory ImageSet) at ``size`` (H, W), bilinear, as the readers resize tensor sets."""
    import torch

    from siamkit.data.imageset import ImageSet

    x = images.images
    if tuple(x.shape[-2:]) == size:
        return images
    y = torch.nn.functional.interpolate(x.float(), size=size, mode="bilinear", align_corners=False)
    return ImageSet(y.round().clamp(0, 255).to(torch.uint8), images.labels, images.class_names)


def _warnings(
    run_dir: Path, run_cfg: dict[str, Any], data: str, names: list[str] | None, impostors: int, *, fpr: float | None
) -> list[str]:  # fmt: skip
    """One line each: the calibration identities (``names``) the run was trained or validated on (its threshold
    would be set on people the model knows: too low a false-accept rate), and too few distinct impostor pairs
    (``impostors``) for ``fpr``."""
    out = []
    overlap = training_overlap(run_dir, run_cfg, data, names)
    if overlap:
        out.append(overlap)
    few = too_few_impostors(fpr, impostors) if fpr is not None else None
    if few:
        out.append(few)
    return out


def training_overlap(run_dir: Path, run_cfg: dict[str, Any], data: str, names: list[str] | None) -> str | None:
    """One line when the calibration data shares identities with the run's training or validation identities
    (``metrics.json``), or is the run's own data source (a closed-set run names no identities); else None."""
    metrics = RunDir(run_dir).read_metrics() or {}
    known = {part: set(ids) for part, ids in (metrics.get("identities") or {}).items() if part != "test"}
    hint = "calibrate on people the model never saw (new ones, or the run's test identities)"
    if known and names:
        shared = {part: sorted(set(names) & ids) for part, ids in known.items()}
        shared = {part: ids for part, ids in shared.items() if ids}
        if shared:
            said = "; ".join(f"{len(ids)} {part} ({name_list(ids, 4)})" for part, ids in shared.items())
            return (f"{data} shares identities with the run's training/validation identities: {said} of its "
                    f"{len(names)} — the threshold would be set on people the model knows and accept more impostors "
                    f"on new people; {hint}")  # fmt: skip
        return None
    source = str((run_cfg.get("data") or {}).get("source", ""))
    if Path(data).exists() and source and Path(source).exists() and Path(data).resolve() == Path(source).resolve():
        return f"{data} is the run's own training data: the threshold would be set on images the model knows; {hint}"
    return None


def _run_test_rates(run_dir: Path, threshold: float) -> dict[str, Any] | None:
    """The rates of ``threshold`` on the run's test pairs (``scores.npz``, written by training); None without it."""
    from siamkit.evaluate.metrics import rates_at

    path = RunDir(run_dir).scores
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        if "test_distances" not in z:
            return None
        d, y = z["test_distances"], z["test_labels"]
    if not ((y == 1).any() and (y == 0).any()):
        return None
    far, frr = rates_at(d, y, threshold)
    test_ids = ((RunDir(run_dir).read_metrics() or {}).get("identities") or {}).get("test")
    on = f"the run's {len(test_ids)} test identities" if test_ids else "the run's test images"
    return {"on": f"{on} (its test pairs, scores.npz)", "false_accept_rate": far, "false_reject_rate": frr,
            "impostor_pairs": int((y == 0).sum())}  # fmt: skip


def _refresh_report(run_dir: Path, threshold: float) -> None:
    """Redraw the run's ROC and distance figures at ``threshold`` (from ``scores.npz``) and rewrite its report, so
    that it shows the threshold in use; a folder without them (a pretrained name's copy) is left as it is."""
    from siamkit.report import write_report

    path = RunDir(run_dir).scores
    if path.is_file():
        from siamkit.evaluate import plots

        with np.load(path, allow_pickle=False) as z:
            curves = {k: (z[f"{k}_labels"], z[f"{k}_distances"]) for k in ("train", "validation", "test")
                      if f"{k}_labels" in z}  # fmt: skip
        if curves:
            plots.plot_roc(curves, run_dir / "roc.png", threshold)
        if "test" in curves:
            plots.plot_distances(*curves["test"], threshold, run_dir / "distances.png", "test")
    if RunDir(run_dir).is_finished():
        write_report(run_dir)


def all_images(bundle: Any) -> Any:
    """One ImageSet of everything a source holds: its pool and its own test files (their classes aligned)."""
    from siamkit.data.imageset import ImageSet

    if bundle.tuples is not None:
        raise CheckpointError(f"{bundle.name}: a triplets CSV has no same/different labels; give a pairs CSV")
    if bundle.test is None:
        return bundle.images
    a, b = bundle.images, bundle.test
    if a.class_names != b.class_names:
        raise CheckpointError(f"{bundle.name}: its training and test files name different classes")
    import torch

    return ImageSet(torch.cat([a.images, b.images]), np.concatenate([a.labels, b.labels]), a.class_names)
