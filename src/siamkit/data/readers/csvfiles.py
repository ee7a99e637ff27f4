"""CSV manifests as every CSV reader (and ``index build``'s listing) reads them: UTF-8 text parsed once, columns
by header name."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

from siamkit.errors import DataError


def csv_text(path: str | os.PathLike[str]) -> io.StringIO:
    """A CSV file's text, ready for ``csv`` readers: UTF-8 with or without a byte-order mark (as spreadsheets
    write it); a missing or undecodable file is a one-line ``DataError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: CSV file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text CSV (byte {exc.start} cannot be decoded); save it as UTF-8 CSV") \
            from None  # fmt: skip
    except OSError as exc:
        raise DataError(f"{path}: cannot read the CSV file ({exc.strerror or exc})") from None
    nul = text.find("\x00")
    if nul >= 0:
        raise DataError(f"{path}:{text.count(chr(10), 0, nul) + 1}: a NUL byte; a CSV is text (is it a binary file, "
                        "or saved as UTF-16?): save it as UTF-8 CSV")  # fmt: skip
    reader = csv.reader(io.StringIO(text, newline=""))
    try:  # parsed once here, so that no reader of the text meets a csv.Error (a field over csv's size limit, ...)
        for _ in reader:
            pass
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: not a readable CSV row ({exc}; a cell holds a path or a "
                        "label): fix that line") from None  # fmt: skip
    return io.StringIO(text, newline="")


def csv_columns(path: Path, fieldnames: Sequence[str] | None) -> dict[str, str]:
    """A CSV header's columns by normalised name (stripped, lower case) → as written; a name given twice is a
    one-line ``DataError`` (reading by name would silently take one of them)."""
    header: dict[str, str] = {}
    for c in fieldnames or []:
        name = (c or "").strip().lower()
        if name and name in header:
            raise DataError(f"{path}: the header names the column {name!r} twice; keep one of them")
        header[name] = c
    return header


def csv_header(path: Path) -> list[str]:
    """The first row's cells, stripped and in lower case."""
    row = next(csv.reader(csv_text(path)), [])
    return [c.strip().lower() for c in row]


def is_csv_with(path: Path, columns: set[str]) -> bool:
    """Whether ``path`` is a ``.csv`` file whose header names every one of ``columns``."""
    return path.is_file() and path.suffix.lower() == ".csv" and columns <= set(csv_header(path))


def resolved(base: Path, value: str) -> str:
    """A CSV cell's path, absolute: relative ones are read from the CSV's folder ``base``."""
    return str((base / value).resolve())
