"""What every gallery offers, whichever backend keeps its vectors: :class:`Gallery`, the protocol that the CLI,
the service and :meth:`siamkit.runs.model.Model.search` use, and the code all backends share (search results as
:class:`Hit` rows, the model guard, item files).

A backend is a subclass registered in :data:`BACKENDS` under the name a gallery's ``gallery.json`` gives
(``backend.kind``; none: ``faiss``), with a classmethod ``open_folder(directory, sidecar)``. Two exist: ``faiss``
(:class:`siamkit.index.gallery.FaissGallery`: an index file in the folder, items and edits in SQLite) and
``qdrant`` (:class:`siamkit.index.qdrant.QdrantGallery`: a Qdrant collection).
"""

from __future__ import annotations

import abc
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from siamkit.errors import CheckpointError, DataError
from siamkit.files import recover_swap
from siamkit.index import metrics
from siamkit.index.faiss_index import faiss_module
from siamkit.index.folder import FORMAT, SIDECAR, UPLOADS, read_sidecar
from siamkit.registry import Registry, code_from_files

DEFAULT_BACKEND = "faiss"
BACKENDS: Registry[Any] = Registry("gallery backend", providers=("siamkit.index.gallery", "siamkit.index.qdrant"))
"""Gallery backends: ``name`` → a :class:`Gallery` subclass with a classmethod ``open_folder(directory, static)``
(``gallery.json``'s ``backend.kind`` names it; a gallery without that entry is ``faiss``)."""


@dataclass(frozen=True)
class Item:
    """One gallery entry: its id, the image it came from (absolute, or relative to the gallery folder for
    uploads) and its label (``None`` when unknown)."""

    id: int
    path: str
    label: str | None


@dataclass(frozen=True)
class Hit:
    """One search result; ``match``: the distance is within the model's verification threshold (``None`` when the
    run saved no threshold) — the identification decision "this is the gallery item's identity"."""

    rank: int
    id: int
    distance: float
    label: str | None
    path: str
    match: bool | None = None
    """Within the verification threshold — the model's decision "this is the gallery item's identity", which may be
    wrong: compare ``label``."""


