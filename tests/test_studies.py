"""Studies: random and grid search resume after an interruption without rerunning finished trials; the
margins and compare studies give the expected tables, consistent with their runs' metrics.json; every report
holds every section with its images."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path

import optuna
import pytest

from siamkit import studies
from siamkit.cli import main
from siamkit.errors import ConfigError
from siamkit.report import CLASSIFY_SECTIONS, RUN_SECTIONS
from siamkit.training.pipeline import train_run

TINY = ["data.limit=240", "train.epochs=1", "eval.n_pairs=200", "eval.n_triplets=200", "sampling.val_tuples=100",
        "eval.tsne_points=60"]  # fmt: skip


def test_the_package_names_are_its_modules_objects():
    """``siamkit.studies`` loads each name on first use (``--help`` reads the constants without torch)."""
    import importlib

    for module, names in studies.HOMES.items():
        for name in names:
            assert getattr(studies, name) is getattr(importlib.import_module(module), name), name
    assert sorted(n for names in studies.HOMES.values() for n in names) == sorted(studies.__all__)
    with pytest.raises(AttributeError):
        studies.no_such_name  # noqa: B018


class Interrupting:
    """train_run that records each call's setting and raises KeyboardInterrupt on call number ``stop_at``."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.calls: list[tuple[float, float]] = []
        self.stop_at = stop_at

    def __call__(self, cfg, **kwargs):
        self.calls.append((cfg.train.lr, cfg.loss.params.get("margin")))
        if self.stop_at is not None and len(self.calls) == self.stop_at:
            raise KeyboardInterrupt
        return train_run(cfg, **kwargs)


def _trials(study_dir: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((study_dir / "trials.csv").open()))


def test_grid_search_resumes_without_rerunning_finished_trials(tmp_path):
    params = [studies.parse_param("train.lr=0.001,0.003"), studies.parse_param("loss.params.margin=0.3,0.6")]
    first = Interrupting(stop_at=3)
    with pytest.raises(KeyboardInterrupt):
        studies.search("g", params, TINY, strategy="grid", objective="val_loss", runs_dir=str(tmp_path), train=first)
    assert len(first.calls) == 3
    second = Interrupting()
    r = studies.search("g", params, TINY, strategy="grid", objective="val_loss", runs_dir=str(tmp_path), train=second)
    # the two finished settings are not rerun; the interrupted one and the fourth are
    assert len(second.calls) == 2 and not set(second.calls) & set(first.calls[:2])
    assert set(first.calls[:2]) | set(second.calls) == {(a, b) for a in (0.001, 0.003) for b in (0.3, 0.6)}
    rows = _trials(tmp_path / "g")
    assert Counter(r["state"] for r in rows) == {"COMPLETE": 4, "FAIL": 1}
    done = [r for r in rows if r["state"] == "COMPLETE"]
    assert {(float(r["train.lr"]), float(r["loss.params.margin"])) for r in done} == set(first.calls[:2]) | set(
        second.calls
    )
    # the objective is the lowest validation loss of each trial's run
    for row in done:
        hist = list(csv.DictReader((tmp_path / "g" / row["run"] / "history.csv").open()))
        assert float(row["val_loss"]) == pytest.approx(min(float(h["val_loss"]) for h in hist))
    best = min(done, key=lambda x: float(x["val_loss"]))
    assert r["best"]["trial"] == int(best["trial"])
    assert (tmp_path / "g" / "history.png").is_file() and (tmp_path / "g" / "report.html").is_file()
    # a third call finds nothing left to do
    third = Interrupting()
    studies.search("g", params, TINY, strategy="grid", objective="val_loss", runs_dir=str(tmp_path), train=third)
    assert third.calls == []


def test_random_search_resumes_up_to_the_requested_trials(tmp_path):
    params = [studies.parse_param("train.lr=0.0005,0.001,0.002,0.004")]
    first = Interrupting(stop_at=2)
    with pytest.raises(KeyboardInterrupt):
        studies.search("r", params, TINY, strategy="random", n_trials=3, runs_dir=str(tmp_path), train=first)
    # a hard kill leaves a trial RUNNING in the database: resuming marks it failed
    storage = studies.tuning.open_storage(None, tmp_path / "r")
    with pytest.warns(UserWarning, match="Heartbeat"):  # Optuna's: heartbeats are meant for optimize(), not ask()
        dangling = optuna.load_study(study_name="r", storage=storage).ask()
    second = Interrupting()
    studies.search("r", params, TINY, strategy="random", n_trials=3, runs_dir=str(tmp_path), train=second)
    assert len(second.calls) == 2  # 1 finished before the interruption + 2 = 3
    states = Counter(r["state"] for r in _trials(tmp_path / "r"))
    assert states == {"COMPLETE": 3, "FAIL": 2}
    assert optuna.load_study(study_name="r", storage=storage).trials[dangling.number].state.name == "FAIL"


