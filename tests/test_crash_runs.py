"""A crash or a power cut never costs a run's artefacts: ``calibrate`` (in place and into ``--out``) and ``export``
run in a child process that ``os._exit``s just before its k-th write step (an ``os.replace``/``os.rename``) — and
once after the last — and after each cut the run loads and decides with its old threshold or its new one, and its
ONNX file is absent, the old one, or the new one whole. The gallery operations are in ``test_crash_matrix``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import siamkit

CUT = 77
DONE = 100

CHILD = r"""
import os, sys
cut_at, op, run, data, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] or None
count = [0]
def wrap(fn):
    def cut_first(*args, **kwargs):
        count[0] += 1
        if count[0] == cut_at:
            os._exit(77)
        return fn(*args, **kwargs)
    return cut_first
os.replace, os.rename = wrap(os.replace), wrap(os.rename)
if op == "calibrate":
    from siamkit.calibration import calibrate_run
    calibrate_run(run, data, "fpr:0.05", n_pairs=200, out=out)
else:
    from siamkit.runs.export import export_onnx
    export_onnx(run)
os._exit(100 + count[0])
"""


def _cut(cut_at: int, op: str, run: Path, data: Path, out: Path | None = None) -> int:
    argv = [sys.executable, "-c", CHILD, str(cut_at), op, str(run), str(data), str(out or "")]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300).returncode


def _threshold(run: Path) -> float | None:
    return siamkit.load(run).threshold


def _each_cut(tmp_path: Path, small_run: Path, op: str, check) -> list[int]:
    steps, cut, tried = None, 1, []
    while steps is None or cut <= steps + 1:
        run = tmp_path / f"{op}-{cut}" / "run"
        shutil.copytree(small_run, run, ignore=shutil.ignore_patterns("model.onnx", "eval*"))
        code = check(run, cut)
        assert code == CUT or code >= DONE, f"{op}: the child failed ({code}) at cut {cut}"
        if code >= DONE:
            steps = code - DONE
        tried.append(cut)
        cut += 1
    assert steps is not None and steps >= 1
    return tried


@pytest.mark.parametrize("into", ["in place", "--out"])
def test_a_cut_calibrate_leaves_the_old_threshold_or_the_new(small_run, digits_images, tmp_path, into):
    old = _threshold(small_run)
    seen = []

    def check(run: Path, cut: int) -> int:
        out = run.parent / "calibrated" if into == "--out" else None
        code = _cut(cut, "calibrate", run, digits_images, out)
        if out is not None:
            assert _threshold(run) == old  # the source run is never touched
            if not (out / "model.safetensors").exists():
                assert not out.exists() or not any(out.iterdir()), f"cut {cut}: a part of a run at --out"
                seen.append(None)
                return code
        target = out if out is not None else run
        now = _threshold(target)  # the run loads and decides
        if (target / "threshold.json").exists():
            entry = json.loads((target / "threshold.json").read_text())  # whole
            assert now == pytest.approx(entry["threshold"]) and now != old
        else:
            assert now == old
        seen.append(now)
        return code

    tried = _each_cut(tmp_path, small_run, f"calibrate-{into.strip('-')}", check)
    assert len(tried) >= 2 and seen[-1] not in (None, old)  # the last run was not cut: the new threshold
    assert len({s for s in seen if s not in (None, old)}) == 1  # one new threshold, whatever the cut


def test_a_cut_export_leaves_no_onnx_or_a_whole_one(small_run, digits_images, tmp_path):
    files = sorted(digits_images.rglob("*.png"))[:4]
    want = siamkit.load(small_run).embed(files)

    def check(run: Path, cut: int) -> int:
        code = _cut(cut, "export", run, digits_images)
        onnx = run / "model.onnx"
        assert not list(run.glob(".model.onnx.*.tmp")) or code == CUT  # a temp only where the cut fell
        if onnx.exists():
            got = siamkit.load(run, backend="onnx").embed(files)
            assert abs(got - want).max() <= 1e-4, f"cut {cut}: a damaged model.onnx"
        return code

    assert len(_each_cut(tmp_path, small_run, "export", check)) >= 2
