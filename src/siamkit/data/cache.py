"""Decode once, in parallel, into a cache file; read it back in seconds, or row by row when it is large.

A folder, flat-folder or CSV dataset is decoded by a pool of worker processes (``data.workers``, default: the
machine's cores) straight into one uint8 file of shape ``(N, C, H, W)`` — each worker writes its rows at their
offsets, no pixels cross a pipe — plus a small manifest (every file's path, size and mtime, the row it went to,
the decode settings). Both are written under temp names and renamed, the manifest last: a cache without its
manifest is never taken for complete, and a crash or a kill leaves only temp files. (The file is not forced to
disk — it is a cache: after a power cut, delete the cache folder.) One advisory lock per cache entry makes
concurrent builders (two runs, the ranks of a distributed run) wait for the first: the cache is built once.

A later run with the same files and settings finds every file unchanged (size and mtime) and opens the cache:
no decoding, no header scan. A changed, added or removed file is detected and only that part is redone: rows of
unchanged files are copied from the old cache file, the rest decoded, and the change is logged in one line.

The manifest holds a CRC-32 of every 4 MiB block of the cache file, checked when the cache is opened: a file
damaged in place (zeroed, rows swapped) is decoded again, never trained on. Every reader holds a shared lock on
the file it reads for as long as it reads it, and a rebuild deletes only the old files nobody holds: two runs
sharing ``data.cache_dir`` never delete each other's files.

A decoded set larger than ``data.memory_limit_mb`` is not loaded: :class:`DiskImages` reads the rows a batch
needs from the file (``pread``, never a memory map, so the resident memory stays bounded by the batches and the
page cache does the caching); a smaller set is one tensor over a copy-on-write map of the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import multiprocessing
import os
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from siamkit.errors import DataError
from siamkit.files import atomic_write_text, locked_file

log = logging.getLogger(__name__)
VERSION = 3  # 2: EXIF orientation applied; 3: block checksums
"""Bumped when decoding changes (mode conversion, resize): older caches are then rebuilt."""
MANIFEST = "manifest.json"
BLOCK_BYTES = 1 << 22
"""The cache file is checksummed (CRC-32) per block of this many bytes."""


def cache_root() -> Path:
    """siamkit's cache folder: ``$SIAMKIT_CACHE`` or ``~/.cache/siamkit`` (CIFAR-10, decoded images)."""
    return Path(os.environ.get("SIAMKIT_CACHE") or Path.home() / ".cache" / "siamkit")


def default_cache_dir() -> Path:
    """Where decoded images are cached by default: ``cache_root() / "decoded"``."""
    return cache_root() / "decoded"


@dataclass(frozen=True)
class CacheSettings:
    """Where and how to cache decoded images (``data.cache_dir``, ``data.workers``, ``data.memory_limit_mb``)."""

    directory: Path
    workers: int = 0
    """Decoding processes; 0 = one per core."""
    memory_limit_mb: float = 1024
    """Decoded sets up to this size are loaded into memory; larger ones are read from the file per batch."""
    progress: bool = False


class DiskImages:
    """uint8 images ``(N, C, H, W)`` kept in a cache file and read on demand. Indexed like the tensor it stands
    for — ``x[i]``, ``x[a:b]``, ``x[index_array]`` return tensors of just those rows — and ``take(index)`` is a
    lazy subset (no pixels read), so splits and samplers never load the whole set."""

    dtype = torch.uint8
    ndim = 4

    def __init__(self, path: str | os.PathLike[str], shape: tuple[int, int, int, int], rows: np.ndarray | None = None,
                 hold: ReadHold | None = None):  # fmt: skip
        self.path = Path(path)
        self.total, self.c, self.h, self.w = (int(v) for v in shape)
        self.rows = np.arange(self.total, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        self.row_bytes = self.c * self.h * self.w
        self._hold = hold

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.rows), self.c, self.h, self.w))

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"DiskImages({str(self.path)!r}, {tuple(self.shape)})"

    def take(self, index: np.ndarray | torch.Tensor) -> DiskImages:
        """The lazy subset of these images at ``index`` (positions in this collection)."""
        idx = index.numpy() if isinstance(index, torch.Tensor) else np.asarray(index, dtype=np.int64)
        return DiskImages(self.path, (self.total, self.c, self.h, self.w), self.rows[idx], self._hold)

    def __getitem__(self, key: Any) -> torch.Tensor:
        if isinstance(key, (int, np.integer)):
            return self._read(self.rows[[int(key)]])[0]
        if isinstance(key, slice):
            return self._read(self.rows[key])
        if isinstance(key, torch.Tensor):
            key = key.cpu().numpy()
        return self._read(self.rows[np.asarray(key)])

    def numpy(self) -> np.ndarray:
        """Every image, read into memory."""
        return self[:].numpy()

    def _handle(self) -> int:
        """The file's descriptor (a forked worker shares it: reads are ``pread``, at explicit offsets)."""
        if self._hold is None:  # unpickled in another process: open the file again, while its owner holds it
            self._hold = ReadHold(self.path)
        return self._hold.fd

    def _read(self, rows: np.ndarray) -> torch.Tensor:
        """The file's ``rows`` in the given order: one ``pread`` per run of consecutive rows."""
        out = np.empty((len(rows), self.c, self.h, self.w), dtype=np.uint8)
        if not len(rows):
            return torch.from_numpy(out)
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        flat = np.empty((len(rows), self.row_bytes), dtype=np.uint8)
        starts = np.flatnonzero(np.diff(sorted_rows, prepend=sorted_rows[0] - 2) != 1)
        ends = np.append(starts[1:], len(sorted_rows))
        fd = self._handle()
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            view = flat[s:e].data.cast("B")
            got = os.preadv(fd, [view], int(sorted_rows[s]) * self.row_bytes)
            if got != len(view):
                raise DataError(f"{self.path}: the image cache is shorter than its manifest says; delete it")
        out.reshape(len(rows), -1)[order] = flat
        return torch.from_numpy(out)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_hold": None}


