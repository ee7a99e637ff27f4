"""A trained run on disk, read back: its weights file (``model.safetensors``: the state dict plus string metadata —
the format tag, the run's config, input shape and training threshold) and its calibration (``threshold.json``,
written by ``siamkit calibrate``). Nothing of training, evaluation or plotting is imported here, so the service,
``verify`` and ``search`` start without them; training writes what this module reads (``FORMAT``)."""

from __future__ import annotations

import json
import math
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
from siamkit.registry import code_from_files, refuse_code_in
from siamkit.rundir import FORMAT, RunDir

WEIGHTS = RunDir.WEIGHTS
CALIBRATION = RunDir.THRESHOLD


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
        value = float(json.loads(path.read_text())["threshold"])
    except (ValueError, KeyError, TypeError, OSError):
        value = math.nan
    if not math.isfinite(value):
        raise CheckpointError(f"{path}: not a calibration file written by siamkit calibrate (no finite threshold); "
                              "delete it to use the training threshold, or calibrate again") from None  # fmt: skip
    return value


@dataclass
class LoadedRun:
    cfg: RunConfig
    model: SiameseNet
    threshold: float | None
    input_shape: tuple[int, int, int]
    preprocess: Preprocess


def load_run(run_dir: str | Path, device: torch.device | str = "cpu", trust_code: bool = False) -> LoadedRun:
    """Rebuild a trained model from ``run_dir/model.safetensors`` (config and threshold are its metadata; a
    calibrated threshold, ``threshold.json``, wins over the training one). A plugin name in the saved config
    (``model.backbone: package.module:Object``, a loss, a reader, ...) would run code the folder's author chose:
    it is refused (one line) unless ``trust_code``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {str(run_dir)!r} not found; give a folder written by siamkit train")
    state, meta = read_weights(run_dir / WEIGHTS)
    if meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointError(f"{run_dir / WEIGHTS}: no siamkit metadata; it was not written by siamkit train")
    raw, shape = _metadata(run_dir / WEIGHTS, meta)
    source = str(run_dir / WEIGHTS)
    check_finite(state, source)
    refuse_code_in(raw, source, trust_code)
    with code_from_files(source, trust_code):
        cfg: RunConfig = from_dict(RunConfig, raw)
        model = build_model(cfg.model, int(shape[0]))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise CheckpointError(f"{source}: the weights do not fit the saved config ({first}); re-train the run") \
            from None  # fmt: skip
    model.to(device).eval()
    # as trained: channels-last convolutions run about 1.5× faster on a CPU (the input may stay contiguous)
    model.to(memory_format=torch.channels_last if cfg.train.channels_last else torch.contiguous_format)
    assert cfg.data.mean is not None and cfg.data.std is not None
    _check_normalisation(source, cfg.data.mean, cfg.data.std)
    thr = read_threshold(run_dir, _saved_threshold(source, meta))
    return LoadedRun(cfg, model, thr, shape, Preprocess(cfg.data.mean, cfg.data.std))


def check_finite(state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse (one line naming the file and the first tensor) weights holding NaN or infinite values: a run whose
    training diverged would answer every comparison with NaN distances ("different" for an image and itself)."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"{source}: tensor {name!r} holds {bad:,} NaN or infinite value"
                                  f"{'' if bad == 1 else 's'} (its training diverged); re-train the run, e.g. with a "
                                  "lower train.lr")  # fmt: skip


def _check_normalisation(source: str, mean: list[float], std: list[float]) -> None:
    """The saved ``data.mean``/``data.std``: finite numbers and a positive std (images are divided by it)."""
    values = [*mean, *std]
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in values) or not all(v > 0 for v in std):
        raise CheckpointError(f"{source}: damaged run metadata (data.mean {mean!r}, data.std {std!r}: finite "
                              "numbers and a std above 0 expected); re-train the run")  # fmt: skip


def _metadata(path: Path, meta: dict[str, str]) -> tuple[dict[str, object], tuple[int, int, int]]:
    """The saved config (a dict) and input shape ``(C, H, W)``; damaged metadata is one line naming the file."""
    try:
        raw = json.loads(meta["config"])
        c, h, w = (int(v) for v in json.loads(meta["input_shape"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: damaged run metadata ({type(exc).__name__}: {exc}); re-train the run") \
            from None  # fmt: skip
    if not isinstance(raw, dict) or min(c, h, w) < 1:
        raise CheckpointError(f"{path}: damaged run metadata (config or input_shape); re-train the run")
    return raw, (c, h, w)


def _saved_threshold(source: str, meta: dict[str, str]) -> float | None:
    if "threshold" not in meta:
        return None
    try:
        value = float(meta["threshold"])
        if not math.isfinite(value):
            raise ValueError(value)
    except ValueError:
        raise CheckpointError(f"{source}: damaged run metadata (threshold {meta['threshold']!r}); re-train the run "
                              "or calibrate it (siamkit calibrate)") from None  # fmt: skip
    return value
