"""CIFAR-10 (python batches, SPEC §2.1): a reader, a checksum-verified downloader with a cache, and the offline
stand-in (Fashion-MNIST padded to 32×32, three channels) for machines that cannot download it.

The batches are pickled dicts (``data`` uint8 N×3072 in channel-major order, ``labels``). Pickle can run code,
so they are read with an unpickler that admits only the numpy array reconstruction a batch needs: a
tampered file is refused, never executed.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import pickle
import pickletools
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import torch

from siamkit.data.cache import as_tensor, cache_root
from siamkit.data.imageset import ImageSet
from siamkit.errors import DataError

log = logging.getLogger(__name__)

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
STAND_IN_NOTE = "stand-in: Fashion-MNIST padded to 32×32 and repeated to 3 channels (CIFAR-10 cannot be had offline)"

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
}  # fmt: skip


MAX_BATCH_BYTES = 1 << 29
"""Largest batch file read (512 MiB; CIFAR-10's are 31 MB each)."""


class _BatchUnpickler(pickle.Unpickler):
    """Admits only the numpy array reconstruction a batch needs, and no array larger than the file (``budget``
    bytes) that holds it: a tampered file is refused, never executed, and cannot ask for terabytes."""

    def __init__(self, file: Any, budget: int) -> None:
        super().__init__(file, encoding="bytes")
        self.budget = budget

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a CIFAR-10 batch")
        found = super().find_class(module, name)
        if name == "ndarray":  # only ever the subtype handed to _reconstruct, never called
            return _NdarrayName
        if name == "_reconstruct":
            return self._reconstruct(found)
        return found

    def _reconstruct(self, real: Any) -> Any:
        def reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
            if subtype is not _NdarrayName:
                raise pickle.UnpicklingError("an array of another type than numpy.ndarray")
            try:
                dims = [int(v) for v in (shape if isinstance(shape, tuple | list) else (shape,))]
                itemsize = np.dtype(dtype).itemsize
            except (TypeError, ValueError, OverflowError) as exc:
                raise pickle.UnpicklingError(f"an array of shape {shape!r}, dtype {dtype!r} ({exc})") from None
            if min(dims, default=0) < 0 or math.prod(dims) * itemsize > self.budget:
                raise pickle.UnpicklingError(f"an array of shape {tuple(dims)} would need more memory than the "
                                             f"{self.budget:,}-byte file holds")  # fmt: skip
            return real(np.ndarray, shape, dtype)

        return reconstruct


def _NdarrayName(*args: Any, **kwargs: Any) -> Any:
    """What ``numpy.ndarray`` unpickles to in a batch: its name for ``_reconstruct``; calling it is refused (a
    direct ``ndarray(shape)`` would allocate any shape the file asks for)."""
    raise pickle.UnpicklingError("numpy.ndarray called directly: not how a CIFAR-10 batch builds its arrays")


def _load_batch(path: Path) -> Any:
    """The batch file's object: its opcodes first walked without building anything (``pickletools.genops``: a
    length beyond the file's end — which the unpickler would allocate before reading — is refused), then unpickled
    by ``_BatchUnpickler``."""
    size = path.stat().st_size
    if size > MAX_BATCH_BYTES:
        raise DataError(f"{path}: {size:,} bytes is no CIFAR-10 batch (each is about 31 MB); re-download it")
    raw = path.read_bytes()
    for _ in pickletools.genops(io.BytesIO(raw)):
        pass
    return _BatchUnpickler(io.BytesIO(raw), size).load()


def read_cifar_batch(path: str | os.PathLike[str]) -> tuple[torch.Tensor, np.ndarray]:
    """One python batch file → uint8 images ``(N, 3, 32, 32)`` and int64 labels ``(N,)`` in 0–9."""
    path = Path(path)
    try:
        raw = _load_batch(path)
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            MemoryError, OverflowError, RecursionError) as exc:  # fmt: skip
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: not a readable CIFAR-10 batch ({reason}); re-download it") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: not a CIFAR-10 batch (a {type(raw).__name__}, expected a dict)")
    batch = {k.decode(errors="replace") if isinstance(k, bytes) else k: v for k, v in raw.items()}
    labels = batch.get("labels", batch.get("fine_labels"))
    data = batch.get("data")
    if data is None or labels is None:
        raise DataError(f"{path}: a CIFAR-10 batch needs 'data' and 'labels'; found {sorted(map(str, batch))}")
    try:
        data = np.asarray(data)
        labels = np.asarray(labels)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: 'data' or 'labels' is no array ({exc}); re-download it") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (len(data),):
        raise DataError(f"{path}: 'data' must be uint8 N×3072 with one label per row, got {data.dtype} {data.shape} "
                        f"and {labels.shape} labels")  # fmt: skip
    if len(data) == 0:
        raise DataError(f"{path}: the batch holds no images; re-download it")
    if labels.dtype.kind not in "iu":
        raise DataError(f"{path}: labels must be whole numbers 0–9, got {labels.dtype} values; re-download it")
    bad = np.flatnonzero((labels < 0) | (labels >= len(CIFAR10_CLASSES)))
    if len(bad):
        raise DataError(f"{path}: label {int(labels[bad[0]])} on row {int(bad[0])} is outside 0–9 (CIFAR-10's "
                        f"{len(CIFAR10_CLASSES)} classes; {len(bad):,} of {len(labels):,} rows); is it another "
                        "dataset's batch?")  # fmt: skip
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return images, labels.astype(np.int64)


