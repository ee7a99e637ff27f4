"""The neighbours figure of a gallery search (SPEC §7): each query with its nearest gallery images and their
distances, as a grid (one row per query) or as hubs (the query in the centre, neighbours on spokes)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from siamkit.data.images import load_image
from siamkit.errors import ConfigError, DataError
from siamkit.evaluate import plots
from siamkit.index.protocol import Gallery, Hit

FIGURE_STYLES = ("grid", "hub")
MAX_FIGURE_QUERIES = 5
HIT_CAPTIONS = {
    "grid": "each hit: its distance above, its gallery label below (green: the query's label, red: another)",
    "hub": "each hit: its gallery label (green: the query's label, red: another) and distance beyond it",
}


def neighbours_figure(
    gallery: Gallery, queries: Sequence[tuple[str, str | None]], hits: Sequence[Sequence[Hit]], path: Path, *,
    style: str = "grid", threshold: float | None = None,
) -> Path:  # fmt: skip
    """Draw the first ``MAX_FIGURE_QUERIES`` queries (the title says so when there are more). Each hit is labelled
    with its gallery label (green when it is the query's, red when another) and its distance. The frames (and a hub's
    spokes) show the threshold's decision, ``hit.match``: green accepted, red accepted on another label (a false
    accept), grey rejected; the title gives the threshold (``threshold``: the one the search used, default the
    gallery's when every hit agrees with it). Without decisions they are green/red by label, neutral when a label
    is unknown. A hub's spokes are as long as their distances (:func:`siamkit.evaluate.plots.spoke_lengths`)."""
    if style not in FIGURE_STYLES:
        raise ConfigError(f"unknown figure style {style!r}; use grid or hub")
    total = len(queries)
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
    accepted = np.array([[hit.match for hit in row[:k]] for row in hits], dtype=object)
    decided = any(v is not None for v in accepted.ravel())
    threshold = decision_threshold(hits, gallery.meta.get("threshold") if threshold is None else threshold)
    captions = np.array([[hit.label if hit.label is not None else "(no label)" for hit in row[:k]] for row in hits],
                        dtype=object)  # fmt: skip
    known = any(v is not None for v in correct.ravel())
    right, decisions = (correct if known else None), (accepted if decided else None)
    titles = [f"query: {lab}" if lab is not None else f"query: {Path(p).name}"[:28] for p, lab in queries]
    states = plots.frame_states(right, decisions, correct.shape)
    title = figure_title(style, k, len(queries), total, threshold=threshold if decided else None, states=states)
    if style == "hub":
        origin = -1.0 if gallery.metric == "cosine_similarity" else 0.0  # a negated similarity starts at -1
        origin = min(origin, float(distances.min()))
        return plots.plot_neighbour_hubs(tiles_q, tiles_n, distances, path, correct=right, titles=titles,
                                         captions=captions, accepted=decisions, threshold=threshold, origin=origin,
                                         title=title)  # fmt: skip
    images = np.concatenate([tiles_q, tiles_n.reshape(-1, c, size, size)])
    q_idx = np.arange(len(queries))
    n_idx = len(queries) + np.arange(len(hits) * k).reshape(len(hits), k)
    return plots.plot_neighbour_grid(images, q_idx, n_idx, distances, path, correct=right, titles=titles,
                                     captions=captions, accepted=decisions, threshold=threshold,
                                     title=title)  # fmt: skip


def decision_threshold(hits: Sequence[Sequence[Hit]], threshold: float | None) -> float | None:
    """``threshold`` when every hit's ``match`` agrees with it (``distance ≤ threshold``), else None: a title never
    names a threshold other than the one the decisions were made with."""
    if threshold is None:
        return None
    agree = all(hit.match is None or hit.match == (hit.distance <= threshold) for row in hits for hit in row)
    return float(threshold) if agree else None


def figure_title(
    style: str, k: int, drawn: int, total: int, *, threshold: float | None, states: np.ndarray
) -> str:  # fmt: skip
    """A search figure's title: what it shows, the threshold and what the frames mean, and — when fewer queries are
    drawn than were searched — ``first N of M queries drawn``."""
    what = f"Search: the {k} nearest gallery items of each query"
    if style == "hub":
        what += " (spoke length proportional to distance)"
    lines = [what, HIT_CAPTIONS[style]]
    legend = plots.frame_legend(states)
    if threshold is not None:
        ring = " (the dashed line: where a spoke of that distance ends)" if style == "hub" else ""
        legend = f"threshold {threshold:.3f}{ring}" + (f" — {legend}" if legend else "")
    if legend:
        lines.append(legend)
    if total > drawn:
        lines.append(f"first {drawn} of {total} queries drawn (the search output lists all {total})")
    return "\n".join(lines)


def display_images(paths: Sequence[str], size: int, channels: int) -> np.ndarray:
    """Images ``(N, C, size, size)`` uint8 for figures; a missing or unreadable file becomes a grey tile."""
    tiles = []
    for p in paths:
        try:
            tiles.append(load_image(p, channels, (size, size)))
        except DataError:
            tiles.append(np.full((channels, size, size), 128, np.uint8))
    return np.stack(tiles)
