"""Stale artefacts: an ONNX export records the weights' hash and the threshold it was made from; once the run's
weights change (re-trained, ``--resume``d) ``--backend onnx`` refuses it in one line naming ``siamkit export``, and
after a calibration it decides at the calibrated threshold. A cut export or calibration leaves the previous file
working, or the new one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import save_file
from test_crash_matrix import CUT, DONE, _run_cut

import siamkit
from siamkit.cli import main
from siamkit.errors import CheckpointError
from siamkit.runs.artifact import CALIBRATION, WEIGHTS, read_weights
from siamkit.runs.embedders import ONNX_FILE


@pytest.fixture(scope="module")
def exported_run(small_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("stale") / "run"
    shutil.copytree(small_run, run)
    assert main(["export", str(run), "-q"]) == 0
    return run


def _retrain(run: Path) -> None:
    """What ``--resume`` does to the files: new weights (and a new training threshold) in ``model.safetensors``."""
    state, meta = read_weights(run / WEIGHTS)
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, str(run / WEIGHTS), metadata={**meta, "threshold": "0.123"})


def test_an_export_older_than_the_weights_is_refused(exported_run, digits_images, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    image = str(next(digits_images.glob("*/*.png")))
    assert siamkit.load(run, backend="onnx").threshold == siamkit.load(run).threshold
    _retrain(run)
    with pytest.raises(CheckpointError, match="siamkit export"):
        siamkit.load(run, backend="onnx")
    capsys.readouterr()
    assert main(["verify", str(run), image, image, "--backend", "onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"siamkit export {run}" in err
    assert main(["export", str(run), "-q"]) == 0  # re-made: accepted, at the new threshold
    assert siamkit.load(run, backend="onnx").threshold == pytest.approx(0.123)


def test_a_calibration_after_the_export_is_what_onnx_decides_at(exported_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    (run / CALIBRATION).write_text(json.dumps({"threshold": 0.75}))
    assert siamkit.load(run, backend="onnx").threshold == 0.75


@pytest.mark.slow  # a forked export per cut: ~10 s
def test_a_cut_export_leaves_the_previous_export_working(exported_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    before = (run / ONNX_FILE).read_bytes()
    from siamkit.runs.export import export_onnx

    cut = 1
    while True:
        code = _run_cut(lambda: export_onnx(run), cut)
        assert code == CUT or code >= DONE, code
        model = siamkit.load(run, backend="onnx")  # the old file, or the new one: never neither
        assert model.embed(_zeros(model)).shape == (model.embedding_dim,)
        assert not list(run.glob(".*.tmp")) or code == CUT
        if code >= DONE:
            break
        assert (run / ONNX_FILE).read_bytes() == before
        cut += 1
    assert cut >= 2


@pytest.mark.slow  # a forked calibration per cut: ~10 s
def test_a_cut_calibration_leaves_the_previous_threshold(small_run, digits_images, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    before = siamkit.load(run).threshold
    argv = ["calibrate", str(run), "--data", str(digits_images), "--fpr", "0.1", "-q"]
    cut, seen = 1, []
    while True:
        code = _run_cut(lambda: main(argv), cut)
        assert code == CUT or code >= DONE, code
        seen.append(siamkit.load(run).threshold)  # reads threshold.json: whole, or absent
        if code >= DONE:
            break
        cut += 1
    assert (run / CALIBRATION).is_file() and cut >= 2
    assert set(seen) <= {before, seen[-1]} and seen[0] == before  # the previous threshold, or the new one


def _zeros(model):
    import numpy as np

    c, h, w = model.input_shape
    return np.zeros((h, w), np.uint8) if c == 1 else np.zeros((h, w, c), np.uint8)
