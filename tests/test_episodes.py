"""N-way K-shot episodes: the prototype accuracy against a plain loop, the protocol's edge cases, the grouped layout
and its group-disjoint split, and the figures in a run's metrics, CLI table and report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from siamkit.config import EvalConfig
from siamkit.data.readers import class_groups, read_folder
from siamkit.errors import ConfigError
from siamkit.evaluate.episodes import episode_metrics, episode_scores, plan_episodes, summarise


def loop_accuracy(emb: np.ndarray, support: np.ndarray, queries: np.ndarray) -> list[float]:
    """Plain-loop reference: per episode, prototypes as means, each query to the nearest (Euclidean) prototype."""
    out = []
    for e in range(len(support)):
        protos = [emb[support[e, j]].mean(axis=0) for j in range(support.shape[1])]
        right = total = 0
        for j in range(queries.shape[1]):
            for i in queries[e, j]:
                d = [math.sqrt(sum((a - b) ** 2 for a, b in zip(emb[i], p))) for p in protos]
                right += int(int(np.argmin(d)) == j)
                total += 1
        out.append(right / total)
    return out


def test_episode_accuracy_equals_a_plain_loop() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(7), 9)
    emb = rng.normal(size=(len(labels), 5)) + labels[:, None] * 0.4  # overlapping classes: not every query is right
    plan = plan_episodes(labels, way=4, shot=2, query=3, episodes=50, seed=3)
    assert not isinstance(plan, str)
    got = episode_scores(torch.from_numpy(emb).float(), plan, "euclidean", chunk=7)
    want = loop_accuracy(emb, plan.support, plan.queries)
    np.testing.assert_allclose(got, want, atol=1e-9)
    assert 0.2 < got.mean() < 0.99
    s = summarise(got, plan)
    assert s["accuracy"] == pytest.approx(np.mean(want))
    assert s["ci95"] == pytest.approx(1.96 * np.std(want, ddof=1) / math.sqrt(50))
    assert s["chance"] == 0.25


def test_episodes_draw_distinct_classes_and_disjoint_images() -> None:
    labels = np.repeat(np.arange(10), 6)
    plan = plan_episodes(labels, way=5, shot=1, query=15, episodes=30, seed=1)
    assert not isinstance(plan, str)
    assert plan.query == 5  # 6 images a class: 1 support + 5 queries, not 15
    for e in range(30):
        classes = [set(labels[plan.support[e, j]]) | set(labels[plan.queries[e, j]]) for j in range(5)]
        assert all(len(c) == 1 for c in classes) and len({c.pop() for c in classes}) == 5
        used = np.concatenate([plan.support[e].ravel(), plan.queries[e].ravel()])
        assert len(set(used.tolist())) == len(used)
    again = plan_episodes(labels, way=5, shot=1, query=15, episodes=30, seed=1)
    assert not isinstance(again, str) and (again.support == plan.support).all()


def test_too_few_classes_is_a_reason_not_a_crash() -> None:
    labels = np.repeat(np.arange(4), 3)
    assert "needs 5 classes" in plan_episodes(labels, 5, 1, 1, 10, seed=0)
    groups = np.array([0, 0, 1, 1])
    assert "no group has 3 classes" in plan_episodes(labels, 3, 1, 1, 10, seed=0, groups=groups)
    with pytest.raises(ConfigError, match="way ≥ 2"):
        plan_episodes(labels, 1, 1, 1, 10, seed=0)


def test_within_group_episodes_stay_in_one_group() -> None:
    labels = np.repeat(np.arange(12), 4)
    groups = np.repeat(np.arange(3), 4)  # 3 groups of 4 classes
    plan = plan_episodes(labels, 4, 1, 2, 40, seed=5, groups=groups)
    assert not isinstance(plan, str) and plan.within_group
    for e in range(40):
        assert len(set(groups[labels[plan.support[e, :, 0]]])) == 1
    cfg = EvalConfig(episodes=20, way=[3], shot=[1], query=2, within_group=True)
    emb = torch.randn(len(labels), 4)
    with pytest.raises(ConfigError, match="within_group"):
        episode_metrics(emb, labels, [f"c{i}" for i in range(12)], cfg)
    names = [f"g{g}/c{i}" for i, g in enumerate(groups)]
    out = episode_metrics(emb, labels, names, cfg)
    assert out["3way1shot"]["within_group"] is True and out["3way1shot"]["episodes"] == 20


def _write_grouped(root, groups: int, classes: int, images: int) -> None:
    rng = np.random.default_rng(0)
    for g in range(groups):
        for c in range(classes):
            d = root / f"script{g}" / f"char{c}"
            d.mkdir(parents=True)
            for i in range(images):
                Image.fromarray(rng.integers(0, 255, (10, 10), dtype=np.uint8)).save(d / f"{i}.png")


def test_grouped_folders_are_read_as_group_slash_class(tmp_path) -> None:
    _write_grouped(tmp_path, 3, 5, 2)
    s = read_folder(tmp_path, cache=None)
    assert len(s.class_names) == 15 and s.class_names[0] == "script0/char0"
    found = class_groups(s.class_names)
    assert found is not None and found[1] == ["script0", "script1", "script2"]
    flat = read_folder(tmp_path, cache=None, grouped=False)
    assert flat.class_names == ["script0", "script1", "script2"]


def test_a_person_with_session_folders_stays_one_identity(tmp_path) -> None:
    _write_grouped(tmp_path, 3, 2, 2)  # two sub-folders each: sessions, not identities
    assert read_folder(tmp_path, cache=None).class_names == ["script0", "script1", "script2"]


def test_identity_split_of_grouped_folders_holds_out_whole_groups(tmp_path) -> None:
    from siamkit.config import DataConfig
    from siamkit.data.readers import load_dataset
    from siamkit.data.splits import make_splits

    _write_grouped(tmp_path, 6, 5, 2)
    cfg = DataConfig(source=str(tmp_path), cache=False)
    splits = make_splits(load_dataset(cfg), cfg, 0)
    assert splits.method == "identity" and splits.identities is not None
    groups = {part: {n.split("/")[0] for n in ids} for part, ids in splits.identities.items()}
    assert groups["train"] and groups["validation"] and groups["test"]
    assert not (groups["train"] & groups["test"]) and not (groups["train"] & groups["validation"])
    assert not (groups["validation"] & groups["test"])


def test_a_run_reports_episodes_for_the_model_and_every_baseline(tmp_path, capsys) -> None:
    from siamkit.cli import main

    data = tmp_path / "data"
    _write_grouped(data, 4, 6, 4)
    runs = tmp_path / "runs"
    main(["train", "--data", str(data), "--runs-dir", str(runs), "--name", "r", "--epochs", "1", "-q",
          "--set", "eval.episodes=40", "--set", "eval.way=[3]", "--set", "eval.shot=[1]",
          "--set", "eval.tsne_points=0", "--set", "data.cache=false"])  # fmt: skip
    shown = capsys.readouterr().out
    assert "3-way 1-shot" in shown and "40 episodes per setting" in shown
    m = json.loads((runs / "r" / "metrics.json").read_text())
    assert set(m["test"]["episodes"]["3way1shot"]) >= {"accuracy", "ci95", "chance"}
    assert set(m["baselines"]) == {"pixels", "untrained", "descriptor"}
    for b in m["baselines"].values():
        assert 0 <= b["test"]["episodes"]["3way1shot"]["accuracy"] <= 1
    assert "N-way K-shot episodes" in (runs / "r" / "report.html").read_text()
    main(["eval", str(runs / "r"), "--data", str(data), "--as-test", "--episodes", "30", "--way", "4",
          "--shot", "1", "--within-group", "--format", "json", "--set", "data.cache=false"])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    e = out["test"]["episodes"]["4way1shot"]
    assert e["episodes"] == 30 and e["within_group"] is True
    assert all("4way1shot" in b["test"]["episodes"] for b in out["baselines"].values())


DEJAVU = "/usr/share/fonts/truetype/dejavu"


@pytest.fixture(scope="module")
def glyph_run(tmp_path_factory):
    """The default recipe (auto) on a small glyph set drawn with DejaVu's fonts: script-disjoint split."""
    import os

    from siamkit.config import load_config
    from siamkit.data.glyphs import write_glyph_folders
    from siamkit.training.pipeline import train_run

    if not os.path.isdir(DEJAVU):
        pytest.fail(f"{DEJAVU} missing: apt-get install fonts-dejavu-core (scripts/system-deps.sh installs it)")
    root = tmp_path_factory.mktemp("glyphs")
    counts = write_glyph_folders(root / "g", per_class=10, size=20, max_characters=12, font_dirs=[DEJAVU])
    cfg = load_config(None, [f"data.source={root / 'g'}", f"runs_dir={root / 'runs'}", "name=g", "train.epochs=6",
                             "eval.episodes=300", "eval.way=[5]", "eval.shot=[1]", "eval.tsne_points=0",
                             "train.progress=false", "data.cache=false", "eval.n_pairs=1000"])  # fmt: skip
    return counts, train_run(cfg)


def test_glyph_set_is_grouped_by_script(glyph_run):
    counts, r = glyph_run
    assert counts["alphabets"] >= 8 and counts["images"] == counts["classes"] * 10
    held = {n.split("/")[0] for part in ("validation", "test") for n in r["identities"][part]}
    assert held and not held & {n.split("/")[0] for n in r["identities"]["train"]}


def test_training_on_glyphs_beats_the_untrained_network_and_the_pixels(glyph_run):
    _, r = glyph_run
    assert r["recipe"] == "metric" and "training identities" in r["recipe_reason"]
    trained = r["test"]["episodes"]["5way1shot"]["accuracy"]
    for name in ("untrained", "pixels"):
        base = r["baselines"][name]["test"]
        assert trained > base["episodes"]["5way1shot"]["accuracy"] + 0.1, name
        assert r["test"]["map_at_r"] > base["map_at_r"] + 0.05, name
