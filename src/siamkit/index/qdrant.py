"""A gallery kept in a Qdrant collection — for galleries that outgrow one machine — as a backend of the gallery
protocol (:class:`~siamkit.index.protocol.Gallery`), so ``index``, ``search`` and ``serve`` work on it unchanged.

The gallery folder stays what it is for a faiss gallery (``gallery.json``: the model hash, run, dimension,
metric — and ``uploads/``); its ``backend`` entry names the Qdrant service (``url``: ``http://host:6333``, or
``local:PATH`` for Qdrant's embedded local mode, one process at a time) and the collection. Vectors and items
(path, label) live in the collection as points with their payload; nothing is held in memory but what a call
asks for. Every ``add``/``remove`` is sent when :meth:`save` commits (the collection is the commit point), and
the model-hash guard is the same as faiss's. ``siamkit index migrate`` copies a faiss gallery into a
collection. Needs ``pip install qdrant-client``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from siamkit.errors import ConfigError, DataError
from siamkit.files import atomic_write_text
from siamkit.index.folder import SIDECAR, STATIC_KEYS, UPLOADS, model_meta
from siamkit.index.gallery import FaissGallery
from siamkit.index.metrics import from_qdrant_score, qdrant_distance
from siamkit.index.protocol import BACKENDS, Gallery, Item

BACKEND = "qdrant"
PAGE = 1024
PENDING = ".qdrant-pending"
"""A gallery folder's note of the collection a build is filling, until its commit."""

log = logging.getLogger(__name__)


_CLIENTS: dict[str, Any] = {}


