"""A trained run, rebuilt for use: its model, threshold, input shape and normalisation, from ``model.safetensors``
(and ``threshold.json`` when calibrated). Nothing of training, evaluation or plotting is imported here, so the
service, ``verify`` and ``search`` start without them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from siamkit.config import RunConfig, from_dict
from siamkit.data.transforms import Preprocess
from siamkit.errors import CheckpointError
from siamkit.models.siamese import SiameseNet, build_model
from siamkit.train.checkpoint import read_weights

WEIGHTS = "model.safetensors"


@dataclass
class LoadedRun:
    cfg: RunConfig
    model: SiameseNet
    threshold: float | None
    input_shape: tuple[int, int, int]
    preprocess: Preprocess


def load_run(run_dir: str | Path, device: torch.device | str = "cpu") -> LoadedRun:
    """Rebuild a trained model from ``run_dir/model.safetensors`` (config and threshold are its metadata; a
    calibrated threshold, ``threshold.json``, wins over the training one)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {str(run_dir)!r} not found; give a folder written by siamkit train")
    state, meta = read_weights(run_dir / WEIGHTS)
    if meta.get("format") != "siamkit-siamese-v1" or "config" not in meta:
        raise CheckpointError(f"{run_dir / WEIGHTS}: no siamkit metadata; it was not written by siamkit train")
    cfg: RunConfig = from_dict(RunConfig, json.loads(meta["config"]))
    shape = tuple(json.loads(meta["input_shape"]))
    model = build_model(cfg.model, int(shape[0]))
    model.load_state_dict(state)
    model.to(device).eval()
    assert cfg.data.mean is not None and cfg.data.std is not None
    from siamkit.calibration import read_threshold

    thr = read_threshold(run_dir, float(meta["threshold"]) if "threshold" in meta else None)
    return LoadedRun(
        cfg,
        model,
        thr,
        (int(shape[0]), int(shape[1]), int(shape[2])),
        Preprocess(cfg.data.mean, cfg.data.std),
    )
