"""verify --pairs: a decision per CSV row, distances equal to the two-image verify, accuracy from labels."""

from __future__ import annotations

import csv
import json

import pytest

from siamkit.cli import main
from siamkit.runs import load


def test_pairs_csv_with_labels(small_run, digits_images, tmp_path, capsys):
    pairs = [("0/000.png", "0/010.png", 1), ("0/000.png", "1/001.png", 0), ("3/003.png", "3/013.png", 1),
             ("5/005.png", "8/008.png", 0)]  # fmt: skip
    csv_path = digits_images.parent / "pairs.csv"
    with open(csv_path, "w", newline="") as fh:  # shuffled columns, relative paths
        w = csv.writer(fh)
        w.writerow(["label", "path_b", "path_a"])
        w.writerows([(lab, f"{digits_images.name}/{b}", f"{digits_images.name}/{a}") for a, b, lab in pairs])
    out = tmp_path / "decisions.csv"
    assert main(["verify", str(small_run), "--pairs", str(csv_path), "--out", str(out), "--format", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == summary["pairs"] == 4
    correct = 0
    for row, (a, b, lab) in zip(rows, pairs):
        want = load(small_run).verify(str(digits_images / a), str(digits_images / b)).to_dict()
        assert float(row["distance"]) == pytest.approx(want["distance"], abs=1e-5)
        assert int(row["same"]) == int(want["same"]) and int(row["label"]) == lab
        assert int(row["correct"]) == int(want["same"] == bool(lab))
        correct += int(row["correct"])
    assert summary["accuracy"] == pytest.approx(correct / 4)
    assert summary["same"] == sum(int(r["same"]) for r in rows)


def test_pairs_csv_without_labels_and_bad_csvs(small_run, digits_images, tmp_path, capsys):
    p = tmp_path / "p.csv"
    p.write_text(f"path_a,path_b\n{digits_images}/0/000.png,{digits_images}/2/002.png\n")
    assert main(["verify", str(small_run), "--pairs", str(p), "-q"]) == 0
    assert "1 pairs" in capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "p_decisions.csv").open()))
    assert list(rows[0]) == ["path_a", "path_b", "distance", "same"]
    bad = tmp_path / "bad.csv"
    bad.write_text("path_a,image\nx.png,y.png\n")
    assert main(["verify", str(small_run), "--pairs", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.csv: missing column 'path_b'" in err and err.count("\n") == 1
    assert main(["verify", str(small_run)]) == 2
    assert "two images (IMAGE_A IMAGE_B) or --pairs CSV" in capsys.readouterr().err
