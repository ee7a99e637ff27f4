"""A crash or a power cut never costs a gallery: each write operation runs in a forked child that ``os._exit``s
just before its k-th write step (an ``os.replace``/``os.rename``, a folder swap, a database ``COMMIT``, a Qdrant
upsert) — and once after the last — and after each cut the previous artefact opens and answers searches, or the
new one does, never neither."""

from __future__ import annotations

import os
import sqlite3
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from siamkit.errors import DataError
from siamkit.files import made_folder
from siamkit.index import gallery as gallery_mod
from siamkit.index import store
from siamkit.index.gallery import Gallery, locked

CUT = 77
DONE = 100
DIM = 4


def _model() -> dict[str, Any]:
    return {"model_hash": "c" * 64, "run_dir": "/runs/x", "input_shape": [1, 8, 8], "embedding_dim": DIM,
            "distance": "euclidean", "threshold": 0.5}  # fmt: skip


def _vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


class _Commits:
    """A database connection whose ``COMMIT`` is a write step."""

    def __init__(self, con: sqlite3.Connection, step: Callable[[str], None]) -> None:
        self._con, self._step = con, step

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.strip().upper() == "COMMIT":
            self._step("commit")
        return self._con.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def _install_cuts(cut_at: int) -> list[int]:
    """In the child: every write step counts; the ``cut_at``-th one is never made (the process dies first)."""
    count = [0]

    def step(_what: str) -> None:
        count[0] += 1
        if count[0] == cut_at:
            os._exit(CUT)

    def wrap(fn: Callable[..., Any], what: str) -> Callable[..., Any]:
        def cut_first(*args: Any, **kwargs: Any) -> Any:
            step(what)
            return fn(*args, **kwargs)

        return cut_first

    os.replace = wrap(os.replace, "replace")  # type: ignore[assignment]
    os.rename = wrap(os.rename, "rename")  # type: ignore[assignment]
    gallery_mod.exchange_folders = wrap(gallery_mod.exchange_folders, "swap")  # a rebuild's folder swap
    connect = store.connect  # every commit's transaction (siamkit.index.store.write_commit)
    store.connect = lambda d: _Commits(connect(d), step)  # type: ignore[assignment,return-value]
    try:
        from qdrant_client import QdrantClient

        QdrantClient.upsert = wrap(QdrantClient.upsert, "upsert")  # type: ignore[method-assign]
    except ImportError:  # pragma: no cover
        pass
    return count


def _run_cut(operation: Callable[[], None], cut_at: int) -> int:
    """Run ``operation`` in a forked child cut before its ``cut_at``-th write step: CUT, or DONE + the steps."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 99
        try:
            import faiss

            faiss.omp_set_num_threads(1)
            count = _install_cuts(cut_at)
            operation()
            code = DONE + count[0]
        except BaseException:
            traceback.print_exc()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _state(directory: Path) -> frozenset[tuple[int, str, str | None]] | None:
    """The gallery's items, after checking that it opens and its index answers for every item; None: no gallery."""
    try:
        g = Gallery.open(directory)
    except DataError as exc:
        assert "not a gallery" in str(exc), str(exc)  # anything else would be a gallery lost
        return None
    items = frozenset((it.id, it.path, it.label) for it in g.items.values())
    if items:
        _, ids = g.search(np.zeros((1, DIM), np.float32), k=len(items))
        assert sorted(ids[0].tolist()) == sorted(i for i, _, _ in items)
    return items


def _items(start: int, n: int, tag: str) -> frozenset[tuple[int, str, str | None]]:
    return frozenset((start + i, f"/img/{tag}{i}.png", tag) for i in range(n))


def _build(directory: Path, n: int, tag: str, overwrite: bool = False, seed: int = 0) -> None:
    g = Gallery.create(directory, _model(), overwrite=overwrite)
    with made_folder(directory), locked(directory):
        g.add(_vectors(n, seed), [f"/img/{tag}{i}.png" for i in range(n)], [tag] * n)
        g.save()


def _add(directory: Path, n: int, tag: str) -> None:
    with locked(directory):
        g = Gallery.open(directory)
        start = g.peek_next_id()
        g.add(_vectors(n, 5), [f"/img/{tag}{i}.png" for i in range(n)], [tag] * n)
        assert start == 6
        g.save()


def _remove(directory: Path, ids: list[int]) -> None:
    with locked(directory):
        g = Gallery.open(directory)
        g.remove(ids)
        g.save()


