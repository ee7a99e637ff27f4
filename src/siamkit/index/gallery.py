"""A persisted, searchable gallery: a faiss index of embeddings plus a JSON sidecar (ids, paths, labels, dimension,
metric, normalisation, index options and the SHA-256 of the model that embedded it).

On disk (``GALLERY_DIR/``)::

    gallery.json           the sidecar; its ``index_file`` names the current index
    index-000007.faiss     the faiss index of generation 7 (ids = the sidecar's item ids)
    uploads/<id>.png       images added over HTTP (re-encoded PNG), so the web page can show them

Every change writes a new ``index-<generation>.faiss`` (temp file, then rename) and then replaces
``gallery.json`` the same way: the sidecar's rename is the commit point, so a crash at any moment leaves the
previous complete gallery (a stray newer index file is ignored and removed by the next commit).

Distances are those of the run's ``eval.distance`` as ``verify`` uses them (smaller = closer): ``euclidean``
(L2 index, square root taken), ``squared_euclidean``, ``cosine`` (1 − cos, inner product of L2-normalised
vectors) and ``cosine_similarity`` (reported negated, like the verification threshold).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from siamkit.errors import CheckpointError, ConfigError, DataError
from siamkit.files import atomic_write_bytes, atomic_write_text

FORMAT = "siamkit-gallery-v1"
UPLOADS = "uploads"
SIDECAR = "gallery.json"
INDEX_KINDS = ("flat", "hnsw", "ivf")
IP_METRICS = ("cosine", "cosine_similarity")
L2_METRICS = ("euclidean", "squared_euclidean")
DEFAULT_OPTIONS: dict[str, dict[str, int]] = {
    "flat": {},
    "hnsw": {"m": 32, "ef_construction": 80, "ef_search": 64},
    "ivf": {"nlist": 1024, "nprobe": 16},
}


def _faiss() -> Any:
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its CPU-feature probing is not news
    try:
        import faiss
    except ImportError:
        raise ConfigError("galleries need faiss: pip install 'siamkit[serve]' (or faiss-cpu)") from None
    return faiss


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


def index_options(kind: str, options: dict[str, Any] | None = None) -> dict[str, int]:
    """Defaults of ``kind`` updated by ``options``; unknown option names are an error."""
    if kind not in INDEX_KINDS:
        raise ConfigError(f"unknown index kind {kind!r}; use one of {', '.join(INDEX_KINDS)}")
    merged = dict(DEFAULT_OPTIONS[kind])
    for key, value in (options or {}).items():
        if key not in merged:
            allowed = ", ".join(merged) or "none"
            raise ConfigError(f"index option {key!r} does not apply to a {kind} index (options: {allowed})")
        if int(value) < 1:
            raise ConfigError(f"index option {key}={value}: must be a positive integer")
        merged[key] = int(value)
    return merged


def new_index(kind: str, dim: int, metric: str, options: dict[str, int]) -> Any:
    """An empty faiss index that takes ids: IDMap2 over Flat or HNSW; IVF-Flat with a hash-table direct map (so
    items can be removed and reconstructed by id)."""
    faiss = _faiss()
    fm = faiss.METRIC_INNER_PRODUCT if metric in IP_METRICS else faiss.METRIC_L2
    if kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlat(dim, fm))
    if kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, options["m"], fm)
        inner.hnsw.efConstruction = options["ef_construction"]
        return faiss.IndexIDMap2(inner)
    quantizer = faiss.IndexFlat(dim, fm)
    index = faiss.IndexIVFFlat(quantizer, dim, options["nlist"], fm)
    index.own_fields = True
    quantizer.this.disown()  # the IVF index now owns and frees its quantizer
    index.set_direct_map_type(faiss.DirectMap.Hashtable)
    return index


def set_search_params(index: Any, kind: str, options: dict[str, int]) -> None:
    faiss = _faiss()
    if kind == "hnsw":
        faiss.downcast_index(index.index).hnsw.efSearch = options["ef_search"]
    elif kind == "ivf":
        index.nprobe = options["nprobe"]


class Gallery:
    """Embeddings with ids, paths and labels, searchable by nearest neighbour. Create with :meth:`create`, open
    with :meth:`open`; :meth:`add` / :meth:`remove` change it in memory and :meth:`save` commits atomically."""

    def __init__(self, directory: Path, meta: dict[str, Any], index: Any, items: dict[int, Item]):
        self.directory = directory
        self.meta = meta
        self.index = index
        self.items = items
        self.stamp = self._sidecar_stamp()
        set_search_params(index, meta["index"]["kind"], meta["index"]["options"])

    def _sidecar_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = (self.directory / SIDECAR).stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def is_stale(self) -> bool:
        """True when another process has committed a newer version since this one was opened or saved (every
        commit renames a new sidecar into place, so its inode changes)."""
        return self._sidecar_stamp() != self.stamp

    # ---- construction --------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls, directory: str | os.PathLike[str], model: dict[str, Any], kind: str = "flat",
        options: dict[str, Any] | None = None, overwrite: bool = False,
    ) -> Gallery:  # fmt: skip
        """An empty gallery for the model described by ``model`` (``Embedder.describe()``: model_hash, run_dir,
        input_shape, embedding_dim, distance, threshold). Nothing is written until :meth:`save`."""
        directory = Path(directory)
        if (directory / SIDECAR).exists() and not overwrite:
            raise DataError(f"{directory}: a gallery exists there; use index add, or pass --overwrite to rebuild it")
        opts = index_options(kind, options)
        dim = int(model["embedding_dim"])
        meta = {
            "format": FORMAT, "model_hash": model["model_hash"], "run_dir": model["run_dir"],
            "input_shape": list(model["input_shape"]), "dim": dim, "metric": model["distance"],
            "normalized": model["distance"] in IP_METRICS, "threshold": model.get("threshold"),
            "index": {"kind": kind, "options": opts}, "generation": 0, "index_file": None, "next_id": 0,
        }  # fmt: skip
        return cls(directory, meta, new_index(kind, dim, meta["metric"], opts), {})

    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> Gallery:
        directory = Path(directory)
        sidecar = directory / SIDECAR
        if not sidecar.is_file():
            raise DataError(f"{directory}: not a gallery (no {SIDECAR}); build one with: siamkit index build RUN_DIR "
                            f"IMAGES... --out {directory}")  # fmt: skip
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{sidecar}: unreadable sidecar ({exc}); rebuild the gallery") from None
        if meta.get("format") != FORMAT:
            raise DataError(f"{sidecar}: format {meta.get('format')!r} is not {FORMAT}; rebuild the gallery")
        items = {int(i): Item(int(i), p, lab) for i, p, lab in meta.pop("items")}
        if meta["index_file"] is None:
            index = new_index(meta["index"]["kind"], meta["dim"], meta["metric"], meta["index"]["options"])
        else:
            path = directory / meta["index_file"]
            try:
                index = _faiss().read_index(str(path))
            except RuntimeError as exc:
                raise DataError(f"{path}: unreadable faiss index ({str(exc).splitlines()[0]}); rebuild the gallery") \
                    from None  # fmt: skip
        if index.ntotal != len(items):
            raise DataError(f"{directory}: index holds {index.ntotal} vectors but the sidecar {len(items)} items; "
                            "rebuild the gallery")  # fmt: skip
        return cls(directory, meta, index, items)

    # ---- properties ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    @property
    def kind(self) -> str:
        return str(self.meta["index"]["kind"])

    @property
    def metric(self) -> str:
        return str(self.meta["metric"])

    @property
    def model_hash(self) -> str:
        return str(self.meta["model_hash"])

    def describe(self) -> dict[str, Any]:
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

    # ---- changes ------------------------------------------------------------------------------------------
    def _prepare(self, vectors: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.meta["dim"]:
            raise DataError(f"vectors must be (N, {self.meta['dim']}), got {x.shape}")
        if self.meta["normalized"]:
            x = x.copy()
            _faiss().normalize_L2(x)
        return x

    def add(self, vectors: np.ndarray, paths: Sequence[str], labels: Sequence[str | None]) -> list[int]:
        """Add ``vectors`` ``(N, D)`` with their paths and labels; returns the new ids (never reused)."""
        if not (len(vectors) == len(paths) == len(labels)):
            raise ValueError("vectors, paths and labels differ in length")
        if not len(vectors):
            return []
        x = self._prepare(vectors)
        if self.kind == "ivf" and not self.index.is_trained:
            nlist = self.meta["index"]["options"]["nlist"]
            if len(x) < nlist:
                raise DataError(
                    f"an IVF index with nlist={nlist} needs at least {nlist} images to train its centroids, got "
                    f"{len(x)}; use --index flat, or a smaller --nlist (about images/39 or fewer)"
                )
            self.index.train(x)
        start = int(self.meta["next_id"])
        ids = np.arange(start, start + len(x), dtype=np.int64)
        self.index.add_with_ids(x, ids)
        self.meta["next_id"] = start + len(x)
        for i, p, lab in zip(ids.tolist(), paths, labels, strict=True):
            self.items[i] = Item(i, str(p), lab)
        return list(ids.tolist())

    def remove(self, ids: Sequence[int]) -> list[Item]:
        """Remove items by id; an unknown id is an error (nothing is removed then)."""
        missing = [i for i in ids if i not in self.items]
        if missing:
            raise KeyError(f"no gallery item with id {missing[0]}")
        sel = np.asarray(sorted(set(ids)), dtype=np.int64)
        if not len(sel):
            return []
        if self.kind == "hnsw":  # HNSW graphs cannot delete: rebuild from the stored vectors of what remains
            faiss = _faiss()
            kept_ids = faiss.vector_to_array(self.index.id_map)
            vectors = self.index.index.reconstruct_n(0, self.index.ntotal)
            keep = ~np.isin(kept_ids, sel)
            opts = self.meta["index"]["options"]
            fresh = new_index("hnsw", self.meta["dim"], self.metric, opts)
            fresh.add_with_ids(np.ascontiguousarray(vectors[keep]), kept_ids[keep])
            set_search_params(fresh, "hnsw", opts)
            self.index = fresh
        else:
            removed = self.index.remove_ids(sel)
            assert removed == len(sel), (removed, len(sel))
        return [self.items.pop(int(i)) for i in sel]

    def save(self) -> None:
        """Commit: write the next generation's index file, then the sidecar that names it (both atomic)."""
        faiss = _faiss()
        self.directory.mkdir(parents=True, exist_ok=True)
        generation = int(self.meta["generation"]) + 1
        name = f"index-{generation:06d}.faiss"
        atomic_write_bytes(self.directory / name, faiss.serialize_index(self.index).tobytes())
        meta = {**self.meta, "generation": generation, "index_file": name}
        items = [[it.id, it.path, it.label] for it in sorted(self.items.values(), key=lambda it: it.id)]
        atomic_write_text(self.directory / SIDECAR, json.dumps({**meta, "items": items}) + "\n")
        self.meta = meta
        self.stamp = self._sidecar_stamp()
        for old in self.directory.glob("index-*.faiss"):
            if old.name != name and re.fullmatch(r"index-\d{6}\.faiss", old.name):
                old.unlink(missing_ok=True)

    # ---- search -------------------------------------------------------------------------------------------
    def search(
        self, vectors: np.ndarray, k: int = 10, nprobe: int | None = None, ef_search: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest items of each query ``(Q, D)``: distances ``(Q, k')`` (smaller = closer, in the run's
        distance) and ids ``(Q, k')`` with ``k' = min(k, len(self))``, nearest first."""
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        x = self._prepare(vectors)
        k = min(k, len(self))
        if k == 0:
            return np.empty((len(x), 0), np.float32), np.empty((len(x), 0), np.int64)
        faiss = _faiss()
        params = None  # per-call overrides travel with the call (thread-safe); the index keeps its defaults
        if self.kind == "ivf" and nprobe is not None:
            params = faiss.SearchParametersIVF(nprobe=nprobe)
        elif self.kind == "hnsw" and ef_search is not None:
            params = faiss.SearchParametersHNSW(efSearch=ef_search)
        raw, ids = self.index.search(x, k, params=params)
        return self.to_distance(raw), ids

    def to_distance(self, raw: np.ndarray) -> np.ndarray:
        """faiss scores → the run's dissimilarity."""
        if self.metric == "euclidean":
            return np.sqrt(np.maximum(raw, 0.0))
        if self.metric == "cosine":
            return 1.0 - raw
        if self.metric == "cosine_similarity":
            return -raw
        return raw

    def hits(self, distances: np.ndarray, ids: np.ndarray, threshold: float | None = None) -> list[list[Hit]]:
        """Search results as :class:`Hit` rows (faiss's −1 padding dropped); ``match`` against ``threshold`` (the
        embedder's: calibrated, or overridden for one call), else the one saved when the gallery was built."""
        thr = self.meta.get("threshold") if threshold is None else threshold
        out = []
        for drow, irow in zip(distances, ids, strict=True):
            row = [(int(i), float(d)) for d, i in zip(drow, irow, strict=True) if i >= 0]
            out.append([Hit(r + 1, i, d, self.items[i].label, self.items[i].path, None if thr is None else d <= thr)
                        for r, (i, d) in enumerate(row)])  # fmt: skip
        return out

    def owned_upload(self, item: Item) -> Path | None:
        """The item's file when the gallery owns it — an upload under its own ``uploads/`` folder, checked on the
        resolved path (no ``..``, no link out) — else None. Only such files are ever deleted with their item."""
        if Path(item.path).is_absolute():
            return None
        uploads = (self.directory / UPLOADS).resolve()
        path = (self.directory / item.path).resolve()
        return path if path.is_relative_to(uploads) and path != uploads else None

    def resolve(self, item: Item) -> Path:
        """The image file of an item (uploads are stored relative to the gallery folder)."""
        p = Path(item.path)
        return p if p.is_absolute() else self.directory / p


@contextlib.contextmanager
def locked(directory: str | os.PathLike[str]) -> Iterator[None]:
    """An exclusive advisory lock on the gallery folder for a read-modify-commit cycle across processes. The
    folder must exist (a new gallery's is made by its build): a mistyped path is an error, never a new folder."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: no gallery there; check the path, or make one with: siamkit index build")
    with open(directory / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
