"""The trained model as one object: ``m = siamkit.load("runs/default")`` → ``m.embed``, ``m.verify``, ``m.search``,
``m.threshold``, ``m.export``.

Images may be given as file paths, PIL images, numpy arrays or torch tensors, one or many. Arrays follow their
library's habit: numpy arrays are ``(H, W)`` or ``(H, W, C)`` (as PIL, OpenCV and matplotlib hold images; a batch
``(N, H, W, C)``, or ``(N, H, W)`` for grayscale), tensors ``(C, H, W)`` (a batch ``(N, C, H, W)``); uint8 values
are pixels 0–255, float values are read as 0–1 when none exceeds 1, else as 0–255. Every image goes through the same
conversion as a file (colour mode to the model's channels, bilinear resize to its input size), so an array and the
file it came from embed identically. The PyTorch weights and an ONNX export are served by the same object
(``backend``). A run whose images are faces (``data.faces=align``, the ``dlib-face`` model) aligns every image the
same way: a file, a PIL image and an array all become their face chip (``faces``).

``run_dir`` may also be a pretrained model's name (``"dlib-face"``; ``siamkit.runs.named``): it opens as a run.

The CLI (``verify``, ``index``, ``search``, ``export``), the HTTP service and galleries all use this object.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from siamkit.data.faces import align_image, check_mode, face_alignment, resolve_mode
from siamkit.data.images import image_to_array, load_image, to_mode, upright
from siamkit.data.sources import collect_images
from siamkit.distances import verification_accuracy
from siamkit.errors import ConfigError
from siamkit.runs.embedders import ONNX_META_KEY, Embedder, ModelSource, check_threshold, open_embedder
from siamkit.runs.named import resolve_run_dir

ImageLike = str | os.PathLike[str] | Image.Image | np.ndarray | torch.Tensor
"""One image: a file path, a PIL image, a numpy array ``(H, W[, C])`` or a tensor ``(C, H, W)``."""
EMBED_BATCH = 256
"""Images decoded at a time when a folder is embedded."""
Images = ImageLike | Sequence[ImageLike]
"""One image or many (a sequence of them, a 4-D batch array/tensor, or a folder or CSV of image files, listed
in the order :func:`siamkit.data.sources.collect_images` gives, as ``index build`` lists them)."""


@dataclass(frozen=True)
class Verification:
    """One same/different decision: ``distance`` under the run's metric (smaller = closer), the ``threshold``
    used, and ``same`` (``distance <= threshold``; ``None`` when the run has no threshold)."""

    distance: float
    threshold: float | None
    same: bool | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Model:
    """A trained run ready for use. Build it with :func:`load` (or ``siamkit.train``), not directly.

    Attributes: ``threshold`` (the decision distance: a calibration's when there is one), ``distance`` (the
    metric's name), ``input_shape`` ``(C, H, W)``, ``embedding_dim``, ``model_hash`` (SHA-256 of the weights
    file, which galleries and ONNX exports check), ``backend`` (``"torch"`` or ``"onnx"``), ``run_dir``,
    ``faces`` (``"align"``: every image is first turned into its aligned face chip; ``"off"``).

    Example:
        >>> m = siamkit.load("runs/default")                            # doctest: +SKIP
        >>> m.verify("a.png", "b.png").same                             # doctest: +SKIP
        True
        >>> m.embed(np.zeros((8, 8), np.uint8)).shape                   # doctest: +SKIP
        (64,)
    """

    def __init__(self, embedder: Embedder, result: dict[str, Any] | None = None, faces: str | None = None):
        self.embedder = embedder
        self.result = result
        """The training result (metrics, run folder, ...) when the model came from ``siamkit.train``."""
        self.faces = check_mode(faces) if faces is not None else run_faces(embedder)
        """``align`` when the run's images are face chips (``data.faces``): every image given is aligned first."""

    # -- what the run is ------------------------------------------------------------------------------------
    @property
    def threshold(self) -> float | None:
        return self.embedder.threshold

    @threshold.setter
    def threshold(self, value: float | None) -> None:
        """Change the decision threshold of this object only (``siamkit calibrate`` changes the run's)."""
        self.embedder.threshold = None if value is None else check_threshold(value)

    @property
    def distance(self) -> str:
        return self.embedder.distance

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.embedder.input_shape

    @property
    def embedding_dim(self) -> int:
        return self.embedder.embedding_dim

    @property
    def model_hash(self) -> str:
        return self.embedder.model_hash

    @property
    def backend(self) -> str:
        return self.embedder.backend

    @property
    def run_dir(self) -> str:
        return self.embedder.run_dir

    def describe(self) -> dict[str, Any]:
        """Backend, model hash, run folder, input shape, embedding size, distance and threshold."""
        return self.embedder.describe()

    def __repr__(self) -> str:
        c, h, w = self.input_shape
        return (f"Model({self.run_dir!r}, backend={self.backend!r}, input={c}x{h}x{w}, dim={self.embedding_dim}, "
                f"distance={self.distance!r}, threshold={self.threshold})")  # fmt: skip

    # -- images in ------------------------------------------------------------------------------------------
    def inputs(self, images: Images) -> tuple[torch.Tensor, bool]:
        """The model's input batch ``(N, C, H, W)`` uint8 for ``images``, and whether a single image was given."""
        c, h, w = self.input_shape
        if (isinstance(images, torch.Tensor) and images.ndim == 4 and images.dtype == torch.uint8
                and tuple(images.shape[1:]) == (c, h, w)):  # fmt: skip
            return images, False  # already the model's input
        items, single = split_images(images)
        if not items:
            return torch.empty((0, c, h, w), dtype=torch.uint8), single
        return torch.from_numpy(np.stack([self.prepare(x) for x in items])), single

    def prepare(self, image: ImageLike) -> np.ndarray:
        """One image as the model's input ``(C, H, W)`` uint8 (a file's errors name it)."""
        c, h, w = self.input_shape
        if isinstance(image, (str, os.PathLike)):
            return load_image(image, c, (h, w), faces=self.faces)
        if isinstance(image, Image.Image):  # turned upright as a file of it would be (EXIF orientation)
            return image_to_array(self.face(upright(image), "a PIL image"), c, (h, w))
        if isinstance(image, torch.Tensor):
            t = image.detach().cpu()
            if t.ndim == 3:  # (C, H, W) → (H, W, C), numpy's habit
                t = t.permute(1, 2, 0)
            return self.prepare(t.numpy())
        if isinstance(image, np.ndarray):
            return image_to_array(self.face(array_image(image), "a numpy image"), c, (h, w))
        raise ConfigError(
            f"an image must be a path, PIL image, numpy array or torch tensor, not {type(image).__name__}"
        )

    def face(self, image: Image.Image, source: str) -> Image.Image:
        """``image``'s aligned face chip when the run aligns faces, else ``image``."""
        return align_image(to_mode(image, 3), source) if self.faces == "align" else image

    # -- embeddings and decisions ---------------------------------------------------------------------------
    def embed(self, images: Images) -> np.ndarray:
        """Embeddings, float32: ``(D,)`` for one image, ``(N, D)`` for many (a folder: one row per image file, in
        :func:`~siamkit.data.sources.collect_images` order; decoded a batch at a time)."""
        if isinstance(images, (str, os.PathLike)) and not os.path.isfile(images):
            items, _ = split_images(images)
            parts = [self.embedder.embed(self.inputs(items[s : s + EMBED_BATCH])[0])
                     for s in range(0, len(items), EMBED_BATCH)]  # fmt: skip
            return np.concatenate(parts) if parts else np.empty((0, self.embedding_dim), np.float32)
        batch, single = self.inputs(images)
        vectors = self.embedder.embed(batch)
        return vectors[0] if single else vectors

    def distances(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Row-wise distance ``(N,)`` of embeddings ``(N, D)`` under the run's metric (smaller = closer)."""
        return self.embedder.pair_distances(a, b)

    def decide(self, distance: float) -> bool | None:
        """Same identity when ``distance`` is at most the threshold; ``None`` without a threshold."""
        return self.embedder.decide(distance)

    def verify(self, a: Images, b: Images) -> Verification | list[Verification]:
        """Are ``a`` and ``b`` the same identity? One :class:`Verification` for two images; for two equally long
        collections, one per pair ``(a[i], b[i])``."""
        (xa, single_a), (xb, single_b) = self.inputs(a), self.inputs(b)
        out = self._verify_inputs(xa, xb)
        return out[0] if single_a and single_b else out

    def verify_many(self, a: Images, b: Images) -> list[Verification]:
        """One :class:`Verification` per pair ``(a[i], b[i])`` (one image counts as a collection of one)."""
        return self._verify_inputs(self.inputs(a)[0], self.inputs(b)[0])

    def _verify_inputs(self, xa: torch.Tensor, xb: torch.Tensor) -> list[Verification]:
        if len(xa) != len(xb):
            raise ConfigError(f"verify needs as many images in a as in b ({len(xa)} vs {len(xb)})")
        vectors = self.embedder.embed(torch.cat([xa, xb]))
        return self.decisions(vectors[: len(xa)], vectors[len(xa) :])

    def decisions(self, a: np.ndarray, b: np.ndarray) -> list[Verification]:
        """One :class:`Verification` per row pair of embeddings ``a``, ``b`` ``(N, D)`` (from :meth:`embed`)."""
        return [Verification(float(x), self.threshold, self.decide(float(x))) for x in self.distances(a, b)]

    def search(self, gallery: Any, images: Images, k: int = 10) -> list[Any]:
        """The ``k`` nearest items of a gallery (a folder written by ``siamkit index build``, or an open
        ``siamkit.index.gallery.Gallery``) for each image: a list of ``Hit`` (id, distance, label, path, match)
        for one image, a list of such lists for many. The gallery must have been built with this model."""
        from siamkit.index.gallery import Gallery

        g = gallery if isinstance(gallery, Gallery) else Gallery.open(gallery)
        g.check_model(self.describe())
        batch, single = self.inputs(images)
        distances, ids = g.search(self.embedder.embed(batch), k)
        hits = g.hits(distances, ids, self.threshold)
        return hits[0] if single else hits

    def export(self, out: str | os.PathLike[str] | None = None, opset: int | None = None) -> dict[str, Any]:
        """Write the embedding network as ONNX (default ``RUN_DIR/model.onnx``), parity-checked against PyTorch;
        returns what was measured (see :func:`siamkit.runs.export.export_onnx`)."""
        if self.backend != "torch":
            raise ConfigError("export needs the PyTorch weights: load the run with backend='torch'")
        from siamkit.runs.export import export_onnx

        return export_onnx(self.run_dir, out, opset, trust_code=self.embedder.trust_code)


def split_images(images: Images) -> tuple[list[ImageLike], bool]:
    """``images`` as a list of single images, and whether one image was given. A 4-D array or tensor is a batch;
    so is a 3-D one whose channel axis (numpy's last, a tensor's first) is not 1, 3 or 4: a stack of grayscale
    images ``(N, H, W)``."""
    if isinstance(images, (np.ndarray, torch.Tensor)):
        channels = images.shape[-1] if isinstance(images, np.ndarray) else images.shape[0]
        if images.ndim == 4 or (images.ndim == 3 and channels not in (1, 3, 4)):
            return list(images), False
        return [images], True
    if isinstance(images, (str, os.PathLike)) and (os.path.isdir(images) or str(images).lower().endswith(".csv")):
        return [path for path, _ in collect_images([os.fspath(images)])], False  # as index build lists them
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images], True
    if isinstance(images, Sequence):
        return list(images), False
    raise ConfigError(f"images must be paths, PIL images, numpy arrays or torch tensors, not {type(images).__name__}")


