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
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from siamkit.errors import CheckpointError
from siamkit.files import atomic_write_text
from siamkit.runs.artifact import CALIBRATION, WEIGHTS, read_weights


def calibrate_run(
    run_dir: str | os.PathLike[str], data: str, rule: str, backend: Any = "torch", skip_bad: bool = False,
    n_pairs: int | None = None, seed: int = 0, out: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Choose the run's threshold by ``rule`` (``accuracy``, ``fpr:<rate>`` or a number; see ``eval.threshold``)
    on the pairs of ``data``: a pairs CSV with a label column (1 = same), or any labelled source (a class-per-folder
    or flat folder, IDX, ...) whose distinct pairs are drawn (up to ``n_pairs`` genuine and impostor each; default
    the run's ``eval.n_pairs``). Writes ``threshold.json`` (the previous thresholds kept in its history) and
    returns the new threshold with its error rates on those pairs. With ``out`` (a new folder), the calibrated run
    is written there instead: a copy of the run with the new threshold (a pretrained name such as ``dlib-face``
    needs it).
    Images are read as the run reads them (aligned face chips with ``data.faces=align``)."""
    from siamkit.data.faces import face_alignment
    from siamkit.data.readers import detect_layout, read_tuples_csv
    from siamkit.evaluate.evaluator import PairScores, parse_threshold_rule, threshold_metrics
    from siamkit.runs.model import open_model
    from siamkit.runs.named import copy_run, is_pretrained_name, resolve_run_dir

    parse_threshold_rule(rule)
    if out is None and is_pretrained_name(run_dir):
        raise CheckpointError(f"{run_dir} is a pretrained model shared by every use of its name: give --out RUN "
                              "(a new folder) to write the calibrated run there")  # fmt: skip
    run_dir = resolve_run_dir(run_dir)
    model = open_model(run_dir, backend)
    meta = read_weights(run_dir / WEIGHTS)[1]  # the training threshold and config, read once
    run_eval = json.loads(meta["config"]).get("eval", {})
    c, h, w = model.input_shape
    with face_alignment(model.faces):
        if detect_layout(data) == "pairs-csv":
            images, table = read_tuples_csv(data, "pairs", c, (h, w), skip_bad)
        else:
            pairs = n_pairs or int(run_eval.get("n_pairs", 5000))
            images, table = _drawn_pairs(data, (c, h, w), skip_bad, pairs, seed)
    emb = model.embedder.embed(images.images)
    assert table.labels is not None
    distances = model.distances(emb[table.index[:, 0]], emb[table.index[:, 1]]).astype(np.float64)
    scores = PairScores(distances, table.labels, table.index)
    if not ((scores.labels == 1).any() and (scores.labels == 0).any()):
        raise CheckpointError(f"{data}: calibration needs both genuine (label 1) and impostor (label 0) pairs")
    threshold = scores.choose_threshold(rule)
    entry = {
        "threshold": threshold, "rule": rule, "data": str(Path(data).resolve()) if Path(data).exists() else data,
        "genuine_pairs": scores.distinct(1), "impostor_pairs": scores.distinct(0),
        **{k: v for k, v in threshold_metrics(scores, threshold).items() if k != "threshold"},
        "calibrated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }  # fmt: skip
    if out is not None:  # only now, with the threshold chosen: a failure above leaves no folder behind
        run_dir = copy_run(run_dir, out)
    previous = _previous(run_dir, meta, run_eval.get("threshold", "accuracy"))
    record = {**entry, "history": previous}
    atomic_write_text(run_dir / CALIBRATION, json.dumps(record, indent=2) + "\n")
    return {"run_dir": str(run_dir), "file": str(run_dir / CALIBRATION), **entry,
            "previous_threshold": previous[-1]["threshold"] if previous else None}  # fmt: skip


def _previous(run_dir: Path, meta: dict[str, str], rule: str) -> list[dict[str, Any]]:
    """The history to keep: the current calibration's own history and entry, or the training threshold (from the
    weights' metadata ``meta``, chosen by ``rule``)."""
    path = run_dir / CALIBRATION
    if path.is_file():
        old = json.loads(path.read_text())
        history = list(old.pop("history", []))
        return [*history, old]
    if "threshold" not in meta:
        return []
    return [{"threshold": float(meta["threshold"]), "rule": rule, "data": "the run's validation pairs (training)"}]


def _drawn_pairs(
    data: str, shape: tuple[int, int, int], skip_bad: bool, n_pairs: int, seed: int
) -> tuple[Any, Any]:  # fmt: skip
    """Every image of a labelled source (its own test files too) and up to ``n_pairs`` + ``n_pairs`` distinct pairs."""
    from siamkit.config import DataConfig
    from siamkit.data.readers import load_dataset
    from siamkit.data.tuples import fixed_tuples

    images = all_images(load_dataset(DataConfig(source=data, image_size=shape[1], channels=shape[0],
                                                skip_bad=skip_bad)))  # fmt: skip
    if not images.has_labels:
        raise CheckpointError(f"{data}: images without class labels; give a pairs CSV (path_a,path_b,label)")
    return images, fixed_tuples(images.labels, None, "pairs", n_pairs, seed)


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
