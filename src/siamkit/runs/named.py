"""Pretrained models by name: ``dlib-face`` works wherever a run folder does (``siamkit verify dlib-face a b``,
``siamkit.load("dlib-face")``, ``index build``, ``serve``, ``eval --as-test``, ``calibrate``, ``export``).

A name is turned into a proper run folder once — ``config.yaml``, ``model.safetensors`` (the weights converted
from the installed ``.dat``, with the run's metadata), ``threshold.json`` (dlib's published 0.6) and
``pretrained.json`` (where the weights came from) — under ``$SIAMKIT_CACHE/pretrained/<name>-<hash>/``, built in a
temporary folder and renamed into place, so two processes never see half of one. Every command then opens that
folder like any trained run: nothing of them needs to know about names. A path that exists always wins over a name.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from siamkit.errors import CheckpointError
from siamkit.rundir import RunDir, check_free, weights_metadata

PRETRAINED_NAMES = ("dlib-face",)
PUBLISHED_RULE = "dlib's published threshold"


def is_pretrained_name(run_dir: str | os.PathLike[str]) -> bool:
    """Whether ``run_dir`` names a pretrained model rather than a folder (an existing path always wins)."""
    return str(run_dir) in PRETRAINED_NAMES and not Path(run_dir).exists()


def resolve_run_dir(run_dir: str | os.PathLike[str]) -> Path:
    """The run folder for ``run_dir``: the folder itself, or a pretrained name's materialised run."""
    if is_pretrained_name(run_dir):
        return materialise(str(run_dir))
    return Path(run_dir)


def materialise(name: str) -> Path:
    """The run folder of pretrained ``name``, written on first use (atomically: temp folder, then rename)."""
    if name != "dlib-face":
        raise CheckpointError(f"unknown pretrained model {name!r}; known: {', '.join(PRETRAINED_NAMES)}")
    from siamkit.data.cache import cache_root
    from siamkit.files import file_sha256
    from siamkit.models.dlib_face import model_file

    source = model_file()
    digest = file_sha256(source)
    root = cache_root() / "pretrained"
    target = root / f"{name}-{digest[:12]}"
    if RunDir(target).config.is_file():  # written last: a folder with it is complete
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}-"))
    try:
        _write_dlib_face(tmp, source, digest)
        try:
            os.rename(tmp, target)
        except OSError:  # another process got there first: use its folder
            if not RunDir(target).config.is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def dlib_face_config() -> Any:
    """The run config of the pretrained ``dlib-face`` model: its 150×150 RGB input with dlib's normalisation,
    aligned faces, no embedding head (the 128-d descriptor is the embedding), unnormalised, Euclidean, 0.6."""
    from siamkit.config import RunConfig
    from siamkit.models.dlib_face import DLIB_PRESET, DLIB_THRESHOLD

    cfg = RunConfig(name="dlib-face")
    cfg.data.source = "dlib-face (pretrained by dlib; no training data here)"
    cfg.data.image_size, cfg.data.channels = DLIB_PRESET.input_size, DLIB_PRESET.channels
    cfg.data.mean, cfg.data.std = list(DLIB_PRESET.mean), list(DLIB_PRESET.std)
    cfg.data.faces = "align"
    cfg.model.backbone = "dlib-face"
    cfg.model.backbone_args = {"pretrained": False}  # the weights are this folder's model.safetensors
    cfg.model.embedding_dim = 0
    cfg.model.normalize = False
    cfg.eval.distance = "euclidean"
    cfg.eval.threshold = str(DLIB_THRESHOLD)
    return cfg


def _write_dlib_face(folder: Path, source: Path, digest: str) -> None:
    from safetensors.torch import save as st_save

    from siamkit.config import to_dict
    from siamkit.files import atomic_write_bytes, atomic_write_text
    from siamkit.models.dlib_face import DLIB_THRESHOLD, load_dlib_face
    from siamkit.models.siamese import SiameseNet

    cfg = dlib_face_config()
    model = SiameseNet(load_dlib_face(source), embedding_dim=0, normalize=False)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    shape = [3, cfg.data.image_size, cfg.data.image_size]
    meta = weights_metadata(to_dict(cfg), shape, DLIB_THRESHOLD)
    atomic_write_bytes(RunDir(folder).weights, st_save(state, metadata=meta))
    calibration = {"threshold": DLIB_THRESHOLD, "rule": PUBLISHED_RULE,
                   "data": "dlib's own report (dlib-models README): the same person when the Euclidean distance is "
                   "below 0.6 (99.38 % on LFW with 100 jitters, 99.13 % without)", "history": []}  # fmt: skip
    atomic_write_text(RunDir(folder).threshold, json.dumps(calibration, indent=2) + "\n")
    provenance = {
        "name": "dlib-face", "weights": str(source), "sha256": digest,
        "model": "dlib_face_recognition_resnet_model_v1 (Davis King; ResNet, 29 convolutions, 128-d)",
        "licence": "the model files are released into the public domain (dlib-models README, CC0); the training "
                   "data (VGG, FaceScrub, scraped faces) has its own terms",
        "converted_by": "siamkit.models.dlib_face (pure-Python reader of dlib's serialisation)",
    }  # fmt: skip
    atomic_write_text(RunDir(folder).pretrained, json.dumps(provenance, indent=2) + "\n")
    atomic_write_text(RunDir(folder).config, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def copy_run(run_dir: Path, out: str | os.PathLike[str]) -> Path:
    """A copy of run folder ``run_dir`` at ``out`` (which must not hold a run yet), for a calibration of its own;
    written beside ``out`` and renamed into place."""
    target = Path(out)
    check_free(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        for item in RunDir.PORTABLE:
            if (run_dir / item).is_file():
                shutil.copy2(run_dir / item, tmp / item)
        if target.exists():
            target.rmdir()
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