def array_image(arr: np.ndarray) -> Image.Image:
    """A numpy image ``(H, W)`` or ``(H, W, C)`` (C = 1, 3 or 4), uint8 or float (0–1 or 0–255), as a PIL image."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)) or min(arr.shape[:2]) < 1:
        raise ConfigError(f"a numpy image must be (H, W) or (H, W, C) with C = 1, 3 or 4, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        values = arr.astype(np.float64)
        if not np.isfinite(values).all():
            raise ConfigError("a numpy image holds NaN or infinite values")
        scale = 255.0 if values.size and values.max() <= 1.0 else 1.0
        arr = np.clip(values * scale + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(arr))


def load(
    run_dir: str | os.PathLike[str], backend: str = "torch", device: str = "cpu", onnx: str | None = None,
    threshold: float | None = None, *, faces: str | None = None, trust_code: bool = False,
) -> Model:  # fmt: skip
    """The trained run in ``run_dir`` (a folder written by ``siamkit train``, or a pretrained name:
    ``"dlib-face"``) as a :class:`Model`: on PyTorch (``device`` cpu, cuda, mps or auto) or on ONNX Runtime
    (``backend="onnx"``; ``onnx`` = the file, default ``RUN_DIR/model.onnx``). ``threshold`` replaces the run's
    decision threshold for this object; ``faces`` (``align``/``off``) its face alignment (``off`` for images
    that are already aligned chips). A plugin name in the run's files (``model.backbone: package.module:Object``)
    would run code whoever wrote the folder chose: it is refused unless ``trust_code=True``."""
    return open_model(run_dir, ModelSource(backend, onnx, device, threshold, trust_code), faces)


def as_model(model: Model | Embedder) -> Model:
    """A :class:`Model` for ``model`` (an embedder is wrapped)."""
    return model if isinstance(model, Model) else Model(model)


def open_model(run_dir: str | os.PathLike[str], source: str | ModelSource = "torch", faces: str | None = None
               ) -> Model:  # fmt: skip
    """:func:`load` with a :class:`~siamkit.runs.embedders.ModelSource` (the CLI's flags). Every command opens
    its run here: a pretrained name becomes its run folder (``siamkit.runs.named``)."""
    return Model(open_embedder(resolve_run_dir(run_dir), source), faces=faces)


def run_faces(embedder: Embedder) -> str:
    """The face mode a run's images were read with: its config's ``data.faces`` (``auto`` resolved for its
    backbone), or an ONNX export's metadata; ``off`` for runs from before the option."""
    run = getattr(embedder, "run", None)
    if run is not None:
        return resolve_mode(run.cfg.data.faces, run.cfg.model.backbone)
    session = getattr(embedder, "session", None)
    if session is not None:
        raw = session.get_modelmeta().custom_metadata_map.get(ONNX_META_KEY, "{}")
        return str(json.loads(raw).get("faces", "off"))
    return "off"


def verify_pairs(model: Model, pairs_csv: str | Path, out: str | Path | None = None, skip_bad: bool = False,
                 ) -> dict[str, Any]:  # fmt: skip
    """Decide every pair of a CSV (columns ``path_a,path_b`` and optionally ``label``, 1 = same; relative paths
    from the CSV's folder). Writes ``out`` (default ``<csv>_decisions.csv`` beside the CSV) with the distance and
    decision per pair (and ``correct`` when labelled); returns counts and, with labels, the accuracy at the
    threshold. Each distinct image is decoded and embedded once."""
    from siamkit.data.readers import read_tuples_csv
    from siamkit.files import atomic_write_csv

    c, h, w = model.input_shape
    with face_alignment(model.faces):
        images, table = read_tuples_csv(pairs_csv, "pairs", c, (h, w), skip_bad, require_label=False)
    emb = model.embedder.embed(images.images)
    d = model.distances(emb[table.index[:, 0]], emb[table.index[:, 1]])
    assert images.paths is not None
    columns = ["path_a", "path_b", "distance", "same"]
    rows: list[list[Any]] = []
    for r, (i, j) in enumerate(table.index):
        same = model.decide(float(d[r]))
        rows.append([images.paths[i], images.paths[j], f"{d[r]:.6f}", "" if same is None else int(same)])
    result: dict[str, Any] = {"pairs": len(rows), "threshold": model.threshold, "skipped_images": images.skipped}
    if model.threshold is not None:
        result["same"] = int((d <= model.threshold).sum())
    if table.labels is not None:
        columns += ["label", "correct"]
        for row, lab in zip(rows, table.labels, strict=True):
            row += [int(lab), "" if row[3] == "" else int(row[3] == lab)]
        if model.threshold is not None:
            result["accuracy"] = verification_accuracy(d, table.labels, model.threshold)
    path = Path(out) if out is not None else Path(pairs_csv).with_name(Path(pairs_csv).stem + "_decisions.csv")
    atomic_write_csv(path, columns, rows)
    return {"decisions": str(path), **result}
