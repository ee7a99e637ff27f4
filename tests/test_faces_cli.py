"""The pretrained name ``dlib-face`` wherever a run folder works — ``verify``, ``siamkit.load``, ``index build`` /
``search``, ``calibrate --out``, the service, ONNX export, ``eval --as-test`` and fine-tuning — on the sample
folder of ``siamkit.data.face_samples`` (photos that installed packages ship, each person under small warps)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

if not (os.environ.get("STRICT") == "1" or os.environ.get("CI")):  # CI installs the faces extra: never skip there
    pytest.importorskip("dlib", reason="the faces extra (pip install -e '.[faces]') is part of dev")
    pytest.importorskip("skimage")

import siamkit
from siamkit.cli import main
from siamkit.data.face_samples import write_sample_people
from siamkit.errors import CheckpointError, DataError
from siamkit.runs import load as load_run
from siamkit.runs import named

README = Path(__file__).resolve().parents[1] / "README.md"
FAST_EVAL = ["--set", "eval.n_pairs=50", "--set", "eval.episodes=0", "--set", "eval.tsne_points=0"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """``demo/`` with grace_hopper.jpg, grace_flipped.jpg, astronaut.png and people/<8 people>/<3 images>."""
    out = tmp_path_factory.mktemp("faces") / "demo"
    write_sample_people(out, lfw=6, per_person=3)
    return out


@pytest.fixture(scope="module")
def model():
    return siamkit.load("dlib-face")


def run_json(capsys, argv: list[str]) -> dict:
    capsys.readouterr()
    assert main([*argv, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_the_name_is_a_run_folder_made_once(model):
    folder = Path(model.run_dir)
    assert {p.name for p in folder.iterdir()} >= {"config.yaml", "model.safetensors", "threshold.json",
                                                   "pretrained.json"}  # fmt: skip
    assert model.threshold == 0.6 and model.distance == "euclidean" and model.faces == "align"
    assert model.input_shape == (3, 150, 150) and model.embedding_dim == 128
    assert json.loads((folder / "threshold.json").read_text())["rule"] == named.PUBLISHED_RULE
    assert named.materialise("dlib-face") == folder  # found again, not rebuilt
    assert not list(folder.parent.glob(".dlib-face-*"))  # no temp folder left behind


def test_an_existing_folder_wins_over_the_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dlib-face").mkdir()
    assert not named.is_pretrained_name("dlib-face")
    with pytest.raises(CheckpointError, match="weights file not found"):
        siamkit.load("dlib-face")


def test_verify_same_and_different_with_distances(demo, capsys):
    same = run_json(capsys, ["verify", "dlib-face", str(demo / "grace_hopper.jpg"), str(demo / "grace_flipped.jpg")])
    assert same["same"] is True and same["distance"] < 0.6 and same["threshold"] == 0.6
    other = run_json(capsys, ["verify", "dlib-face", str(demo / "grace_hopper.jpg"), str(demo / "astronaut.png")])
    assert other["same"] is False and other["distance"] > 0.6


def test_paths_pil_images_and_arrays_are_aligned_alike(model, demo):
    path = demo / "astronaut.png"
    pil = Image.open(path)
    arr = np.asarray(pil.convert("RGB"))
    e = model.embed([path, pil, arr])
    assert np.abs(e - e[0]).max() < 1e-5
    unaligned = load_run("dlib-face", faces="off").embed(path)
    assert np.linalg.norm(unaligned - e[0]) > 0.1  # the whole photo squeezed to 150×150 is another input


def test_no_face_is_one_line_naming_the_file(demo, tmp_path, capsys):
    wall = tmp_path / "wall.png"
    Image.new("RGB", (240, 240), (90, 100, 110)).save(wall)
    assert main(["verify", "dlib-face", str(demo / "astronaut.png"), str(wall)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("siamkit: error: ") and "wall.png: no face found" in err and "\n" not in err


def test_index_build_and_search_find_the_same_person(demo, tmp_path, capsys):
    g = tmp_path / "gallery"
    built = run_json(capsys, ["index", "build", "dlib-face", str(demo / "people"), "--out", str(g)])
    assert built["size"] == 24
    r = run_json(capsys, ["search", str(g), str(demo / "grace_flipped.jpg"), "-k", "3"])
    hits = r["results"][0]["neighbours"]
    assert [h["label"] for h in hits] == ["grace_hopper"] * 3 and hits[0]["distance"] < 0.6


def test_calibrate_writes_a_new_run_and_refuses_the_shared_one(demo, tmp_path, capsys):
    out = tmp_path / "mine"
    r = run_json(capsys, ["calibrate", "dlib-face", "--data", str(demo / "people"), "--fpr", "0.01", "--out", str(out)])
    assert r["run_dir"] == str(out) and r["previous_threshold"] == 0.6 and r["false_accept_rate"] <= 0.01
    record = json.loads((out / "threshold.json").read_text())
    assert record["history"][0]["rule"] == named.PUBLISHED_RULE
    assert siamkit.load(out).threshold == pytest.approx(r["threshold"])
    assert siamkit.load("dlib-face").threshold == 0.6  # the shared run is unchanged
    assert main(["calibrate", "dlib-face", "--data", str(demo / "people"), "--fpr", "0.01"]) == 2
    assert "give --out RUN" in capsys.readouterr().err
    assert main(["calibrate", "dlib-face", "--data", str(demo / "people"), "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_service_aligns_uploads(model, demo, tmp_path):
    from fastapi.testclient import TestClient

    from siamkit.serve.app import create_app

    wall = tmp_path / "wall.png"
    Image.new("RGB", (200, 200), (200, 200, 200)).save(wall)
    with TestClient(create_app(model), raise_server_exceptions=False) as client:
        files = {
            "image_a": (demo / "grace_hopper.jpg").read_bytes(),
            "image_b": (demo / "grace_flipped.jpg").read_bytes(),
        }
        r = client.post("/verify", files=files)
        assert r.status_code == 200, r.text
        expected = model.verify(demo / "grace_hopper.jpg", demo / "grace_flipped.jpg")
        assert r.json()["same"] is True and r.json()["distance"] == pytest.approx(expected.distance, abs=1e-4)
        bad = client.post("/verify", files={"image_a": files["image_a"], "image_b": wall.read_bytes()})
        assert bad.status_code == 422 and "no face found" in bad.text


def test_onnx_export_matches_pytorch_and_keeps_the_face_mode(model, demo, tmp_path):
    out = tmp_path / "dlib-face.onnx"
    r = model.export(out)
    assert r["max_abs_diff"] <= 1e-4 and r["input"] == ["batch", 3, 150, 150]
    onnx_model = siamkit.load("dlib-face", backend="onnx", onnx=str(out))
    assert onnx_model.faces == "align" and onnx_model.model_hash == model.model_hash
    images = [demo / "grace_hopper.jpg", demo / "astronaut.png"]
    assert np.abs(onnx_model.embed(images) - model.embed(images)).max() < 1e-4


def test_fine_tuning_starts_from_the_pretrained_model():
    """With --backbone dlib-face the model before training is dlib's (the identity head), unnormalised, and the
    backbone learns at a tenth of the head's rate; an explicit key is kept."""
    import torch

    from siamkit.config import load_config
    from siamkit.models.dlib_face import load_dlib_face
    from siamkit.models.siamese import build_model
    from siamkit.training.pretrained_start import apply_pretrained_defaults, init_identity_head

    cfg = load_config(None, ["model.backbone=dlib-face", "train.lr=1e-3"])
    apply_pretrained_defaults(cfg)
    assert (cfg.model.embedding_dim, cfg.model.normalize, cfg.train.backbone_lr) == (128, False, pytest.approx(1e-4))
    net = build_model(cfg.model, 3).eval()
    assert init_identity_head(net, "dlib-face")
    x = torch.randn(2, 3, 150, 150)
    with torch.no_grad():
        assert torch.allclose(net.embed(x), load_dlib_face()(x), atol=1e-5)
    kept = load_config(None, ["model.backbone=dlib-face", "model.embedding_dim=32"])
    apply_pretrained_defaults(kept)
    assert kept.model.embedding_dim == 32
    assert not init_identity_head(build_model(kept.model, 3), "dlib-face")  # 128 → 32: a random head