def _client(url: str) -> Any:
    """One client per service in this process (Qdrant's local mode allows one per folder)."""
    key = url if not url.startswith("local:") else "local:" + str(Path(url[len("local:") :]).resolve())
    if key in _CLIENTS:
        return _CLIENTS[key]
    try:
        from qdrant_client import QdrantClient
    except ImportError:
        raise ConfigError("a Qdrant gallery needs qdrant-client: pip install qdrant-client") from None
    try:
        client = QdrantClient(path=key[len("local:") :]) if key.startswith("local:") else QdrantClient(url=url)
        client.get_collections()  # a remote client connects lazily: ask once, so a wrong address fails here
    except RuntimeError as exc:  # local mode: another process holds the folder
        raise DataError(f"{url}: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # the client's connection errors (httpx, grpc, its own wrappers)
        raise DataError(f"{url}: no Qdrant answers there ({str(exc).splitlines()[0] or type(exc).__name__}); start "
                        "it, or check --backend-url") from None  # fmt: skip
    if not _CLIENTS:
        atexit.register(_close_all)  # closed while the interpreter still runs (the client's __del__ is too late)
    _CLIENTS[key] = client
    return client


def _close_all() -> None:
    for client in _CLIENTS.values():
        with contextlib.suppress(Exception):
            client.close()
    _CLIENTS.clear()


def _models() -> Any:
    from qdrant_client import models

    return models


class QdrantItems(Mapping[int, Item]):
    """The gallery's items, read from the collection when asked (never all held in memory)."""

    def __init__(self, gallery: QdrantGallery) -> None:
        self.g = gallery

    def __getitem__(self, item_id: int) -> Item:
        pending = self.g.pending_items.get(item_id)
        if pending is not None:
            return pending
        if item_id in self.g.pending_removals:
            raise KeyError(item_id)
        got = self.g.client.retrieve(self.g.collection, [int(item_id)], with_payload=True, with_vectors=False)
        if not got:
            raise KeyError(item_id)
        return _item(got[0])

    def __iter__(self) -> Iterator[int]:
        for point in self.g.scroll():
            if point.id not in self.g.pending_removals:
                yield int(point.id)
        yield from self.g.pending_items

    def __len__(self) -> int:
        return len(self.g)


def _item(point: Any) -> Item:
    payload = point.payload or {}
    return Item(int(point.id), str(payload.get("path", "")), payload.get("label"))


@BACKENDS.register(BACKEND)
class QdrantGallery(Gallery):
    """A gallery whose vectors and items are points of a Qdrant collection (see the module's description)."""

    items: QdrantItems

    def __init__(self, directory: Path, meta: dict[str, Any], client: Any, fresh: bool = False):
        self.directory = directory
        self.meta = meta
        self.client = client
        self.collection = str(meta["backend"]["collection"])
        self.fresh = fresh
        self.pending_items: dict[int, Item] = {}
        self.pending_vectors: dict[int, np.ndarray] = {}
        self.pending_removals: set[int] = set()
        self.items = QdrantItems(self)
        self._next: int | None = None
        self._payloads: dict[int, Item] = {}
        self.replaces: dict[str, str | None] = {}  # an overwrite's old collection and chosen name (create_on)

    # ---- construction --------------------------------------------------------------------------------------
    @classmethod
    def create_on(
        cls, directory: str | os.PathLike[str], model: dict[str, Any], url: str, collection: str | None = None,
        overwrite: bool = False,
    ) -> QdrantGallery:  # fmt: skip
        """A new gallery folder whose items go to ``collection`` (default: a fresh name) of the Qdrant at
        ``url``. Nothing is written until :meth:`save`."""
        directory = Path(directory)
        if (directory / SIDECAR).exists() and not overwrite:
            raise DataError(f"{directory}: a gallery exists there; use index add, or pass --overwrite to rebuild it")
        client = _client(url)
        _drop_pending(directory, client)  # what a cut build of this folder left in Qdrant
        name = collection or f"siamkit-{uuid.uuid4().hex[:12]}"
        alias = None
        if client.collection_exists(name):  # never emptied in place: a cut rebuild would lose the old gallery
            if not overwrite:
                raise DataError(f"Qdrant collection {name!r} exists at {url}; choose another --collection, or "
                                "pass --overwrite to replace it (dropped once the new one is whole)")  # fmt: skip
            name, alias = f"{name}-{uuid.uuid4().hex[:8]}", name  # built beside it; the name follows at commit
        meta = model_meta(model, {"kind": "qdrant", "options": {}})
        meta.update(backend={"kind": BACKEND, "url": url, "collection": name}, generation=0, next_id=0)
        gallery = cls(directory, meta, client, fresh=True)
        gallery.replaces = {"alias": alias, "old": _sidecar_collection(directory) if overwrite else None}
        return gallery

    @classmethod
    def open_folder(cls, directory: Path, static: dict[str, Any]) -> QdrantGallery:
        backend = static["backend"]
        client = _client(str(backend["url"]))
        if not client.collection_exists(str(backend["collection"])):
            raise DataError(f"{directory}: Qdrant collection {backend['collection']!r} not found at {backend['url']}; "
                            "rebuild the gallery")  # fmt: skip
        return cls(directory, {**static, "generation": 0, "next_id": 0}, client)

    # ---- state ---------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        if self.fresh:
            return len(self.pending_items)
        count = int(self.client.count(self.collection, exact=True).count)
        return count + len(self.pending_items) - len(self.pending_removals)

    @property
    def vector_count(self) -> int:
        return len(self)

    def is_stale(self) -> bool:
        return False  # every read asks the collection itself

    def refresh(self) -> Gallery:
        return self

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "pending_edits": 0, "backend": dict(self.meta["backend"])}

    def scroll(self) -> Iterator[Any]:
        """Every committed point (id and payload), a page at a time."""
        if self.fresh:
            return
        offset = None
        while True:
            points, offset = self.client.scroll(self.collection, limit=PAGE, offset=offset, with_payload=True,
                                                with_vectors=False)  # fmt: skip
            yield from points
            if offset is None:
                return

    # ---- changes -------------------------------------------------------------------------------------------
    def add(self, vectors: np.ndarray, paths: Sequence[str], labels: Sequence[str | None]) -> list[int]:
        if not (len(vectors) == len(paths) == len(labels)):
            raise ValueError("vectors, paths and labels differ in length")
        x = self.prepare(vectors)
        ids = []
        for v, p, lab in zip(x, paths, labels, strict=True):
            i = self.peek_next_id()
            self._next = None
            self.pending_items[i] = Item(i, str(p), lab)
            self.pending_vectors[i] = v
            ids.append(i)
        return ids

    def peek_next_id(self) -> int:
        """A fresh item id: random 62-bit (no counter to share between machines; never reused in practice). The
        next :meth:`add` uses it first."""
        if self._next is None or self._next in self.pending_items:
            self._next = int.from_bytes(os.urandom(8), "little") >> 2
        return self._next

    def remove(self, ids: Sequence[int]) -> list[Item]:
        removed = []
        for i in ids:
            if i not in self.items:
                raise KeyError(f"no gallery item with id {i}")
        for i in sorted(set(int(i) for i in ids)):
            if i in self.pending_items:
                removed.append(self.pending_items.pop(i))
                self.pending_vectors.pop(i)
            else:
                removed.append(self.items[i])
                self.pending_removals.add(i)
        return removed

    def save(self) -> None:
        """Commit: the new points upserted and the removed ones deleted (waiting for the collection to apply
        them); a new gallery's folder and collection made first."""
        m = _models()
        self.directory.mkdir(parents=True, exist_ok=True)
        fresh = self.fresh
        if fresh:  # a new name (create_on): nothing of an old gallery is touched before the commit
            atomic_write_text(self.directory / PENDING, self.collection + "\n")  # dropped if this build is cut
            self.client.create_collection(self.collection, vectors_config=m.VectorParams(
                size=int(self.meta["dim"]), distance=qdrant_distance(m, self.metric)))  # fmt: skip
            (self.directory / UPLOADS).mkdir(exist_ok=True)
        try:
            self._send()
        except BaseException:
            if fresh:  # an error (not a kill): the half-filled new collection goes now
                with contextlib.suppress(Exception):
                    self.client.delete_collection(self.collection)
            raise
        if fresh:  # the commit point, once every point is in: a cut before it leaves no gallery (or the old one)
            static = {k: self.meta[k] for k in (*STATIC_KEYS, "backend")}
            atomic_write_text(self.directory / SIDECAR, json.dumps(static) + "\n")
            self.fresh = False
            self._drop_replaced()
            (self.directory / PENDING).unlink(missing_ok=True)

    def _drop_replaced(self) -> None:
        """After an overwrite's commit: the old gallery's collection dropped, and the name the user chose
        (``--collection``) made an alias of the new one. A cut here leaves the new gallery whole; the old collection
        is then left over (said, not fatal)."""
        m, alias, old = _models(), self.replaces.get("alias"), self.replaces.get("old")
        try:
            if alias is not None:
                named = {a.alias_name: a.collection_name for a in self.client.get_aliases().aliases}
                ops: list[Any] = []
                if alias in named:
                    ops.append(m.DeleteAliasOperation(delete_alias=m.DeleteAlias(alias_name=alias)))
                    old = old if old not in (None, alias) else named[alias]
                else:  # a plain collection of that name: it goes, and the name becomes the new one's alias
                    self.client.delete_collection(alias)
                    old = None if old == alias else old
                ops.append(m.CreateAliasOperation(create_alias=m.CreateAlias(collection_name=self.collection,
                                                                             alias_name=alias)))  # fmt: skip
                self.client.update_collection_aliases(change_aliases_operations=ops)
            if old is not None and old != self.collection and self.client.collection_exists(old):
                self.client.delete_collection(old)
        except Exception as exc:  # the client's own error types: the new gallery is committed either way
            log.warning("%s: the new gallery is in collection %r; the replaced collection could not be dropped "
                        "(%s): drop it in Qdrant", self.directory, self.collection, exc)  # fmt: skip
        self.replaces = {}

    def _send(self) -> None:
        """Upsert the pending points and delete the removed ones, waiting for the collection to apply them."""
        m = _models()
        ids = list(self.pending_vectors)
        for s in range(0, len(ids), PAGE):
            chunk = ids[s : s + PAGE]
            self.client.upsert(self.collection, wait=True, points=m.Batch(
                ids=chunk, vectors=[self.pending_vectors[i].tolist() for i in chunk],
                payloads=[{"path": self.pending_items[i].path, "label": self.pending_items[i].label} for i in chunk],
            ))  # fmt: skip
        if self.pending_removals:
            self.client.delete(self.collection, wait=True,
                               points_selector=m.PointIdsList(points=sorted(self.pending_removals)))  # fmt: skip
        self.pending_items.clear()
        self.pending_vectors.clear()
        self.pending_removals.clear()

    def compact(self) -> None:
        """Nothing to fold: the collection keeps its own index."""

    # ---- search --------------------------------------------------------------------------------------------
    def search(
        self, vectors: np.ndarray, k: int = 10, nprobe: int | None = None, ef_search: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        if self.pending_items or self.pending_removals:
            raise DataError("a Qdrant gallery searches what is committed: save() first")
        x = self.prepare(vectors)
        m = _models()
        requests = [m.QueryRequest(query=v.tolist(), limit=k, with_payload=True) for v in x]
        answers = [a.points[:k] for a in self.client.query_batch_points(self.collection, requests=requests)]
        width = max((len(points) for points in answers), default=0)  # min(k, size), without asking the size
        raw = np.zeros((len(x), width), np.float32)
        ids = np.full((len(x), width), -1, np.int64)
        self._payloads = {}
        for row, points in enumerate(answers):
            for col, point in enumerate(points):
                ids[row, col] = int(point.id)
                raw[row, col] = from_qdrant_score(point.score, self.metric)  # as faiss's, for to_distance
                self._payloads[int(point.id)] = _item(point)
        return self.to_distance(raw), ids

    def item(self, item_id: int) -> Item:
        """From the payloads the last search brought back, else from the collection."""
        return self._payloads.get(item_id) or self.items[item_id]


def _drop_pending(directory: Path, client: Any) -> None:
    """Drop the collection a cut build of ``directory`` was filling (named in its ``PENDING`` file), unless the
    folder's gallery uses it."""
    try:
        name = (directory / PENDING).read_text().strip()
    except OSError:
        return
    if name and name != _sidecar_collection(directory) and client.collection_exists(name):
        client.delete_collection(name)
        log.info("%s: dropped Qdrant collection %r, left by a build that was cut", directory, name)
    (directory / PENDING).unlink(missing_ok=True)


def _sidecar_collection(directory: Path) -> str | None:
    """The Qdrant collection the gallery folder ``directory`` uses now, if it is a readable Qdrant gallery."""
    try:
        backend = json.loads((directory / SIDECAR).read_text()).get("backend") or {}
    except (OSError, ValueError, AttributeError):
        return None
    return str(backend["collection"]) if backend.get("kind") == BACKEND and "collection" in backend else None


def migrate(source: str | os.PathLike[str], out: str | os.PathLike[str], url: str,
            collection: str | None = None) -> QdrantGallery:  # fmt: skip
    """A copy of the faiss gallery ``source`` as a new gallery folder ``out`` on the Qdrant at ``url``: the same
        items, ids, labels and vectors (read back from the faiss index), the same model guard. ``out``'s sidecar is
    written once every point is in the collection: a crash before leaves no gallery at ``out``."""
    src = Gallery.open(source)
    if not isinstance(src, FaissGallery):
        raise DataError(f"{source}: already a Qdrant gallery")
    model = {"model_hash": src.model_hash, "run_dir": src.meta["run_dir"], "input_shape": src.meta["input_shape"],
             "embedding_dim": src.meta["dim"], "distance": src.metric,
             "threshold": src.meta.get("threshold")}  # fmt: skip
    dst = QdrantGallery.create_on(out, model, url, collection)
    for item_id in src.items:  # each vector read back from the index that holds it (the base or the delta)
        it = src.items[item_id]
        dst.pending_items[item_id] = Item(item_id, it.path, it.label)
        dst.pending_vectors[item_id] = src.vector(item_id)
    uploads = Path(source) / UPLOADS
    if uploads.is_dir():  # the images added over HTTP belong to the gallery: they move with it, before its commit
        import shutil

        shutil.copytree(uploads, Path(out) / UPLOADS, dirs_exist_ok=True)
    dst.save()  # the sidecar last: a cut migrate leaves no gallery at out, never a part of one
    return dst