def test_search_ranks_by_the_runs_own_monitor_and_shows_test_figures(tmp_path, caplog):
    import logging
    import warnings

    params = [studies.parse_param("train.lr=0.001,0.003")]
    with caplog.at_level(logging.INFO, logger="siamkit.studies"), warnings.catch_warnings():
        warnings.simplefilter("error", optuna.exceptions.ExperimentalWarning)  # silenced, not merely shown
        r = studies.search("a", params, TINY, strategy="grid", runs_dir=str(tmp_path))
    assert r["objective"] == "map_at_r"  # auto: validation MAP@R, the runs' own checkpoint monitor
    from siamkit.config import load_config

    assert load_config(tmp_path / "a" / "trial-000" / "config.yaml").train.monitor == "map_at_r"
    rows = _trials(tmp_path / "a")
    for row in rows:
        m = json.loads((tmp_path / "a" / row["run"] / "metrics.json").read_text())
        assert float(row["test MAP@R"]) == pytest.approx(m["test"]["map_at_r"])
        assert float(row["test AUC"]) == pytest.approx(m["test"]["auc"])
        assert row["kept"] == studies.kept_label(m)
    said = [rec.getMessage() for rec in caplog.records]
    assert any(x.startswith("trial 1/2 ") for x in said) and any(x.startswith("trial 2/2: map_at_r ") for x in said)
    assert studies.resolve_objective("auto", None, ["data.source=" + str(_pairs_csv(tmp_path))]) == "val_loss"


def _pairs_csv(root: Path) -> Path:
    from PIL import Image

    for n in "ab":
        Image.new("L", (10, 10), 128).save(root / f"{n}.png")
    (root / "p.csv").write_text("path_a,path_b,label\na.png,b.png,0\n")
    return root / "p.csv"


def test_kept_labels_and_the_tie_note():
    assert studies.kept_label({"best_epoch": 3}) == "epoch 3"
    assert studies.kept_label({"best_epoch": 0}) == "untrained"
    assert studies.kept_label({"best_epoch": 0, "initial_model": "pretrained"}) == "pretrained"
    rows = [["triplet", "untrained"], ["contrastive", "epoch 2"], ["bce", "untrained"]]
    note = studies.tie_note(rows, 1)
    assert note.startswith("triplet, bce kept the initial weights") and "tie" in note
    assert studies.tie_note(rows[:2], 1) == ""


def test_search_with_the_cli_and_tpe_ranges(tmp_path, capsys):
    argv = ["study", "search", "--param", "train.lr=log:1e-4:1e-2", "--strategy", "tpe", "--trials", "2",
            "--objective", "map_at_r", "--runs-dir", str(tmp_path), "--name", "t", "-q", "--format", "json"]  # fmt: skip
    argv += [a for s in TINY for a in ("--set", s)]
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["best"] and 1e-4 <= r["best"]["train.lr"] <= 1e-2 and len(r["tables"][0]["rows"]) == 2
    cfg = (tmp_path / "t" / "trial-000" / "config.yaml").read_text()
    assert "monitor: map_at_r" in cfg
    assert r["command"] == "siamkit " + " ".join(argv)  # the command line given, not the test runner's
    assert "siamkit study search --param" in (tmp_path / "t" / "tables.md").read_text()


def test_bad_search_settings_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'train.lrr'"):
        studies.parse_param("train.lrr=1,2")
    with pytest.raises(ConfigError, match="LOW < HIGH"):
        studies.parse_param("train.lr=log:1:0.1")
    with pytest.raises(ConfigError, match="draws from lists"):
        studies.search(
            "x", [studies.parse_param("train.lr=float:0.1:1")], TINY, strategy="grid", runs_dir=str(tmp_path)
        )
    assert studies.parse_param("model.backbone_args.widths=[8, 16],[16, 32]").choices == ["[8, 16]", "[16, 32]"]


