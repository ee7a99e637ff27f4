"""A faiss gallery's SQLite database (``gallery.db``): its items, the edit log since the base index, and its state
(generation, base file, last log row, next id, the gallery's uid).

Every write is one explicit transaction (``BEGIN IMMEDIATE`` … ``COMMIT``), the commit point of an edit: the item
rows and one log row per item (an added item's vector, or a removal), or — for a compaction — the new base's name
with the log rows it holds dropped. The journal is WAL: readers never wait for a writer, and a killed writer leaves
the last committed transaction."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from siamkit.errors import CheckpointError

DATABASE = "gallery.db"
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value)",
    "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, path TEXT NOT NULL, label TEXT)",
    "CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL, id INTEGER NOT NULL, "
    "vector BLOB)",
)
Edit = tuple[str, int, bytes | None, str | None, str | None]
"""A pending edit: ``(op, id, vector, path, label)``; ``op`` is ``add`` (with the float32 vector's bytes, path and
label) or ``remove`` (the rest None)."""
LogRow = tuple[int, str, int, bytes | None]
"""A log row: ``(seq, op, id, vector)``."""
Stamp = tuple[str, int, int]
"""What identifies a committed state: ``(uid, generation, seq)``."""


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


def read_state(con: sqlite3.Connection) -> dict[str, Any]:
    """The state table as a dict (empty when there is none yet)."""
    try:
        return dict(con.execute("SELECT key, value FROM state").fetchall())
    except sqlite3.DatabaseError:
        return {}


def stamp_of(state: dict[str, Any]) -> Stamp:
    return (str(state.get("uid", "")), int(state.get("generation", 0)), int(state.get("seq", 0)))


def disk_stamp(directory: Path) -> Stamp | None:
    """The stamp committed in ``directory``'s database, or None when it has none."""
    if not (directory / DATABASE).is_file():
        return None
    con = connect_read(directory)
    try:
        return stamp_of(read_state(con))
    finally:
        con.close()


def read_log(con: sqlite3.Connection, after: int) -> list[LogRow]:
    """The log rows after row ``after``, in order."""
    rows: list[LogRow] = con.execute("SELECT seq, op, id, vector FROM log WHERE seq > ? ORDER BY seq",
                                     (after,)).fetchall()  # fmt: skip
    return rows


def read_items(con: sqlite3.Connection, from_id: int | None = None) -> list[tuple[int, str, str | None]]:
    """Item rows ``(id, path, label)``: all, or those with ids from ``from_id``."""
    if from_id is None:
        rows: list[tuple[int, str, str | None]] = con.execute("SELECT id, path, label FROM items").fetchall()
    else:
        rows = con.execute("SELECT id, path, label FROM items WHERE id >= ?", (from_id,)).fetchall()
    return rows


@dataclass(frozen=True)
class Commit:
    """What one commit writes besides the edits: where the base stands after it."""

    generation: int
    base_file: str | None
    next_id: int
    base_seq: int
    """The last log row the base holds before this commit (a compaction moves it to the last row)."""
    seq: int
    """The last committed log row before this commit."""
    uid: str


def write_commit(directory: Path, edits: Sequence[Edit], commit: Commit, *, compact: bool,
                 expect: Stamp | None) -> dict[str, Any]:  # fmt: skip
    """One transaction: the item rows of ``edits``; their log rows, or — with ``compact`` (the base named in
    ``commit`` holds them) — the log emptied; and the new state, which is returned. ``expect``: the stamp the
    edits were made against (a ``CheckpointError`` when another process committed since); None: a new gallery,
    which starts from nothing."""
    con = connect(directory)
    try:
        con.execute("BEGIN IMMEDIATE")
        try:
            for statement in SCHEMA:
                con.execute(statement)
            if expect is None:  # an overwritten gallery starts from nothing
                for table in ("items", "log", "state"):
                    con.execute(f"DELETE FROM {table}")
            elif stamp_of(read_state(con)) != expect:
                raise CheckpointError(f"{directory}: changed by another process since it was opened; open it "
                                      "again (edit under siamkit.index.gallery.locked)")  # fmt: skip
            adds = [(i, p, lab) for op, i, _, p, lab in edits if op == "add"]
            con.executemany("INSERT INTO items (id, path, label) VALUES (?, ?, ?)", adds)
            con.executemany("DELETE FROM items WHERE id = ?", [(i,) for op, i, *_ in edits if op == "remove"])
            if not compact:
                con.executemany("INSERT INTO log (op, id, vector) VALUES (?, ?, ?)",
                                [(op, i, vec) for op, i, vec, _, _ in edits])  # fmt: skip
            seq = max(int(con.execute("SELECT COALESCE(MAX(seq), 0) FROM log").fetchone()[0]), commit.seq)
            if compact:
                con.execute("DELETE FROM log")
            state = {"generation": commit.generation, "base_file": commit.base_file, "seq": seq,
                     "next_id": commit.next_id, "base_seq": seq if compact else commit.base_seq,
                     "uid": commit.uid}  # fmt: skip
            con.executemany("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", state.items())
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.close()
    return state


def create_database(path: Path, items: Sequence[Sequence[Any]], state: dict[str, Any]) -> None:
    """A new database file at ``path`` (not the gallery's: the caller renames it into place) holding ``items``
    and ``state``, with no log rows."""
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("BEGIN")
        for statement in SCHEMA:
            con.execute(statement)
        con.executemany("INSERT INTO items (id, path, label) VALUES (?, ?, ?)", items)
        con.executemany("INSERT INTO state (key, value) VALUES (?, ?)", state.items())
        con.execute("COMMIT")
        con.execute("PRAGMA journal_mode=WAL")
    finally:
        con.close()
