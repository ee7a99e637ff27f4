"""What the figures show, read off the matplotlib artists they draw: ROC labels that never overlap, hub spokes as long
as their distances, search figures that label every hit, mark the threshold and say when only the first queries
are drawn, and a loss curve that says what it sums."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from siamkit.evaluate import plots


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plotting functions draw, kept open (and still written, as ``save_figure`` writes them) so
    that their artists can be read; closed at the end."""
    import matplotlib.pyplot as plt

    figures = []

    def keep(fig, path):
        fig.savefig(path, format="png", dpi=110, bbox_inches="tight")
        fig.canvas.draw()
        figures.append(fig)
        return path

    monkeypatch.setattr(plots, "save_figure", keep)
    yield figures
    for fig in figures:
        plt.close(fig)


def _close_curves(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Three splits whose ROC curves nearly coincide: their TPR labels sit on top of each other unless placed."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shift in (("train", 0.5), ("validation", 0.48), ("test", 0.47)):
        y = rng.integers(0, 2, 3000)
        out[name] = (y, rng.normal(1.0 - shift * y, 0.3))
    return out


def test_roc_labels_never_overlap(drawn, tmp_path):
    for seed in range(4):
        plots.plot_roc(_close_curves(seed), tmp_path / "roc.png", threshold=0.7)
        fig = drawn[-1]
        renderer = fig.canvas.get_renderer()
        ax = fig.axes[0]
        labels = [t for t in ax.texts if t.get_gid() == "tpr-at-fpr"]
        assert len(labels) == 12  # 3 curves × 4 FPRs
        boxes = [t.get_window_extent(renderer) for t in labels]
        assert not [(a, b) for a, b in itertools.combinations(boxes, 2) if a.overlaps(b)]
        legend = ax.get_legend().get_window_extent(renderer)
        assert not any(b.overlaps(legend) for b in boxes)


def _hub_inputs(distances: np.ndarray):
    rng = np.random.default_rng(0)
    q, k = distances.shape
    queries = rng.integers(0, 255, (q, 1, 16, 16), dtype=np.uint8)
    neighbours = rng.integers(0, 255, (q, k, 1, 16, 16), dtype=np.uint8)
    return queries, neighbours


def _spoke_lengths(ax) -> np.ndarray:
    spokes = [line for line in ax.get_lines() if line.get_gid() == "spoke"]
    return np.array([float(np.hypot(*np.diff(line.get_xydata(), axis=0)[0])) for line in spokes])


def test_hub_spokes_are_as_long_as_their_distances(drawn, tmp_path):
    distances = np.array([[0.1, 0.15, 0.4, 0.9], [0.05, 0.5, 0.52, 0.6]])
    queries, neighbours = _hub_inputs(distances)
    plots.plot_neighbour_hubs(queries, neighbours, distances, tmp_path / "hub.png", threshold=0.45,
                              accepted=distances <= 0.45)  # fmt: skip
    fig = drawn[-1]
    lengths = [_spoke_lengths(ax) for ax in fig.axes[:2]]
    for d, length in zip(distances, lengths, strict=True):
        assert len(length) == len(d)
        assert list(np.argsort(length)) == list(np.argsort(d))  # longer spoke, larger distance
        assert length / d == pytest.approx(np.full(len(d), lengths[0][0] / distances[0, 0]))  # one scale, all panels
    assert all(any(line.get_gid() == "threshold" for line in ax.get_lines()) for ax in fig.axes[:2])
    assert "threshold 0.450" in fig._suptitle.get_text()


def test_hub_spokes_of_a_negated_similarity_start_at_minus_one(drawn, tmp_path):
    distances = np.array([[-0.9, -0.5, 0.0]])  # cosine_similarity: distance = −similarity, from −1
    queries, neighbours = _hub_inputs(distances)
    plots.plot_neighbour_hubs(queries, neighbours, distances, tmp_path / "hub.png", origin=-1.0)
    length = _spoke_lengths(drawn[-1].axes[0])
    assert length / (distances[0] + 1) == pytest.approx(np.full(3, length[0] / 0.1))


@pytest.fixture(scope="module")
def gallery(small_run, digits_images, tmp_path_factory):
    from siamkit.cli import main

    out = tmp_path_factory.mktemp("figure_gallery") / "g"
    assert main(["index", "build", str(small_run), str(digits_images), "--out", str(out), "-q"]) == 0
    return out


@pytest.mark.parametrize("style", ["grid", "hub"])
def test_search_figures_label_hits_mark_the_threshold_and_say_what_is_drawn(gallery, digits_images, drawn,
                                                                            tmp_path, style):  # fmt: skip
    from siamkit.index.ops import search

    queries = sorted((digits_images / "3").glob("*.png"))[:7]
    r = search(str(gallery), [str(q) for q in queries], k=4, figure=str(tmp_path / "f.png"), figure_style=style)
    fig = drawn[-1]
    threshold = r["threshold_info"]["threshold"]
    title = (fig._suptitle if style == "hub" else fig.axes[0].title).get_text().replace("\n", " ")
    assert f"threshold {threshold:.3f}" in title and "accepted" in title and "rejected" in title
    assert "first 5 of 7 queries drawn" in title
    hits = [h for res in r["results"][:5] for h in res["neighbours"]]
    if style == "grid":  # the distance above each tile, the label below
        by_gid = {gid: [t.get_text() for t in fig.axes[0].texts if t.get_gid() == gid] for gid in ("distance", "label")}
        assert by_gid == {"distance": [f"{h['distance']:.3f}" for h in hits], "label": [h["label"] for h in hits]}
    else:  # label and distance beyond each tile
        hub = [t.get_text() for ax in fig.axes for t in ax.texts if t.get_gid() == "hit"]
        assert hub == [f"{h['label']}\n{h['distance']:.3f}" for h in hits]
    # the frames are the threshold's decisions: green accepted, red a false accept, grey rejected
    states = plots.frame_states(
        np.array([[h["label"] == "3" for h in res["neighbours"]] for res in r["results"][:5]], dtype=object),
        np.array([[h["match"] for h in res["neighbours"]] for res in r["results"][:5]], dtype=object), (5, 4),
    )  # fmt: skip
    for res, row in zip(r["results"][:5], states, strict=True):
        for h, state in zip(res["neighbours"], row, strict=True):
            want = "reject" if not h["match"] else ("accept" if h["label"] == "3" else "false-accept")
            assert state == want


def test_search_figure_draws_every_query_when_few(gallery, digits_images, drawn, tmp_path):
    from siamkit.index.ops import search

    queries = sorted((digits_images / "3").glob("*.png"))[:2]
    search(str(gallery), [str(q) for q in queries], k=3, figure=str(tmp_path / "f.png"))
    assert "queries drawn" not in drawn[-1].axes[0].title.get_text()


def test_frame_states_without_a_threshold_follow_the_labels():
    correct = np.array([[True, False, None]], dtype=object)
    assert list(plots.frame_states(correct, None, (1, 3))[0]) == ["same", "other", "unknown"]
    accepted = np.array([[True, True, False]], dtype=object)
    assert list(plots.frame_states(correct, accepted, (1, 3))[0]) == ["accept", "false-accept", "reject"]


def _history(apart: bool = False) -> list[dict[str, float]]:
    rows = []
    for e in range(1, 4):
        row = {"epoch": e, "train_loss": 1.5 - 0.1 * e, "val_loss": 0.5 - 0.03 * e}
        if apart:
            row |= {plots.SUPERVISED_KEY: 0.5 - 0.05 * e, plots.SELF_SUPERVISED_KEY: 1.0 - 0.05 * e}
        rows.append(row)
    return rows


def test_the_loss_curve_says_what_it_sums(drawn, tmp_path):
    plots.plot_history(_history(), tmp_path / "loss.png", 2, ssl_weight=0.5)
    ax = drawn[-1].axes[0]
    assert "train loss = supervised + 0.5 × self-supervised (NT-Xent)" in ax.get_title()
    assert "validation loss: supervised term only" in ax.get_title()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "train loss (supervised + 0.5 × NT-Xent)" in legend
    # without a self-supervised term nothing is summed, and nothing is said
    plots.plot_history(_history(), tmp_path / "loss.png", 2, ssl_weight=0.0)
    assert drawn[-1].axes[0].get_title() == "Training history"


def test_the_loss_curve_draws_the_terms_apart_when_recorded(drawn, tmp_path):
    rows = _history(apart=True)
    plots.plot_history(rows, tmp_path / "loss.png", 2, ssl_weight=0.5)
    ax = drawn[-1].axes[0]
    curves = {str(line.get_label()): list(line.get_ydata()) for line in ax.get_lines()}
    assert curves["train: supervised term"] == [r[plots.SUPERVISED_KEY] for r in rows]
    assert curves["train: self-supervised term (0.5 × NT-Xent)"] == [r[plots.SELF_SUPERVISED_KEY] for r in rows]


def test_the_loss_curve_reads_the_weight_from_the_run_config(drawn, tmp_path):
    (tmp_path / "config.yaml").write_text("loss:\n  name: triplet\n  ssl_weight: 0.25\n")
    plots.plot_history(_history(), tmp_path / "loss_curve.png")
    assert "0.25 × self-supervised" in drawn[-1].axes[0].get_title()
