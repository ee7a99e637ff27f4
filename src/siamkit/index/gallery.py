"""The faiss gallery (:class:`FaissGallery`, the ``faiss`` backend of :class:`~siamkit.index.protocol.Gallery`): a
faiss index of embeddings, its items (ids, paths, labels) in a small SQLite database, and what embedded them (the
SHA-256 of the model, dimension, metric, normalisation, index options).

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

Distances are those of the run's ``eval.distance`` as ``verify`` uses them (smaller = closer), kept in the index
as :mod:`siamkit.index.metrics` says. The pieces live apart: the faiss index kinds in
:mod:`~siamkit.index.faiss_index`, the database and its edit log in :mod:`~siamkit.index.store`, the folder and
its sidecar in :mod:`~siamkit.index.folder`, older formats' conversion in :mod:`~siamkit.index.migration`; this
module holds the gallery that ties them together, with its delta-merge search.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from siamkit.errors import ConfigError, DataError
from siamkit.files import atomic_write_bytes, atomic_write_text, exchange_folders, recover_swap
from siamkit.index.faiss_index import (
    INDEX_KINDS,
    faiss_module,
    index_options,
    new_index,
    search_params,
    set_search_params,
)
from siamkit.index.folder import (
    FORMAT,
    FORMAT_V1,
    SIDECAR,
    STATIC_KEYS,
    locked,
    model_meta,
    remove_leftovers,
    retire_folder,
)
from siamkit.index.metrics import higher_is_closer
from siamkit.index.migration import migrate_v1
from siamkit.index.protocol import BACKENDS, Gallery, Hit, Item
from siamkit.index.store import (
    DATABASE,
    Commit,
    LogRow,
    Stamp,
    connect,
    connect_read,
    disk_stamp,
    read_items,
    read_log,
    read_state,
    stamp_of,
    write_commit,
)

__all__ = [  # with the names callers imported from here before the split (protocol, folder, store, faiss_index)
    "FaissGallery", "Gallery", "Hit", "Item", "Items", "connect", "index_options", "locked", "new_index",
    "set_search_params",
]  # fmt: skip
TOMBSTONE_LIMIT = 1024
"""More removed base items than this and the next commit compacts (a search over-fetches by their number)."""


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


@BACKENDS.register("faiss")
class FaissGallery(Gallery):
    """A gallery in a faiss index of its folder (see the module's description). Create with :meth:`create`, open
    with :meth:`Gallery.open`; :meth:`add` / :meth:`remove` change it in memory and :meth:`save` commits them (one
    transaction, costing what changed); :meth:`compact` folds the edits into a new base index."""

    items: Items

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

    def _stamp(self) -> Stamp:
        return (str(self.meta.get("uid", "")), int(self.meta["generation"]), int(self.meta["seq"]))

    def _empty_delta(self) -> Any:
        return new_index("flat", self.meta["dim"], self.metric, {})

    @property
    def index(self) -> Any:
        """The base faiss index (the edits since it was written are in ``delta`` and ``removed``)."""
        return self.base

    def is_stale(self) -> bool:
        """True when another process has committed a change since this one was opened, refreshed or saved."""
        return disk_stamp(self.directory) != self.stamp

    # ---- construction --------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls, directory: str | os.PathLike[str], model: dict[str, Any], kind: str = "flat",
        options: dict[str, Any] | None = None, overwrite: bool = False,
    ) -> FaissGallery:  # fmt: skip
        """An empty gallery for the model described by ``model`` (``Model.describe()``: model_hash, run_dir,
        input_shape, embedding_dim, distance, threshold). Nothing is written until :meth:`save`."""
        directory = Path(directory)
        recover_swap(directory)
        if (directory / SIDECAR).exists() and not overwrite:
            raise DataError(f"{directory}: a gallery exists there; use index add, or pass --overwrite to rebuild it")
        opts = index_options(kind, options)
        meta = {**model_meta(model, {"kind": kind, "options": opts}), "generation": 0, "index_file": None,
                "next_id": 0, "base_seq": 0, "seq": 0, "uid": uuid.uuid4().hex}  # fmt: skip
        return cls(directory, meta, new_index(kind, meta["dim"], meta["metric"], opts), Items(), fresh=True)

    @classmethod
    def open_folder(cls, directory: Path, static: dict[str, Any]) -> FaissGallery:
        """The committed gallery in ``directory`` (its sidecar ``static``): its base index with the logged edits
        replayed. A version-1 gallery is converted first."""
        sidecar = directory / SIDECAR
        if static.get("format") == FORMAT_V1:
            static = migrate_v1(directory, static)
        if static.get("format") != FORMAT:
            raise DataError(f"{sidecar}: format {static.get('format')!r} is not {FORMAT}; rebuild the gallery")
        _check_static(sidecar, static)
        state, items, rows = _read_database(directory)
        meta = {k: static[k] for k in STATIC_KEYS if k in static}
        meta.update({"generation": int(state.get("generation", 0)), "index_file": state.get("base_file"),
                     "next_id": int(state.get("next_id", 0)), "base_seq": int(state.get("base_seq", 0)),
                     "seq": int(state.get("seq", 0)), "uid": str(state.get("uid", ""))})  # fmt: skip
        if meta["index_file"] is None:
            base = new_index(meta["index"]["kind"], meta["dim"], meta["metric"], meta["index"]["options"])
        else:
            path = directory / meta["index_file"]
            try:
                base = faiss_module().read_index(str(path))
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

    def _replay(self, rows: Sequence[LogRow]) -> None:
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
            st = read_state(con)  # one read of the state: unchanged, new log rows, or another base
            if stamp_of(st) == self.stamp:
                return self
            if stamp_of(st)[:2] != self.stamp[:2] or self.pending:
                rows = None
            else:
                rows = read_log(con, self.meta["seq"])
                found = Items(read_items(con, self.meta["next_id"]))
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

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "pending_edits": len(self.delta_ids) + len(self.removed)}

    def vector(self, item_id: int) -> np.ndarray:
        """The stored vector ``(D,)`` of an item, read back from the index that holds it (the base or the delta)."""
        index = self.delta if item_id in self.delta_ids else self.base
        return np.asarray(index.reconstruct(int(item_id)), np.float32)

    # ---- changes ------------------------------------------------------------------------------------------
    def peek_next_id(self) -> int:
        """The id the next added item will get (the service names an upload after it before adding it)."""
        return int(self.meta["next_id"])

    def add(self, vectors: np.ndarray, paths: Sequence[str], labels: Sequence[str | None]) -> list[int]:
        """Add ``vectors`` ``(N, D)`` with their paths and labels; returns the new ids (never reused)."""
        if not (len(vectors) == len(paths) == len(labels)):
            raise ValueError("vectors, paths and labels differ in length")
        if not len(vectors):
            return []
        x = self.prepare(vectors)
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
            atomic_write_bytes(self.directory / name, faiss_module().serialize_index(folded).tobytes())
        commit = Commit(generation=generation, base_file=name, next_id=self.meta["next_id"],
                        base_seq=self.meta["base_seq"], seq=self.meta["seq"], uid=self.meta["uid"])  # fmt: skip
        state = write_commit(self.directory, self.pending, commit, compact=compact,
                             expect=None if self.fresh else self.stamp)  # fmt: skip
        if self.fresh:  # the commit point of a new gallery: without its sidecar the folder is no gallery
            atomic_write_text(self.directory / SIDECAR, json.dumps({k: self.meta[k] for k in STATIC_KEYS}) + "\n")
        self.pending.clear()
        self.fresh = False
        self.meta.update({"seq": state["seq"], "generation": generation, "index_file": name,
                          "base_seq": state["base_seq"]})  # fmt: skip
        self.stamp = self._stamp()
        if folded is not None:
            self._use_base(folded, name)

    def _use_base(self, folded: Any, name: str) -> None:
        """Search the new base ``folded`` (committed as ``name``) with an empty delta; older base files go."""
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
        faiss = faiss_module()
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
        x = self.prepare(vectors)
        k = min(k, len(self))
        if k == 0:
            return np.empty((len(x), 0), np.float32), np.empty((len(x), 0), np.int64)
        params = search_params(self.kind, nprobe, ef_search)
        if not self.removed and not self.delta.ntotal:
            raw, ids = self.base.search(x, k, params=params)
            return self.to_distance(raw), ids
        raw, ids = self._merged_search(x, k, params)
        return self.to_distance(np.where(ids < 0, np.float32(0), raw).astype(np.float32)), ids

    def _merged_search(self, x: np.ndarray, k: int, params: Any) -> tuple[np.ndarray, np.ndarray]:
        """The raw scores and ids of the ``k`` nearest of the base (less the removed) and the delta together."""
        higher = higher_is_closer(self.metric)
        worst = -np.inf if higher else np.inf
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
        order = np.argsort(-raw if higher else raw, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(raw, order, 1), np.take_along_axis(ids, order, 1)


def _read_database(directory: Path) -> tuple[dict[str, Any], Items, list[LogRow]]:
    """The state, the items and the log rows the base does not hold, of ``directory``'s database."""
    if not (directory / DATABASE).is_file():
        raise DataError(f"{directory}: {DATABASE} is missing; rebuild the gallery")
    try:
        con = connect_read(directory)
    except sqlite3.DatabaseError as exc:
        raise DataError(f"{directory / DATABASE}: unreadable gallery database ({exc}); rebuild the gallery") \
            from None  # fmt: skip
    try:
        state = read_state(con)
        return state, Items(read_items(con)), read_log(con, int(state.get("base_seq", 0)))
    except sqlite3.DatabaseError as exc:
        raise DataError(f"{directory / DATABASE}: unreadable gallery database ({exc}); rebuild the gallery") \
            from None  # fmt: skip
    finally:
        con.close()


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
