"""What a person sees on the terminal: search hits say `match` (the threshold's decision) beside the hit's label,
progress bars only on a terminal, a finished training run ends with its report and the next commands, readable
`index info`, a quiet `export`."""

from __future__ import annotations

import io
import json

import numpy as np

from siamkit.cli import main


def test_search_hits_say_match_beside_the_label(small_run, digits_images, tmp_path, capsys):
    assert main(["index", "build", str(small_run), str(digits_images), "--out", str(tmp_path / "g"), "-q"]) == 0
    capsys.readouterr()
    q = digits_images / "8" / "008.png"
    assert main(["search", str(tmp_path / "g"), str(q), "-k", "3", "--format", "json"]) == 0
    hits = json.loads(capsys.readouterr().out)["results"][0]["neighbours"]
    assert all("match" in h and "same" not in h and "label" in h for h in hits)
    assert main(["search", str(tmp_path / "g"), str(q), "-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:4]
    assert all(h["label"] in line for h, line in zip(hits, lines, strict=True))
    assert ("match" in lines[0]) == bool(hits[0]["match"])
    assert main(["index", "info", str(tmp_path / "g")]) == 0
    info = capsys.readouterr().out.splitlines()[0]
    assert "flat index" in info and "{" not in info and "200 items" in info


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_only_on_a_terminal(small_run, digits_images, monkeypatch):
    from siamkit.data.sources import collect_images
    from siamkit.index.ops import embed_paths
    from siamkit.runs import load

    embedder = load(small_run)
    items = collect_images([str(digits_images / "0")])
    piped = io.StringIO()
    monkeypatch.setattr("sys.stderr", piped)
    embed_paths(embedder, items, progress=True)
    assert "embed" not in piped.getvalue()  # a pipe or a log file gets no bar
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    embed_paths(embedder, items, progress=True)
    assert "embed" in terminal.getvalue()


def test_a_finished_run_ends_with_its_report_and_the_next_commands(tmp_path, capsys):
    assert main(["train", "--epochs", "1", "--runs-dir", str(tmp_path), "--set", "data.limit=300", "-q"]) == 0
    out = capsys.readouterr().out.splitlines()
    run = tmp_path / "default"
    assert f"report: {run}/report.html" in out and (run / "report.html").is_file()
    assert any(line.startswith(f"next:   siamkit verify {run}") for line in out)
    assert any(f"siamkit serve {run}" in line for line in out)


def test_export_prints_one_line(small_run, tmp_path, capsys):
    assert main(["export", str(small_run), "--out", str(tmp_path / "m.onnx")]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("\n") == 1 and captured.out.startswith("written:")
    assert "unused nodes" not in captured.err and "constant folding" not in captured.err


def test_report_numbers_read_as_numbers(small_run):
    html = (small_run / "report.html").read_text()
    m = json.loads((small_run / "metrics.json").read_text())
    assert f"<td>{m['trainable_parameters']:,}</td>" in html
    assert f"<td>{m['images_per_second']:,.0f}</td>" in html and f"{m['images_per_second']:.4f}" not in html
    assert np.isfinite(m["train_seconds"])


def test_report_says_how_to_use_the_model(small_run):
    from siamkit.report import write_report

    html = write_report(small_run).read_text()
    assert "Use the model" in html and f"siamkit verify {small_run.resolve()}" in html and "siamkit.load(" in html


def test_a_study_table_highlights_its_best_row():
    from siamkit.report import html_table
    from siamkit.studies import best_row

    rows = [["a", 0.5], ["b", 0.9], ["c", None], ["d", 0.7]]
    assert best_row(rows, 1) == 1
    table = html_table(["loss", "MAP@R"], rows, best_row(rows, 1))
    assert table.count("class='best'") == 1 and "<tr class='best'><td>b</td>" in table


def test_query_files_in_a_labelled_folder_get_their_hits_marked(small_run, digits_images, tmp_path, capsys):
    assert main(["index", "build", str(small_run), str(digits_images), "--out", str(tmp_path / "g"), "-q"]) == 0
    capsys.readouterr()
    q = digits_images / "8" / "008.png"  # a file, not a folder: its folder names a gallery label
    assert main(["search", str(tmp_path / "g"), str(q), "-k", "3", "--format", "json", "--figure",
                 str(tmp_path / "hub.png"), "--figure-style", "hub"]) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out)["results"][0]
    assert result["label"] == "8" and (tmp_path / "hub.png").is_file()


def test_the_verdict_compares_the_test_figures_with_the_baselines():
    from siamkit.report import verdict

    def metrics(model: float, pixels: float, untrained: float, **extra):
        return {"test": {"map_at_r": model}, "split": "identity", **extra,
                "baselines": {"pixels": {"test": {"map_at_r": pixels}}, "untrained": {"test": {"map_at_r": untrained}}}}  # fmt: skip

    assert verdict({"test": {"auc": 0.9}}) is None  # no retrieval figures, no baselines: nothing to say
    said = verdict(metrics(0.9, 0.6, 0.5))
    assert said.startswith("Training helped") and "MAP@R 0.900 against 0.600 for raw pixels and 0.500 untrained" in said
    said = verdict(metrics(0.5, 0.6, 0.5, best_epoch=0, epochs_run=5))
    assert said.startswith("The kept model is the untrained network") and "Raw pixels rank the test identities" in said
    assert verdict(metrics(0.605, 0.6, 0.7)).startswith("The network before training ranks")
    assert verdict(metrics(0.605, 0.6, 0.6)).startswith("On a par")


def test_the_verdict_names_the_descriptor_when_it_ranks_better():
    from siamkit.report import verdict

    m = {"test": {"map_at_r": 0.30}, "split": "identity", "recipe": "metric",
         "baselines": {"pixels": {"test": {"map_at_r": 0.10}}, "untrained": {"test": {"map_at_r": 0.05}},
                       "descriptor": {"test": {"map_at_r": 0.40}}}}  # fmt: skip
    said = verdict(m)
    assert said.startswith("Training helped") and "descriptor" in said and "--recipe open-set" in said
    m["baselines"]["descriptor"]["test"]["map_at_r"] = 0.25
    assert "descriptor" not in verdict(m)


def test_a_pretrained_start_is_named_so_not_untrained():
    from siamkit.report import split_entries, verdict

    m = {"test": {"map_at_r": 0.8}, "split": "identity", "initial_model": "pretrained", "best_epoch": 0,
         "epochs_run": 3, "baselines": {"pixels": {"test": {"map_at_r": 0.2}}, "untrained": {"test": {"map_at_r": 0.8}}}}  # fmt: skip
    assert [name for name, _ in split_entries(m)] == ["test", "test: raw pixels", "test: pretrained, unchanged"]
    assert verdict(m).startswith("The kept model is the pretrained one, unchanged")
    named = {**m, "as_test": True, "epochs_run": None}
    assert verdict(named).startswith("A pretrained model, not trained on this data")
