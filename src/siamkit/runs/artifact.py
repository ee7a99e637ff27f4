"""A trained run on disk, read back: its weights file (``model.safetensors``: the state dict plus string metadata —
the format tag, the run's config, input shape and training threshold) and its calibration (``threshold.json``,
written by ``siamkit calibrate``). Nothing of training, evaluation or plotting is imported here, so the service,
``verify`` and ``search`` start without them; training writes what this module reads (``FORMAT``)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load

from siamkit.config import RunConfig, from_dict
from siamkit.data.transforms import Preprocess
from siamkit.errors import CheckpointError
from siamkit.models.siamese import SiameseNet, build_model

WEIGHTS = "model.safetensors"
FORMAT = "siamkit-siamese-v1"
"""The ``format`` entry of the weights' metadata."""
CALIBRATION = "threshold.json"


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file: (state dict, metadata). Nothing is unpickled."""
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found; train a model first (siamkit train)")
    raw = path.read_bytes()
    try:
        state = st_load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        meta = json.loads(raw[8 : 8 + header_len]).get("__metadata__", {}) or {}
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not a valid safetensors file ({exc})") from None
    return state, meta


def read_threshold(run_dir: str | os.PathLike[str], saved: float | None) -> float | None:
    """The run's threshold: the calibrated one (``threshold.json``) when there is one, else ``saved`` (the
    training threshold from the weights' metadata). Every consumer of a run reads it through here."""
    path = Path(run_dir) / CALIBRATION
    if not path.is_file():
        return saved
    try:
        value = json.loads(path.read_text())["threshold"]
        return float(value)
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{path}: not a calibration file written by siamkit calibrate; delete it to use the "
                              "training threshold") from None  # fmt: skip


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
    if meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointError(f"{run_dir / WEIGHTS}: no siamkit metadata; it was not written by siamkit train")
    cfg: RunConfig = from_dict(RunConfig, json.loads(meta["config"]))
    shape = tuple(json.loads(meta["input_shape"]))
    model = build_model(cfg.model, int(shape[0]))
    model.load_state_dict(state)
    model.to(device).eval()
    # as trained: channels-last convolutions run about 1.5× faster on a CPU (the input may stay contiguous)
    model.to(memory_format=torch.channels_last if cfg.train.channels_last else torch.contiguous_format)
    assert cfg.data.mean is not None and cfg.data.std is not None
    thr = read_threshold(run_dir, float(meta["threshold"]) if "threshold" in meta else None)
    return LoadedRun(
        cfg,
        model,
        thr,
        (int(shape[0]), int(shape[1]), int(shape[2])),
        Preprocess(cfg.data.mean, cfg.data.std),
    )
