"""What a practitioner does after training: thresholds at a target false-accept rate, calibration on one's own
pairs (saved with the run, history kept, model hash unchanged), one-call threshold overrides, held-out data
scored as test into its own folder, the LFW 10-fold figure, and runs that evaluate from any folder."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from siamkit.cli import main
from siamkit.evaluate import metrics as M
from siamkit.files import file_sha256


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_images):
    """A run trained from a *relative* data path, with the threshold chosen at FPR ≤ 0.05 on validation."""
    import os

    work = tmp_path_factory.mktemp("work")
    shutil.copytree(digits_images, work / "digits_png")
    old = os.getcwd()
    os.chdir(work)
    try:
        code = main(["train", "--data", "digits_png", "--epochs", "2", "--runs-dir", "runs", "--name", "cal", "-q",
                     "--format", "json", "--set", "data.split=random", "--set", "eval.threshold=fpr:0.05",
                     "--set", "eval.n_pairs=400", "--set", "eval.tsne_points=0"])  # fmt: skip
    finally:
        os.chdir(old)
    assert code == 0
    return work


def test_threshold_rule_fpr_holds_on_validation(trained):
    m = json.loads((trained / "runs" / "cal" / "metrics.json").read_text())
    assert m["threshold_rule"] == "fpr:0.05"
    assert m["validation"]["false_accept_rate"] <= 0.05
    assert m["validation"]["threshold"] == m["threshold"]
    # the rule's threshold is the largest one within the target on the validation pairs (from scores.npz)
    scores = np.load(trained / "runs" / "cal" / "scores.npz")
    want = M.threshold_at_fpr(scores["validation_distances"], scores["validation_labels"], 0.05)
    assert m["threshold"] == pytest.approx(want)
    assert 0 <= m["test"]["false_accept_rate"] <= 1 and "verification_accuracy_10fold" in m["test"]
    k = m["test"]["verification_accuracy_10fold"]
    report = (trained / "runs" / "cal" / "report.html").read_text()
    assert f"{k['mean']:.4f} ± {k['std']:.4f}" in report and "fpr:0.05" in report


def test_saved_config_holds_an_absolute_data_path_and_evaluates_from_elsewhere(trained, capsys, tmp_path,
                                                                                monkeypatch):  # fmt: skip
    import yaml

    cfg = yaml.safe_load((trained / "runs" / "cal" / "config.yaml").read_text())
    assert Path(cfg["data"]["source"]).is_absolute() and Path(cfg["data"]["source"]).is_dir()
    monkeypatch.chdir(tmp_path)  # another folder: the relative "digits_png" no longer resolves from here
    code, out, err = _run(capsys, "eval", str(trained / "runs" / "cal"), "--format", "json")
    assert code == 0, err
    saved = json.loads((trained / "runs" / "cal" / "metrics.json").read_text())
    assert json.loads(out)["test"]["auc"] == pytest.approx(saved["test"]["auc"], abs=1e-9)  # the same data, found


def test_bad_threshold_rule_is_one_line(tmp_path, capsys):
    code, _, err = _run(capsys, "train", "--epochs", "1", "--runs-dir", str(tmp_path), "--set",
                        "eval.threshold=fpr:2")  # fmt: skip
    assert code == 2 and "eval.threshold 'fpr:2'" in err and err.strip().count("\n") == 0
    assert not any(tmp_path.iterdir())  # refused before anything was written


def _pairs_csv(root: Path, images: Path, n: int = 120, seed: int = 0) -> Path:
    files = sorted(images.glob("*/*.png"))
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        a, b = rng.choice(len(files), 2, replace=False)
        rows.append((files[a], files[b], int(files[a].parent == files[b].parent)))
    path = root / "pairs.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path_a", "path_b", "label"])
        w.writerows(rows)
    return path


def test_calibrate_saves_the_threshold_with_history_and_every_command_uses_it(trained, capsys, tmp_path):
    run = tmp_path / "cal"
    shutil.copytree(trained / "runs" / "cal", run)
    before_hash = file_sha256(run / "model.safetensors")
    trained_thr = json.loads((run / "metrics.json").read_text())["threshold"]
    pairs = _pairs_csv(tmp_path, trained / "digits_png")
    code, out, err = _run(capsys, "calibrate", str(run), "--data", str(pairs), "--fpr", "0.1", "--format", "json")
    assert code == 0, err
    r = json.loads(out)
    assert r["false_accept_rate"] <= 0.1 and r["previous_threshold"] == pytest.approx(trained_thr)
    saved = json.loads((run / "threshold.json").read_text())
    assert saved["threshold"] == r["threshold"] and saved["rule"] == "fpr:0.1"
    assert saved["history"][0]["threshold"] == pytest.approx(trained_thr)
    assert file_sha256(run / "model.safetensors") == before_hash  # galleries and exports stay valid
    # a second calibration keeps the first in its history
    code, out, _ = _run(capsys, "calibrate", str(run), "--data", str(trained / "digits_png"), "--format", "json")
    assert code == 0
    second = json.loads((run / "threshold.json").read_text())
    assert [h["rule"] for h in second["history"]] == ["fpr:0.05", "fpr:0.1"] and second["rule"] == "accuracy"
    # verify uses the calibrated threshold; --threshold overrides it for one call
    a, b = sorted((trained / "digits_png").glob("*/*.png"))[:2]
    code, out, _ = _run(capsys, "verify", str(run), str(a), str(b), "--format", "json")
    v = json.loads(out)
    assert v["threshold"] == pytest.approx(second["threshold"]) and v["same"] == (v["distance"] <= v["threshold"])
    code, out, _ = _run(capsys, "verify", str(run), str(a), str(b), "--format", "json", "--threshold", "1e9")
    assert json.loads(out)["threshold"] == 1e9 and json.loads(out)["same"] is True
    code, out, _ = _run(capsys, "verify", str(run), str(a), str(b), "--format", "json", "--threshold", "-1")
    assert json.loads(out)["same"] is False
    # search marks hits against the calibrated threshold (or the one given for the call), not the build-time one
    gal = tmp_path / "gal"
    assert _run(capsys, "index", "build", str(run), str(trained / "digits_png"), "--out", str(gal), "-q")[0] == 0
    code, out, _ = _run(capsys, "search", str(gal), str(a), "-k", "5", "--format", "json", "--threshold", "-1")
    assert code == 0 and all(h["match"] is False for h in json.loads(out)["results"][0]["neighbours"])
    code, out, _ = _run(capsys, "search", str(gal), str(a), "-k", "5", "--format", "json")
    hits = json.loads(out)["results"][0]["neighbours"]
    assert all(h["match"] == (h["distance"] <= second["threshold"]) for h in hits)


def test_calibrate_refuses_bad_input_in_one_line(trained, capsys, tmp_path):
    run = trained / "runs" / "cal"
    code, _, err = _run(capsys, "calibrate", str(run), "--data", str(tmp_path / "nowhere"))
    assert code == 2 and "nowhere" in err and err.strip().count("\n") == 0
    (tmp_path / "bad.csv").write_text("path_a,path_b\nx.png,y.png\n")
    code, _, err = _run(capsys, "calibrate", str(run), "--data", str(tmp_path / "bad.csv"))
    assert code == 2 and "label" in err and err.strip().count("\n") == 0
    code, _, err = _run(capsys, "calibrate", str(run), "--data", str(trained / "digits_png"), "--rule", "fpr:x")
    assert code == 2 and "fpr:x" in err and not (run / "threshold.json").exists()


def test_eval_as_test_scores_all_of_a_held_out_folder_into_its_own_folder(trained, capsys, tmp_path):
    run = tmp_path / "cal"
    shutil.copytree(trained / "runs" / "cal", run)
    held = tmp_path / "held"
    shutil.copytree(trained / "digits_png", held)
    n_images = len(list(held.glob("*/*.png")))
    code, out, err = _run(capsys, "eval", str(run), "--data", str(held), "--as-test", "--format", "json")
    assert code == 0, err
    r = json.loads(out)
    assert Path(r["eval_dir"]) == run / "eval-held" and r["split_sizes"] == {"test": n_images}
    assert "train" not in r and "validation" not in r and r["as_test"] is True
    assert r["test"]["n_queries"] == n_images  # every image is a query: nothing was held back for a split
    assert r["threshold"] == pytest.approx(json.loads((run / "metrics.json").read_text())["threshold"])
    assert (run / "eval-held" / "metrics.json").is_file() and (run / "eval-held" / "roc.png").is_file()
    assert set(r["baselines"]) == {"pixels", "untrained", "descriptor"}
    code, out, _ = _run(capsys, "eval", str(run), "--data", str(held), "--as-test", "--format", "json")
    assert code == 0 and Path(json.loads(out)["eval_dir"]) == run / "eval-held-2"  # never overwritten
    assert json.loads((run / "eval-held" / "metrics.json").read_text())["test"] == r["test"]
    code, out, _ = _run(capsys, "eval", str(run), "--data", str(held), "--as-test")
    row_names = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert "10-fold (LFW protocol" in out and "train" not in row_names and "validation" not in row_names


def test_roc_marks_the_operating_point(tmp_path):
    from PIL import Image

    from siamkit.evaluate.plots import plot_roc

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    d = rng.normal(1.0 - 0.5 * y, 0.3)
    plot_roc({"test": (y, d)}, tmp_path / "a.png")
    plot_roc({"test": (y, d)}, tmp_path / "b.png", threshold=0.7)
    a = np.asarray(Image.open(tmp_path / "a.png").convert("L"), np.int32)
    b = np.asarray(Image.open(tmp_path / "b.png").convert("L"), np.int32)
    assert a.shape == b.shape and (np.abs(a - b) > 40).sum() > 50  # the marker and its legend entry


def _pairs_from(root: Path, files: list[Path], name: str, n: int, seed: int) -> Path:
    """A pairs CSV of ``n`` random distinct pairs among ``files`` (label 1 when they share a class folder)."""
    rng = np.random.default_rng(seed)
    rows: set[tuple[int, int]] = set()
    while len(rows) < n:
        a, b = sorted(rng.choice(len(files), 2, replace=False))
        rows.add((int(a), int(b)))
    path = root / name
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path_a", "path_b", "label"])
        w.writerows((files[a], files[b], int(files[a].parent == files[b].parent)) for a, b in sorted(rows))
    return path


def test_the_calibrated_false_accept_rate_holds_on_pairs_it_was_not_chosen_on(trained, capsys, tmp_path):
    """A false-accept rate checked on the calibration pairs themselves holds by construction; this one is measured
    on other images' pairs (disjoint files), through verify's decisions."""
    run = tmp_path / "cal"
    shutil.copytree(trained / "runs" / "cal", run)
    files = sorted((trained / "digits_png").glob("*/*.png"))
    order = np.random.default_rng(3).permutation(len(files))
    first, second = [files[i] for i in order[::2]], [files[i] for i in order[1::2]]
    fit = _pairs_from(tmp_path, first, "fit.csv", 1500, 1)
    held = _pairs_from(tmp_path, second, "held.csv", 1500, 2)
    code, out, err = _run(capsys, "calibrate", str(run), "--data", str(fit), "--fpr", "0.1", "--format", "json")
    assert code == 0, err
    r = json.loads(out)
    assert r["false_accept_rate"] <= 0.1
    code, out, err = _run(capsys, "verify", str(run), "--pairs", str(held), "--out", str(tmp_path / "d.csv"), "-q")
    assert code == 0, err
    with open(tmp_path / "d.csv") as fh:
        rows = list(csv.DictReader(fh))
    impostors = [row for row in rows if row["label"] == "0"]
    far = sum(row["same"] in ("1", "True", "true") for row in impostors) / len(impostors)
    assert len(impostors) > 1000 and far <= 0.15, far  # 0.1 ± binomial noise on ~1,350 impostor pairs
    # and --hold-out reports the same kind of figure itself, on pairs it kept out of the choice
    code, out, err = _run(capsys, "calibrate", str(run), "--data", str(fit), "--fpr", "0.1", "--hold-out", "0.5",
                          "--format", "json")  # fmt: skip
    assert code == 0, err
    h = json.loads(out)["held_out"]
    assert h["impostor_pairs"] > 500 and h["false_accept_rate"] <= 0.16