def test_margins_study_table_matches_the_runs(tmp_path):
    r = studies.margins("m", ["triplet", "contrastive"], [0.1, 1.0], TINY, runs_dir=str(tmp_path))
    table = r["tables"][0]
    assert table["columns"][:2] == ["loss", "margin"] and "val TPR@0.001" in table["columns"]
    assert [(row[0], row[1]) for row in table["rows"]] == [
        ("triplet", 0.1), ("triplet", 1.0), ("contrastive", 0.1), ("contrastive", 1.0)
    ]  # fmt: skip
    cols = table["columns"]
    for row in table["rows"]:
        run = tmp_path / "m" / row[-1]
        m = json.loads((run / "metrics.json").read_text())
        cfg = (run / "config.yaml").read_text()
        assert f"name: {row[0]}" in cfg and f"margin: {row[1]}" in cfg
        val = {str(t["fpr"]): t["tpr_interpolated"] for t in m["validation"]["tpr_at_fpr"]}
        train = {str(t["fpr"]): t["tpr_interpolated"] for t in m["train"]["tpr_at_fpr"]}
        assert row[cols.index("val TPR@0.1")] == val["0.1"] and row[cols.index("train TPR@0.01")] == train["0.01"]
        assert row[cols.index("val SimAcc")] == m["validation"]["similarity_accuracy"]
    lines = (tmp_path / "m" / "margins.csv").read_text().strip().splitlines()
    assert len(lines) == 5 and lines[0].startswith("loss,margin,train TPR@0.5")
    assert "| triplet | 0.1000 |" in (tmp_path / "m" / "tables.md").read_text()
    # run again: every setting is reused, nothing retrains
    calls = Interrupting()
    studies.margins("m", ["triplet", "contrastive"], [0.1, 1.0], TINY, runs_dir=str(tmp_path), train=calls)
    assert calls.calls == []


@pytest.fixture(scope="module")
def compare_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    losses = ["triplet", "contrastive", "fdc", "fdt", "bce"]
    return root, losses, studies.compare("c", losses, TINY, runs_dir=str(root))


def test_compare_study_table_and_overlaid_roc(compare_study):
    root, losses, r = compare_study
    table = r["tables"][0]
    assert table["columns"] == ["loss", "TPR@0.5", "TPR@0.1", "TPR@0.01", "TPR@0.001", "AUC", "EER", "P@1",
                                "MAP@R", "kept", "train s", "run"]  # fmt: skip
    assert [row[0] for row in table["rows"]] == losses
    for row in table["rows"]:
        m = json.loads((root / "c" / row[-1] / "metrics.json").read_text())["test"]
        assert row[5] == m["auc"] and row[7] == m["precision_at_1"] and row[8] == m["map_at_r"]
        assert row[2] == next(t["tpr_interpolated"] for t in m["tpr_at_fpr"] if t["fpr"] == 0.1)
        run = json.loads((root / "c" / row[-1] / "metrics.json").read_text())
        assert row[9] == studies.kept_label(run)
    assert (
        len(r["tables"][1]["rows"]) == 3 * len(losses) + 3
    )  # + the raw-pixel, untrained and descriptor baselines, once
    assert (root / "c" / "roc_compare.png").stat().st_size > 1000


def _sections(html_text: str) -> list[str]:
    return re.findall(r"<h2>(.*?)</h2>", html_text)


def test_run_and_study_reports_hold_every_section(compare_study, capsys):
    root, losses, _ = compare_study
    run = root / "c" / "triplet"
    text = (run / "report.html").read_text()
    titles = _sections(text)
    for title, name in RUN_SECTIONS:
        assert title.replace("(", "(").split(" (")[0] in " ".join(titles)
        assert (run / name).is_file(), name
    for title in ("Summary", "Metrics", "History", "Config"):
        assert title in titles
    assert text.count("data:image/png;base64,") == len(RUN_SECTIONS)
    assert "http://" not in text and "https://" not in text and "<script" not in text  # readable offline
    study_text = (root / "c" / "report.html").read_text()
    assert "Test metrics by loss" in study_text and study_text.count("data:image/png;base64,") == 1
    for loss in losses:
        assert f'href="{loss}/report.html"' in study_text
    # siamkit report regenerates it
    (run / "report.html").unlink()
    assert main(["report", str(run)]) == 0 and (run / "report.html").read_text() == text
    assert main(["report", str(root)]) == 2
    assert "neither a run" in capsys.readouterr().err


def test_classify_run_report_sections():
    assert [n for _, n in CLASSIFY_SECTIONS] == [
        "curves.png", "confusion.png", "tsne.png", "feature_maps.png", "samples.png", "val_classes.png", "augment.png"
    ]  # fmt: skip
