"""A persisted, searchable gallery: a faiss index of embeddings, its items (ids, paths, labels) in a small SQLite
database, and what embedded them (the SHA-256 of the model, dimension, metric, normalisation, index options).

On disk (``GALLERY_DIR/``)::

    gallery.json           what the gallery is: format, model hash, run, dimension, metric, index kind and options
    gallery.db             SQLite: the items, the edit log since the base index, and the state (generation, ...)
    index-000007.faiss     the base index of generation 7: every item as of the last compaction
    uploads/<id>.png       images added over HTTP (re-encoded PNG), so the web page can show them

An edit costs what it changes: adding or removing items is one SQLite transaction — the item rows and one log
row per item (an added item's vector, or a removal) — and the commit point. In memory the log is a small exact
*delta* index of the added vectors beside the base, and a set of removed base ids that searches skip; a search
asks both and merges. A *compaction* (when the log outgrows the base, or ``siamkit index compact``) writes the
next ``index-<generation>.faiss`` (temp file, then rename), then in one transaction names it and drops the log
rows it holds: a crash at any moment leaves the previous complete gallery (a stray newer index file is ignored
and removed by the next compaction). Opening reads the base and replays the log.

A new gallery is written sidecar last (``gallery.json`` is its commit point: a folder without one is no gallery
and can be built again). A rebuild over an existing gallery (``--overwrite``) writes the whole new gallery in a
sibling folder ``.<name>.new-<id>`` and swaps the two folders in one atomic step
(:func:`~siamkit.files.exchange_folders`): a crash leaves the old gallery or the new one, whole. Leftovers of a
crash (temp files, staged folders) are removed by the next write.

Distances are those of the run's ``eval.distance`` as ``verify`` uses them (smaller = closer): ``euclidean``
(L2 index, square root taken), ``squared_euclidean``, ``cosine`` (1 − cos, inner product of L2-normalised
vectors) and ``cosine_similarity`` (reported negated, like the verification threshold).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from siamkit.errors import CheckpointError, ConfigError, DataError
from siamkit.files import atomic_write_bytes, atomic_write_text, exchange_folders, locked_file, recover_swap
from siamkit.registry import Registry, code_from_files

FORMAT = "siamkit-gallery-v2"
FORMAT_V1 = "siamkit-gallery-v1"
DATABASE = "gallery.db"
TOMBSTONE_LIMIT = 1024
"""More removed base items than this and the next commit compacts (a search over-fetches by their number)."""
UPLOADS = "uploads"
SIDECAR = "gallery.json"
INDEX_KINDS = ("flat", "hnsw", "ivf")
IP_METRICS = ("cosine", "cosine_similarity")
L2_METRICS = ("euclidean", "squared_euclidean")
log = logging.getLogger(__name__)
BACKENDS: Registry[Any] = Registry("gallery backend", providers=("siamkit.index.qdrant",))
"""Galleries kept elsewhere than in a faiss index of the folder: ``name`` → a class with ``create_on(directory,
model, url, collection, overwrite)`` and ``open_folder(directory, static)`` (``gallery.json`` names the backend)."""
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


class Items(MutableMapping[int, Item]):
    """The gallery's items by id. Held as ``id → (path, label)`` rows, the database's own shape, and made
    :class:`Item` objects only when read: a million items load in a fraction of a second."""

    def __init__(self, rows: Iterable[tuple[int, str, str | None]] = ()) -> None:
        self._rows: dict[int, tuple[int, str, str | None]] = {int(r[0]): r for r in rows}

    def __getitem__(self, item_id: int) -> Item:
        i, path, label = self._rows[item_id]
        return Item(int(i), path, label)

    def __setitem__(self, item_id: int, item: Item) -> None:
        self._rows[item_id] = (item.id, item.path, item.label)

    def __delitem__(self, item_id: int) -> None:
        del self._rows[item_id]

    def __iter__(self) -> Iterator[int]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._rows


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


STATIC_KEYS = ("format", "model_hash", "run_dir", "input_shape", "dim", "metric", "normalized", "threshold", "index")
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value)",
    "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, path TEXT NOT NULL, label TEXT)",
    "CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL, id INTEGER NOT NULL, "
    "vector BLOB)",
)


def connect(directory: Path) -> sqlite3.Connection:
    """The gallery's database (WAL journal: readers never wait for a writer; a killed writer leaves the last
    committed transaction). Transactions are explicit (``BEGIN IMMEDIATE`` … ``COMMIT``)."""
    con = sqlite3.connect(directory / DATABASE, timeout=60, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
    except BaseException:
        con.close()
        raise
    return con


def connect_read(directory: Path) -> sqlite3.Connection:
    """The database for reading: as :func:`connect`, or — on a read-only mount, where SQLite can make neither
    its journal nor its lock files — opened immutable (nothing there can change it)."""
    try:
        return connect(directory)
    except sqlite3.OperationalError:
        if os.access(directory, os.W_OK):
            raise
    uri = f"{(directory / DATABASE).resolve().as_uri()}?immutable=1"
    return sqlite3.connect(uri, uri=True, isolation_level=None)


def _state(con: sqlite3.Connection) -> dict[str, Any]:
    try:
        return dict(con.execute("SELECT key, value FROM state").fetchall())
    except sqlite3.DatabaseError:
        return {}


class Gallery:
    """Embeddings with ids, paths and labels, searchable by nearest neighbour. Create with :meth:`create`, open
    with :meth:`open`; :meth:`add` / :meth:`remove` change it in memory and :meth:`save` commits them (one
    transaction, costing what changed); :meth:`compact` folds the edits into a new base index."""

    def __init__(self, directory: Path, meta: dict[str, Any], base: Any, items: Items, fresh: bool = False):
        self.directory = directory
        self.meta = meta
        """What the gallery is (``STATIC_KEYS``) and where it stands: ``generation`` and ``index_file`` (the
        base), ``base_seq`` (the last log row the base holds), ``seq`` (the last committed log row), ``next_id``."""
        self.base = base
        self.items = items
        self.fresh = fresh
        self.delta = self._empty_delta()
        self.delta_ids: set[int] = set()
        self.removed: set[int] = set()
        """Ids in the base index removed since it was written: searches skip them."""
        self.pending: list[tuple[str, int, bytes | None, str | None, str | None]] = []
        set_search_params(base, meta["index"]["kind"], meta["index"]["options"])
        self.stamp = self._stamp()

    def _stamp(self) -> tuple[str, int, int]:
        return (str(self.meta.get("uid", "")), int(self.meta["generation"]), int(self.meta["seq"]))

    def _empty_delta(self) -> Any:
        return new_index("flat", self.meta["dim"], self.metric, {})

    @property
    def index(self) -> Any:
        """The base faiss index (the edits since it was written are in ``delta`` and ``removed``)."""
        return self.base

    def _disk_stamp(self) -> tuple[str, int, int] | None:
        if not (self.directory / DATABASE).is_file():
            return None
        con = connect_read(self.directory)
        try:
            st = _state(con)
        finally:
            con.close()
        return self._stamp_of(st)

    @staticmethod
    def _stamp_of(state: dict[str, Any]) -> tuple[str, int, int]:
        return (str(state.get("uid", "")), int(state.get("generation", 0)), int(state.get("seq", 0)))

    def is_stale(self) -> bool:
        """True when another process has committed a change since this one was opened, refreshed or saved."""
        return self._disk_stamp() != self.stamp

    # ---- construction --------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls, directory: str | os.PathLike[str], model: dict[str, Any], kind: str = "flat",
        options: dict[str, Any] | None = None, overwrite: bool = False,
    ) -> Gallery:  # fmt: skip
        """An empty gallery for the model described by ``model`` (``Model.describe()``: model_hash, run_dir,
        input_shape, embedding_dim, distance, threshold). Nothing is written until :meth:`save`."""
        directory = Path(directory)
        recover_swap(directory)
        if (directory / SIDECAR).exists() and not overwrite:
            raise DataError(f"{directory}: a gallery exists there; use index add, or pass --overwrite to rebuild it")
        opts = index_options(kind, options)
        dim = int(model["embedding_dim"])
        meta = {
            "format": FORMAT, "model_hash": model["model_hash"], "run_dir": model["run_dir"],
            "input_shape": list(model["input_shape"]), "dim": dim, "metric": model["distance"],
            "normalized": model["distance"] in IP_METRICS, "threshold": model.get("threshold"),
            "index": {"kind": kind, "options": opts}, "generation": 0, "index_file": None, "next_id": 0,
            "base_seq": 0, "seq": 0, "uid": uuid.uuid4().hex,
        }  # fmt: skip
        return cls(directory, meta, new_index(kind, dim, meta["metric"], opts), Items(), fresh=True)

    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> Gallery:
        """The committed gallery in ``directory``: its base index with the logged edits replayed."""
        directory = Path(directory)
        recover_swap(directory)
        sidecar = directory / SIDECAR
        if not sidecar.is_file():
            raise DataError(f"{directory}: not a gallery (no {SIDECAR}); build one with: siamkit index build RUN_DIR "
                            f"IMAGES... --out {directory}")  # fmt: skip
        try:
            static = json.loads(sidecar.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{sidecar}: unreadable sidecar ({exc}); rebuild the gallery") from None
        if not isinstance(static, dict):
            raise DataError(f"{sidecar}: not a gallery sidecar; rebuild the gallery")
        backend = static.get("backend")
        if isinstance(backend, dict) and static.get("format") == FORMAT:  # kept in a vector database
            with code_from_files(str(sidecar)):  # a backend named by the file is a registered one, never code
                backend_class: Any = BACKENDS.get(str(backend.get("kind")))
            opened: Gallery = backend_class.open_folder(directory, static)
            return opened
        if static.get("format") == FORMAT_V1:
            static = _migrate_v1(directory, static)
        if static.get("format") != FORMAT:
            raise DataError(f"{sidecar}: format {static.get('format')!r} is not {FORMAT}; rebuild the gallery")
        _check_static(sidecar, static)
        if not (directory / DATABASE).is_file():
            raise DataError(f"{directory}: {DATABASE} is missing; rebuild the gallery")
        try:
            con = connect_read(directory)
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{directory / DATABASE}: unreadable gallery database ({exc}); rebuild the gallery") \
                from None  # fmt: skip
        try:
            try:
                st = _state(con)
                items = Items(con.execute("SELECT id, path, label FROM items").fetchall())
                rows = con.execute("SELECT seq, op, id, vector FROM log WHERE seq > ? ORDER BY seq",
                                   (int(st.get("base_seq", 0)),)).fetchall()  # fmt: skip
            except sqlite3.DatabaseError as exc:
                raise DataError(f"{directory / DATABASE}: unreadable gallery database ({exc}); rebuild the gallery") \
                    from None  # fmt: skip
        finally:
            con.close()
        meta = {k: static[k] for k in STATIC_KEYS if k in static}
        meta.update({"generation": int(st.get("generation", 0)), "index_file": st.get("base_file"),
                     "next_id": int(st.get("next_id", 0)), "base_seq": int(st.get("base_seq", 0)),
                     "seq": int(st.get("seq", 0)), "uid": str(st.get("uid", ""))})  # fmt: skip
        if meta["index_file"] is None:
            base = new_index(meta["index"]["kind"], meta["dim"], meta["metric"], meta["index"]["options"])
        else:
            path = directory / meta["index_file"]
            try:
                base = _faiss().read_index(str(path))
            except RuntimeError as exc:
                raise DataError(f"{path}: unreadable faiss index ({str(exc).splitlines()[0]}); rebuild the gallery") \
                    from None  # fmt: skip
        gallery = cls(directory, meta, base, items)
        gallery._replay(rows)
        if gallery.vector_count != len(items):
            raise DataError(
                f"{directory}: the index holds {gallery.base.ntotal - len(gallery.removed)} + "
                f"{gallery.delta.ntotal} vectors but the database {len(items)} items; rebuild the gallery"
            )
        return gallery

    def _replay(self, rows: Sequence[tuple[int, str, int, bytes | None]]) -> None:
        """Apply logged edits (``seq, op, id, vector``) to the in-memory delta and removed set."""
        added: dict[int, bytes] = {}
        for _, op, item_id, vector in rows:
            if op == "add":
                assert vector is not None
                added[item_id] = vector
            elif item_id in added:
                del added[item_id]
            elif item_id in self.delta_ids:
                self._delta_remove([item_id])
            else:
                self.removed.add(item_id)
        if added:
            x = np.frombuffer(b"".join(added.values()), dtype=np.float32).reshape(len(added), self.meta["dim"])
            ids = np.fromiter(added, dtype=np.int64, count=len(added))
            self.delta.add_with_ids(np.ascontiguousarray(x), ids)
            self.delta_ids.update(added)
        if rows:
            self.meta["seq"] = max(self.meta["seq"], int(rows[-1][0]))
            self.stamp = self._stamp()

    def refresh(self) -> Gallery:
        """Catch up with what other processes committed: the new log rows alone when the base is the same (cheap),
        else the whole gallery re-read. Returns the up-to-date gallery (``self`` or a new one)."""
        if not (self.directory / DATABASE).is_file():
            return Gallery.open(self.directory)  # gone or rebuilt: open says which, in one line
        con = connect_read(self.directory)
        try:
            st = _state(con)  # one read of the state: unchanged, new log rows, or another base
            if self._stamp_of(st) == self.stamp:
                return self
            if self._stamp_of(st)[:2] != self.stamp[:2] or self.pending:
                rows = None
            else:
                rows = con.execute("SELECT seq, op, id, vector FROM log WHERE seq > ? ORDER BY seq",
                                   (self.meta["seq"],)).fetchall()  # fmt: skip
                found = Items(con.execute("SELECT id, path, label FROM items WHERE id >= ?", (self.meta["next_id"],)))
        finally:
            con.close()
        if rows is None:
            return Gallery.open(self.directory)
        for _, op, item_id, _ in rows:
            if op == "remove":
                self.items.pop(item_id, None)
        self.items.update(found)
        self._replay(rows)
        self.meta["next_id"] = int(st.get("next_id", self.meta["next_id"]))
        self.stamp = self._stamp()
        return self

    # ---- properties ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    @property
    def vector_count(self) -> int:
        """Searchable vectors: the base's, less the removed, plus the delta's (equals ``len(self)``)."""
        return int(self.base.ntotal) - len(self.removed) + int(self.delta.ntotal)

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
        return {"directory": str(self.directory), "size": len(self), **{k: self.meta[k] for k in keys},
                "pending_edits": len(self.delta_ids) + len(self.removed)}  # fmt: skip

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

    def peek_next_id(self) -> int:
        """The id the next added item will get (the service names an upload after it before adding it)."""
        return int(self.meta["next_id"])

    def add(self, vectors: np.ndarray, paths: Sequence[str], labels: Sequence[str | None]) -> list[int]:
        """Add ``vectors`` ``(N, D)`` with their paths and labels; returns the new ids (never reused)."""
        if not (len(vectors) == len(paths) == len(labels)):
            raise ValueError("vectors, paths and labels differ in length")
        if not len(vectors):
            return []
        x = self._prepare(vectors)
        if self.kind == "ivf" and not self.base.is_trained:
            nlist = self.meta["index"]["options"]["nlist"]
            if len(x) + self.delta.ntotal < nlist:
                raise DataError(
                    f"an IVF index with nlist={nlist} needs at least {nlist} images to train its centroids, got "
                    f"{len(x) + self.delta.ntotal}; use --index flat, or a smaller --nlist (about images/39 or fewer)"
                )
        start = int(self.meta["next_id"])
        ids = np.arange(start, start + len(x), dtype=np.int64)
        self.delta.add_with_ids(x, ids)
        self.meta["next_id"] = start + len(x)
        for row, i, p, lab in zip(x, ids.tolist(), paths, labels, strict=True):
            self.items[i] = Item(i, str(p), lab)
            self.delta_ids.add(i)
            self.pending.append(("add", i, row.tobytes(), str(p), lab))
        return list(ids.tolist())

    def _delta_remove(self, ids: Sequence[int]) -> None:
        sel = np.asarray(ids, dtype=np.int64)
        assert self.delta.remove_ids(sel) == len(sel)
        self.delta_ids.difference_update(ids)

    def remove(self, ids: Sequence[int]) -> list[Item]:
        """Remove items by id; an unknown id is an error (nothing is removed then)."""
        missing = [i for i in ids if i not in self.items]
        if missing:
            raise KeyError(f"no gallery item with id {missing[0]}")
        sel = sorted(set(int(i) for i in ids))
        in_delta = [i for i in sel if i in self.delta_ids]
        if in_delta:
            self._delta_remove(in_delta)
        self.removed.update(i for i in sel if i not in in_delta)
        self.pending += [("remove", i, None, None, None) for i in sel]
        return [self.items.pop(i) for i in sel]

    def save(self) -> None:
        """Commit the edits since the last commit: one transaction (the commit point) of their item rows and log
        rows. When the edits outgrow the base index (and for a new gallery), the commit writes a new base instead
        of log rows (:meth:`compact`)."""
        self._commit(compact=self._worth_compacting())

    def compact(self) -> None:
        """Fold the edits (committed and pending) into a new base index: written to ``index-<generation>.faiss``
        (temp file, then rename), then named — with the pending item rows, and the log rows it now holds
        dropped — in one transaction. Call it under :func:`locked`; :meth:`save` does when edits outgrow the base."""
        self._commit(compact=True)

    def _worth_compacting(self) -> bool:
        edits = self.delta.ntotal + len(self.removed)
        return self.fresh or (edits > 0 and (self.base.ntotal == 0 or len(self.removed) > TOMBSTONE_LIMIT
                                             or edits > max(50_000, self.base.ntotal // 2)))  # fmt: skip

    def _commit(self, compact: bool) -> None:
        if self.fresh and (self.directory / SIDECAR).exists():
            self._replace_whole()
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        remove_leftovers(self.directory)
        generation, name, folded = int(self.meta["generation"]), self.meta["index_file"], None
        if compact:  # the new base first: a crash before the transaction leaves an unnamed file, removed later
            folded = self._folded()
            generation += 1
            name = f"index-{generation:06d}.faiss"
            atomic_write_bytes(self.directory / name, _faiss().serialize_index(folded).tobytes())
        con = connect(self.directory)
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                for statement in SCHEMA:
                    con.execute(statement)
                if self.fresh:  # an overwritten gallery starts from nothing
                    for table in ("items", "log", "state"):
                        con.execute(f"DELETE FROM {table}")
                elif self._stamp_of(_state(con)) != self.stamp:
                    raise CheckpointError(f"{self.directory}: changed by another process since it was opened; "
                                          "open it again (edit under siamkit.index.gallery.locked)")  # fmt: skip
                adds = [(i, p, lab) for op, i, _, p, lab in self.pending if op == "add"]
                con.executemany("INSERT INTO items (id, path, label) VALUES (?, ?, ?)", adds)
                gone = [(i,) for op, i, *_ in self.pending if op == "remove"]
                con.executemany("DELETE FROM items WHERE id = ?", gone)
                if not compact:
                    con.executemany("INSERT INTO log (op, id, vector) VALUES (?, ?, ?)",
                                    [(op, i, vec) for op, i, vec, _, _ in self.pending])  # fmt: skip
                seq = max(int(con.execute("SELECT COALESCE(MAX(seq), 0) FROM log").fetchone()[0]), self.meta["seq"])
                if compact:
                    con.execute("DELETE FROM log")
                state = {"generation": generation, "base_file": name, "seq": seq, "next_id": self.meta["next_id"],
                         "base_seq": seq if compact else self.meta["base_seq"], "uid": self.meta["uid"]}  # fmt: skip
                con.executemany("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", state.items())
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        finally:
            con.close()
        if self.fresh:  # the commit point of a new gallery: without its sidecar the folder is no gallery
            atomic_write_text(self.directory / SIDECAR, json.dumps({k: self.meta[k] for k in STATIC_KEYS}) + "\n")
        self.pending.clear()
        self.fresh = False
        self.meta.update({"seq": seq, "generation": generation, "index_file": name, "base_seq": state["base_seq"]})
        self.stamp = self._stamp()
        if folded is not None:
            self.base = folded
            set_search_params(folded, self.kind, self.meta["index"]["options"])
            self.delta, self.delta_ids, self.removed = self._empty_delta(), set(), set()
            for old in self.directory.glob("index-*.faiss"):
                if old.name != name and re.fullmatch(r"index-\d{6}\.faiss", old.name):
                    old.unlink(missing_ok=True)

    def _replace_whole(self) -> None:
        """A rebuild over an existing gallery: the new one written whole beside it, then the two folders swapped in
        one step; the old one's folder is then removed (what the gallery does not own is kept)."""
        given = self.directory
        target = Path(os.path.realpath(given))  # a gallery reached through a link: swap the folder, keep the link
        stage = target.parent / f".{target.name}.new-{uuid.uuid4().hex[:8]}"
        stage.mkdir()
        self.directory = stage
        try:
            self._commit(compact=True)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        finally:
            self.directory = given
        try:
            exchange_folders(stage, target)
        except OSError as exc:  # a mount point, another file system: nothing was replaced
            shutil.rmtree(stage, ignore_errors=True)
            raise DataError(f"{target}: cannot replace the gallery there ({exc.strerror}); build it into a new "
                            "folder (--out) instead") from None  # fmt: skip
        retire_folder(stage, target)

    def _folded(self) -> Any:
        """A new index of the base less the removed items plus the delta's vectors."""
        faiss = _faiss()
        d_ids = faiss.vector_to_array(self.delta.id_map).astype(np.int64)
        d_vec = self.delta.index.reconstruct_n(0, self.delta.ntotal) if len(d_ids) else None
        opts = self.meta["index"]["options"]
        if self.kind == "hnsw":  # HNSW graphs cannot delete: rebuild from the stored vectors of what remains
            b_ids = faiss.vector_to_array(self.base.id_map).astype(np.int64)
            dim = self.meta["dim"]
            b_vec = self.base.index.reconstruct_n(0, self.base.ntotal) if len(b_ids) else np.empty((0, dim))
            keep = ~np.isin(b_ids, np.fromiter(self.removed, np.int64, len(self.removed)))
            fresh = new_index("hnsw", self.meta["dim"], self.metric, opts)
            parts = [(b_vec[keep], b_ids[keep])] + ([(d_vec, d_ids)] if d_vec is not None else [])
            for vec, ids in parts:
                if len(ids):
                    fresh.add_with_ids(np.ascontiguousarray(vec, dtype=np.float32), ids)
            return fresh
        fresh = faiss.clone_index(self.base)
        if self.removed:
            sel = np.fromiter(sorted(self.removed), np.int64, len(self.removed))
            assert fresh.remove_ids(sel) == len(sel)
        if d_vec is not None:
            x = np.ascontiguousarray(d_vec, dtype=np.float32)
            if self.kind == "ivf" and not fresh.is_trained:
                fresh.train(x)
            fresh.add_with_ids(x, d_ids)
        return fresh

    # ---- search -------------------------------------------------------------------------------------------
    def search(
        self, vectors: np.ndarray, k: int = 10, nprobe: int | None = None, ef_search: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest items of each query ``(Q, D)``: distances ``(Q, k')`` (smaller = closer, in the run's
        distance) and ids ``(Q, k')`` with ``k' = min(k, len(self))``, nearest first. The base index and the
        delta of recent additions are both asked and their answers merged; removed items are skipped."""
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
        if not self.removed and not self.delta.ntotal:
            raw, ids = self.base.search(x, k, params=params)
            return self.to_distance(raw), ids
        higher_is_closer = self.metric in IP_METRICS
        worst = -np.inf if higher_is_closer else np.inf
        scores, found = [], []
        if self.base.ntotal:
            raw, ids = self.base.search(x, min(k + len(self.removed), self.base.ntotal), params=params)
            if self.removed:
                gone = np.isin(ids, np.fromiter(self.removed, np.int64, len(self.removed))) | (ids < 0)
                raw, ids = np.where(gone, worst, raw), np.where(gone, -1, ids)
            scores.append(raw)
            found.append(ids)
        if self.delta.ntotal:
            raw, ids = self.delta.search(x, min(k, self.delta.ntotal))
            scores.append(np.where(ids < 0, worst, raw))
            found.append(ids)
        raw, ids = np.concatenate(scores, axis=1), np.concatenate(found, axis=1)
        order = np.argsort(-raw if higher_is_closer else raw, axis=1, kind="stable")[:, :k]
        raw, ids = np.take_along_axis(raw, order, 1), np.take_along_axis(ids, order, 1)
        return self.to_distance(np.where(ids < 0, np.float32(0), raw).astype(np.float32)), ids

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
        model's: calibrated, or overridden for one call), else the one saved when the gallery was built."""
        thr = self.meta.get("threshold") if threshold is None else threshold
        out = []
        for drow, irow in zip(distances, ids, strict=True):
            row = [(int(i), float(d)) for d, i in zip(drow, irow, strict=True) if i >= 0]
            items = [self.item(i) for i, _ in row]
            out.append([Hit(r + 1, i, d, it.label, it.path, None if thr is None else d <= thr)
                        for r, ((i, d), it) in enumerate(zip(row, items, strict=True))])  # fmt: skip
        return out

    def item(self, item_id: int) -> Item:
        """The item with id ``item_id`` (a hit's path and label)."""
        return self.items[item_id]

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


def _check_static(sidecar: Path, static: dict[str, Any]) -> None:
    """One line naming the key when the sidecar's description of the gallery is damaged (wrong type, missing)."""
    index = static.get("index")
    checks = {
        "model_hash": isinstance(static.get("model_hash"), str),
        "dim": isinstance(static.get("dim"), int) and not isinstance(static.get("dim"), bool) and static["dim"] > 0,
        "metric": isinstance(static.get("metric"), str),
        "normalized": isinstance(static.get("normalized"), bool),
        "index": isinstance(index, dict)
        and index.get("kind") in INDEX_KINDS
        and isinstance(index.get("options"), dict),
        "threshold": static.get("threshold") is None or isinstance(static.get("threshold"), (int, float)),
    }
    bad = [key for key, ok in checks.items() if not ok]
    if bad:
        raise DataError(f"{sidecar}: damaged gallery description (key {bad[0]!r}: {static.get(bad[0])!r}); rebuild "
                        "the gallery (siamkit index build ... --overwrite)")  # fmt: skip
    assert isinstance(index, dict)
    try:
        index_options(index["kind"], index["options"])
    except (ConfigError, TypeError, ValueError):
        raise DataError(f"{sidecar}: damaged gallery description (key 'index.options': {index['options']!r}); "
                        "rebuild the gallery (siamkit index build ... --overwrite)") from None  # fmt: skip


def _migrate_v1(directory: Path, old: dict[str, Any]) -> dict[str, Any]:
    """A version-1 gallery (items in ``gallery.json``, one index file) rewritten as version 2 with the same index
    file as its base: the database is written to a temp file and renamed, then the sidecar replaced (a crash
    in between leaves the version-1 sidecar, and the next open migrates again)."""
    import tempfile

    static = {**{k: old[k] for k in STATIC_KEYS if k in old}, "format": FORMAT}
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{DATABASE}.", suffix=".tmp")
    os.close(fd)
    try:
        con = sqlite3.connect(tmp, isolation_level=None)
        try:
            con.execute("BEGIN")
            for statement in SCHEMA:
                con.execute(statement)
            con.executemany("INSERT INTO items (id, path, label) VALUES (?, ?, ?)", old.get("items", []))
            state = {"generation": int(old.get("generation", 0)), "base_file": old.get("index_file"), "base_seq": 0,
                     "seq": 0, "next_id": int(old.get("next_id", 0)), "uid": uuid.uuid4().hex}  # fmt: skip
            con.executemany("INSERT INTO state (key, value) VALUES (?, ?)", state.items())
            con.execute("COMMIT")
            con.execute("PRAGMA journal_mode=WAL")
        finally:
            con.close()
        os.replace(tmp, directory / DATABASE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic_write_text(directory / SIDECAR, json.dumps(static) + "\n")
    log.info("%s: gallery converted to %s (edits now cost what they change)", directory, FORMAT)
    return static


OWN_FILES = re.compile(rf"{re.escape(SIDECAR)}|{re.escape(DATABASE)}(-wal|-shm|-journal)?|index-\d{{6}}\.faiss|"
                       rf"{UPLOADS}|\.lock|\..*\.tmp")  # fmt: skip
"""The names a gallery folder's own files have: a rebuild replaces them; anything else in the folder is kept."""


def retire_folder(old: Path, target: Path) -> None:
    """Remove the folder of a replaced gallery, moving what the gallery does not own back into ``target``."""
    for entry in old.iterdir():
        if not OWN_FILES.fullmatch(entry.name) and not (target / entry.name).exists():
            os.rename(entry, target / entry.name)
    shutil.rmtree(old, ignore_errors=True)


def remove_leftovers(directory: Path) -> None:
    """What a crashed write left (called under the gallery's lock): temp files in the folder, and sibling
    folders of a cut rebuild (a staged new gallery, or the old one not yet removed)."""
    for pattern in (f".{SIDECAR}.*.tmp", f".{DATABASE}.*.tmp", ".index-*.faiss.*.tmp"):
        for tmp in directory.glob(pattern):
            with contextlib.suppress(OSError):
                tmp.unlink()
    real = Path(os.path.realpath(directory))  # the swapped folder is the link's target (_replace_whole)
    siblings = [*real.parent.glob(f".{glob_escape(real.name)}.new-*"), real.with_name(real.name + ".swap")]
    for sibling in siblings:
        if sibling.is_dir() and not sibling.is_symlink():
            retire_folder(sibling, real)


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


@contextlib.contextmanager
def locked(directory: str | os.PathLike[str]) -> Iterator[None]:
    """An exclusive advisory lock on the gallery folder for a read-modify-commit cycle across processes. The
    folder must exist (a new gallery's is made by its build): a mistyped path is an error, never a new folder."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: no gallery there; check the path, or make one with: siamkit index build")
    with locked_file(directory / ".lock"):
        yield
