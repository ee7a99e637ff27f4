"""A run's embeddings of image files and folders, written for other tools: ``.npy`` vectors with a CSV of their
paths and labels beside them, one Parquet table, or JSON lines (``siamkit embed``).

The images are listed as ``index build`` lists them (files, class-per-folder roots labelled by folder, flat
folders, CSVs with a ``path`` column), decoded and embedded a batch at a time. Files are written to a temporary
name and renamed: an interrupted run leaves the previous output or the new one, whole.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from siamkit.errors import ConfigError
from siamkit.files import atomic_write_bytes, atomic_write_csv

FORMATS = {".npy": "npy", ".parquet": "parquet"}


def embed_images(
    run_dir: str | os.PathLike[str], images: Sequence[str], batch_size: int = 256, progress: bool = False,
    skip_bad: bool = False, *, source: Any = "torch", label: str | None = None,
) -> tuple[np.ndarray, list[tuple[str, str | None]], list[str], Any]:  # fmt: skip
    """``(vectors (N, D) float32, [(path, label)], skipped paths, model)`` for ``images`` (``index build``'s
    sources) under the run's model."""
    from siamkit.data.sources import collect_images
    from siamkit.index.ops import embed_paths
    from siamkit.runs.model import open_model

    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    model = open_model(run_dir, source)
    items = collect_images(images, label)
    vectors, kept, skipped = embed_paths(model, items, batch_size, progress, skip_bad)
    return vectors.astype(np.float32, copy=False), kept, skipped, model


def out_format(out: str | os.PathLike[str]) -> str:
    """``npy`` or ``parquet`` from ``out``'s extension; any other is a one-line error."""
    kind = FORMATS.get(Path(out).suffix.lower())
    if kind is None:
        raise ConfigError(f"--out {out}: give a .npy file (vectors, with a .csv of paths and labels beside it) or a "
                          ".parquet file (one table); or no --out and --format json for JSON lines")  # fmt: skip
    return kind


def write_vectors(
    out: str | os.PathLike[str], vectors: np.ndarray, items: Sequence[tuple[str, str | None]]
) -> list[str]:
    """Write ``vectors`` and their ``items``' paths and labels to ``out`` (``.npy`` + ``<stem>.csv``, or
    ``.parquet``); returns the files written."""
    out = Path(out)
    if out.parent and not out.parent.exists():
        raise ConfigError(f"--out {out}: the folder {out.parent} does not exist; create it first")
    if out_format(out) == "parquet":
        atomic_write_bytes(out, _parquet_bytes(vectors, items))
        return [str(out)]
    buf = io.BytesIO()
    np.save(buf, vectors, allow_pickle=False)
    table = out.with_suffix(".csv")
    atomic_write_csv(table, ["row", "path", "label"], [(i, p, lab or "") for i, (p, lab) in enumerate(items)])
    atomic_write_bytes(out, buf.getvalue())
    return [str(out), str(table)]


def json_lines(vectors: np.ndarray, items: Sequence[tuple[str, str | None]]) -> Iterator[str]:
    """One JSON object per image: ``{"path", "label", "vector"}``."""
    for (path, label), v in zip(items, vectors, strict=True):
        yield json.dumps({"path": path, "label": label, "vector": [round(float(x), 7) for x in v]})


def _parquet_bytes(vectors: np.ndarray, items: Sequence[tuple[str, str | None]]) -> bytes:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("--out FILE.parquet needs pyarrow: pip install 'siamkit[parquet]' (or give a .npy file)") \
            from None  # fmt: skip
    dim = int(vectors.shape[1]) if vectors.ndim == 2 else 0
    flat = pa.array(np.ascontiguousarray(vectors, np.float32).reshape(-1))
    table = pa.table({
        "path": pa.array([p for p, _ in items], pa.string()),
        "label": pa.array([lab for _, lab in items], pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
    })  # fmt: skip
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())
