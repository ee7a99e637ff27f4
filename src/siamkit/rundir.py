"""The run folder's format in one place: the name of every file a run holds, the weights' metadata written into
``model.safetensors`` and read back, and the small reads every consumer of a run shares.

A run folder (``runs/<name>/``) holds::

    config.yaml           the resolved config (written first: the run exists)
    config-sources.json   where each key that is not a default came from (the user, the recipe, the data, ...)
    model.safetensors     the kept weights; metadata: format, config (JSON), input shape, training threshold
    last.pt               the resumable training state (removed when the run finishes)
    history.csv           one row per epoch
    metrics.json          the evaluation (written last: the run is finished)
    scores.npz            the evaluation pairs' distances and labels (ROC overlays, calibration's test rates)
    threshold.json        a calibration (``siamkit calibrate``), preferred to the training threshold
    model.onnx            an export (``siamkit export``), stamped with the weights' hash and threshold
    report.html           the run's page; loss_curve.png, roc.png, distances.png, neighbours.png, tsne.png
    pretrained.json       a pretrained model's provenance (``dlib-face``)
    FAILED                why training stopped (a resumable run)
    eval/, eval-<data>/   re-evaluations, each with its metrics.json and report.html

Imports nothing but the standard library: the service, the CLI's light commands and the report read runs
through it without importing torch.

Example:
    >>> run = RunDir("runs/default")
    >>> run.weights.name, run.metrics.name
    ('model.safetensors', 'metrics.json')
    >>> weights_metadata({"name": "x"}, (1, 8, 8), 0.5)["input_shape"]
    '[1, 8, 8]'
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FORMAT = "siamkit-siamese-v1"
"""The ``format`` entry of the weights' metadata."""


class RunDir:
    """A run folder by its files. ``RunDir(path).weights`` is the weights file's path, and so on for each name."""

    CONFIG = "config.yaml"
    CONFIG_SOURCES = "config-sources.json"
    WEIGHTS = "model.safetensors"
    STATE = "last.pt"
    HISTORY = "history.csv"
    METRICS = "metrics.json"
    SCORES = "scores.npz"
    THRESHOLD = "threshold.json"
    ONNX = "model.onnx"
    REPORT = "report.html"
    LOSS_CURVE = "loss_curve.png"
    PRETRAINED = "pretrained.json"
    FAILED = "FAILED"
    STUDY_OVERRIDES = "study-overrides.json"
    PORTABLE = (CONFIG, WEIGHTS, THRESHOLD, PRETRAINED, METRICS)
    """What a copy of a run for a calibration of its own carries (``siamkit calibrate --out``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def config_sources(self) -> Path:
        return self.path / self.CONFIG_SOURCES

    @property
    def weights(self) -> Path:
        return self.path / self.WEIGHTS

    @property
    def state(self) -> Path:
        return self.path / self.STATE

    @property
    def history(self) -> Path:
        return self.path / self.HISTORY

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def scores(self) -> Path:
        return self.path / self.SCORES

    @property
    def threshold(self) -> Path:
        return self.path / self.THRESHOLD

    @property
    def onnx(self) -> Path:
        return self.path / self.ONNX

    @property
    def report(self) -> Path:
        return self.path / self.REPORT

    @property
    def loss_curve(self) -> Path:
        return self.path / self.LOSS_CURVE

    @property
    def pretrained(self) -> Path:
        return self.path / self.PRETRAINED

    @property
    def failed(self) -> Path:
        return self.path / self.FAILED

    @property
    def study_overrides(self) -> Path:
        return self.path / self.STUDY_OVERRIDES

    def is_finished(self) -> bool:
        """A trained (or evaluated) run: its config and its metrics, written last."""
        return self.metrics.is_file() and self.config.is_file()

    def is_calibrated(self) -> bool:
        return self.threshold.is_file()

    def read_metrics(self) -> dict[str, Any] | None:
        """``metrics.json`` as a dict, or None when missing or unreadable."""
        return read_json_object(self.metrics)

    def read_calibration(self) -> dict[str, Any] | None:
        """``threshold.json`` as a dict, or None when missing or unreadable."""
        return read_json_object(self.threshold)


def check_free(target: Path) -> None:
    """Refuse (one line) ``target`` as the folder of a new copy of a run when it holds a run or anything else."""
    from siamkit.errors import CheckpointError

    if RunDir(target).weights.exists():
        raise CheckpointError(f"{target} already holds a run; give a new folder to --out, or calibrate {target} "
                              "itself")  # fmt: skip
    if target.exists() and any(target.iterdir()):
        raise CheckpointError(f"{target} exists and is not empty; give a new folder to --out")


def read_json_object(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None when missing or unreadable (provenance is information, never a failure)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def weights_metadata(config: dict[str, Any], input_shape: Sequence[int], threshold: float | None) -> dict[str, str]:
    """The string metadata stored in ``model.safetensors``: the format tag, the run's config (a plain dict, as
    ``siamkit.config.to_dict`` gives it), the input shape and, once evaluated, the training threshold."""
    meta = {"format": FORMAT, "config": json.dumps(config), "input_shape": json.dumps(list(input_shape))}
    if threshold is not None:
        meta["threshold"] = repr(float(threshold))
    return meta
