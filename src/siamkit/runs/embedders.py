"""Embedders: a trained model behind one small interface (uint8 images in, float32 embeddings out), on PyTorch
or on ONNX Runtime. The gallery, ``search``, ``verify`` and the HTTP service use only this interface.

Every embedder carries the SHA-256 of the ``model.safetensors`` it came from (``model_hash``); an ONNX export
stores that hash in its metadata, so a gallery built on PyTorch is searchable on ONNX Runtime and vice versa,
and any other model is refused. An export older than the run's weights (re-trained, ``--resume``d) is refused
too: its metadata's hash no longer matches the run's ``model.safetensors``; re-run ``siamkit export``.

A run's files may name code (``model.backbone: package.module:Object``, an ONNX export's distance): it is
imported only with ``trust_code`` (``--trust-code``), else refused in one line (``siamkit.registry``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from siamkit.data.cache import ImageArray
from siamkit.data.images import load_image
from siamkit.distances import as_dissimilarity, get_distance
from siamkit.errors import CheckpointError, ConfigError
from siamkit.files import file_sha256
from siamkit.registry import refuse_code_in
from siamkit.rundir import RunDir
from siamkit.runs.artifact import WEIGHTS, load_run, read_threshold, read_weights

ONNX_FILE = RunDir.ONNX
ONNX_META_KEY = "siamkit"


class Embedder:
    """Base class. Subclasses set the attributes and implement :meth:`_embed_batch`.

    Attributes: ``input_shape`` (C, H, W) the model expects; ``distance`` (a registered distance name) and
    ``threshold`` (saved with the run; ``None`` if it had no validation data) for decisions; ``model_hash``;
    ``backend`` (``"torch"`` or ``"onnx"``); ``run_dir``.
    """

    input_shape: tuple[int, int, int]
    distance: str
    threshold: float | None
    model_hash: str
    backend: str
    run_dir: str
    embedding_dim: int
    batch_size: int = 256
    trust_code: bool = False
    """Whether code named by the run's files may be imported (``--trust-code``); an export inherits it."""

    def _embed_batch(self, images: torch.Tensor) -> np.ndarray:
        raise NotImplementedError

    def embed(self, images: ImageArray) -> np.ndarray:
        """Embeddings ``(N, D)`` float32 of uint8 images ``(N, C, H, W)`` of ``input_shape``."""
        if tuple(images.shape[1:]) != self.input_shape:
            raise ValueError(f"images must be (N, {', '.join(map(str, self.input_shape))}), got {tuple(images.shape)}")
        parts = [self._embed_batch(images[s : s + self.batch_size]) for s in range(0, len(images), self.batch_size)]
        return np.concatenate(parts) if parts else np.empty((0, self.embedding_dim), np.float32)

    def load(self, path: str | os.PathLike[str]) -> np.ndarray:
        """One image file decoded to the model's input, ``(C, H, W)`` uint8 (errors name the file)."""
        c, h, w = self.input_shape
        return load_image(path, c, (h, w))

    def embed_files(self, paths: Sequence[str | os.PathLike[str]]) -> np.ndarray:
        if not paths:
            return np.empty((0, self.embedding_dim), np.float32)
        return self.embed(torch.from_numpy(np.stack([self.load(p) for p in paths])))

    def pair_distances(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Row-wise dissimilarity ``(N,)`` of embeddings ``(N, D)`` under the run's distance (smaller = closer)."""
        dist = get_distance(self.distance)
        return as_dissimilarity(dist.pairwise(torch.from_numpy(a), torch.from_numpy(b)), dist).numpy()

    def decide(self, d: float) -> bool | None:
        """Same identity when the distance is at most the saved threshold; ``None`` without a threshold."""
        return None if self.threshold is None else bool(d <= self.threshold)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend, "model_hash": self.model_hash, "run_dir": self.run_dir,
            "input_shape": list(self.input_shape), "embedding_dim": self.embedding_dim, "distance": self.distance,
            "threshold": self.threshold,
        }  # fmt: skip


class TorchEmbedder(Embedder):
    """A run directory's ``model.safetensors`` on PyTorch (eval mode, no gradients)."""

    backend = "torch"

    def __init__(self, run_dir: str | os.PathLike[str], device: str = "cpu", trust_code: bool = False):
        run = load_run(Path(run_dir), device, trust_code)
        self.run = run
        self.trust_code = trust_code
        self.device = torch.device(device)
        self.input_shape = run.input_shape
        self.distance = run.cfg.eval.distance
        self.threshold = run.threshold
        self.model_hash = file_sha256(Path(run_dir) / WEIGHTS)
        self.run_dir = str(Path(run_dir).resolve())
        self.embedding_dim = run.model.embedding_dim
        self.normalize = run.model.normalize

    @torch.no_grad()
    def _embed_batch(self, images: torch.Tensor) -> np.ndarray:
        x = self.run.preprocess(images.to(self.device))
        return self.run.model.embed(x).float().cpu().numpy()