class ReadHold:
    """An open cache file with a shared lock on it, for as long as this object lives: a rebuild (another run
    sharing the cache folder) never deletes a file someone reads (:func:`_remove_unused`)."""

    def __init__(self, path: Path) -> None:
        try:
            self.fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise DataError(f"{path}: the image cache file is gone (its folder was cleared while in use); run "
                            "again to decode the images anew") from None  # fmt: skip
        fcntl.flock(self.fd, fcntl.LOCK_SH)
        self._pid = os.getpid()

    def __del__(self) -> None:
        if getattr(self, "_pid", None) == os.getpid():  # a forked copy leaves the owner's descriptor open
            with contextlib.suppress(OSError):
                os.close(self.fd)


ImageArray = torch.Tensor | DiskImages
"""uint8 images ``(N, C, H, W)``: in memory, or rows of a cache file (both indexed alike)."""


def as_tensor(images: ImageArray) -> torch.Tensor:
    """``images`` as one in-memory tensor (a :class:`DiskImages` is read whole: for small sets only)."""
    return images if isinstance(images, torch.Tensor) else images[:]


Decoder = Callable[[Path, int, tuple[int, int]], np.ndarray]
"""Decodes one file to ``(C, H, W)`` uint8 (raising ``DataError`` naming it)."""


@dataclass
class Cached:
    """What a cache gives back: the images (a tensor, or :class:`DiskImages`), the positions of the files that
    were kept, the skipped files, and the resolved settings."""

    images: torch.Tensor | DiskImages
    kept: list[int]
    skipped: list[str]
    channels: int
    size: tuple[int, int]


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def entry_dir(settings: CacheSettings, key: str, channels: int | None, size: tuple[int, int] | None) -> Path:
    """The cache entry of a dataset (``key``: its folder or CSV) under these decode settings (and the face mode,
    ``siamkit.data.faces.current_mode``)."""
    from siamkit.data.faces import current_mode

    parts: list[Any] = [VERSION, str(Path(key).resolve()), channels, list(size) if size else None]
    if current_mode() != "off":  # aligned face chips are another decode (an entry of their own)
        parts.append(f"faces:{current_mode()}")
    ident = json.dumps(parts)
    return settings.directory / hashlib.sha256(ident.encode()).hexdigest()[:20]


def _locked(directory: Path) -> contextlib.AbstractContextManager[None]:
    directory.mkdir(parents=True, exist_ok=True)
    return locked_file(directory / ".lock")


def decode_cached(
    paths: Sequence[Path], key: str, channels: int | None, size: tuple[int, int] | None, skip_bad: bool, *,
    settings: CacheSettings, decode: Decoder, resolve: Callable[[], tuple[int | None, tuple[int, int] | None]],
) -> Cached | None:  # fmt: skip
    """The decoded ``paths`` from the cache entry of ``key``, building or updating it first. ``resolve()`` gives
    the (channels, size) to decode at when the settings leave them to the data (a header scan, done only when
    the cache cannot answer). Returns None when no size can be resolved (the caller decodes in memory)."""
    entry = entry_dir(settings, key, channels, size)
    with _locked(entry):
        stamps = [_stamp(p) for p in paths]
        old = _read_manifest(entry)
        if old is not None and not _intact(entry, old):
            log.warning("%s: the image cache is damaged (a block's checksum differs); decoding the images again",
                        entry / old["data"])  # fmt: skip
            old = None
        if old is not None and _unchanged(old, paths, stamps):
            log.info("decoded images from the cache %s (%d files unchanged)", entry, len(paths))
            return _open(entry, old, settings)
        if channels is None or size is None:
            channels, size = resolve()
        if channels is None or size is None:
            return None
        manifest = _build(
            entry, paths, stamps, channels, size, skip_bad=skip_bad, settings=settings, decode=decode, old=old
        )
        return _open(entry, manifest, settings)


