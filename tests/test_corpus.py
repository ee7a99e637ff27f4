"""The bad-input corpus: every case is written by this file into its own folder (tests/corpus/ is this file: no
binary is committed), run through the CLI in-process, and must end with exit code 2 and exactly one stderr line
that names the key or file (the case's expected fragment), no traceback, and nothing left behind (the case's
folder holds the same files before and after). Malicious pickles (as last.pt, as weights, as a CIFAR-10 batch)
must not execute: their payload would create a marker file. The HTTP cases are in ``test_http_corpus``.
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from siamkit.cli import main

MARKER = "PWNED"


class Payload:
    """Unpickling this creates the marker file: proof that a loader ran code from a file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _png(path: Path, size: tuple[int, int] = (12, 12), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _faces(root: Path, classes: int = 8, per_class: int = 3) -> Path:
    for c in range(classes):
        for i in range(per_class):
            _png(root / f"id{c}" / f"{i}.png", seed=c * 10 + i)
    return root


def _pairs_csv(path: Path, rows: list[str], header: str = "path_a,path_b,label") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def _good_pairs(root: Path, n: int = 40) -> list[str]:
    _faces(root / "img", 4, 4)
    files = sorted((root / "img").glob("*/*.png"))
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(n):
        a, b = rng.choice(len(files), 2, replace=False)
        rows.append(f"{files[a]},{files[b]},{int(files[a].parent == files[b].parent)}")
    return rows


def _bomb_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def _train(d: Path, *extra: str) -> list[str]:
    return ["train", "--runs-dir", str(d / "runs"), "--epochs", "1", *extra]


def _set(d: Path, *assignments: str) -> list[str]:
    sets = [x for a in assignments for x in ("--set", a)]
    epochs = [] if any(a.startswith("train.epochs") for a in assignments) else ["--set", "train.epochs=1"]
    return ["train", "--runs-dir", str(d / "runs"), *epochs, *sets]


# ---- the cases: name → builder(case folder, world) → (argv, fragment the error line must hold) -------------------
Builder = Callable[[Path, dict[str, Path]], tuple[list[str], str]]
CASES: dict[str, Builder] = {}


def case(name: str) -> Callable[[Builder], Builder]:
    def register(fn: Builder) -> Builder:
        CASES[name] = fn
        return fn

    return register


# config values and keys: each names the key
CONFIG = {
    "section-given-a-value": (["train=1", "train.lr=2"], "'train'"),
    "negative-image-size": (["data.image_size=-4"], "data.image_size"),
    "negative-epochs": (["train.epochs=-3"], "train.epochs"),
    "huge-lr": (["train.lr=1e12"], "train.lr"),
    "negative-lr": (["train.lr=-1"], "train.lr"),
    "zero-batch": (["loss.name=triplet", "train.batch_size=0"], "train.batch_size"),
    "missing-gpu": (["train.device=cuda:7"], "cuda:7"),
    "unknown-device": (["train.device=tpu"], "train.device"),
    "unknown-section": (["foo.bar=1"], "'foo.bar'"),
    "unknown-key": (["train.lrr=1"], "'train.lrr'"),
    "epochs-not-a-number": (["train.epochs=abc"], "'train.epochs'"),
    "epochs-a-float": (["train.epochs=1.5"], "'train.epochs'"),
    "val-fraction-over-1": (["data.val_fraction=1.5"], "data.val_fraction"),
    "val-fraction-zero": (["data.val_fraction=0"], "data.val_fraction"),
    "test-fraction-negative": (["data.test_fraction=-0.1"], "data.test_fraction"),
    "one-class-per-batch": (["sampling.p=1"], "sampling.p"),
    "no-image-per-class": (["sampling.k=0"], "sampling.k"),
    "zero-eval-pairs": (["eval.n_pairs=0"], "eval.n_pairs"),
    "fpr-over-1": (["eval.threshold=fpr:2"], "eval.threshold"),
    "threshold-rule-unknown": (["eval.threshold=banana"], "eval.threshold"),
    "distance-unknown": (["eval.distance=manhattan"], "manhattan"),
    "optimizer-unknown": (["train.optimizer=adamm"], "adamm"),
    "scheduler-unknown": (["train.scheduler=linear"], "linear"),
    "monitor-unknown": (["train.monitor=auc"], "train.monitor"),
    "loss-unknown": (["loss.name=nope"], "nope"),
    "miner-unknown": (["loss.miner=nope"], "nope"),
    "loss-param-unknown": (["loss.params={marginn: 1}"], "marginn"),
    "backbone-unknown": (["model.backbone=nope"], "nope"),
    "embedding-dim-negative": (["model.embedding_dim=-1"], "model.embedding_dim"),
    "split-unknown": (["data.split=weird"], "data.split"),
    "recipe-unknown": (["recipe=weird"], "weird"),
    "hflip-over-1": (["data.augment.hflip=2"], "data.augment.hflip"),
    "degrees-negative": (["data.augment.degrees=-1"], "data.augment.degrees"),
    "scale-min-over-max": (["data.augment.scale_min=2"], "scale_min"),
    "gamma-zero": (["train.gamma=0"], "train.gamma"),
    "momentum-one": (["train.momentum=1"], "train.momentum"),
    "two-channels": (["data.channels=2"], "data.channels"),
    "limit-one": (["data.limit=1"], "data.limit"),
    "ssl-weight-negative": (["loss.ssl_weight=-1"], "loss.ssl_weight"),
    "ssl-temperature-zero": (["loss.ssl_temperature=0"], "loss.ssl_temperature"),
    "seed-negative": (["train.seed=-1"], "train.seed"),
    "recall-at-zero": (["eval.recall_at=[0]"], "eval.recall_at"),
    "std-zero": (["data.std=[0]"], "data.std"),
    "lr-not-a-number": (["train.lr=fast"], "train.lr"),
    "unfreeze-without-freeze": (["train.unfreeze_epoch=2"], "train.unfreeze_epoch"),
    "mean-wrong-length": (["data.mean=[0.5, 0.5]"], "data.mean"),
    "ssl-without-augmentation": (["loss.ssl_weight=1"], "augment"),
    "class-list-unknown": (["data.split=identity", "data.test_classes=[zzz]"], "zzz"),
    "miner-params-without-miner": (["loss.name=triplet", "loss.miner_params={margin: 1}"], "loss.miner"),
}
for _name, (_assignments, _fragment) in CONFIG.items():
    CASES[f"config/{_name}"] = (lambda a, f: lambda d, w: (_set(d, *a), f))(_assignments, _fragment)


@case("config/file-missing")
def _(d, w):
    return ["train", str(d / "nope.yaml"), "--runs-dir", str(d / "runs")], "nope.yaml"


@case("config/file-not-yaml")
def _(d, w):
    (d / "c.yaml").write_text("train: [unclosed\n")
    return ["train", str(d / "c.yaml"), "--runs-dir", str(d / "runs")], "c.yaml"


@case("config/file-a-list")
def _(d, w):
    (d / "c.yaml").write_text("- 1\n- 2\n")
    return ["train", str(d / "c.yaml"), "--runs-dir", str(d / "runs")], "c.yaml"


@case("config/file-yaml-payload")
def _(d, w):
    (d / "c.yaml").write_text(f"train: !!python/object/apply:os.system ['touch {d / MARKER}']\n")
    return ["train", str(d / "c.yaml"), "--runs-dir", str(d / "runs")], "c.yaml"


@case("config/override-yaml-payload")
def _(d, w):
    return _set(d, f"train.lr=!!python/object/apply:os.system ['touch {d / MARKER}']"), "train.lr"


@case("config/file-unknown-section")
def _(d, w):
    (d / "c.yaml").write_text("trian:\n  lr: 1\n")
    return ["train", str(d / "c.yaml"), "--runs-dir", str(d / "runs")], "trian"


# data sources
@case("data/missing-folder")
def _(d, w):
    return _train(d, "--data", str(d / "nowhere")), "nowhere"


@case("data/empty-folder")
def _(d, w):
    (d / "empty").mkdir()
    return _train(d, "--data", str(d / "empty")), "empty"


@case("data/all-class-folders-empty")
def _(d, w):
    for c in range(3):
        (d / "faces" / f"id{c}").mkdir(parents=True)
    return _train(d, "--data", str(d / "faces")), "faces"


@case("data/corrupt-image")
def _(d, w):
    _faces(d / "faces")
    (d / "faces" / "id3" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return _train(d, "--data", str(d / "faces")), "bad.png"


@case("data/zero-byte-image")
def _(d, w):
    _faces(d / "faces")
    (d / "faces" / "id1" / "empty.png").write_bytes(b"")
    return _train(d, "--data", str(d / "faces")), "empty.png"


@case("data/text-named-png")
def _(d, w):
    _faces(d / "faces")
    (d / "faces" / "id2" / "notes.png").write_text("hello")
    return _train(d, "--data", str(d / "faces")), "notes.png"


@case("data/one-pixel-image")
def _(d, w):
    _faces(d / "faces")
    Image.new("RGB", (1, 1)).save(d / "faces" / "id0" / "aaa.png")
    return _train(d, "--data", str(d / "faces")), "aaa.png"


@case("data/truncated-png")
def _(d, w):
    _faces(d / "faces")
    good = (d / "faces" / "id4" / "0.png").read_bytes()
    (d / "faces" / "id4" / "cut.png").write_bytes(good[: len(good) // 2])
    return _train(d, "--data", str(d / "faces")), "cut.png"


@case("data/pairs-missing-column")
def _(d, w):
    csv = _pairs_csv(d / "p.csv", ["a.png,b.png"], header="path_a,path_b")
    return _train(d, "--data", str(csv)), "path_a,path_b,label"


@case("data/pairs-label-inf")
def _(d, w):
    rows = _good_pairs(d)
    rows[3] = rows[3].rsplit(",", 1)[0] + ",inf"
    return _train(d, "--data", str(_pairs_csv(d / "p.csv", rows))), "p.csv:5"


@case("data/pairs-label-fraction")
def _(d, w):
    rows = _good_pairs(d)
    rows[0] = rows[0].rsplit(",", 1)[0] + ",0.7"
    return _train(d, "--data", str(_pairs_csv(d / "p.csv", rows))), "'0.7'"


@case("data/pairs-label-word")
def _(d, w):
    rows = _good_pairs(d)
    rows[1] = rows[1].rsplit(",", 1)[0] + ",yes"
    return _train(d, "--data", str(_pairs_csv(d / "p.csv", rows))), "'yes'"


@case("data/pairs-header-only")
def _(d, w):
    return _train(d, "--data", str(_pairs_csv(d / "p.csv", []))), "p.csv"


@case("data/pairs-missing-image")
def _(d, w):
    rows = _good_pairs(d)
    rows.append(f"{d / 'ghost.png'},{rows[0].split(',')[0]},0")
    return _train(d, "--data", str(_pairs_csv(d / "p.csv", rows))), "ghost.png"


@case("data/pairs-empty-cell")
def _(d, w):
    rows = _good_pairs(d)
    rows[2] = "," + rows[2].split(",", 1)[1]
    return _train(d, "--data", str(_pairs_csv(d / "p.csv", rows))), "path_a"


@case("data/triplets-missing-column")
def _(d, w):
    csv = _pairs_csv(d / "t.csv", ["a.png,b.png"], header="anchor,positive")
    return _train(d, "--data", str(csv), "--set", "data.layout=triplets-csv"), "'negative'"


@case("data/pairs-tiny-validation")
def _(d, w):
    csv = _pairs_csv(d / "p.csv", _good_pairs(d, 60))
    return _train(d, "--data", str(csv), "--set", "data.val_fraction=0.03"), "data.val_fraction"


@case("data/pairs-no-test-rows")
def _(d, w):
    csv = _pairs_csv(d / "p.csv", _good_pairs(d, 60))
    return _train(d, "--data", str(csv), "--set", "data.test_fraction=0"), "data.test_fraction"


@case("data/triplet-loss-on-pairs")
def _(d, w):
    csv = _pairs_csv(d / "p.csv", _good_pairs(d, 60))
    return _train(d, "--data", str(csv), "--loss", "triplet"), "pairs CSV"


@case("data/flat-bad-names")
def _(d, w):
    for i in range(4):
        _png(d / "flat" / f"img{i}.png", seed=i)
    return _train(d, "--data", str(d / "flat"), "--set", "data.layout=flat"), "img0.png"


@case("data/flat-regex-mismatch")
def _(d, w):
    for i in range(4):
        _png(d / "flat" / f"p_c{i % 2}_{i}.png", seed=i)
    return _train(d, "--data", str(d / "flat"), "--set", "data.layout=flat", "--set", "data.flat_regex=^x(.)"), \
        "flat_regex"  # fmt: skip


@case("data/idx-corrupt")
def _(d, w):
    (d / "idx").mkdir()
    (d / "idx" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    (d / "idx" / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01garbage")
    return _train(d, "--data", str(d / "idx"), "--set", "data.layout=idx"), "idx"


@case("data/binary-csv")
def _(d, w):
    (d / "p.csv").write_bytes(bytes(range(256)) * 4)
    return _train(d, "--data", str(d / "p.csv")), "p.csv"


@case("data/one-class")
def _(d, w):
    _faces(d / "faces", classes=1, per_class=6)
    return _train(d, "--data", str(d / "faces")), "class"


@case("data/layout-unknown")
def _(d, w):
    return _set(d, "data.layout=zip"), "zip"


# run folders
@case("run/eval-missing")
def _(d, w):
    return ["eval", str(d / "nope")], "nope"


@case("run/eval-no-model")
def _(d, w):
    (d / "run").mkdir()
    return ["eval", str(d / "run")], "model.safetensors"


@case("run/eval-corrupt-weights")
def _(d, w):
    shutil.copytree(w["run"], d / "run")
    (d / "run" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    return ["eval", str(d / "run")], "model.safetensors"


@case("run/weights-are-a-pickle")
def _(d, w):
    shutil.copytree(w["run"], d / "run")
    (d / "run" / "model.safetensors").write_bytes(pickle.dumps(Payload(d / MARKER)))
    return ["verify", str(d / "run"), str(w["image"]), str(w["image"])], "model.safetensors"


@case("run/last-pt-is-a-pickle")
def _(d, w):
    runs = d / "runs"
    shutil.copytree(w["run"], runs / "small")
    (runs / "small" / "last.pt").write_bytes(pickle.dumps(Payload(d / MARKER)))
    return ["train", "--runs-dir", str(runs), "--name", "small", "--resume", "--epochs", "3"], "last.pt"


@case("run/verify-missing-image")
def _(d, w):
    return ["verify", str(w["run"]), str(d / "ghost.png"), str(w["image"])], "ghost.png"


@case("run/verify-corrupt-image")
def _(d, w):
    (d / "bad.png").write_bytes(b"GIF89a nonsense")
    return ["verify", str(w["run"]), str(d / "bad.png"), str(w["image"])], "bad.png"


@case("run/verify-one-image")
def _(d, w):
    return ["verify", str(w["run"]), str(w["image"])], "two images"


@case("run/verify-pairs-missing")
def _(d, w):
    return ["verify", str(w["run"]), "--pairs", str(d / "pairs.csv")], "pairs.csv"


@case("run/verify-both-forms")
def _(d, w):
    csv = _pairs_csv(d / "p.csv", _good_pairs(d, 4))
    return ["verify", str(w["run"]), str(w["image"]), str(w["image"]), "--pairs", str(csv)], "--pairs"


@case("run/calibrate-data-missing")
def _(d, w):
    return ["calibrate", str(w["run"]), "--data", str(d / "nowhere")], "nowhere"


@case("run/calibrate-rule-bad")
def _(d, w):
    return ["calibrate", str(w["run"]), "--data", str(w["images"]), "--rule", "fpr:x"], "fpr:x"


@case("run/calibrate-pairs-one-label")
def _(d, w):
    rows = [r for r in _good_pairs(d, 40) if r.endswith(",0")]
    return ["calibrate", str(w["run"]), "--data", str(_pairs_csv(d / "p.csv", rows))], "p.csv"


@case("run/resume-nothing")
def _(d, w):
    return ["train", "--runs-dir", str(d / "runs"), "--name", "ghost", "--resume"], "ghost"


@case("run/resume-other-data")
def _(d, w):
    shutil.copytree(w["run"], d / "runs" / "small")
    (d / "runs" / "small" / "last.pt").write_bytes(b"")
    return ["train", "--runs-dir", str(d / "runs"), "--name", "small", "--resume", "--data", "fashion-mnist"], \
        "data.source"  # fmt: skip


@case("run/resume-finished-without-last")
def _(d, w):
    shutil.copytree(w["run"], d / "runs" / "small")
    (d / "runs" / "small" / "last.pt").unlink(missing_ok=True)
    return ["train", "--runs-dir", str(d / "runs"), "--name", "small", "--resume", "--epochs", "1"], "--force"


@case("run/resume-with-config-file")
def _(d, w):
    (d / "c.yaml").write_text("train:\n  lr: 0.1\n")
    return ["train", str(d / "c.yaml"), "--runs-dir", str(d / "runs"), "--resume"], "c.yaml"


@case("run/export-missing")
def _(d, w):
    return ["export", str(d / "nope")], "nope"


@case("run/report-not-a-run")
def _(d, w):
    (d / "folder").mkdir()
    return ["report", str(d / "folder")], "folder"


@case("run/threshold-json-corrupt")
def _(d, w):
    shutil.copytree(w["run"], d / "run")
    (d / "run" / "threshold.json").write_text("{oops")
    return ["verify", str(d / "run"), str(w["image"]), str(w["image"])], "threshold.json"


@case("run/eval-as-test-without-data")
def _(d, w):
    return ["eval", str(w["run"]), "--as-test"], "--data"


# galleries
@case("gallery/build-run-missing")
def _(d, w):
    return ["index", "build", str(d / "norun"), str(w["images"]), "--out", str(d / "g")], "norun"


@case("gallery/build-images-missing")
def _(d, w):
    return ["index", "build", str(w["run"]), str(d / "noimages"), "--out", str(d / "g")], "noimages"


@case("gallery/build-over-existing")
def _(d, w):
    shutil.copytree(w["gallery"], d / "g")
    return ["index", "build", str(w["run"]), str(w["images"]), "--out", str(d / "g")], "--overwrite"


@case("gallery/add-mistyped")
def _(d, w):
    return ["index", "add", str(d / "galery"), str(w["image"])], "galery"


@case("gallery/remove-mistyped")
def _(d, w):
    return ["index", "remove", str(d / "galery"), "0"], "galery"


@case("gallery/remove-unknown-id")
def _(d, w):
    shutil.copytree(w["gallery"], d / "g")
    return ["index", "remove", str(d / "g"), "99999"], "99999"


@case("gallery/info-missing")
def _(d, w):
    return ["index", "info", str(d / "nope")], "nope"


@case("gallery/search-mistyped")
def _(d, w):
    return ["search", str(d / "galery"), str(w["image"])], "galery"


@case("gallery/search-query-missing")
def _(d, w):
    return ["search", str(w["gallery"]), str(d / "ghost.png")], "ghost.png"


@case("gallery/sidecar-corrupt")
def _(d, w):
    shutil.copytree(w["gallery"], d / "g")
    (d / "g" / "gallery.json").write_text("[not a gallery")
    return ["index", "info", str(d / "g")], "gallery.json"


@case("gallery/ivf-too-few-images")
def _(d, w):
    return ["index", "build", str(w["run"]), str(w["images"]), "--out", str(d / "g"), "--index", "ivf"], "nlist"


@case("gallery/list-csv-without-path")
def _(d, w):
    (d / "list.csv").write_text("file,label\na.png,x\n")
    return ["index", "build", str(w["run"]), str(d / "list.csv"), "--out", str(d / "g")], "'path'"


@case("gallery/other-model")
def _(d, w):
    shutil.copytree(w["gallery"], d / "g")
    meta = json.loads((d / "g" / "gallery.json").read_text())
    meta["model_hash"] = "f" * 64
    (d / "g" / "gallery.json").write_text(json.dumps(meta))
    return ["search", str(d / "g"), str(w["image"]), "--run", str(w["run"])], "ffffffffffff"


# other commands
@case("cifar/batch-is-a-pickle-bomb")
def _(d, w):
    (d / "cifar").mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (d / "cifar" / name).write_bytes(pickle.dumps(Payload(d / MARKER)))
    return ["classify", "train", "--data", str(d / "cifar"), "--epochs", "1", "--runs-dir", str(d / "runs")], \
        "data_batch_1"  # fmt: skip


@case("summary/backbone-unknown")
def _(d, w):
    return ["summary", "nope_net"], "nope_net"


@case("summary/blocks-bad")
def _(d, w):
    return ["summary", "AAXQ"], "AAXQ"


@case("summary/input-bad")
def _(d, w):
    return ["summary", "convnet", "--input", "3by32"], "3by32"


@case("study/param-bad")
def _(d, w):
    return ["study", "search", "--param", "train.lr", "--runs-dir", str(d / "runs")], "train.lr"


@case("study/param-key-unknown")
def _(d, w):
    return ["study", "search", "--param", "train.lrr=0.1,0.2", "--runs-dir", str(d / "runs")], "train.lrr"


@case("serve/beyond-loopback-without-token")
def _(d, w):
    return ["serve", str(w["run"]), "--host", "0.0.0.0"], "--token"


# run folders whose files name code, or are damaged (the second round): refused in one line, nothing runs
HUBCONF = """
from pathlib import Path
Path({marker!r}).write_text("ran")

def net(in_channels=1, **kwargs):
    from siamkit.models.registry import create_backbone
    return create_backbone("convnet", in_channels=in_channels, **kwargs)
"""


def _run_copy(d: Path, w: dict[str, Path], **meta_changes: str) -> Path:
    """A copy of the shared run in ``d/run`` with the weights' metadata entries ``meta_changes`` replaced."""
    from safetensors.torch import save_file

    from siamkit.runs.artifact import read_weights

    run = d / "run"
    shutil.copytree(w["run"], run)
    state, meta = read_weights(run / "model.safetensors")
    save_file(state, str(run / "model.safetensors"), metadata={**meta, **meta_changes})
    return run


def _hostile_run(d: Path, w: dict[str, Path]) -> Path:
    """A run whose backbone is the folder's own hubconf.py (torch.hub:load, source local), which makes MARKER."""
    from siamkit.runs.artifact import read_weights

    cfg = json.loads(read_weights(w["run"] / "model.safetensors")[1]["config"])
    run = d / "run"
    cfg["model"]["backbone"] = "torch.hub:load"
    cfg["model"]["backbone_args"] = {**cfg["model"]["backbone_args"], "repo_or_dir": str(run), "model": "net",
                                     "source": "local"}  # fmt: skip
    _run_copy(d, w, config=json.dumps(cfg))
    (run / "hubconf.py").write_text(HUBCONF.format(marker=str(d / MARKER)))
    return run


@case("run/backbone-is-the-folders-hubconf-verify")
def _(d, w):
    return ["verify", str(_hostile_run(d, w)), str(w["image"]), str(w["image"])], "--trust-code"


@case("run/backbone-is-the-folders-hubconf-index-build")
def _(d, w):
    return ["index", "build", str(_hostile_run(d, w)), str(w["image"]), "--out", str(d / "g")], "--trust-code"


@case("run/backbone-is-the-folders-hubconf-search-via-gallery")
def _(d, w):
    run = _hostile_run(d, w)
    shutil.copytree(w["gallery"], d / "g")
    sidecar = json.loads((d / "g" / "gallery.json").read_text())
    (d / "g" / "gallery.json").write_text(json.dumps({**sidecar, "run_dir": str(run)}))
    return ["search", str(d / "g"), str(w["image"])], "--trust-code"


@case("run/loss-names-code")
def _(d, w):
    from siamkit.runs.artifact import read_weights

    cfg = json.loads(read_weights(w["run"] / "model.safetensors")[1]["config"])
    cfg["loss"]["name"] = "os:system"
    return ["verify", str(_run_copy(d, w, config=json.dumps(cfg))), str(w["image"]), str(w["image"])], "loss.name"


@case("run/metadata-config-not-json")
def _(d, w):
    return ["verify", str(_run_copy(d, w, config="{oops")), str(w["image"]), str(w["image"])], "model.safetensors"


@case("run/metadata-input-shape-garbage")
def _(d, w):
    run = _run_copy(d, w, input_shape='["a", 2]')
    return ["verify", str(run), str(w["image"]), str(w["image"])], "model.safetensors"


@case("run/metadata-threshold-nan")
def _(d, w):
    return ["verify", str(_run_copy(d, w, threshold="nan")), str(w["image"]), str(w["image"])], "threshold"


@case("run/calibration-threshold-nan")
def _(d, w):
    run = _run_copy(d, w)
    (run / "threshold.json").write_text('{"threshold": NaN}')
    return ["verify", str(run), str(w["image"]), str(w["image"])], "threshold.json"


@case("verify/threshold-nan")
def _(d, w):
    return ["verify", str(w["run"]), str(w["image"]), str(w["image"]), "--threshold", "nan"], "--threshold"


@case("export/opset-1")
def _(d, w):
    return ["export", str(w["run"]), "--out", str(d / "m.onnx"), "--opset", "1"], "--opset"


@case("export/opset-999")
def _(d, w):
    return ["export", str(w["run"]), "--out", str(d / "m.onnx"), "--opset", "999"], "--opset"


def _damaged_gallery(d: Path, w: dict[str, Path], **sidecar_changes: object) -> Path:
    shutil.copytree(w["gallery"], d / "g")
    sidecar = json.loads((d / "g" / "gallery.json").read_text())
    (d / "g" / "gallery.json").write_text(json.dumps({**sidecar, **sidecar_changes}))
    return d / "g"


@case("gallery/sidecar-dim-not-a-number")
def _(d, w):
    return ["search", str(_damaged_gallery(d, w, dim="abc")), str(w["image"])], "'dim'"


@case("gallery/sidecar-index-not-a-dict")
def _(d, w):
    return ["index", "info", str(_damaged_gallery(d, w, index=5))], "'index'"


@case("gallery/backend-names-code")
def _(d, w):
    return ["search", str(_damaged_gallery(d, w, backend={"kind": "os:system"})), str(w["image"])], "--trust-code"


@case("gallery/database-garbage")
def _(d, w):
    g = _damaged_gallery(d, w)
    (g / "gallery.db").write_bytes(b"not a database" * 64)
    return ["search", str(g), str(w["image"])], "gallery.db"


# the second round's data and config cases (issue 30): IDX, CIFAR-10, CSV, YAML, normalisation, weights, devices
def _idx_file(path: Path, arr: np.ndarray, gz: bool = False, dims: tuple[int, ...] | None = None) -> None:
    shape = arr.shape if dims is None else dims
    payload = bytes([0, 0, 0x08, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + arr.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_gzip(payload) if gz else payload)


def _gzip(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data, mtime=0)


def _idx_set(root: Path, images: np.ndarray, gz: bool = False, dims: tuple[int, ...] | None = None) -> Path:
    ext = ".gz" if gz else ""
    _idx_file(root / f"train-images-idx3-ubyte{ext}", images, gz, dims)
    _idx_file(root / f"train-labels-idx1-ubyte{ext}", np.arange(len(images)) % 10, gz)
    return root


def _idx_train(d: Path, root: Path) -> list[str]:
    return _train(d, "--data", str(root), "--set", "data.layout=idx")


@case("data/idx-one-pixel-images")
def _(d, w):
    return _idx_train(d, _idx_set(d / "idx", np.zeros((20, 1, 1), np.uint8))), "train-images-idx3-ubyte"


@case("data/idx-1x5000-images")
def _(d, w):
    return _idx_train(d, _idx_set(d / "idx", np.zeros((20, 1, 5000), np.uint8))), "5000×1 images"


@case("data/idx-empty-set")
def _(d, w):
    return _idx_train(d, _idx_set(d / "idx", np.zeros((0, 28, 28), np.uint8))), "train-images-idx3-ubyte"


@case("data/idx-empty-set-gz")
def _(d, w):
    return _idx_train(d, _idx_set(d / "idx", np.zeros((0, 28, 28), np.uint8), gz=True)), "holds no images"


@case("data/idx-header-asks-for-exabytes")
def _(d, w):
    root = _idx_set(d / "idx", np.zeros((2, 28, 28), np.uint8), dims=(2**32 - 1, 2**32 - 1, 2**32 - 1))
    return _idx_train(d, root), "train-images-idx3-ubyte"


@case("data/idx-gz-header-asks-for-terabytes")
def _(d, w):
    root = _idx_set(d / "idx", np.zeros((2, 28, 28), np.uint8), gz=True, dims=(1_000_000_000, 28, 28))
    return _idx_train(d, root), "train-images-idx3-ubyte.gz"


@case("data/idx-header-cut-in-the-dims")
def _(d, w):
    (d / "idx").mkdir()
    (d / "idx" / "train-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3]) + b"\x00\x00")
    _idx_file(d / "idx" / "train-labels-idx1-ubyte", np.zeros(2, np.uint8))
    return _idx_train(d, d / "idx"), "truncated IDX header"


class _HugeArray:
    """Unpickles as numpy's ``_reconstruct(ndarray, (10**12,), 'b')``: a 1 TB array from a few bytes."""

    def __reduce__(self):
        return (np.zeros(1).__reduce__()[0], (np.ndarray, (10**12,), b"b"))  # numpy's own _reconstruct


def _cifar(root: Path, bad: dict[str, bytes] | None = None, labels: list[int] | None = None) -> Path:
    """A CIFAR-10 folder of 2-image batches as it ships (protocol-2 pickles, bytes keys); ``bad`` replaces files."""
    from siamkit.data.cifar import TEST_BATCH, TRAIN_BATCHES

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate((*TRAIN_BATCHES, TEST_BATCH)):
        batch = {b"batch_label": name.encode(), b"labels": list(labels or [i % 10, (i + 1) % 10]),
                 b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8)}  # fmt: skip
        (root / name).write_bytes((bad or {}).get(name) or pickle.dumps(batch, protocol=2))
    return root


def _cifar_train(d: Path, root: Path) -> list[str]:
    return _train(d, "--data", str(root))


@case("cifar/labels-outside-0-9")
def _(d, w):
    return _cifar_train(d, _cifar(d / "cifar", labels=[3, 12])), "data_batch_1"


@case("cifar/labels-negative")
def _(d, w):
    return _cifar_train(d, _cifar(d / "cifar", labels=[-1, 2])), "outside 0–9"


@case("cifar/batch-allocates-a-terabyte")
def _(d, w):
    bomb = pickle.dumps({b"data": _HugeArray(), b"labels": [0]}, protocol=2)
    return _cifar_train(d, _cifar(d / "cifar", {"data_batch_3": bomb})), "data_batch_3"


@case("cifar/batch-declares-a-terabyte-bytes8")
def _(d, w):
    bomb = b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"tiny"
    return _cifar_train(d, _cifar(d / "cifar", {"test_batch": bomb})), "test_batch"


@case("cifar/batch-calls-ndarray-directly")
def _(d, w):
    class Direct:
        def __reduce__(self):
            return (np.ndarray, ((10**6, 10**6),))

    bomb = pickle.dumps({b"data": Direct(), b"labels": [0]}, protocol=2)
    return _cifar_train(d, _cifar(d / "cifar", {"data_batch_2": bomb})), "data_batch_2"


@case("cifar/labels-not-numbers")
def _(d, w):
    odd = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": ["cat", "dog"]}, protocol=2)
    return _cifar_train(d, _cifar(d / "cifar", {"data_batch_5": odd})), "data_batch_5"


@case("data/pairs-nul-byte")
def _(d, w):
    rows = _good_pairs(d)
    rows[1] = rows[1].replace(".png", ".png\x00", 1)
    return _train(d, "--data", str(_pairs_csv(d / "p.csv", rows))), "p.csv:3"


@case("data/pairs-huge-field")
def _(d, w):
    rows = _good_pairs(d)
    rows[4] = "x" * 300_000 + "," + rows[4].split(",", 1)[1]
    return _train(d, "--data", str(_pairs_csv(d / "p.csv", rows))), "p.csv:6"


@case("data/pairs-unclosed-quote-runs-to-the-end")
def _(d, w):
    rows = _good_pairs(d)
    rows[2] = '"' + rows[2] + "y" * 200_000
    return _train(d, "--data", str(_pairs_csv(d / "p.csv", rows))), "p.csv"


@case("data/triplets-nul-byte")
def _(d, w):
    (d / "t.csv").write_bytes(b"anchor,positive,negative\na.png,b.png,c\x00.png\n")
    return _train(d, "--data", str(d / "t.csv")), "t.csv:2"


@case("data/labels-csv-huge-field")
def _(d, w):
    (d / "l.csv").write_text("path,label\na.png," + "z" * 200_000 + "\n")
    return _train(d, "--data", str(d / "l.csv"), "--set", "data.layout=labels-csv"), "l.csv:2"


@case("data/labels-csv-nul-in-header")
def _(d, w):
    (d / "l.csv").write_bytes(b"path,la\x00bel\na.png,x\n")
    return _train(d, "--data", str(d / "l.csv")), "l.csv:1"


def _yaml_train(d: Path, text: str | bytes) -> list[str]:
    path = d / "c.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return ["train", str(path), "--runs-dir", str(d / "runs")]


LAUGHS = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 9))


@case("config/file-not-utf8")
def _(d, w):
    return _yaml_train(d, b"train:\n  lr: 0.1\n  name: caf\xe9\n"), "c.yaml"


@case("config/file-5000-deep")
def _(d, w):
    return _yaml_train(d, "model:\n  backbone_args:\n    x: " + "[" * 5000 + "]" * 5000 + "\n"), "c.yaml"


@case("config/file-5000-deep-mappings")
def _(d, w):
    return _yaml_train(d, "loss:\n  params:\n    a: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n"), "nested"


@case("config/file-alias-bomb-in-loss-params")
def _(d, w):
    text = "loss:\n  name: contrastive\n  params:\n    margin: 0.5\n    l0: &l0 [lol]\n" + _indent(LAUGHS, 4)
    return _yaml_train(d, text), "c.yaml"


@case("config/file-alias-bomb-in-backbone-args")
def _(d, w):
    text = "model:\n  backbone_args:\n    l0: &l0 [lol]\n" + _indent(LAUGHS, 4)
    return _yaml_train(d, text), "aliases expand"


@case("config/file-alias-to-itself")
def _(d, w):
    return _yaml_train(d, "model:\n  backbone_args: &a {widths: [8], me: *a}\n"), "c.yaml"


@case("config/override-alias-bomb")
def _(d, w):
    laughs = ", ".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9))
    return _set(d, f"model.backbone_args={{l0: &l0 [lol], {laughs}}}"), "model.backbone_args"


@case("config/override-5000-deep")
def _(d, w):
    return _set(d, "model.backbone_args={x: " + "[" * 5000 + "]" * 5000 + "}"), "model.backbone_args"


def _indent(text: str, n: int = 2) -> str:
    return "\n".join(" " * n + line for line in text.splitlines())


CONFIG_ROUND_2 = {
    "std-tiny": (["data.std=[1e-12]"], "data.std"),
    "std-below-a-grey-level": (["data.std=[0.0001]"], "data.std"),
    "std-one-of-three-tiny": (["data.channels=3", "data.std=[0.2, 1e-9, 0.2]"], "data.std"),
    "std-nan": (["data.std=[.nan]"], "data.std"),
    "std-inf": (["data.std=[.inf]"], "data.std"),
    "device-nonsense": (["train.device=gpu9"], "train.device"),
    "device-cuda-minus-one": (["train.device=cuda:-1"], "train.device"),
    "mean-std-lengths-differ": (["data.channels=3", "data.mean=[0.5, 0.5, 0.5]", "data.std=[0.2]"], "data.std"),
    "margin-negative-in-miner": (["loss.miner=hard-pairs", "loss.miner_params={neg_margin: -1}"], "neg_margin"),
}
if not (getattr(__import__("torch").backends, "mps", None) and __import__("torch").backends.mps.is_available()):
    CONFIG_ROUND_2["device-mps-without-mps"] = (["train.device=mps"], "mps")
for _name, (_assignments, _fragment) in CONFIG_ROUND_2.items():
    CASES[f"config/{_name}"] = (lambda a, f: lambda d, w: (_set(d, *a), f))(_assignments, _fragment)


def _run_with_weights(d: Path, w: dict[str, Path], value: float) -> Path:
    """A copy of the shared run whose first floating tensor holds ``value`` (NaN, inf) at one entry."""
    from safetensors.torch import save_file

    from siamkit.runs.artifact import read_weights

    run = d / "run"
    shutil.copytree(w["run"], run)
    state, meta = read_weights(run / "model.safetensors")
    name = next(k for k, t in state.items() if t.is_floating_point() and t.numel() > 1)
    state[name] = state[name].clone()
    state[name].view(-1)[0] = value
    save_file(state, str(run / "model.safetensors"), metadata=meta)
    return run


@case("run/weights-hold-nan-verify")
def _(d, w):
    return ["verify", str(_run_with_weights(d, w, float("nan"))), str(w["image"]), str(w["image"])], \
        "model.safetensors"  # fmt: skip


@case("run/weights-hold-inf-index-build")
def _(d, w):
    run = _run_with_weights(d, w, float("inf"))
    return ["index", "build", str(run), str(w["image"]), "--out", str(d / "g")], "NaN or infinite"


@case("run/weights-hold-nan-eval")
def _(d, w):
    return ["eval", str(_run_with_weights(d, w, float("-inf")))], "model.safetensors"


@case("run/metadata-std-zero")
def _(d, w):
    from siamkit.runs.artifact import read_weights

    cfg = json.loads(read_weights(w["run"] / "model.safetensors")[1]["config"])
    cfg["data"]["std"] = [0.0]
    return ["verify", str(_run_copy(d, w, config=json.dumps(cfg))), str(w["image"]), str(w["image"])], "data.std"


@pytest.fixture(scope="module")
def world(small_run, digits_images, tmp_path_factory):
    from siamkit.index.ops import build

    root = tmp_path_factory.mktemp("corpus_world")
    gallery = root / "gallery"
    build(str(small_run), [str(digits_images / "0"), str(digits_images / "1")], str(gallery))
    return {"run": small_run, "images": digits_images, "image": digits_images / "0" / "000.png", "gallery": gallery}


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")}


Runner = Callable[[list[str]], tuple[int, str, str]]
"""Runs the CLI on argv in-process: (exit code, stdout, stderr)."""


def classify_case(name: str, d: Path, world: dict[str, Path], run: Runner) -> tuple[str, str]:
    """Build corpus case ``name`` in the empty folder ``d``, run it, and say how it ended: ``clean`` (exit 2, one
    ``siamkit: error:`` line holding the case's fragment, nothing left behind), or what went wrong first —
    ``security`` (a payload's marker file appeared), ``traceback``, ``silent`` (exit 0: accepted), ``left_behind``
    (the case folder or the shared run changed), ``messy`` (another exit code, several lines, or a line without
    the fragment). The second item says why."""
    argv, fragment = CASES[name](d, world)
    before, run_before = _snapshot(d), _snapshot(world["run"])
    try:
        code, out, err = run(argv)
    except Exception as exc:  # an exception out of main is a traceback the user would see
        import traceback

        code, out, err = -1, "", "".join(traceback.format_exception(exc))
    lines = err.strip().splitlines()
    if (d / MARKER).exists():
        return "security", "a payload ran: the marker file exists"
    if "Traceback" in err or "Traceback" in out:
        return "traceback", err[-2000:]
    if code == 0:
        return "silent", f"exit 0, accepted: {out[-300:]!r}"
    after = _snapshot(d)
    if after != before or _snapshot(world["run"]) != run_before:
        changed = sorted(set(after) ^ set(before)) or ["the shared run"]
        return "left_behind", "left behind: " + ", ".join(changed)
    if code != 2 or len(lines) != 1 or not lines[0].startswith("siamkit: error: ") or fragment not in lines[0]:
        return "messy", f"exit {code}, expected one line holding {fragment!r}: {err.strip()!r}"
    return "clean", lines[0]


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_and_leaves_nothing(name, world, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SIAMKIT_TOKEN", raising=False)

    def run(argv: list[str]) -> tuple[int, str, str]:
        code = main(argv)
        out, err = capsys.readouterr()
        return code, out, err

    outcome, detail = classify_case(name, tmp_path, world, run)
    assert outcome == "clean", (outcome, detail)


def test_the_corpus_is_large():
    assert len(CASES) >= 100


# ---- inputs handled correctly: accepted and right (the other side of every refusal above) -----------------------
Check = Callable[[int, str, str, Path], str | None]
"""(exit code, stdout, stderr, case folder) → None when the output is right, else what is wrong."""
HandledBuilder = Callable[[Path, dict[str, Path]], tuple[list[str], Check]]
HANDLED: dict[str, HandledBuilder] = {}


def handled(name: str) -> Callable[[HandledBuilder], HandledBuilder]:
    def register(fn: HandledBuilder) -> HandledBuilder:
        HANDLED[name] = fn
        return fn

    return register


def _trained(run: str) -> Check:
    def check(code: int, out: str, err: str, d: Path) -> str | None:
        if code != 0:
            return f"exit {code}: {err.strip()[-300:]!r}"
        return None if (d / "runs" / run / "model.safetensors").is_file() else f"no runs/{run}/model.safetensors"

    return check


@handled("config/ordinary-aliases-train")
def _(d, w):
    (d / "c.yaml").write_text("train:\n  epochs: 1\n  lr: &lr 0.002\n  backbone_lr: *lr\n  seed: 0\n"
                              "data:\n  limit: 300\n")  # fmt: skip
    return ["train", str(d / "c.yaml"), "--runs-dir", str(d / "runs"), "--name", "a", "-q"], _trained("a")


@handled("data/idx-8-px-images-train")
def _(d, w):
    images = np.random.default_rng(0).integers(0, 256, (60, 8, 8), dtype=np.uint8)
    root = _idx_set(d / "idx", images)
    return [*_idx_train(d, root), "--name", "i", "-q"], _trained("i")


@handled("data/pairs-csv-with-bom-train")
def _(d, w):
    csv = _pairs_csv(d / "p.csv", _good_pairs(d, 60))
    csv.write_bytes(b"\xef\xbb\xbf" + csv.read_bytes())
    return [*_train(d, "--data", str(csv)), "--name", "p", "-q"], _trained("p")


@handled("config/small-valid-std-trains")
def _(d, w):
    return [*_set(d, "data.std=[0.01]", "data.limit=300"), "--name", "s", "-q"], _trained("s")


@handled("run/verify-an-image-against-itself")
def _(d, w):
    def check(code: int, out: str, err: str, d: Path) -> str | None:
        return None if code == 0 and "SAME" in out.upper() else f"exit {code}: {out.strip()!r} {err.strip()!r}"

    return ["verify", str(w["run"]), str(w["image"]), str(w["image"])], check


def classify_handled(name: str, d: Path, world: dict[str, Path], run: Runner) -> tuple[str, str]:
    """Run the handled case ``name`` in ``d``: ``handled`` (exit 0 and its check passes), else ``traceback``,
    ``security`` or ``wrong`` (refused, or accepted with a wrong output), with why."""
    argv, check = HANDLED[name](d, world)
    run_before = _snapshot(world["run"])
    try:
        code, out, err = run(argv)
    except Exception as exc:
        import traceback

        code, out, err = -1, "", "".join(traceback.format_exception(exc))
    if (d / MARKER).exists():
        return "security", "a payload ran"
    if "Traceback" in err or "Traceback" in out:
        return "traceback", err[-2000:]
    if _snapshot(world["run"]) != run_before:
        return "left_behind", "the shared run changed"
    problem = check(code, out, err, d)
    return ("wrong", problem) if problem else ("handled", "")


@pytest.mark.parametrize("name", sorted(HANDLED))
def test_good_input_next_to_the_bad_is_handled(name, world, tmp_path, capsys):
    def run(argv: list[str]) -> tuple[int, str, str]:
        code = main(argv)
        out, err = capsys.readouterr()
        return code, out, err

    outcome, detail = classify_handled(name, tmp_path, world, run)
    assert outcome == "handled", (outcome, detail)


# ---- refuse before working: a config error is found before any data is read -----------------------------------
NEEDS_THE_DATA = {"config/class-list-unknown", "config/ssl-without-augmentation"}
"""Config cases whose error depends on the data: a class name the folder does not have; augmentation that
``recipe: auto`` turns on for an identity split (which the split decides)."""


def _early_cases() -> list[str]:
    return [name for name in sorted(CASES) if name.startswith("config/") and name not in NEEDS_THE_DATA]


@pytest.mark.parametrize("name", _early_cases())
def test_config_errors_are_found_before_any_data_is_read(name, tmp_path, capsys, monkeypatch):
    import siamkit.plan as plan

    read: list[str] = []
    monkeypatch.setattr(plan, "load_dataset", lambda cfg: read.append(cfg.source) or pytest.fail("data read"))
    argv, fragment = CASES[name](tmp_path, {})
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and not read, (code, err)


# ---- HTTP ----------------------------------------------------------------------------------------------------------
HTTP_CASES: dict[str, tuple[str, str, dict, int, str]] = {}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def http_client(world: dict[str, Path], folder: Path) -> TestClient:
    """A test client of the service over a copy (in ``folder``) of the world's gallery, token ``tok``."""
    from siamkit.index import Gallery
    from siamkit.runs.embedders import TorchEmbedder
    from siamkit.serve.app import create_app
    from siamkit.serve.guard import Guard, default_hosts
    from siamkit.serve.uploads import UploadLimits

    g = folder / "g"
    shutil.copytree(world["gallery"], g)
    app = create_app(TorchEmbedder(world["run"]), Gallery.open(g), limits=UploadLimits(max_request_bytes=300_000),
                     guard=Guard(default_hosts("127.0.0.1"), token="tok"))  # fmt: skip
    return TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False)


@pytest.fixture(scope="module")
def http(world, tmp_path_factory):
    with http_client(world, tmp_path_factory.mktemp("http_corpus")) as c:
        yield c


def _requests(image: bytes) -> dict[str, tuple[str, str, dict, int, str]]:
    text = io.BytesIO(b"hello").getvalue()
    return {
        "verify-missing-field": ("POST", "/verify", {"files": {"image_a": image}}, 422, "image_b"),
        "verify-not-an-image": ("POST", "/verify", {"files": {"image_a": text, "image_b": image}}, 415, "image_a"),
        "verify-bomb": ("POST", "/verify", {"files": {"image_a": _bomb_png(), "image_b": image}}, 422, "pixels"),
        "verify-too-large": ("POST", "/verify", {"files": {"image_a": b"x" * 400_000, "image_b": image}}, 413, "limit"),
        "verify-deep-json": (
            "POST",
            "/verify",
            {"content": "[" * 50_000 + "]" * 50_000, "headers": {"content-type": "application/json"}},
            422,
            "nested",
        ),
        "verify-bad-base64": ("POST", "/verify", {"json": {"image_a": "%%%", "image_b": "%%%"}}, 422, "base64"),
        "verify-path-not-bytes": (
            "POST",
            "/verify",
            {"json": {"image_a": "/etc/passwd", "image_b": "x"}},
            422,
            "base64",
        ),
        "verify-json-not-object": ("POST", "/verify", {"json": [1, 2]}, 422, "object"),
        "verify-wrong-content-type": (
            "POST",
            "/verify",
            {"content": "x", "headers": {"content-type": "text/plain"}},
            415,
            "multipart",
        ),
        "verify-invalid-json": (
            "POST",
            "/verify",
            {"content": "{x", "headers": {"content-type": "application/json"}},
            422,
            "JSON",
        ),
        "embed-too-many": ("POST", "/embed", {"json": {"image": [_b64(image)] * 65}}, 413, "64 images"),
        "search-k-zero": ("POST", "/search", {"files": {"image": image}, "data": {"k": "0"}}, 422, "k must"),
        "search-k-word": ("POST", "/search", {"files": {"image": image}, "data": {"k": "many"}}, 422, "k must"),
        "search-k-huge": ("POST", "/search", {"files": {"image": image}, "data": {"k": "100000"}}, 422, "k must"),
        "host-rebinding": ("GET", "/gallery/0/image", {"headers": {"Host": "attacker.example"}}, 400, "host"),
        "cross-origin-add": (
            "POST",
            "/gallery",
            {"files": {"image": image}, "headers": {"Origin": "https://evil.example", "Authorization": "Bearer tok"}},
            403,
            "cross-origin",
        ),
        "add-without-token": ("POST", "/gallery", {"files": {"image": image}}, 401, "token"),
        "add-wrong-token": (
            "POST",
            "/gallery",
            {"files": {"image": image}, "headers": {"Authorization": "Bearer nope"}},
            401,
            "token",
        ),
        "delete-without-token": ("DELETE", "/gallery/0", {}, 401, "token"),
        "delete-unknown": ("DELETE", "/gallery/99999", {"headers": {"Authorization": "Bearer tok"}}, 404, "99999"),
        "image-unknown": ("GET", "/gallery/99999/image", {}, 404, "99999"),
        "list-offset-negative": ("GET", "/gallery?offset=-1", {}, 422, "offset"),
        "list-limit-huge": ("GET", "/gallery?limit=100000", {}, 422, "limit"),
        "add-label-not-text": (
            "POST",
            "/gallery",
            {"json": {"image": _b64(image), "label": 5}, "headers": {"Authorization": "Bearer tok"}},
            422,
            "label",
        ),
        "image-id-not-int": ("GET", "/gallery/abc/image", {}, 422, "item_id"),
    }


def classify_http(client: TestClient, world: dict[str, Path]) -> dict[str, tuple[str, str]]:
    """Send every HTTP case; each ends ``clean`` (its status and a one-line ``detail`` holding its fragment, no
    traceback or server path, the gallery's size unchanged) or ``traceback`` / ``left_behind`` / ``messy``."""
    image = world["image"].read_bytes()
    results: dict[str, tuple[str, str]] = {}
    size = client.get("/health").json()["gallery"]["size"]
    for name, (method, url, kwargs, status, fragment) in _requests(image).items():
        r = client.request(method, url, **kwargs)
        try:
            detail = r.json().get("detail")
        except ValueError:
            detail = None
        if "Traceback" in r.text or r.status_code >= 500:
            results[name] = ("traceback", f"{r.status_code}: {r.text[:300]}")
        elif client.get("/health").json()["gallery"]["size"] != size:
            results[name] = ("left_behind", "the gallery's size changed")
        elif r.status_code != status or not isinstance(detail, str) or "\n" in detail or fragment not in detail \
                or str(world["run"]) in r.text:  # fmt: skip
            results[name] = ("messy", f"{r.status_code} (expected {status}): {r.text[:300]}")
        else:
            results[name] = ("clean", detail)
    return results


def test_http_corpus(http, world):
    results = classify_http(http, world)
    assert {name: r for name, r in results.items() if r[0] != "clean"} == {}
    assert len(CASES) + len(results) >= 125
