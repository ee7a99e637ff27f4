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
    from siamkit.index.ops import collect_images, embed_paths
    from siamkit.inference import TorchEmbedder

    embedder = TorchEmbedder(small_run)
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