class Gallery(abc.ABC):
    """Embeddings with ids, paths and labels, searchable by nearest neighbour, in a gallery folder. Open one with
    :meth:`open` (any backend), make a new faiss one with :meth:`create`; :meth:`add` / :meth:`remove` change it
    and :meth:`save` commits them; :meth:`search` then :meth:`hits` answer queries."""

    directory: Path
    """The gallery folder (``gallery.json``, ``uploads/``)."""
    meta: dict[str, Any]
    """What the gallery is (``siamkit.index.folder.STATIC_KEYS``) and where it stands (backend-specific keys)."""
    items: Mapping[int, Item]
    """The items by id, pending edits included."""

    # ---- opening --------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> Gallery:
        """The committed gallery in ``directory``, of whichever backend its ``gallery.json`` names."""
        directory = Path(directory)
        recover_swap(directory)
        static = read_sidecar(directory)
        backend = static.get("backend")
        name = DEFAULT_BACKEND
        if isinstance(backend, dict) and static.get("format") == FORMAT:  # kept in a vector database
            name = str(backend.get("kind"))
        with code_from_files(str(directory / SIDECAR)):  # a backend named by the file is a registered one, never code
            backend_class: Any = BACKENDS.get(name)
        opened: Gallery = backend_class.open_folder(directory, static)
        return opened

    @classmethod
    def create(
        cls, directory: str | os.PathLike[str], model: dict[str, Any], kind: str = "flat",
        options: dict[str, Any] | None = None, overwrite: bool = False,
    ) -> Gallery:  # fmt: skip
        """A new, empty faiss gallery (:meth:`siamkit.index.gallery.FaissGallery.create`; a Qdrant one:
        :meth:`siamkit.index.qdrant.QdrantGallery.create_on`). Nothing is written until :meth:`save`."""
        faiss_class: Any = BACKENDS.get(DEFAULT_BACKEND)
        created: Gallery = faiss_class.create(directory, model, kind, options, overwrite)
        return created

    @classmethod
    @abc.abstractmethod
    def open_folder(cls, directory: Path, static: dict[str, Any]) -> Gallery:
        """The gallery whose sidecar ``static`` was read from ``directory``."""

    # ---- state ----------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def __len__(self) -> int:
        """The number of items, pending edits included."""

    @abc.abstractmethod
    def is_stale(self) -> bool:
        """True when another process has committed a change since this one was opened, refreshed or saved."""

    @abc.abstractmethod
    def refresh(self) -> Gallery:
        """The up-to-date gallery (``self``, caught up, or a newly opened one)."""

    @property
    def kind(self) -> str:
        """The index kind (``flat``, ``hnsw``, ``ivf``; ``qdrant``)."""
        return str(self.meta["index"]["kind"])

    @property
    def metric(self) -> str:
        """The run's distance the gallery answers in (smaller = closer)."""
        return str(self.meta["metric"])

    @property
    def model_hash(self) -> str:
        return str(self.meta["model_hash"])

    def describe(self) -> dict[str, Any]:
        """What the gallery is and its size (backends add their own keys: ``pending_edits``, ``backend``)."""
        keys = ("model_hash", "run_dir", "dim", "metric", "normalized", "index", "generation")
        return {"directory": str(self.directory), "size": len(self), **{k: self.meta[k] for k in keys}}

    def check_model(self, model: dict[str, Any]) -> None:
        """Refuse a model other than the one the gallery was built with (its embeddings are not comparable)."""
        if model["model_hash"] != self.model_hash:
            raise CheckpointError(
                f"{self.directory}: the gallery was built with model {self.model_hash[:12]} (run "
                f"{self.meta['run_dir']}) but the model given is {model['model_hash'][:12]} (run {model['run_dir']}); "
                "search with the gallery's run, or rebuild the gallery with this model (siamkit index build)"
            )
        if int(model["embedding_dim"]) != self.meta["dim"]:  # pragma: no cover - implied by the hash
            raise CheckpointError(f"{self.directory}: embedding size {model['embedding_dim']} != {self.meta['dim']}")

    # ---- changes --------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def peek_next_id(self) -> int:
        """The id the next added item will get (the service names an upload after it before adding it)."""

    @abc.abstractmethod
    def add(self, vectors: np.ndarray, paths: Sequence[str], labels: Sequence[str | None]) -> list[int]:
        """Add ``vectors`` ``(N, D)`` with their paths and labels; returns the new ids (never reused)."""

    @abc.abstractmethod
    def remove(self, ids: Sequence[int]) -> list[Item]:
        """Remove items by id; an unknown id is a ``KeyError`` (nothing is removed then)."""

    @abc.abstractmethod
    def save(self) -> None:
        """Commit the edits since the last commit (a new gallery's folder is written whole, its sidecar last)."""

    @abc.abstractmethod
    def compact(self) -> None:
        """Fold the committed edits into the index (call it under :func:`siamkit.index.folder.locked`)."""

    def prepare(self, vectors: np.ndarray) -> np.ndarray:
        """``vectors`` as the index takes them: float32 ``(N, D)``, L2-normalised for the cosine distances."""
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.meta["dim"]:
            raise DataError(f"vectors must be (N, {self.meta['dim']}), got {x.shape}")
        if self.meta["normalized"]:
            x = x.copy()
            faiss_module().normalize_L2(x)
        return x

    # ---- search ---------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def search(
        self, vectors: np.ndarray, k: int = 10, nprobe: int | None = None, ef_search: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest items of each query ``(Q, D)``: distances ``(Q, k')`` (smaller = closer, in the run's
        distance) and ids ``(Q, k')`` with ``k' = min(k, len(self))``, nearest first (id −1: no item).
        ``nprobe`` / ``ef_search``: this call's search breadth, where the index kind has one."""

    def to_distance(self, raw: np.ndarray) -> np.ndarray:
        """The index's raw scores (faiss's: squared L2, or the inner product) → the run's dissimilarity."""
        return metrics.to_distance(raw, self.metric)

    def hits(self, distances: np.ndarray, ids: np.ndarray, threshold: float | None = None) -> list[list[Hit]]:
        """Search results as :class:`Hit` rows (the −1 padding dropped); ``match`` against ``threshold`` (the
        model's: calibrated, or overridden for one call), else the one saved when the gallery was built."""
        thr = self.meta.get("threshold") if threshold is None else threshold
        out = []
        for drow, irow in zip(distances, ids, strict=True):
            row = [(int(i), float(d)) for d, i in zip(drow, irow, strict=True) if i >= 0]
            items = [self.item(i) for i, _ in row]
            out.append([Hit(r + 1, i, d, it.label, it.path, None if thr is None else d <= thr)
                        for r, ((i, d), it) in enumerate(zip(row, items, strict=True))])  # fmt: skip
        return out

    # ---- items ----------------------------------------------------------------------------------------------
    def item(self, item_id: int) -> Item:
        """The item with id ``item_id`` (a hit's path and label)."""
        return self.items[item_id]

    def resolve(self, item: Item) -> Path:
        """The image file of an item (uploads are stored relative to the gallery folder)."""
        p = Path(item.path)
        return p if p.is_absolute() else self.directory / p

    def owned_upload(self, item: Item) -> Path | None:
        """The item's file when the gallery owns it — an upload under its own ``uploads/`` folder, checked on the
        resolved path (no ``..``, no link out) — else None. Only such files are ever deleted with their item."""
        if Path(item.path).is_absolute():
            return None
        uploads = (self.directory / UPLOADS).resolve()
        path = (self.directory / item.path).resolve()
        return path if path.is_relative_to(uploads) and path != uploads else None