class OnnxEmbedder(Embedder):
    """An ONNX export (``siamkit export``) on ONNX Runtime's CPU provider. The graph takes float32 pixel values
    in [0, 255], ``(N, C, H, W)``, and includes the run's normalisation."""

    backend = "onnx"

    def __init__(self, path: str | os.PathLike[str], run_dir: str | os.PathLike[str] | None = None,
                 trust_code: bool = False):  # fmt: skip
        try:
            import onnxruntime as ort
        except ImportError:
            raise CheckpointError("onnxruntime is not installed; pip install 'siamkit[serve]'") from None
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: ONNX model not found; write it with: siamkit export RUN_DIR")
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise CheckpointError(f"{path}: not a loadable ONNX model ({type(exc).__name__})") from None
        meta = _onnx_meta(path, self.session.get_modelmeta().custom_metadata_map.get(ONNX_META_KEY))
        refuse_code_in(meta, str(path), trust_code)
        self.trust_code = trust_code
        self.input_shape = (int(meta["input_shape"][0]), int(meta["input_shape"][1]), int(meta["input_shape"][2]))
        self.distance = str(meta["distance"])
        self.model_hash = str(meta["model_hash"])
        self.run_dir = str(meta["run_dir"])
        self.threshold = meta["threshold"]
        run = Path(run_dir) if run_dir is not None and (Path(run_dir) / WEIGHTS).is_file() else Path(self.run_dir)
        if (run / WEIGHTS).is_file():  # the run is here: the export must be of its weights as they are now
            self.threshold = current_threshold(path, run, self.model_hash)
        self.embedding_dim = int(meta["embedding_dim"])
        self.normalize = bool(meta["normalize"])
        self.input_name = self.session.get_inputs()[0].name

    def _embed_batch(self, images: torch.Tensor) -> np.ndarray:
        out = self.session.run(None, {self.input_name: images.numpy().astype(np.float32)})[0]
        return np.asarray(out, dtype=np.float32)


ONNX_KEYS = ("input_shape", "distance", "model_hash", "run_dir", "threshold", "embedding_dim", "normalize")


def _onnx_meta(path: Path, raw: str | None) -> dict[str, Any]:
    """The siamkit metadata of an ONNX export; missing or damaged metadata is one line naming the file."""
    if raw is None:
        raise CheckpointError(f"{path}: no siamkit metadata; export it with: siamkit export RUN_DIR")
    try:
        meta = json.loads(raw)
        missing = [k for k in ONNX_KEYS if k not in meta]
        shape = [int(v) for v in meta.get("input_shape", [])]
    except (ValueError, TypeError, AttributeError):
        meta, missing, shape = {}, ["(unreadable)"], []
    if missing or len(shape) != 3:
        raise CheckpointError(f"{path}: damaged siamkit metadata ({', '.join(missing) or 'input_shape'}); re-run: "
                              "siamkit export RUN_DIR")  # fmt: skip
    return dict(meta)


def current_threshold(onnx_path: Path, run_dir: Path, exported_hash: str) -> float | None:
    """The run's threshold now (a calibration wins), after checking that ``onnx_path`` was exported from the
    run's weights as they are now; a stale export (re-trained, resumed) is refused naming the fix."""
    weights = run_dir / WEIGHTS
    if file_sha256(weights) != exported_hash:
        raise CheckpointError(f"{onnx_path}: exported from other weights than {weights} holds now (re-trained or "
                              f"resumed since); re-run: siamkit export {run_dir}")  # fmt: skip
    saved = read_weights(weights)[1].get("threshold")
    try:
        training = float(saved) if saved is not None else None
    except ValueError:
        training = None
    return read_threshold(run_dir, training)


def check_threshold(value: float) -> float:
    """``value`` as a decision distance: NaN or infinity would make every decision the same, so is refused."""
    if not math.isfinite(float(value)):
        raise ConfigError(f"--threshold {value}: must be a finite distance; leave it out for the run's threshold")
    return float(value)


@dataclass(frozen=True)
class ModelSource:
    """How to run a run's model: ``backend`` ``"torch"`` (its safetensors weights, on ``device``: cpu, cuda,
    auto, ...) or ``"onnx"`` (``onnx_path``, default ``RUN_DIR/model.onnx``, on ONNX Runtime's CPU provider)."""

    backend: str = "torch"
    onnx_path: str | None = None
    device: str = "cpu"
    threshold: float | None = None
    """A decision threshold for this use only (``--threshold``), instead of the run's."""
    trust_code: bool = False
    """Import code the run's files name (``model.backbone: package.module:Object``): ``--trust-code``."""


def open_embedder(run_dir: str | os.PathLike[str], backend: str | ModelSource = "torch") -> Embedder:
    """The embedder of ``run_dir`` on ``backend`` (a name, or a :class:`ModelSource` with the ONNX file and the
    device)."""
    source = backend if isinstance(backend, ModelSource) else ModelSource(backend)
    if source.threshold is not None:
        check_threshold(source.threshold)
    embedder: Embedder
    if source.backend == "torch":
        from siamkit.devices import resolve_device

        embedder = TorchEmbedder(run_dir, str(resolve_device(source.device)), source.trust_code)
    elif source.backend == "onnx":
        embedder = OnnxEmbedder(source.onnx_path or Path(run_dir) / ONNX_FILE, run_dir, source.trust_code)
    else:
        raise CheckpointError(f"unknown backend {source.backend!r}; use torch or onnx")
    if source.threshold is not None:
        embedder.threshold = float(source.threshold)
    return embedder
