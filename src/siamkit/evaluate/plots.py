"""Figures: loss curves, ROC with TPR@FPR annotations, distance box plot and histogram."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from siamkit.evaluate import metrics as M
from siamkit.files import atomic_write_bytes


def save_figure(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def plot_history(
    rows: Sequence[dict[str, float]], path: Path, best_epoch: int | None = None, monitor: str = "val_loss"
) -> Path:
    """Train and validation loss per epoch (whole-epoch ticks), the monitored validation retrieval metric on a
    second axis when there is one, and the kept epoch marked (epoch 0: the initial weights were kept)."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.5, 4))
    epochs = [int(r["epoch"]) for r in rows]
    ax.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train loss")
    ax.plot(epochs, [r["val_loss"] for r in rows], "s-", label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = ax.get_legend_handles_labels()
    key = f"val_{monitor}"
    if monitor != "val_loss" and rows and key in rows[0]:
        ax2 = ax.twinx()
        (line,) = ax2.plot(epochs, [r[key] for r in rows], "^--", color="tab:green",
                           label=f"validation {monitor.replace('_', ' ')} (monitored)")  # fmt: skip
        ax2.set_ylabel(monitor.replace("_", " "))
        handles, labels = [*handles, line], [*labels, str(line.get_label())]
    if best_epoch is not None:
        text = "kept: initial weights" if best_epoch == 0 else f"kept: epoch {best_epoch}"
        kept = ax.axvline(best_epoch, color="k", ls=":", lw=1.2, label=text)
        handles, labels = [*handles, kept], [*labels, text]
    ax.set_title("Training history")
    ax.grid(alpha=0.3)
    ax.legend(handles, labels, fontsize=8, loc="best")
    return save_figure(fig, path)


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, threshold: float | None = None) -> Path:
    """ROC per named split (labels, distances), log-scaled FPR, TPR@FPR targets annotated; with ``threshold``,
    each curve's operating point (the FPR and TPR of ``same = distance ≤ threshold``) marked ✕."""
    fig, ax = plt.subplots(figsize=(6.5, 5))
    starred = False
    for i, (name, (labels, distances)) in enumerate(curves.items()):
        scores = -np.asarray(distances)
        fpr, tpr, _ = M.roc(labels, scores)
        area = M.auc(labels, scores)
        (line,) = ax.plot(np.clip(fpr, 1e-5, 1), tpr, label=f"{name} (AUC {area:.3f})")
        if threshold is not None:
            far, frr = M.rates_at(distances, labels, threshold)
            ax.plot(max(far, 1e-5), 1.0 - frr, "X", ms=9, mec="k", color=line.get_color(), zorder=5)
        for t in M.tpr_at_fpr(labels, scores):
            ax.plot(t.fpr, t.tpr_interpolated, "o", color=line.get_color())
            mark = "" if t.reliable else "*"
            starred = starred or not t.reliable
            ax.annotate(  # one label row per curve, stacked downwards: curves close together never overlap
                f"{t.tpr_interpolated:.3f}{mark}", (t.fpr, t.tpr_interpolated), textcoords="offset points",
                xytext=(5, 6 - 11 * i), fontsize=7.5, color=line.get_color(), annotation_clip=False,
            )  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_ylim(0, 1.1)  # room above 1.0 for the labels
    ax.set_xlabel("false positive rate (log)")
    ax.set_ylabel("true positive rate")
    note = "\n* = fewer than 3 distinct impostor pairs behind that FPR" if starred else ""
    ax.set_title(f"ROC — TPR at FPR 0.5 / 0.1 / 0.01 / 0.001{note}", fontsize=10)
    if threshold is not None:
        ax.plot([], [], "X", ms=9, mec="k", color="w", label=f"operating point (threshold {threshold:.3f})")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right")
    return save_figure(fig, path)


def plot_distances(
    labels: np.ndarray, distances: np.ndarray, threshold: float | None, path: Path, split: str = "test"
) -> Path:
    """Box plot and histogram of the ``split``'s pair distances by label, with the decision threshold."""
    same = np.asarray(distances)[np.asarray(labels) == 1]
    diff = np.asarray(distances)[np.asarray(labels) == 0]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.boxplot([same, diff], tick_labels=["same", "different"])
    ax1.set_ylabel("distance")
    ax1.set_title(f"{split.capitalize()} pair distances by label")
    bins = np.linspace(0, float(np.max(distances)) * 1.02 + 1e-9, 50)
    ax2.hist(same, bins=bins, alpha=0.6, label=f"same (n={len(same)})", density=True)
    ax2.hist(diff, bins=bins, alpha=0.6, label=f"different (n={len(diff)})", density=True)
    if threshold is not None:
        for ax in (ax1,):
            ax.axhline(threshold, color="k", ls="--", lw=1)
        ax2.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:.3f}")
    ax2.set_xlabel("distance")
    ax2.set_ylabel("density")
    ax2.set_title(f"{split.capitalize()} distance histogram")
    ax2.legend()
    return save_figure(fig, path)