def test_readers_align_inside_the_face_mode_and_cache_it_apart(demo, tmp_path):
    from siamkit.data.cache import CacheSettings
    from siamkit.data.faces import face_alignment
    from siamkit.data.readers import read_folder

    settings = CacheSettings(tmp_path / "cache")
    with face_alignment("align"):
        aligned = read_folder(demo / "people", 3, (150, 150), cache=settings)
    plain = read_folder(demo / "people", 3, (150, 150), cache=settings)
    assert len(aligned.images) == len(plain.images) == 24
    assert not np.array_equal(np.asarray(aligned.images[:1]), np.asarray(plain.images[:1]))
    assert len(list((tmp_path / "cache").iterdir())) == 2  # two cache entries: aligned and not
    wall = tmp_path / "walls" / "nobody"
    wall.mkdir(parents=True)
    Image.new("RGB", (200, 200)).save(wall / "0.png")
    with face_alignment("align"), pytest.raises(DataError, match=r"0\.png: no face found"):
        read_folder(tmp_path / "walls", 3, (150, 150))


def faces_section() -> str:
    text = README.read_text()
    return text.split("\n## Faces\n", 1)[1].split("\n## ", 1)[0]


def readme_blocks(marker: str) -> list[str]:
    """The ```bash blocks of README's Faces section that follow an HTML comment ``<!-- marker -->``."""
    return re.findall(rf"<!-- {marker} -->\n```bash\n(.*?)```", faces_section(), re.S)


