"""The neighbours figure of a gallery search (SPEC §7): each query with its nearest gallery images and their
distances, as a grid (one row per query) or as hubs (the query in the centre, neighbours on spokes)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from siamkit.data.images import load_image
from siamkit.errors import ConfigError, DataError
from siamkit.evaluate import plots
from siamkit.index.gallery import Gallery, Hit

FIGURE_STYLES = ("grid", "hub")
MAX_FIGURE_QUERIES = 5


def neighbours_figure(
    gallery: Gallery, queries: Sequence[tuple[str, str | None]], hits: Sequence[Sequence[Hit]], path: Path,
    style: str = "grid",
) -> Path:  # fmt: skip
    """Draw the first ``MAX_FIGURE_QUERIES`` queries. A frame/spoke is green when the neighbour's label equals the
    query's, red when it differs, neutral when either label is unknown."""
    if style not in FIGURE_STYLES:
        raise ConfigError(f"unknown figure style {style!r}; use grid or hub")
    queries, hits = list(queries)[:MAX_FIGURE_QUERIES], list(hits)[:MAX_FIGURE_QUERIES]
    k = min((len(h) for h in hits), default=0)
    if k == 0:
        raise ConfigError("the gallery is empty: no neighbours to draw")
    c, h, _ = gallery.meta["input_shape"]
    size = max(int(h), 64)
    tiles_q = display_images([p for p, _ in queries], size, c)
    paths = [str(gallery.resolve(gallery.items[hit.id])) for row in hits for hit in row[:k]]
    tiles_n = display_images(paths, size, c).reshape(len(hits), k, c, size, size)
    distances = np.array([[hit.distance for hit in row[:k]] for row in hits])
    correct = np.array(
        [[None if q_lab is None or hit.label is None else hit.label == q_lab for hit in row[:k]]
         for (_, q_lab), row in zip(queries, hits, strict=True)],
        dtype=object,
    )  # fmt: skip
    known = any(v is not None for v in correct.ravel())
    titles = [f"query: {lab}" if lab is not None else f"query: {Path(p).name}"[:28] for p, lab in queries]
    if style == "hub":
        return plots.plot_neighbour_hubs(tiles_q, tiles_n, distances, path, correct if known else None, titles)
    images = np.concatenate([tiles_q, tiles_n.reshape(-1, c, size, size)])
    q_idx = np.arange(len(queries))
    n_idx = len(queries) + np.arange(len(hits) * k).reshape(len(hits), k)
    return plots.plot_neighbour_grid(images, q_idx, n_idx, distances, path, correct if known else None, titles)


def display_images(paths: Sequence[str], size: int, channels: int) -> np.ndarray:
    """Images ``(N, C, size, size)`` uint8 for figures; a missing or unreadable file becomes a grey tile."""
    tiles = []
    for p in paths:
        try:
            tiles.append(load_image(p, channels, (size, size)))
        except DataError:
            tiles.append(np.full((channels, size, size), 128, np.uint8))
    return np.stack(tiles)
