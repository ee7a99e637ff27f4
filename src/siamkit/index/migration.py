"""Galleries of an earlier format brought to the current one when opened: version 1 (items in ``gallery.json``,
one index file) becomes version 2 (items and edits in ``gallery.db``, the same index file as its base)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

from siamkit.files import atomic_write_text
from siamkit.index.folder import FORMAT, SIDECAR, STATIC_KEYS
from siamkit.index.store import DATABASE, create_database

log = logging.getLogger(__name__)


def migrate_v1(directory: Path, old: dict[str, Any]) -> dict[str, Any]:
    """A version-1 gallery (its sidecar ``old``) rewritten as version 2 with the same index file as its base; returns
    the new sidecar. The database is written to a temp file and renamed, then the sidecar replaced (a crash in
    between leaves the version-1 sidecar, and the next open migrates again)."""
    static = {**{k: old[k] for k in STATIC_KEYS if k in old}, "format": FORMAT}
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{DATABASE}.", suffix=".tmp")
    os.close(fd)
    try:
        state = {"generation": int(old.get("generation", 0)), "base_file": old.get("index_file"), "base_seq": 0,
                 "seq": 0, "next_id": int(old.get("next_id", 0)), "uid": uuid.uuid4().hex}  # fmt: skip
        create_database(Path(tmp), old.get("items", []), state)
        os.replace(tmp, directory / DATABASE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic_write_text(directory / SIDECAR, json.dumps(static) + "\n")
    log.info("%s: gallery converted to %s (edits now cost what they change)", directory, FORMAT)
    return static