def run_blocks(blocks: list[str], cwd: Path, monkeypatch, capsys) -> str:
    """Run every line of ``blocks`` in this process, in ``cwd``: ``siamkit ARGS`` through the CLI's ``main``,
    ``python -m MODULE ARGS`` through the module's ``main`` (what a shell would run, without its start-up)."""
    import importlib
    import shlex

    assert blocks
    monkeypatch.chdir(cwd)
    out = []
    for line in (ln for block in blocks for ln in block.splitlines() if ln.strip()):
        argv = shlex.split(line, comments=True)
        if argv[0] == "siamkit":
            code = main(argv[1:])
        else:
            assert argv[:2] == ["python", "-m"], f"README line neither siamkit nor python -m: {line}"
            code = importlib.import_module(argv[2]).main(argv[3:])
        captured = capsys.readouterr()
        assert code == 0, f"{line}\n{captured.err[-2000:]}"
        out.append(captured.out)
    return "\n".join(out)


def test_readme_faces_section_runs(tmp_path, monkeypatch, capsys):
    out = run_blocks(readme_blocks("faces: executed"), tmp_path, monkeypatch, capsys)
    assert "→ same" in out and '"same": false' in out
    assert (tmp_path / "gallery").is_dir() and (tmp_path / "runs" / "dlib-face-mine" / "threshold.json").is_file()


@pytest.mark.slow
def test_readme_faces_training_and_evaluation_run(tmp_path, monkeypatch, capsys):
    """``eval --as-test`` and fine-tuning on the sample folder (about a minute on two cores: the raw-pixel
    baseline of 150×150 RGB chips dominates)."""
    run_blocks(readme_blocks("faces: executed") + readme_blocks("faces: executed, slow"), tmp_path, monkeypatch, capsys)
    metrics = json.loads((tmp_path / "runs" / "faces-head" / "metrics.json").read_text())
    assert metrics["trainable_parameters"] == 128 * 128 + 128  # head only
    assert {"pixels", "untrained"} <= set(metrics["baselines"])
    assert metrics["test"]["map_at_r"] >= metrics["baselines"]["pixels"]["test"]["map_at_r"]