def plot_neighbours(
    images: np.ndarray, labels: np.ndarray, queries: np.ndarray, neighbours: np.ndarray, distances: np.ndarray,
    path: Path, names: Sequence[str] = (),
) -> Path:  # fmt: skip
    """One row per query: the query, then its nearest gallery items with their distances; a green frame marks a
    neighbour of the query's class, a red one another class (SPEC §7)."""

    def name(cls: int) -> str:
        return names[cls] if 0 <= cls < len(names) else str(cls)

    correct = labels[neighbours] == labels[queries][:, None]
    titles = [f"query: {name(int(labels[q]))}" for q in queries]
    wrong = np.where(correct, "", np.vectorize(lambda c: name(int(c)))(labels[neighbours]))
    return plot_neighbour_grid(images, queries, neighbours, distances, path, correct, titles, wrong)


def plot_neighbour_grid(
    images: np.ndarray, queries: np.ndarray, neighbours: np.ndarray, distances: np.ndarray, path: Path,
    correct: np.ndarray | None = None, titles: Sequence[str] = (), captions: np.ndarray | None = None,
) -> Path:  # fmt: skip
    """Tiles ``images`` ``(N, C, H, W)`` uint8 in rows: ``images[queries[r]]`` then ``images[neighbours[r, j]]``
    captioned with ``distances[r, j]``; ``correct[r, j]`` (bool, or None/absent: unknown) frames a neighbour green
    or red; ``captions[r, j]`` (e.g. a wrong neighbour's class) is written under its tile. Drawn as one mosaic on
    one axes (fast)."""
    c, h, w = images.shape[1:]
    k = neighbours.shape[1]
    frame, gap, band = max(1, h // 14), max(2, h // 8), max(6, h // 3)  # frame, white gutter, text band
    cap = band if captions is not None else 0  # a text band under the tiles for the captions
    cell_h, cell_w = band + h + 2 * (frame + gap) + cap, w + 2 * (frame + gap)
    canvas = np.full((len(queries) * cell_h, (k + 1) * cell_w, 3), 255, np.uint8)
    colours = {True: (40, 160, 40), False: (220, 40, 40), None: (255, 255, 255)}

    def put(row: int, col: int, idx: int, ok: bool | None) -> None:
        y, x = row * cell_h + band + gap, col * cell_w + gap
        canvas[y : y + h + 2 * frame, x : x + w + 2 * frame] = colours[ok]
        img = np.transpose(images[idx], (1, 2, 0))
        canvas[y + frame : y + frame + h, x + frame : x + frame + w] = img if c == 3 else np.repeat(img, 3, axis=2)

    for row, q in enumerate(queries):
        put(row, 0, int(q), None)
        for col in range(k):
            ok = None if correct is None or correct[row, col] is None else bool(correct[row, col])
            put(row, col + 1, int(neighbours[row, col]), ok)
    fig, ax = plt.subplots(figsize=(1.2 * (k + 1), 1.5 * len(queries)))
    ax.imshow(canvas, interpolation="nearest")
    for row in range(len(queries)):
        y = row * cell_h + band + gap / 2
        title = titles[row] if row < len(titles) else "query"
        ax.text(cell_w / 2, y, title, ha="center", va="bottom", fontsize=7)
        for col in range(k):
            ax.text((col + 1.5) * cell_w, y, f"{distances[row, col]:.3f}", ha="center", va="bottom", fontsize=7)
            if captions is not None and captions[row, col]:
                y_cap = row * cell_h + band + gap + h + 2 * frame + cap / 2
                ax.text((col + 1.5) * cell_w, y_cap, str(captions[row, col])[:12], ha="center", va="center",
                        fontsize=6, color="tab:red")  # fmt: skip
    ax.axis("off")
    legend = " (green frame: same class, red: another class)" if correct is not None else ""
    ax.set_title(f"Nearest neighbours with distances{legend}", fontsize=9, pad=14)
    return save_figure(fig, path)


def plot_neighbour_hubs(
    queries: np.ndarray, neighbours: np.ndarray, distances: np.ndarray, path: Path,
    correct: np.ndarray | None = None, titles: Sequence[str] = (),
) -> Path:  # fmt: skip
    """The hub-graph style, one panel per query (rows of at most 3): the query image (``queries``
    ``(Q, C, H, W)``) in the centre and its neighbours (``neighbours`` ``(Q, k, C, H, W)``) on spokes, each with its
    distance (``distances`` ``(Q, k)``) written beyond its tile. Spoke length grows with the distance (nearest at
    0.8, farthest at 1.25); the nearest sits at twelve o'clock, the rest clockwise; ``correct`` colours frames and
    spokes green/red (grey: unknown)."""
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    def rgb(img: np.ndarray) -> np.ndarray:
        t = np.transpose(img, (1, 2, 0))
        return t if t.shape[2] == 3 else np.repeat(t, 3, axis=2)

    n_q, k = distances.shape
    cols = min(n_q, 3)  # panels in rows of at most 3: a readable page, not a long strip
    rows_ = -(-n_q // cols)
    zoom = 28 / max(queries.shape[2:])  # tiles about 28 points wide, whatever the image size
    fig, axes = plt.subplots(rows_, cols, figsize=(4.6 * cols, 4.8 * rows_), squeeze=False)
    for ax in axes.ravel()[n_q:]:
        ax.axis("off")
    for q, ax in enumerate(axes.ravel()[:n_q]):
        d = np.asarray(distances[q], dtype=np.float64)
        span = float(d.max() - d.min()) if k else 0.0
        radius = 0.8 + 0.45 * ((d - d.min()) / span if span > 0 else np.zeros_like(d))
        for j in range(k):
            angle = np.pi / 2 - 2 * np.pi * j / k
            x, y = radius[j] * np.cos(angle), radius[j] * np.sin(angle)
            ok = None if correct is None or correct[q, j] is None else bool(correct[q, j])
            colour = {True: "tab:green", False: "tab:red", None: "0.5"}[ok]
            ax.plot([0, x], [0, y], color=colour, lw=1.2, zorder=1)
            # the distance just outside the thumbnail, on the spoke's line: never under an image
            lx, ly = (radius[j] + 0.36) * np.cos(angle), (radius[j] + 0.36) * np.sin(angle)
            ax.text(lx, ly, f"{d[j]:.3f}", fontsize=7, ha="center", va="center", zorder=5, color=colour,
                    bbox={"boxstyle": "round,pad=0.12", "fc": "white", "ec": "none", "alpha": 0.85})  # fmt: skip
            ax.add_artist(AnnotationBbox(OffsetImage(rgb(neighbours[q, j]), zoom=zoom), (x, y),
                                         bboxprops={"edgecolor": colour, "lw": 2}, zorder=2))  # fmt: skip
        ax.add_artist(AnnotationBbox(OffsetImage(rgb(queries[q]), zoom=zoom * 1.4), (0, 0),
                                     bboxprops={"edgecolor": "black", "lw": 2}, zorder=4))  # fmt: skip
        ax.set_xlim(-1.75, 1.75)
        ax.set_ylim(-1.75, 1.75)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(f"{titles[q] if q < len(titles) else 'query'} — {k} nearest", fontsize=9)
    fig.suptitle("Nearest neighbours as a hub (spoke length grows with distance)", fontsize=10)
    return save_figure(fig, path)


def tsne_2d(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """scikit-learn t-SNE to 2-d (perplexity capped for small sets)."""
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (len(features) - 1) / 3)))
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)


def plot_embedding_map(
    points: np.ndarray, labels: np.ndarray, path: Path, title: str, names: Sequence[str] = ()
) -> Path:
    """2-d map (t-SNE) of embeddings coloured by class."""
    fig, ax = plt.subplots(figsize=(7, 6))
    for c in np.unique(labels):
        m = labels == c
        ax.scatter(points[m, 0], points[m, 1], s=5, label=names[c] if 0 <= c < len(names) else str(c))
    if len(np.unique(labels)) <= 20:
        ax.legend(markerscale=3, fontsize=7, loc="best")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    return save_figure(fig, path)


def plot_roc_overlay(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> Path:
    """Several runs' test ROC curves on one log-FPR plot (a study's comparison)."""
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for name, (labels, distances) in curves.items():
        scores = -np.asarray(distances)
        fpr, tpr, _ = M.roc(labels, scores)
        ax.plot(np.clip(fpr, 1e-5, 1), tpr, label=f"{name} (AUC {M.auc(labels, scores):.3f})")
    for t in M.DEFAULT_FPRS:
        ax.axvline(t, color="grey", lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positive rate (log)")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)
