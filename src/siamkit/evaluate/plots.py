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
from siamkit.evaluate.fprs import DEFAULT_FPRS
from siamkit.files import atomic_write_bytes


def save_figure(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


SUPERVISED_KEY, SELF_SUPERVISED_KEY = "train_supervised_loss", "train_self_supervised_loss"
"""History columns of the two training terms apart, when the training loop records them: the supervised loss and
the weighted self-supervised term (``loss.ssl_weight`` × NT-Xent), whose sum is ``train_loss``."""


def plot_history(
    rows: Sequence[dict[str, float]], path: Path, best_epoch: int | None = None, monitor: str = "val_loss",
    ssl_weight: float | None = None,
) -> Path:  # fmt: skip
    """Train and validation loss per epoch (whole-epoch ticks), the monitored validation retrieval metric on a
    second axis when there is one, and the kept epoch marked (epoch 0: the initial weights were kept).

    With a self-supervised term (``ssl_weight`` > 0; None: the ``loss.ssl_weight`` of the ``config.yaml`` beside
    ``path``, if any) the training loss is a sum: when the history has the terms apart (:data:`SUPERVISED_KEY`,
    :data:`SELF_SUPERVISED_KEY`) each is drawn as its own curve; else the legend and title say what the curve sums.
    Either way they say that the validation loss is the supervised term alone (no second view is drawn there)."""
    from matplotlib.ticker import MaxNLocator

    weight = _ssl_weight_beside(path) if ssl_weight is None else ssl_weight
    fig, ax = plt.subplots(figsize=(6.5, 4))
    epochs = [int(r["epoch"]) for r in rows]
    apart = bool(rows) and all(SUPERVISED_KEY in r and SELF_SUPERVISED_KEY in r for r in rows)
    if weight and apart:
        ax.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train loss (sum of the two terms)")
        ax.plot(epochs, [r[SUPERVISED_KEY] for r in rows], "o--", label="train: supervised term")
        ax.plot(epochs, [r[SELF_SUPERVISED_KEY] for r in rows], "o:",
                label=f"train: self-supervised term ({weight:g} × NT-Xent)")  # fmt: skip
    elif weight:
        ax.plot(epochs, [r["train_loss"] for r in rows], "o-", label=f"train loss (supervised + {weight:g} × NT-Xent)")
    else:
        ax.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train loss")
    ax.plot(epochs, [r["val_loss"] for r in rows], "s-",
            label="validation loss (supervised term only)" if weight else "validation loss")  # fmt: skip
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
    title = "Training history"
    if weight:
        title += (f"\ntrain loss = supervised + {weight:g} × self-supervised (NT-Xent)"
                  + ("" if apart else ", drawn as one sum") + "\nvalidation loss: supervised term only")  # fmt: skip
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(handles, labels, fontsize=8, loc="best")
    return save_figure(fig, path)


def _ssl_weight_beside(path: Path) -> float:
    """``loss.ssl_weight`` of the run config saved beside a figure (``config.yaml``); 0 without one."""
    import yaml

    from siamkit.rundir import RunDir

    try:
        cfg = yaml.safe_load(RunDir(Path(path).parent).config.read_text())
        return float(((cfg or {}).get("loss") or {}).get("ssl_weight") or 0.0)
    except (OSError, yaml.YAMLError, TypeError, ValueError, AttributeError):
        return 0.0


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, threshold: float | None = None) -> Path:
    """ROC per named split (labels, distances), log-scaled FPR, TPR@FPR targets annotated; with ``threshold``,
    each curve's operating point (the FPR and TPR of ``same = distance ≤ threshold``) marked ✕."""
    fig, ax = plt.subplots(figsize=(6.5, 5))
    starred = False
    notes: list[Any] = []
    for name, (labels, distances) in curves.items():
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
            notes.append(ax.annotate(
                f"{t.tpr_interpolated:.3f}{mark}", (t.fpr, t.tpr_interpolated), textcoords="offset points",
                xytext=(5, 4), fontsize=7.5, color=line.get_color(), annotation_clip=False, gid="tpr-at-fpr",
                bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.75},
            ))  # fmt: skip
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
    legend = ax.legend(loc="lower right")
    place_apart(fig, notes, [legend])
    return save_figure(fig, path)


def _label_offsets(rows: int = 12) -> list[tuple[float, float]]:
    """Where a TPR label may sit from its point (offset points), nearest first: right above, right below, left
    above, left below, then farther up and down."""
    out = []
    for r in range(rows):
        for dy in (4 + 11 * r, -11 - 11 * r):
            out += [(5.0, float(dy)), (-34.0, float(dy))]
    return out