def find_cifar10(root: str | os.PathLike[str]) -> Path | None:
    """The folder under ``root`` (itself or ``cifar-10-batches-py``) holding all six batch files."""
    for cand in (Path(root), Path(root) / CIFAR10_FOLDER):
        if all((cand / name).is_file() for name in (*TRAIN_BATCHES, TEST_BATCH)):
            return cand
    return None


def read_cifar10(directory: str | os.PathLike[str]) -> tuple[ImageSet, ImageSet]:
    """Training (50,000) and test (10,000) sets from a folder of python batches."""
    found = find_cifar10(directory)
    if found is None:
        raise DataError(f"{directory}: no CIFAR-10 python batches (data_batch_1..5, test_batch) found there")
    parts = [read_cifar_batch(found / name) for name in TRAIN_BATCHES]
    train = ImageSet(torch.cat([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), list(CIFAR10_CLASSES))
    test_x, test_y = read_cifar_batch(found / TEST_BATCH)
    return train, ImageSet(test_x, test_y, list(CIFAR10_CLASSES))


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download_cifar10(
    root: str | os.PathLike[str] | None = None, url: str = CIFAR10_URL, md5: str = CIFAR10_MD5, timeout: float = 30.0
) -> Path:
    """Fetch (unless cached), verify and unpack CIFAR-10 under ``root`` (default: the cache); return the batch
    folder. A cached archive is re-verified; a download goes to a temporary file that is renamed only once
    its checksum is right, so a broken transfer never leaves a half-written archive behind."""
    root = Path(root) if root is not None else cache_root() / "cifar10"
    found = find_cifar10(root)
    if found is not None:
        return found
    root.mkdir(parents=True, exist_ok=True)
    archive = root / CIFAR10_ARCHIVE
    if not archive.is_file():
        fd, tmp_name = tempfile.mkstemp(dir=root, prefix=".download-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                shutil.copyfileobj(resp, out)
            _check_md5(tmp, md5, url)
            tmp.replace(archive)
        except (urllib.error.URLError, OSError) as exc:
            raise DataError(
                f"cannot download CIFAR-10 ({exc}); on a machine with internet fetch {url} and put "
                f"{CIFAR10_ARCHIVE} (or its unpacked {CIFAR10_FOLDER}/ folder) into {root}, or pass --data DIR"
            ) from None
        finally:
            tmp.unlink(missing_ok=True)
    else:
        _check_md5(archive, md5, url)
    with tarfile.open(archive, "r:gz") as tar:
        if hasattr(tarfile, "data_filter"):  # refuses absolute paths, links out of root, device files
            tar.extractall(root, filter="data")
        else:  # pragma: no cover - Python < 3.10.12
            tar.extractall(root)
    found = find_cifar10(root)
    if found is None:
        raise DataError(f"{archive}: the archive holds no CIFAR-10 batches; delete it and download again")
    return found


def _check_md5(path: Path, md5: str, url: str) -> None:
    got = md5sum(path)
    if got != md5:
        raise DataError(
            f"{path}: checksum mismatch (md5 {got}, expected {md5}): a corrupt or different file; delete it and "
            f"fetch {url} again"
        )


def load_cifar10(directory: str | None = None, download: bool = True) -> tuple[ImageSet, ImageSet]:
    """CIFAR-10 from ``directory``, ``$SIAMKIT_CIFAR10``, the cache, or (with ``download``) the internet."""
    for cand in (directory, os.environ.get("SIAMKIT_CIFAR10"), cache_root() / "cifar10"):
        if cand and find_cifar10(cand) is not None:
            return read_cifar10(cand)
    if directory:
        raise DataError(f"{directory}: no CIFAR-10 python batches (data_batch_1..5, test_batch) found there")
    if not download:
        raise DataError(
            f"CIFAR-10 not found in the cache {cache_root() / 'cifar10'}; fetch {CIFAR10_URL} and unpack it there, "
            "or pass --data DIR (offline: --data fashion-mnist runs the 32×32 stand-in)"
        )
    return read_cifar10(download_cifar10())


def fashion_stand_in(images: ImageSet) -> ImageSet:
    """Fashion-MNIST 28×28×1 → 32×32×3: zero-padded by 2 on each side and the gray channel repeated."""
    x = torch.nn.functional.pad(as_tensor(images.images), (2, 2, 2, 2)).expand(-1, 3, -1, -1).contiguous()
    return ImageSet(x, images.labels, images.class_names, images.paths)
