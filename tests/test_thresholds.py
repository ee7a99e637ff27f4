"""Decisions a deployment can trust (issue 27): every threshold says where it holds — its rule, the pairs it was
set on and its rates there and on the test identities — in metrics.json, the CLI, the report, verify and the
service; calibration warns when it is set on people the model knows or on too few impostors, works at any input
size, and can keep a held-out part of the given identities to show whether the threshold carries."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from siamkit.cli import main
from siamkit.thresholds import deploy_warning, describe, too_few_impostors


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def non_square(tmp_path_factory):
    """A class-per-folder tree of 10 digit identities (20 images each) as 12×16 (H×W) PNGs: a non-square input."""
    from PIL import Image
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("nonsquare") / "digits_wide"
    d = load_digits()
    per = {c: 0 for c in range(10)}
    for i in range(len(d.target)):
        c = int(d.target[i])
        if per[c] >= 20:
            continue
        per[c] += 1
        folder = root / str(c)
        folder.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(np.round(d.images[i] * 255 / 16).astype(np.uint8)).resize((16, 12), Image.BILINEAR)
        img.save(folder / f"{i:04d}.png")
    return root


@pytest.fixture(scope="module")
def run(non_square, tmp_path_factory):
    """One epoch on the non-square identities (identity split: 6 training, 2 validation, 2 test identities)."""
    runs = tmp_path_factory.mktemp("runs")
    code = main(["train", "--data", str(non_square), "--epochs", "1", "--runs-dir", str(runs), "--name", "wide",
                 "-q", "--format", "json", "--set", "data.split=identity", "--set", "eval.n_pairs=300",
                 "--set", "eval.tsne_points=0", "--set", "eval.episodes=0", "--set", "data.cache=false"])  # fmt: skip
    assert code == 0
    return runs / "wide"


def test_metrics_json_says_where_the_training_threshold_holds(run):
    m = json.loads((run / "metrics.json").read_text())
    assert tuple(m["input_shape"]) == (1, 12, 16)  # the run's input is not square
    info = m["threshold_info"]
    assert info["threshold"] == m["threshold"] and info["rule"] == "accuracy"
    assert info["set_on"] == "the run's validation identities" and info["identities"] == 2
    assert info["impostor_pairs"] > 0 and info["false_accept_rate"] == pytest.approx(
        m["validation"]["false_accept_rate"]
    )
    assert info["test"]["false_accept_rate"] == pytest.approx(m["test"]["false_accept_rate"])
    assert "test identities" in info["test"]["on"] and "warning" in info


def test_calibrate_a_non_square_run_on_its_own_folder_warns_of_the_overlap_and_reports_the_held_out_rate(
    run, non_square, capsys, caplog, tmp_path
):
    cal = tmp_path / "wide"
    shutil.copytree(run, cal)
    code, out, err = _run(capsys, "calibrate", str(cal), "--data", str(non_square), "--fpr", "0.01",
                          "--hold-out", "0.3", "--pairs-per-kind", "99", "--set", "data.cache=false")  # fmt: skip
    assert code == 0, err
    warned = [r.getMessage() for r in caplog.records if "shares identities" in r.getMessage()]
    assert len(warned) == 1 and "training" in warned[0] and "validation" in warned[0]
    ids = json.loads((run / "metrics.json").read_text())["identities"]
    assert any(name in warned[0] for name in ids["train"]) and "of its 10" in warned[0]  # names what it shares
    assert "\n" not in warned[0]
    assert "held-out identities" in out and "false-accept rate" in out
    saved = json.loads((cal / "threshold.json").read_text())
    assert saved["rule"] == "fpr:0.01" and saved["identities"] == 7 and "held_out" in saved
    assert saved["held_out"]["on"].startswith("3 held-out identities")
    assert 0.0 <= saved["held_out"]["false_accept_rate"] <= 1.0 and "test" in saved
    few = [w for w in saved["warnings"] if "distinct impostor pairs" in w]
    assert len(few) == 1 and "99" in few[0] and "300" in few[0]  # 3 / 0.01 = 300 needed
    # the report shows the calibrated threshold and its rule; eval names the rule of the threshold it used
    report = (cal / "report.html").read_text()
    assert "threshold in use (calibrated)" in report and "fpr:0.01" in report
    assert f"{saved['threshold']:.4f}" in report
    code, out, err = _run(capsys, "eval", str(cal), "--set", "data.cache=false")
    assert code == 0, err
    assert "rule fpr:0.01" in out and "chosen on validation by accuracy" not in out
    ev = json.loads((cal / "eval" / "metrics.json").read_text())
    assert ev["threshold_rule"] == "fpr:0.01" and ev["threshold"] == pytest.approx(saved["threshold"])
    assert ev["threshold_info"]["set_on"] == saved["set_on"]


def test_calibrate_takes_set_for_data_keys_only(run, non_square, capsys):
    code, _, err = _run(capsys, "calibrate", str(run), "--data", str(non_square), "--set", "train.lr=0.1")
    assert code == 2 and "data.*" in err and err.strip().count("\n") == 0
    assert not (run / "threshold.json").exists()


def test_verify_json_carries_the_threshold_provenance(run, non_square, capsys):
    a, b = sorted(non_square.glob("*/*.png"))[:2]
    code, out, err = _run(capsys, "verify", str(run), str(a), str(b), "--format", "json")
    assert code == 0, err
    info = json.loads(out)["threshold_info"]
    assert info["rule"] == "accuracy" and info["set_on"] == "the run's validation identities"
    code, out, _ = _run(capsys, "verify", str(run), str(a), str(b), "--format", "json", "--threshold", "0.5")
    assert json.loads(out)["threshold_info"]["rule"] == "given (--threshold)"


def test_search_json_says_where_its_match_threshold_holds(run, non_square, tmp_path, capsys):
    gallery = tmp_path / "g"
    code, _, err = _run(capsys, "index", "build", str(run), str(non_square), "--out", str(gallery), "-q")
    assert code == 0, err
    query = sorted(non_square.glob("*/*.png"))[0]
    code, out, err = _run(capsys, "search", str(gallery), str(query), "-k", "3", "--format", "json")
    assert code == 0, err
    info = json.loads(out)["threshold_info"]
    assert info["rule"] == "accuracy" and info["set_on"] == "the run's validation identities"
    code, out, _ = _run(capsys, "search", str(gallery), str(query), "-k", "3")
    assert (("warning: do not deploy" in out) == bool(info.get("warning"))) and code == 0


def test_health_says_where_the_served_threshold_holds(run):
    from fastapi.testclient import TestClient

    from siamkit.runs.model import open_model
    from siamkit.serve.app import create_app

    health = TestClient(create_app(open_model(str(run)))).get("/health").json()
    info = health["threshold_info"]
    assert info["rule"] == "accuracy" and "test" in info and str(run) not in json.dumps(info)


def test_a_threshold_far_above_its_rate_on_new_people_is_flagged_in_one_sentence():
    # the Fashion-MNIST case: best accuracy on the validation identities, 71 % of test impostors accepted
    info = {
        "threshold": 0.9,
        "rule": "accuracy",
        "set_on": "the run's validation identities",
        "identities": 2,
        "impostor_pairs": 5000,
        "false_accept_rate": 0.04,
        "false_reject_rate": 0.1,
        "test": {"on": "the run's 3 test identities", "false_accept_rate": 0.71, "false_reject_rate": 0.02},
    }
    said = deploy_warning(info, "runs/fm")
    assert said is not None and said.startswith("do not deploy this threshold as is")
    assert "71.0%" in said and "0.0400" in said and "siamkit calibrate runs/fm" in said and "\n" not in said
    assert "false-accept 0.7100" in describe(info) and "false-accept 0.0400" in describe(info)
    held = {**info, "test": {**info["test"], "false_accept_rate": 0.03}}
    assert deploy_warning(held) is None  # within 0.05 and within 10× what it was set for
    strict = {**held, "rule": "fpr:0.001"}
    assert deploy_warning(strict) is not None  # 0.03 is 30× the 0.001 it was set for
    from siamkit.cli.train import summary_table

    table = summary_table({"run_dir": "runs/fm", "threshold": 0.9, "threshold_info": {**info,
                           "warning": deploy_warning(info, "runs/fm")}})  # fmt: skip
    assert "warning: do not deploy this threshold as is" in table and "rule accuracy" in table


def test_too_few_impostors_says_how_many_are_needed():
    said = too_few_impostors(0.01, 99)
    assert said is not None and "99" in said and "300" in said and "0.99 false accepts" not in said
    assert too_few_impostors(0.01, 300) is None and too_few_impostors(0.0, 5) is None


def test_calibration_counts_and_rates_rest_on_distinct_pairs():
    from siamkit.calibration import distinct_rows

    index = np.array([[0, 1], [1, 0], [0, 2], [0, 2], [2, 3]])
    labels = np.array([1, 1, 0, 0, 0])
    rows, kept = distinct_rows(index, labels)
    assert rows.tolist() == [[0, 1], [0, 2], [2, 3]] and kept.tolist() == [1, 0, 0]