def place_apart(fig: Any, notes: Sequence[Any], obstacles: Sequence[Any] = ()) -> None:
    """Move each annotation of ``notes`` (in order) to the nearest of :func:`_label_offsets` where its box (2 px
    apart) overlaps no label placed before it and none of the ``obstacles`` (the legend), inside its axes when
    such a place exists: labels of curves and points close together never cover each other."""
    if not notes:
        return
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    placed = [o.get_window_extent(renderer).padded(2) for o in obstacles]
    for note in notes:
        frame = note.axes.get_window_extent(renderer)
        free: list[tuple[bool, int, tuple[float, float], Any]] = []
        for offset in _label_offsets():
            note.xyann = offset
            box = note.get_window_extent(renderer).padded(2)
            if not any(box.overlaps(b) for b in placed):
                inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
                free.append((not inside, len(free), offset, box))
                if inside:
                    break
        if free:
            _, _, offset, box = min(free)
        else:  # nowhere free (never with the few labels of a ROC): the first place
            offset = _label_offsets()[0]
        note.xyann = offset
        placed.append(note.get_window_extent(renderer).padded(2) if not free else box)


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
    *, path: Path, names: Sequence[str] = (), threshold: float | None = None,
) -> Path:  # fmt: skip
    """One row per query: the query, then its nearest gallery items with their distances; a green frame marks a
    neighbour of the query's class, a red one another class (SPEC §7), whose class is written under it. With
    ``threshold``, the frames are its decisions instead (:func:`frame_states`: accepted, false accept, rejected)
    and every neighbour's class is written under it."""

    def name(cls: int) -> str:
        return names[cls] if 0 <= cls < len(names) else str(cls)

    correct = labels[neighbours] == labels[queries][:, None]
    titles = [f"query: {name(int(labels[q]))}" for q in queries]
    classes = np.vectorize(lambda c: name(int(c)), otypes=[object])(labels[neighbours])
    if threshold is None:
        return plot_neighbour_grid(images, queries, neighbours, distances, path, correct=correct, titles=titles,
                                   captions=np.where(correct, "", classes))  # fmt: skip
    return plot_neighbour_grid(images, queries, neighbours, distances, path, correct=correct, titles=titles,
                               captions=classes,
                               accepted=np.asarray(distances) <= threshold, threshold=threshold)  # fmt: skip


FRAME_RGB = {"same": (40, 160, 40), "other": (220, 40, 40), "unknown": (255, 255, 255), "accept": (40, 160, 40),
             "false-accept": (220, 40, 40), "reject": (175, 175, 175)}  # fmt: skip
"""Frame colours of a neighbour (:func:`frame_states`); the hub's spokes take the same ones (unknown: grey)."""
CAPTION_COLOURS = {True: "tab:green", False: "tab:red", None: "black"}