def _compact(directory: Path) -> None:
    with locked(directory):
        Gallery.open(directory).compact()


A = _items(0, 6, "a")
CASES: dict[str, tuple[Callable[[Path], None] | None, Callable[[Path], None], list[Any]]] = {
    # name: (what is there before, the operation, the states allowed after a cut: before or after)
    "build": (None, lambda d: _build(d, 6, "a"), [None, A]),
    "overwrite": (lambda d: _build(d, 6, "a"), lambda d: _build(d, 4, "b", overwrite=True, seed=1),
                  [A, _items(0, 4, "b")]),
    "add": (lambda d: _build(d, 6, "a"), lambda d: _add(d, 3, "c"), [A, A | _items(6, 3, "c")]),
    "remove": (lambda d: _build(d, 6, "a"), lambda d: _remove(d, [1, 4]),
               [A, frozenset(x for x in A if x[0] not in (1, 4))]),
    "compact": (lambda d: (_build(d, 6, "a"), _add(d, 3, "c")), _compact, [A | _items(6, 3, "c")]),
}  # fmt: skip


def _cut_everywhere(tmp_path: Path, name: str, before: Callable[[Path], None] | None,
                    operation: Callable[[Path], None], allowed: list[Any],
                    state: Callable[[Path], Any] = _state) -> list[int]:  # fmt: skip
    """Cut ``operation`` before each of its write steps and after the last; check each outcome. Returns the
    cut points tried."""
    steps = None
    tried = []
    cut = 1
    while steps is None or cut <= steps + 1:
        directory = tmp_path / f"{name}-{cut}" / "gallery"
        directory.parent.mkdir()
        if before is not None:
            before(directory)
        code = _run_cut(lambda d=directory: operation(d), cut)
        assert code == CUT or code >= DONE, f"{name}: the child failed ({code}) at cut {cut}"
        if code >= DONE:
            steps = code - DONE
        after = state(directory)
        assert after in allowed, f"{name} cut before write step {cut}: {after}"
        if after is None:  # no gallery: one can be built there again, without --overwrite
            operation(directory)
            assert state(directory) == allowed[-1]
        assert not list(directory.parent.glob(".*.new-*")) or cut <= (steps or cut), "a staged folder is left"
        tried.append(cut)
        cut += 1
    assert steps is not None and steps >= 1
    return tried


@pytest.mark.parametrize("name", list(CASES))
def test_a_cut_at_any_write_step_leaves_the_old_or_the_new_gallery(tmp_path, name):
    before, operation, allowed = CASES[name]
    tried = _cut_everywhere(tmp_path, name, before, operation, allowed)
    assert len(tried) >= 2


def test_leftovers_of_a_cut_are_removed_by_the_next_write_and_foreign_files_kept(tmp_path):
    directory = tmp_path / "g"
    _build(directory, 6, "a")
    (directory / "notes.txt").write_text("mine")
    assert _run_cut(lambda: _build(directory, 4, "b", overwrite=True), 3) == CUT  # staged, not yet swapped
    (directory / ".gallery.json.x1y2.tmp").write_text("half")
    assert list(tmp_path.glob(".g.new-*")) and _state(directory) == A
    _add(directory, 3, "c")
    assert not list(tmp_path.glob(".g.new-*")) and not list(directory.glob(".*.tmp"))
    assert _state(directory) == A | _items(6, 3, "c")
    _build(directory, 4, "b", overwrite=True, seed=1)  # the folder is replaced whole, but not what is not its own
    assert (directory / "notes.txt").read_text() == "mine"
    assert _state(directory) == _items(0, 4, "b") and not list(tmp_path.glob(".g.new-*"))


def test_a_cut_migrate_leaves_no_part_of_a_gallery(tmp_path):
    pytest.importorskip("qdrant_client")
    from siamkit.index import qdrant

    source = tmp_path / "src"
    _build(source, 6, "a")

    def migrate(out: Path) -> None:
        with locked(source), made_folder(out):
            qdrant.migrate(source, out, f"local:{out.parent / 'qdrant'}")

    def state(out: Path) -> Any:
        assert _state(source) == A  # the source is never touched
        qdrant._close_all()
        try:
            g = Gallery.open(out)
        except DataError as exc:
            assert "not a gallery" in str(exc), str(exc)
            return None
        items = frozenset((it.id, it.path, it.label) for it in g.items.values())
        qdrant._close_all()
        return items

    _cut_everywhere(tmp_path, "migrate", None, migrate, [None, A], state)
