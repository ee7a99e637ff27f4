"""A gallery folder, whichever backend keeps its vectors: its sidecar ``gallery.json`` (what the gallery is — the
commit point of a new gallery: a folder without one is no gallery), ``uploads/`` (images added over HTTP), its lock
for read-modify-commit cycles across processes, and the leftovers of a cut write."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from siamkit.errors import DataError
from siamkit.files import locked_file
from siamkit.index.metrics import normalized
from siamkit.index.store import DATABASE

FORMAT = "siamkit-gallery-v2"
FORMAT_V1 = "siamkit-gallery-v1"
SIDECAR = "gallery.json"
UPLOADS = "uploads"
STATIC_KEYS = ("format", "model_hash", "run_dir", "input_shape", "dim", "metric", "normalized", "threshold", "index")
"""What the sidecar says the gallery is (a Qdrant gallery's adds ``backend``)."""
OWN_FILES = re.compile(rf"{re.escape(SIDECAR)}|{re.escape(DATABASE)}(-wal|-shm|-journal)?|index-\d{{6}}\.faiss|"
                       rf"{UPLOADS}|\.lock|\..*\.tmp")  # fmt: skip
"""The names a gallery folder's own files have: a rebuild replaces them; anything else in the folder is kept."""


def model_meta(model: dict[str, Any], index: dict[str, Any]) -> dict[str, Any]:
    """The sidecar's description of a new gallery of ``model`` (``Model.describe()``: model_hash, run_dir,
    input_shape, embedding_dim, distance, threshold) kept in ``index`` (``{"kind": ..., "options": ...}``)."""
    return {
        "format": FORMAT, "model_hash": model["model_hash"], "run_dir": model["run_dir"],
        "input_shape": list(model["input_shape"]), "dim": int(model["embedding_dim"]), "metric": model["distance"],
        "normalized": normalized(model["distance"]), "threshold": model.get("threshold"), "index": index,
    }  # fmt: skip


def read_sidecar(directory: Path) -> dict[str, Any]:
    """The sidecar of the gallery in ``directory`` as read (its format not yet checked); one line when there is
    none or it is unreadable."""
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
    return static


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
    real = Path(os.path.realpath(directory))  # the swapped folder is the link's target (a rebuild's swap)
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
