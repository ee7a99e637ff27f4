"""kill -9 in the middle of work: a training run resumes having lost at most the epoch that was running, with a
consistent history; a gallery edited by processes killed at random moments always opens, with unique ids and an
index that matches its items."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from siamkit.index import Gallery
from siamkit.index.ops import build
from siamkit.training.checkpoint import load_state

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _siamkit(*argv: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "siamkit", *argv], env=ENV, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, **kw)  # fmt: skip


def test_training_killed_mid_run_resumes_losing_at_most_the_running_epoch(tmp_path):
    argv = ["train", "--runs-dir", str(tmp_path), "--name", "k", "--epochs", "12", "--set", "train.patience=0",
            "--set", "train.progress=false", "--set", "eval.tsne_points=0"]  # fmt: skip
    proc = _siamkit(*argv)
    logged = 0
    assert proc.stderr is not None
    for line in proc.stderr:  # the log says "epoch N: train …" as each epoch ends
        if line.startswith("epoch ") and ": train" in line:
            logged = int(line.split()[1].rstrip(":"))
            if logged >= 3:
                proc.send_signal(signal.SIGKILL)
                break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and logged >= 3
    state = load_state(tmp_path / "k" / "last.pt")
    assert logged - 1 <= state["epoch"] <= logged  # at most the epoch being written is lost
    assert [r["epoch"] for r in state["history"]] == list(range(1, state["epoch"] + 1))
    assert not (tmp_path / "k" / "metrics.json").exists()  # not taken for a finished run
    done = subprocess.run([sys.executable, "-m", "siamkit", "train", *argv[1:], "--resume", "-q"], env=ENV,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = list(csv.DictReader((tmp_path / "k" / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 13))  # every epoch once, in order
    assert (tmp_path / "k" / "metrics.json").is_file()


def _check_gallery(directory: Path) -> int:
    g = Gallery.open(directory)
    ids = list(g.items)
    assert len(ids) == len(set(ids)) and g.vector_count == len(ids)
    assert all(i < g.meta["next_id"] for i in ids)
    return len(ids)


def test_gallery_edits_killed_at_random_moments_leave_a_consistent_gallery(small_run, digits_images, tmp_path):
    gallery = tmp_path / "g"
    build(str(small_run), [str(digits_images / "0")], str(gallery))
    rng = np.random.default_rng(0)
    sizes = [_check_gallery(gallery)]
    images = [str(digits_images / str(d)) for d in range(1, 10)]
    for round_ in range(4):
        proc = _siamkit("index", "add", str(gallery), images[round_ % len(images)], "-q")
        time.sleep(float(rng.uniform(1.0, 3.5)))  # start-up is ~2 s: some kills land before, some during, after
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        sizes.append(_check_gallery(gallery))
        if round_ % 2:  # and a removal, killed too
            proc = _siamkit("index", "remove", str(gallery), str(min(Gallery.open(gallery).items)), "-q")
            time.sleep(float(rng.uniform(1.0, 3.0)))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            sizes.append(_check_gallery(gallery))
    # an edit after all that still works and gets a fresh id
    done = subprocess.run([sys.executable, "-m", "siamkit", "index", "add", str(gallery), str(digits_images / "9"),
                           "-q", "--format", "json"], env=ENV, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    final = _check_gallery(gallery)
    assert final > sizes[0]
