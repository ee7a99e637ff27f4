"""Files written safely and named freely: atomic writes (temp file + rename, so a crash never leaves a half-written
file), content hashes, folders made for a piece of work and removed again if it fails, next-free names. Used by every
module that writes; imports nothing of siamkit."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def file_sha256(path: Path) -> str:
    """SHA-256 hex digest of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_csv(path: Path, columns: list[str], rows: list[Any]) -> None:
    """A CSV with a header; ``rows`` are sequences, or dicts keyed by the columns. Written atomically."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(columns)
    w.writerows([[r.get(c) for c in columns] if isinstance(r, dict) else r for r in rows])
    atomic_write_text(path, buf.getvalue())


def _file_mode() -> int:
    umask = os.umask(0o022)  # read once, at import (single-threaded), and restored at once
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


def next_free(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``, … : the first of these names nothing has yet."""
    path, i = base, 2
    while path.exists():
        path, i = base.with_name(f"{base.name}-{i}"), i + 1
    return path


@contextlib.contextmanager
def made_folder(path: Path, keep: Callable[[], bool] | None = None) -> Iterator[Path]:
    """``path`` made (parents too) for the work inside. If that work fails, the folders this call made are removed
    again — nothing half-made is left behind — unless ``keep()`` says what was written is worth keeping (a run
    that can be resumed)."""
    top = None
    if not path.exists():
        top = path
        while not top.parent.exists():
            top = top.parent
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        if top is not None and not (keep is not None and keep()):
            shutil.rmtree(top, ignore_errors=True)
        raise


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write to a temp file in the same folder, then rename: a crash never leaves a half-written file. The file
    gets the usual permissions (0666 less the umask), not the temp file's private 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_temps(path: Path) -> None:
    """Remove the temp files a cut :func:`atomic_write_bytes` of ``path`` left (call it where one writer writes)."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()


@contextlib.contextmanager
def locked_file(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (``flock``) on ``path`` (made if missing) for the work inside: other processes
    taking it wait. When the file was replaced while this one waited (its folder swapped by
    :func:`exchange_folders`), the lock is taken again on the file now at ``path``."""
    import fcntl

    while True:
        fh = open(path, "a")  # noqa: SIM115 - held open across the yield below
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            if os.path.samestat(os.fstat(fh.fileno()), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        fh.close()
    try:
        yield
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


RENAME_EXCHANGE = 2
AT_FDCWD = -100


def exchange_folders(a: Path, b: Path) -> None:
    """Swap two folders in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``): a crash leaves either both as
    they were or both swapped. Where the call is missing, two renames through ``<b>.swap`` (see
    :func:`recover_swap`)."""
    import ctypes
    import errno

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        renameat2 = None
    if renameat2 is not None:
        if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(code, f"cannot swap {a} and {b}: {os.strerror(code)}")
    aside = b.with_name(b.name + ".swap")
    os.rename(b, aside)
    os.rename(a, b)
    os.rename(aside, a)


def recover_swap(b: Path) -> None:
    """Finish a two-rename :func:`exchange_folders` that a crash cut: ``b`` missing but ``<b>.swap`` there."""
    aside = b.with_name(b.name + ".swap")
    if not b.exists() and aside.is_dir():
        os.rename(aside, b)
