"""Code in a run folder never runs unasked: a run whose saved config names a plugin (``package.module:Object``)
is refused in one line by every way of opening it, unless the user passes ``--trust-code`` / ``trust_code=True``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import save_file

import siamkit
from siamkit.cli import main
from siamkit.errors import ConfigError
from siamkit.runs.artifact import WEIGHTS, read_weights

HUBCONF = """
from pathlib import Path
Path(__file__).with_name("RAN").write_text("imported")  # the marker: this module's code ran

def net(in_channels=1, **kwargs):
    from siamkit.models.registry import create_backbone
    return create_backbone("{backbone}", in_channels=in_channels, **kwargs)
"""


def hostile_run(small_run: Path, tmp_path: Path) -> Path:
    """A copy of ``small_run`` whose saved config loads its backbone through the folder's own ``hubconf.py``
    (``torch.hub:load`` with ``source: local``), which writes ``RAN`` into the folder when imported."""
    run = tmp_path / "hostile"
    shutil.copytree(small_run, run)
    state, meta = read_weights(run / WEIGHTS)
    cfg = json.loads(meta["config"])
    (run / "hubconf.py").write_text(HUBCONF.format(backbone=cfg["model"]["backbone"]))
    cfg["model"]["backbone_args"] = {**cfg["model"]["backbone_args"], "repo_or_dir": str(run), "model": "net",
                                     "source": "local"}  # fmt: skip
    cfg["model"]["backbone"] = "torch.hub:load"
    save_file(state, str(run / WEIGHTS), metadata={**meta, "config": json.dumps(cfg)})
    return run


def _one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_loading_a_run_that_names_code_is_refused_and_runs_nothing(small_run, tmp_path):
    run = hostile_run(small_run, tmp_path)
    with pytest.raises(ConfigError) as err:
        siamkit.load(run)
    message = _one_line(str(err.value))
    assert "model.backbone" in message and "torch.hub:load" in message and "--trust-code" in message
    assert "trust_code=True" in message
    assert not (run / "RAN").exists()


def test_the_cli_refuses_it_in_one_line_with_exit_2(small_run, digits_images, tmp_path, capsys):
    run = hostile_run(small_run, tmp_path)
    image = str(next(digits_images.glob("*/*.png")))
    assert main(["verify", str(run), image, image]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "--trust-code" in line and "model.backbone" in line
    assert main(["index", "build", str(run), str(digits_images), "--out", str(tmp_path / "g")]) == 2
    assert "--trust-code" in _one_line(capsys.readouterr().err)
    assert not (run / "RAN").exists() and not (tmp_path / "g").exists()


def test_a_gallery_whose_run_names_code_is_refused_on_search(small_run, digits_images, tmp_path, capsys):
    gallery = tmp_path / "g"
    assert main(["index", "build", str(small_run), str(digits_images / "0"), "--out", str(gallery), "-q"]) == 0
    run = hostile_run(small_run, tmp_path)
    sidecar = json.loads((gallery / "gallery.json").read_text())
    (gallery / "gallery.json").write_text(json.dumps({**sidecar, "run_dir": str(run)}))
    image = str(next(digits_images.glob("0/*.png")))
    assert main(["search", str(gallery), image]) == 2
    assert "--trust-code" in _one_line(capsys.readouterr().err)
    assert not (run / "RAN").exists()


def test_a_gallery_backend_that_names_code_is_refused(small_run, digits_images, tmp_path):
    from siamkit.index.gallery import Gallery

    gallery = tmp_path / "g"
    assert main(["index", "build", str(small_run), str(digits_images / "0"), "--out", str(gallery), "-q"]) == 0
    sidecar = json.loads((gallery / "gallery.json").read_text())
    (gallery / "gallery.json").write_text(json.dumps({**sidecar, "backend": {"kind": "os:system"}}))
    with pytest.raises(ConfigError, match="trust-code"):
        Gallery.open(gallery)


def test_with_trust_code_the_run_opens_and_its_code_runs(small_run, digits_images, tmp_path, capsys):
    run = hostile_run(small_run, tmp_path)
    image = next(digits_images.glob("*/*.png"))
    model = siamkit.load(run, trust_code=True)
    assert (run / "RAN").exists()
    reference = siamkit.load(small_run)
    assert model.embed(image) == pytest.approx(reference.embed(image), abs=1e-5)
    assert main(["verify", str(run), str(image), str(image), "--trust-code", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["same"] is True


def test_eval_and_export_refuse_it_and_run_it_with_trust_code(small_run, tmp_path, capsys):
    run = hostile_run(small_run, tmp_path)
    for argv in (["eval", str(run), "--set", "eval.n_pairs=200", "--set", "eval.episodes=0"],
                 ["export", str(run), "--out", str(tmp_path / "m.onnx")]):  # fmt: skip
        assert main(argv) == 2
        assert "--trust-code" in _one_line(capsys.readouterr().err) and not (run / "RAN").exists()
    assert main(["export", str(run), "--out", str(tmp_path / "m.onnx"), "--trust-code", "-q"]) == 0
    assert (run / "RAN").exists() and (tmp_path / "m.onnx").stat().st_size > 1000