def frame_states(correct: np.ndarray | None, accepted: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """Each neighbour's frame: with threshold decisions (``accepted``: distance ≤ threshold), ``accept``,
    ``false-accept`` (accepted, yet its label is another than the query's) or ``reject``; without, ``same`` /
    ``other`` by label (``correct``), ``unknown`` where a label is missing."""
    out = np.full(shape, "unknown", dtype=object)
    for idx in np.ndindex(*shape):
        ok = None if correct is None or correct[idx] is None else bool(correct[idx])
        acc = None if accepted is None or accepted[idx] is None else bool(accepted[idx])
        if acc is None:
            out[idx] = "unknown" if ok is None else ("same" if ok else "other")
        else:
            out[idx] = "reject" if not acc else ("false-accept" if ok is False else "accept")
    return out


def frame_legend(states: np.ndarray, threshold: float | None = None) -> str:
    """What the frame colours of ``states`` mean, in one line for a title."""
    kinds = set(states.ravel())
    if kinds & {"accept", "false-accept", "reject"}:
        at = "" if threshold is None else f" {threshold:.3f}"
        said = f"green frame: accepted (distance ≤ threshold{at})"
        if "false-accept" in kinds:
            said += ", red: accepted but another label (false accept)"
        return said + ", grey: rejected"
    if kinds & {"same", "other"}:
        return "green frame: same class, red: another class"
    return ""


def plot_neighbour_grid(
    images: np.ndarray, queries: np.ndarray, neighbours: np.ndarray, distances: np.ndarray, path: Path,
    *, correct: np.ndarray | None = None, titles: Sequence[str] = (), captions: np.ndarray | None = None,
    accepted: np.ndarray | None = None, threshold: float | None = None, title: str | None = None,
) -> Path:  # fmt: skip
    """Tiles ``images`` ``(N, C, H, W)`` uint8 in rows: ``images[queries[r]]`` then ``images[neighbours[r, j]]``
    captioned with ``distances[r, j]`` above; ``captions[r, j]`` (a neighbour's label) is written under its tile,
    green when it is the query's (``correct``), red when another. The frames (:func:`frame_states`): with
    ``accepted`` (the threshold's decisions), accepted green, a false accept red, rejected grey; else green/red by
    ``correct`` (None: unknown). ``title`` (default: what the frames mean, with ``threshold``) heads the figure.
    Drawn as one mosaic on one axes (fast)."""
    c, h, w = images.shape[1:]
    k = neighbours.shape[1]
    states = frame_states(correct, accepted, neighbours.shape)
    frame, gap, band = max(1, h // 14), max(2, h // 8), max(6, h // 3)  # frame, white gutter, text band
    cap = band if captions is not None else 0  # a text band under the tiles for the captions
    cell_h, cell_w = band + h + 2 * (frame + gap) + cap, w + 2 * (frame + gap)
    canvas = np.full((len(queries) * cell_h, (k + 1) * cell_w, 3), 255, np.uint8)

    def put(row: int, col: int, idx: int, state: str) -> None:
        y, x = row * cell_h + band + gap, col * cell_w + gap
        canvas[y : y + h + 2 * frame, x : x + w + 2 * frame] = FRAME_RGB[state]
        img = np.transpose(images[idx], (1, 2, 0))
        canvas[y + frame : y + frame + h, x + frame : x + frame + w] = img if c == 3 else np.repeat(img, 3, axis=2)

    for row, q in enumerate(queries):
        put(row, 0, int(q), "unknown")
        for col in range(k):
            put(row, col + 1, int(neighbours[row, col]), str(states[row, col]))
    fig, ax = plt.subplots(figsize=(1.2 * (k + 1), 1.5 * len(queries)))
    ax.imshow(canvas, interpolation="nearest")
    for row in range(len(queries)):
        y = row * cell_h + band + gap / 2
        head = titles[row] if row < len(titles) else "query"
        ax.text(cell_w / 2, y, head, ha="center", va="bottom", fontsize=7)
        for col in range(k):
            ax.text((col + 1.5) * cell_w, y, f"{distances[row, col]:.3f}", ha="center", va="bottom", fontsize=7,
                    gid="distance")  # fmt: skip
            if captions is not None and captions[row, col]:
                ok = None if correct is None or correct[row, col] is None else bool(correct[row, col])
                y_cap = row * cell_h + band + gap + h + 2 * frame + cap / 2
                ax.text((col + 1.5) * cell_w, y_cap, str(captions[row, col])[:12], ha="center", va="center",
                        fontsize=6.5, color=CAPTION_COLOURS[ok], gid="label")  # fmt: skip
    ax.axis("off")
    if title is None:
        legend = frame_legend(states, threshold)
        title = "Nearest neighbours with distances" + (f"\n({legend})" if legend else "")
    ax.set_title(_wrapped(title, 14 * (k + 1)), fontsize=8, pad=14)
    return save_figure(fig, path)


def _wrapped(text: str, width: int) -> str:
    """``text``'s lines wrapped at ``width`` characters (at least 40): a title no wider than its figure."""
    import textwrap

    return "\n".join(textwrap.fill(line, max(40, width)) for line in text.split("\n"))


HUB_LENGTH, HUB_LIMIT = 0.95, 2.4
"""A hub's longest spoke (data units, the panel spans ±``HUB_LIMIT``): spokes run from the query tile's edge to the
neighbour tile's edge, their lengths proportional to the distances (:func:`spoke_lengths`)."""


def spoke_lengths(distances: np.ndarray, origin: float = 0.0) -> np.ndarray:
    """Each spoke's drawn length: proportional to ``distance − origin`` (``origin``: the smallest distance the
    metric has, 0, or −1 for a negated cosine similarity), ``HUB_LENGTH`` at the largest of all panels."""
    d = np.asarray(distances, dtype=np.float64) - origin
    top = float(d.max()) if d.size else 0.0
    return HUB_LENGTH * np.clip(d, 0, None) / top if top > 0 else np.zeros_like(d)


def _edge(half: float, angle: float) -> float:
    """How far the edge of a square tile of half-width ``half`` is from its centre in direction ``angle``."""
    return half / max(abs(np.cos(angle)), abs(np.sin(angle)))


def plot_neighbour_hubs(
    queries: np.ndarray, neighbours: np.ndarray, distances: np.ndarray, path: Path,
    correct: np.ndarray | None = None, *, titles: Sequence[str] = (), captions: np.ndarray | None = None,
    accepted: np.ndarray | None = None, threshold: float | None = None, origin: float = 0.0,
    title: str | None = None,
) -> Path:  # fmt: skip
    """The hub-graph style, one panel per query (rows of at most 3): the query image (``queries``
    ``(Q, C, H, W)``) in the centre and its neighbours (``neighbours`` ``(Q, k, C, H, W)``) on spokes that run from
    the query tile's edge to the neighbour tile's, each as long as its distance (:func:`spoke_lengths`: one scale
    for every panel; a distance 0 touches the query), the neighbour's label (``captions``) and distance written
    beyond its tile. The nearest sits at twelve o'clock, the rest clockwise. Frames and spokes coloured as
    :func:`frame_states` says; with a ``threshold``, a dashed line where a spoke of that distance would end: the
    neighbours whose spokes stop inside it are accepted."""
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    def rgb(img: np.ndarray) -> np.ndarray:
        t = np.transpose(img, (1, 2, 0))
        return t if t.shape[2] == 3 else np.repeat(t, 3, axis=2)

    n_q, k = distances.shape
    states = frame_states(correct, accepted, (n_q, k))
    colours = {s: tuple(v / 255 for v in FRAME_RGB[s]) if s != "unknown" else (0.5, 0.5, 0.5) for s in FRAME_RGB}
    lengths = spoke_lengths(distances, origin)
    d_top = float(np.max(distances) - origin) if distances.size else 0.0
    reach = HUB_LENGTH * (threshold - origin) / d_top if threshold is not None and d_top > 0 else None
    cols = min(n_q, 3)  # panels in rows of at most 3: a readable page, not a long strip
    rows_ = -(-n_q // cols)
    zoom = 28 / max(queries.shape[2:])  # tiles about 28 points wide, whatever the image size
    fig, axes = plt.subplots(rows_, cols, figsize=(5.0 * cols, 5.4 * rows_), squeeze=False)
    for ax in axes.ravel()[n_q:]:
        ax.axis("off")
    for q, ax in enumerate(axes.ravel()[:n_q]):
        ax.set_xlim(-HUB_LIMIT, HUB_LIMIT)
        ax.set_ylim(-HUB_LIMIT, HUB_LIMIT)
        ax.set_aspect("equal")
        ax.axis("off")
        box = ax.get_position()
        per_unit = min(box.width * fig.get_figwidth(), box.height * fig.get_figheight()) * 72 / (2 * HUB_LIMIT)
        half_q, half_n = (14 * 1.4 + 5) / per_unit, (14 + 5) / per_unit  # tile, padding and frame, in data units
        for j in range(k):
            angle = np.pi / 2 - 2 * np.pi * j / k
            ux, uy = np.cos(angle), np.sin(angle)
            start = _edge(half_q, angle)
            end = start + lengths[q, j]
            centre = end + _edge(half_n, angle)
            colour = colours[str(states[q, j])]
            ax.plot([start * ux, end * ux], [start * uy, end * uy], color=colour, lw=1.4, zorder=1, gid="spoke")
            # the label and distance just outside the thumbnail, on the spoke's line: never under an image
            label = "" if captions is None or not captions[q, j] else f"{str(captions[q, j])[:12]}\n"
            ok = None if correct is None or correct[q, j] is None else bool(correct[q, j])
            out = centre + _edge(half_n, angle) + 16 / per_unit
            ax.text(out * ux, out * uy, f"{label}{distances[q, j]:.3f}", fontsize=6.5, ha="center", va="center",
                    zorder=5, color=CAPTION_COLOURS[ok] if label else colour, gid="hit",
                    bbox={"boxstyle": "round,pad=0.12", "fc": "white", "ec": "none", "alpha": 0.85})  # fmt: skip
            ax.add_artist(AnnotationBbox(OffsetImage(rgb(neighbours[q, j]), zoom=zoom), (centre * ux, centre * uy),
                                         bboxprops={"edgecolor": colour, "lw": 2}, zorder=2))  # fmt: skip
        if reach is not None and 0 <= reach <= 1.25 * HUB_LENGTH:
            turn = np.linspace(0, 2 * np.pi, 361)
            r = np.array([_edge(half_q, a) for a in turn]) + reach
            ax.plot(r * np.cos(turn), r * np.sin(turn), ls="--", lw=0.9, color="0.35", zorder=0, gid="threshold")
        ax.add_artist(AnnotationBbox(OffsetImage(rgb(queries[q]), zoom=zoom * 1.4), (0, 0),
                                     bboxprops={"edgecolor": "black", "lw": 2}, zorder=4))  # fmt: skip
        ax.set_title(f"{titles[q] if q < len(titles) else 'query'} — {k} nearest", fontsize=9)
    if title is None:
        title = "Nearest neighbours as a hub: spoke length proportional to distance"
        if threshold is not None:
            drawn = reach is not None and 0 <= reach <= 1.25 * HUB_LENGTH
            title += f"; threshold {threshold:.3f} ({'dashed line' if drawn else 'beyond every neighbour drawn'})"
        legend = frame_legend(states, threshold)
        title += f"\n{legend}" if legend else ""
    fig.suptitle(_wrapped(title, 40 * cols), fontsize=10)
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
    for t in DEFAULT_FPRS:
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