def _read_manifest(entry: Path) -> dict[str, Any] | None:
    """The entry's manifest when it is whole and of this version (else None: the cache is built again)."""
    try:
        manifest: dict[str, Any] = json.loads((entry / MANIFEST).read_text())
        data = entry / str(manifest["data"])
        size = int(np.prod([int(v) for v in manifest["shape"]]))
        blocks = manifest["blocks"]
        whole = (manifest.get("version") == VERSION and data.is_file() and data.stat().st_size == size
                 and isinstance(blocks, list) and len(blocks) == -(-size // BLOCK_BYTES)
                 and all(isinstance(f, list) and len(f) == 4 for f in manifest["files"]))  # fmt: skip
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return manifest if whole else None


def block_checksums(path: Path | str) -> list[int]:
    """CRC-32 of every :data:`BLOCK_BYTES` block of the file."""
    out = []
    with open(path, "rb") as fh:
        while chunk := fh.read(BLOCK_BYTES):
            out.append(zlib.crc32(chunk))
    return out


def _intact(entry: Path, manifest: dict[str, Any]) -> bool:
    """Whether the cache file still holds what was written (every block's checksum as in the manifest)."""
    return block_checksums(entry / manifest["data"]) == manifest["blocks"]


def _unchanged(manifest: dict[str, Any], paths: Sequence[Path], stamps: Sequence[tuple[int, int] | None]) -> bool:
    files = manifest["files"]
    if len(files) != len(paths):
        return False
    return all(f[0] == str(p) and s is not None and [f[1], f[2]] == list(s)
               for f, p, s in zip(files, paths, stamps, strict=True))  # fmt: skip


def _open(entry: Path, manifest: dict[str, Any], settings: CacheSettings) -> Cached:
    shape = tuple(int(v) for v in manifest["shape"])
    n, c, h, w = shape
    data = entry / manifest["data"]
    hold = ReadHold(data)  # held as long as the images are: no rebuild deletes the file meanwhile
    kept = [i for i, f in enumerate(manifest["files"]) if f[3] >= 0]
    skipped = [f[0] for f in manifest["files"] if f[3] < 0]
    images: torch.Tensor | DiskImages
    if n * c * h * w <= settings.memory_limit_mb * 2**20:  # mapped copy-on-write: pages come in as they are used
        mapped = np.memmap(data, dtype=np.uint8, mode="c", shape=shape)
        mapped.hold = hold  # type: ignore[attr-defined]  # the lock lives as long as the mapping
        images = torch.from_numpy(mapped)
    else:
        images = DiskImages(data, (n, c, h, w), hold=hold)
        log.info("%d decoded images (%.1f GB) stay in the cache file and are read per batch (data.memory_limit_mb "
                 "%g)", n, n * c * h * w / 1e9, settings.memory_limit_mb)  # fmt: skip
    for path in skipped:
        log.warning("skipped %s (unreadable when the cache was built)", path)
    return Cached(images, kept, skipped, c, (h, w))


def _build(
    entry: Path, paths: Sequence[Path], stamps: Sequence[tuple[int, int] | None], channels: int,
    size: tuple[int, int], *, skip_bad: bool, settings: CacheSettings, decode: Decoder, old: dict[str, Any] | None,
) -> dict[str, Any]:  # fmt: skip
    """Write a new cache file and manifest for ``paths``: rows of files unchanged since ``old`` are copied from
    its file, the others decoded by the worker pool. Both renamed into place, the manifest last."""
    row_bytes = channels * size[0] * size[1]
    reuse: dict[str, tuple[int, int, int]] = {}
    if old is not None and old["shape"][1:] == [channels, *size]:
        reuse = {f[0]: (f[1], f[2], f[3]) for f in old["files"]}
    n = len(paths)
    for leftover in entry.glob(".images.*.tmp"):  # a killed build's (we hold the entry's lock: none is being written)
        leftover.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=entry, prefix=".images.", suffix=".tmp")
    try:
        os.ftruncate(fd, n * row_bytes)
        todo: list[tuple[int, str]] = []
        copied = 0
        old_fd = os.open(entry / old["data"], os.O_RDONLY) if reuse and old is not None else None
        try:
            for row, (p, st) in enumerate(zip(paths, stamps, strict=True)):
                prev = reuse.get(str(p))
                if prev is not None and st is not None and (prev[0], prev[1]) == st and prev[2] >= 0:
                    os.pwrite(fd, os.pread(old_fd, row_bytes, prev[2] * row_bytes), row * row_bytes)  # type: ignore[arg-type]
                    copied += 1
                else:
                    todo.append((row, str(p)))
        finally:
            if old_fd is not None:
                os.close(old_fd)
        if old is not None:
            before = {f[0] for f in old["files"]}
            now = {str(p) for p in paths}
            added, removed = len(now - before), len(before - now)
            log.info("image cache %s: %d files added, %d removed, %d changed; %d rows reused, %d decoded", entry,
                     added, removed, len(todo) - added, copied, len(todo))  # fmt: skip
        bad = _decode_parallel(tmp, todo, channels, size, row_bytes, settings=settings, decode=decode)
        if bad and not skip_bad:
            raise DataError(bad[min(bad)])
        kept_rows = [r for r in range(n) if r not in bad]
        if bad:  # close the holes left by the skipped files
            for message in (bad[r] for r in sorted(bad)):
                log.warning("skipped %s", message)
            _compact(fd, kept_rows, row_bytes)
            if not kept_rows:
                raise DataError(f"no readable images among {n} files ({len(bad)} skipped)")
    except BaseException:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    os.close(fd)
    blocks = block_checksums(tmp)
    name = f"images-{os.getpid()}-{time.time_ns()}.u8"
    os.replace(tmp, entry / name)
    new_row = {r: i for i, r in enumerate(kept_rows)}
    files = [[str(p), *(st if st is not None else (0, 0)), new_row.get(r, -1)]
             for r, (p, st) in enumerate(zip(paths, stamps, strict=True))]  # fmt: skip
    manifest = {"version": VERSION, "data": name, "shape": [len(kept_rows), channels, *size], "files": files,
                "blocks": blocks}  # fmt: skip
    atomic_write_text(entry / MANIFEST, json.dumps(manifest) + "\n")
    _remove_unused(entry, name)
    return manifest


