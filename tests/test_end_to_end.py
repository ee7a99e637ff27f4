"""Digits: train → eval → verify through the CLI; checkpoint reload; resume; one-line errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from siamkit.cli import main
from siamkit.runs.artifact import load_run, read_weights
from siamkit.training.checkpoint import load_state

FILES = [
    "config.yaml",
    "history.csv",
    "metrics.json",
    "model.safetensors",
    "loss_curve.png",
    "roc.png",
    "distances.png",
]


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    code = main(["train", "--epochs", "3", "--runs-dir", str(runs), "--name", "e2e", "--format", "json", "-q"])
    assert code == 0
    return runs / "e2e"


def test_train_writes_run_directory(digits_run):
    for f in FILES:
        assert (digits_run / f).is_file() and (digits_run / f).stat().st_size > 0, f
    m = json.loads((digits_run / "metrics.json").read_text())
    # learned: clearly better than the same network before training (AUC ≈ 0.82, P@1 ≈ 0.88 untrained) and pixels
    for base in ("untrained", "pixels"):
        b = m["baselines"][base]["test"]
        assert m["test"]["map_at_r"] > b["map_at_r"] + 0.1 and m["test"]["auc"] > b["auc"] + 0.03, base
    assert [t["fpr"] for t in m["test"]["tpr_at_fpr"]] == [0.5, 0.1, 0.01, 0.001]
    assert m["test"]["n_impostor"] == 5000 and m["trainable_parameters"] > 0
    rows = list(csv.DictReader((digits_run / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert Image.open(digits_run / "roc.png").size[0] > 100


def test_eval_reproduces_the_training_metrics(digits_run, capsys):
    code, out, _ = _run(capsys, "eval", str(digits_run), "--format", "json")
    assert code == 0
    got = json.loads(out)
    want = json.loads((digits_run / "metrics.json").read_text())
    assert got["test"]["auc"] == pytest.approx(want["test"]["auc"], abs=1e-9)
    assert got["threshold"] == pytest.approx(want["threshold"])
    assert (digits_run / "eval" / "metrics.json").is_file() and (digits_run / "eval" / "roc.png").is_file()


def test_reloaded_checkpoint_gives_identical_embeddings(digits_run):
    a, b = load_run(digits_run), load_run(digits_run)
    x = torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8)
    with torch.no_grad():
        ea, eb = a.model.embed(a.preprocess(x)), b.model.embed(b.preprocess(x))
    assert torch.equal(ea, eb)
    # the saved weights are the best-validation ones recorded in the training state
    state, meta = read_weights(digits_run / "model.safetensors")
    best = load_state(digits_run / "last.pt")["best_model"]
    assert all(torch.equal(state[k], best[k]) for k in state)
    assert float(meta["threshold"]) == pytest.approx(json.loads((digits_run / "metrics.json").read_text())["threshold"])


def test_verify_two_images(digits_run, tmp_path, capsys):
    from sklearn.datasets import load_digits

    d = load_digits()
    paths = []
    for i in (0, 10, 1):  # 0, 0, 1
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.round(d.images[i] * 255 / 16).astype(np.uint8)).save(p)
        paths.append(str(p))
    code, out, _ = _run(capsys, "verify", str(digits_run), paths[0], paths[1], "--format", "json")
    same = json.loads(out)
    code2, out2, _ = _run(capsys, "verify", str(digits_run), paths[0], paths[2], "--format", "json")
    diff = json.loads(out2)
    assert code == code2 == 0
    assert same["threshold"] == diff["threshold"] is not None
    assert same["same"] == (same["distance"] <= same["threshold"])
    assert same["distance"] < diff["distance"]
    code, out, _ = _run(capsys, "verify", str(digits_run), paths[0], paths[1])
    assert "threshold" in out and ("same" in out or "different" in out)
    # the decisions of the trained model, not just its ordering: on 200 digit pairs, the saved threshold decides
    # at least 80 % right (≈ 0.89 trained) — the network before training (AUC ≈ 0.81, 0.73 at its own validation
    # threshold) does not get there
    rng = np.random.default_rng(7)
    labels = d.target[:400]
    rows = []
    for want in (1, 0):
        while sum(r[2] == want for r in rows) < 100:
            i, j = rng.choice(400, 2, replace=False)
            if int(labels[i] == labels[j]) == want:
                rows.append((i, j, want))
    for k in {k for r in rows for k in r[:2]}:
        Image.fromarray(np.round(d.images[k] * 255 / 16).astype(np.uint8)).save(tmp_path / f"d{k}.png")
    csv_path = tmp_path / "pairs.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path_a", "path_b", "label"])
        w.writerows((tmp_path / f"d{i}.png", tmp_path / f"d{j}.png", y) for i, j, y in rows)
    code, out, err = _run(capsys, "verify", str(digits_run), "--pairs", str(csv_path), "--format", "json")
    assert code == 0, err
    assert json.loads(out)["accuracy"] >= 0.8


def test_resume_continues_from_last_epoch(tmp_path, capsys):
    base = [
        "train",
        "--runs-dir",
        str(tmp_path),
        "--name",
        "r",
        "-q",
        "--format",
        "json",
        "--set",
        "data.limit=400",
    ]
    assert _run(capsys, *base, "--epochs", "2")[0] == 0
    first = list(csv.DictReader((tmp_path / "r" / "history.csv").open()))
    before = json.loads((tmp_path / "r" / "metrics.json").read_text())
    key = f"initial_val_{before['monitor']}"
    assert key in before  # the initial weights were scored on validation (epoch 0 of the checkpoint choice)
    assert _run(capsys, *base, "--epochs", "3", "--resume")[0] == 0
    rows = list(csv.DictReader((tmp_path / "r" / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert rows[:2] == first
    assert not (tmp_path / "r-2").exists()
    after = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert after[key] == pytest.approx(before[key], abs=1e-6)  # the resumed run still knows the initial score


def test_bad_config_key_is_one_line(capsys):
    code, out, err = _run(capsys, "train", "--set", "train.lrr=0.1")
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0 and "'train.lrr'" in err


def test_missing_data_path_is_one_line(capsys, tmp_path):
    code, _, err = _run(capsys, "train", "--data", str(tmp_path / "nowhere"), "--runs-dir", str(tmp_path))
    assert code == 2 and err.strip().count("\n") == 0 and "nowhere" in err and "not found" in err


def test_missing_run_dir_is_one_line(capsys, tmp_path):
    code, _, err = _run(capsys, "verify", str(tmp_path / "norun"), "a.png", "b.png")
    assert code == 2 and "norun" in err and err.strip().count("\n") == 0


def _write_folder(root: Path, n_classes: int = 7, per_class: int = 10) -> None:
    rng = np.random.default_rng(0)
    for c in range(n_classes):
        proto = rng.integers(0, 256, (12, 12, 3))
        for i in range(per_class):
            arr = np.clip(proto + rng.normal(0, 20, proto.shape), 0, 255).astype(np.uint8)
            (root / f"id{c}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / f"id{c}" / f"{i}.png")
    (root / "loner").mkdir()
    Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / "loner" / "x.png")


@pytest.mark.parametrize("loss", ["contrastive", "bce"])
def test_folder_dataset_identity_split(tmp_path, capsys, loss):
    _write_folder(tmp_path / "faces")
    code, out, err = _run(
        capsys, "train", "--data", str(tmp_path / "faces"), "--loss", loss, "--epochs", "2", "--runs-dir",
        str(tmp_path / "runs"), "--format", "json", "--set", "data.split=identity", "--set", "data.val_fraction=0.4",
        "--set", "data.test_fraction=0.3", "--set", "sampling.pairs=coin-flip",
    )  # fmt: skip
    assert code == 0, err
    m = json.loads(out)
    assert m["input_shape"] == [3, 12, 12] and m["test"]["n_genuine"] > 0
    assert m["split_sizes"]["test"] == 20  # 8 identities → 2 held out whole (10 images each)


def test_identity_split_too_few_classes_names_the_split(tmp_path, capsys):
    _write_folder(tmp_path / "faces", n_classes=3)
    code, _, err = _run(capsys, "train", "--data", str(tmp_path / "faces"), "--runs-dir", str(tmp_path / "r"),
                        "--set", "data.split=identity")  # fmt: skip
    assert code == 2 and "identity split leaves" in err and err.strip().count("\n") == 0


def test_pairs_csv_dataset(tmp_path, capsys):
    _write_folder(tmp_path / "img")
    files = sorted((tmp_path / "img").glob("id*/*.png"))
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(120):
        a, b = rng.choice(len(files), 2, replace=False)
        rows.append(
            (
                files[a].relative_to(tmp_path),
                files[b].relative_to(tmp_path),
                int(files[a].parent == files[b].parent),
            )
        )
    with open(tmp_path / "pairs.csv", "w") as fh:
        fh.write("label,path_a,path_b\n" + "".join(f"{y},{a},{b}\n" for a, b, y in rows))
    code, out, err = _run(capsys, "train", "--data", str(tmp_path / "pairs.csv"), "--loss", "contrastive", "--epochs",
                          "1", "--runs-dir", str(tmp_path / "runs"), "--format", "json")  # fmt: skip
    assert code == 0, err
    m = json.loads(out)
    assert "precision_at_1" not in m["test"] and m["test"]["n_genuine"] + m["test"]["n_impostor"] == 24
    code, _, err = _run(capsys, "train", "--data", str(tmp_path / "pairs.csv"), "--loss", "triplet", "--epochs", "1",
                        "--runs-dir", str(tmp_path / "runs"))  # fmt: skip
    assert code == 2 and "pairs CSV" in err