def _remove_unused(entry: Path, current: str) -> None:
    """Delete the entry's older cache files that no reader holds (:class:`ReadHold`); a held one stays until a
    later build finds it free."""
    for stale in entry.glob("images-*.u8"):
        if stale.name == current:
            continue
        try:
            fd = os.open(stale, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # another run reads it
        else:
            stale.unlink(missing_ok=True)
        finally:
            os.close(fd)


def _compact(fd: int, kept_rows: list[int], row_bytes: int) -> None:
    for new, row in enumerate(kept_rows):
        if new != row:
            os.pwrite(fd, os.pread(fd, row_bytes, row * row_bytes), new * row_bytes)
    os.ftruncate(fd, len(kept_rows) * row_bytes)


def _decode_parallel(
    data: str, todo: list[tuple[int, str]], channels: int, size: tuple[int, int], row_bytes: int, *,
    settings: CacheSettings, decode: Decoder,
) -> dict[int, str]:  # fmt: skip
    """Decode ``todo`` (row, path) into ``data`` with the worker pool; returns {row: error} of the unreadable."""
    if not todo:
        return {}
    workers = min(settings.workers or os.cpu_count() or 1, max(1, len(todo) // 64))
    chunk = max(16, min(512, len(todo) // (workers * 8) or 1))
    tasks = [(data, todo[s : s + chunk], channels, size, row_bytes, decode) for s in range(0, len(todo), chunk)]
    from tqdm import tqdm

    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 else None
    results: Any = map(_decode_task, tasks) if pool is None else pool.imap_unordered(_decode_task, tasks)
    bad: dict[int, str] = {}
    started = time.perf_counter()
    bar = tqdm(total=len(todo), desc="decode", unit="img", leave=False, disable=None if settings.progress else True)
    try:
        for count, failed in results:
            bad.update(failed)
            bar.update(count)
    except BaseException:
        if pool is not None:
            pool.terminate()
        raise
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    seconds = time.perf_counter() - started
    log.info("decoded %d images in %.1fs (%.0f images/s, %d process%s)", len(todo), seconds,
             len(todo) / max(seconds, 1e-9), workers, "" if workers == 1 else "es")  # fmt: skip
    return bad


Task = tuple[str, list[tuple[int, str]], int, tuple[int, int], int, Decoder]


def _decode_task(task: Task) -> tuple[int, dict[int, str]]:
    """One worker's share: decode its (row, path) list and write each row at its offset; {row: error} back."""
    data, rows, channels, size, row_bytes, decode = task
    bad: dict[int, str] = {}
    fd = os.open(data, os.O_WRONLY)
    try:
        for row, path in rows:
            try:
                arr = decode(Path(path), channels, size)
            except DataError as exc:
                bad[row] = str(exc)
                continue
            os.pwrite(fd, np.ascontiguousarray(arr, dtype=np.uint8).tobytes(), row * row_bytes)
    finally:
        os.close(fd)
    return len(rows), bad
