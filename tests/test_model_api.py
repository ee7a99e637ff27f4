"""The run as an object: ``siamkit.load`` / ``siamkit.train`` → ``Model`` (embed, verify, search, threshold,
export), with images as paths, PIL images, numpy arrays or tensors, one or many."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import siamkit
from siamkit.errors import CheckpointError, ConfigError, DataError
from siamkit.index.gallery import Gallery
from siamkit.index.ops import build, search
from siamkit.runs import Model, Verification


@pytest.fixture(scope="module")
def model(small_run) -> Model:
    return siamkit.load(small_run)


@pytest.fixture(scope="module")
def files(digits_images):
    return sorted(digits_images.rglob("*.png"))[:12]


def test_every_image_form_embeds_like_its_file(model, files):
    path = files[0]
    want = model.embed(str(path))
    assert want.shape == (model.embedding_dim,) and want.dtype == np.float32
    with Image.open(path) as im:
        pil = im.copy()
    arr = np.array(pil)  # (H, W) uint8
    forms = {
        "Path": path, "PIL": pil, "numpy HW": arr.copy(), "numpy HW1": arr[:, :, None],
        "numpy HWC rgb": np.repeat(arr[:, :, None], 3, axis=2), "numpy float 0-1": arr / 255.0,
        "numpy float 0-255": arr.astype(np.float32), "tensor CHW": torch.from_numpy(arr)[None],
        "tensor HW": torch.from_numpy(arr),
    }  # fmt: skip
    for name, image in forms.items():
        got = model.embed(image)
        assert got.shape == want.shape, name
        assert np.abs(got - want).max() <= 1e-5, name


def test_a_photo_with_an_exif_orientation_embeds_upright_in_every_form(model, files, tmp_path):
    with Image.open(files[0]) as im:
        upright_pixels = np.array(im.convert("L"))
    exif = Image.Exif()
    exif[0x0112] = 8  # stored turned clockwise; displayed after a 90° counter-clockwise turn
    tagged = tmp_path / "tagged.png"
    Image.fromarray(upright_pixels).transpose(Image.Transpose.ROTATE_270).save(tagged, exif=exif.tobytes())
    want = model.embed(upright_pixels)
    with Image.open(tagged) as im:
        pil = im.copy()
        pil.info["exif"] = im.info["exif"]
    for name, image in {"path": tagged, "PIL": pil}.items():
        assert np.abs(model.embed(image) - want).max() <= 1e-5, name


def test_many_images_give_one_row_each(model, files):
    arrays = np.stack([np.asarray(Image.open(p)) for p in files])  # (N, H, W): a stack of grayscale images
    rows = model.embed(arrays)
    assert rows.shape == (len(files), model.embedding_dim)
    assert np.abs(rows - model.embed([str(p) for p in files])).max() <= 1e-5
    assert np.abs(rows - model.embed(torch.from_numpy(arrays)[:, None])).max() <= 1e-5  # (N, C, H, W)
    assert np.abs(rows - model.embed(arrays[:, :, :, None])).max() <= 1e-5  # (N, H, W, C)
    assert model.embed([]).shape == (0, model.embedding_dim)


def test_verify_is_the_distance_against_the_threshold(model, files):
    a, b = str(files[0]), str(files[1])
    v = model.verify(a, b)
    assert isinstance(v, Verification)
    ea, eb = model.embed(a), model.embed(b)
    assert model.distance == "euclidean"
    d = float(np.sqrt(((ea.astype(np.float64) - eb) ** 2).sum()))  # the plain formula
    assert v.distance == pytest.approx(d, abs=1e-5)
    assert v.threshold == model.threshold and v.same == (d <= model.threshold)
    assert v.to_dict() == {"distance": v.distance, "threshold": v.threshold, "same": v.same}
    many = model.verify([a, a, b], [b, a, a])
    assert isinstance(many, list) and len(many) == 3
    assert many[0].distance == pytest.approx(v.distance, abs=1e-6) and many[1].distance == pytest.approx(0, abs=1e-5)
    assert many[1].same is True
    with pytest.raises(ConfigError, match="as many images"):
        model.verify([a, b], [a])


def test_the_threshold_of_one_object_leaves_the_run_alone(small_run, files):
    m = siamkit.load(small_run)
    saved = m.threshold
    a, b = str(files[0]), str(files[5])
    d = m.verify(a, b).distance
    m.threshold = d - 1e-3
    assert m.verify(a, b).same is False
    m.threshold = d + 1e-3
    assert m.verify(a, b).same is True
    assert siamkit.load(small_run).threshold == saved
    assert siamkit.load(small_run, threshold=0.25).threshold == 0.25


def test_search_equals_the_gallery_command(model, small_run, digits_images, tmp_path):
    build(str(small_run), [str(digits_images)], str(tmp_path / "g"))
    query = sorted(digits_images.rglob("*.png"))[7]
    want = search(str(tmp_path / "g"), [str(query)], k=4)["results"][0]["neighbours"]
    hits = model.search(tmp_path / "g", np.asarray(Image.open(query)), k=4)
    assert [h.id for h in hits] == [h["id"] for h in want]
    assert [h.distance for h in hits] == pytest.approx([h["distance"] for h in want], abs=1e-5)
    assert hits[0].distance == pytest.approx(0, abs=1e-5)  # the query is in the gallery
    two = model.search(Gallery.open(tmp_path / "g"), [str(query), str(query)], k=2)
    assert len(two) == 2 and [h.id for h in two[0]] == [h.id for h in hits[:2]]


def test_a_gallery_of_another_model_is_refused(small_run, tmp_path, files):
    other = tmp_path / "other"
    shutil.copytree(small_run, other)
    m = siamkit.load(other)
    g = Gallery.create(tmp_path / "g", m.describe())
    g.add(m.embed([str(p) for p in files]), [str(p) for p in files], [None] * len(files))
    g.save()
    from safetensors.torch import save_file

    from siamkit.runs.artifact import read_weights

    state, meta = read_weights(other / "model.safetensors")
    save_file(state, str(other / "model.safetensors"), metadata={**meta, "note": "retrained"})  # another hash
    with pytest.raises(CheckpointError, match="built with model"):
        siamkit.load(other).search(tmp_path / "g", str(files[0]))


def test_export_then_load_on_onnx(small_run, tmp_path, files):
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    r = siamkit.load(run).export()
    assert (run / "model.onnx").is_file() and r["max_abs_diff"] <= 1e-4
    on_onnx = siamkit.load(run, backend="onnx")
    assert on_onnx.backend == "onnx" and on_onnx.model_hash == siamkit.load(run).model_hash
    paths = [str(p) for p in files]
    assert np.abs(on_onnx.embed(paths) - siamkit.load(run).embed(paths)).max() <= 1e-4
    with pytest.raises(ConfigError, match="PyTorch weights"):
        on_onnx.export(tmp_path / "again.onnx")


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((2, 8, 8, 5), np.uint8), "C = 1, 3 or 4"),
        (np.full((8, 8), np.nan), "NaN"),
        (12, "not int"),
        ([object()], "not object"),
    ],
)
def test_bad_images_are_one_clear_error(model, bad, message):
    with pytest.raises(ConfigError, match=message) as err:
        model.embed(bad)
    assert "\n" not in str(err.value)


def test_a_missing_file_names_itself(model, tmp_path):
    with pytest.raises(DataError, match="nope.png"):
        model.embed(str(tmp_path / "nope.png"))


def test_train_returns_the_model_with_its_result(tmp_path):
    m = siamkit.train(data="digits", epochs=1, runs_dir=str(tmp_path), name="api", data__limit=300,
                      train__progress=False, **{"eval.n_pairs": 300})  # fmt: skip
    assert isinstance(m, Model) and m.run_dir == str((tmp_path / "api").resolve())
    saved = json.loads((tmp_path / "api" / "metrics.json").read_text())
    assert m.result is not None and m.result["test"]["auc"] == pytest.approx(saved["test"]["auc"])
    cfg = (tmp_path / "api" / "config.yaml").read_text()
    assert "limit: 300" in cfg and "n_pairs: 300" in cfg and "epochs: 1" in cfg
    assert m.threshold == pytest.approx(saved["threshold"])
    with pytest.raises(ConfigError, match="train.nope"):
        siamkit.train(data="digits", train__nope=1)


def test_train_in_python_logs_to_stderr_unless_told_not_to(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys, siamkit\n"
        "kw = dict(data='digits', epochs=1, runs_dir=sys.argv[1], data__limit=200, train__progress=False)\n"
        "siamkit.train(name='a', **kw)\n"
        "print('-- quiet --', file=sys.stderr, flush=True)\n"
        "siamkit.train(name='b', log=False, **kw)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    loud, quiet = r.stderr.split("-- quiet --")
    assert "epoch 1: train" in loud and "evaluating" in loud and "report:" in loud
    assert "epoch 1" not in quiet and "evaluating" not in quiet


def test_importing_siamkit_is_light():
    import subprocess
    import sys

    code = "import sys, siamkit; print([m for m in ('torch', 'siamkit.training', 'siamkit.runs') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-500:]


def test_a_folder_embeds_as_its_files_in_listing_order(model, digits_images, tmp_path):
    from siamkit.data.sources import collect_images

    folder = digits_images / "3"
    listed = [p for p, _ in collect_images([str(folder)])]
    rows = model.embed(folder)
    assert rows.shape == (len(listed), model.embedding_dim)
    assert np.abs(rows - model.embed(listed)).max() <= 1e-5
    every = [p for p, _ in collect_images([str(digits_images)])]  # class-per-folder root: every class's files
    assert np.abs(model.embed(str(digits_images)) - model.embed(every)).max() <= 1e-5
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        model.embed(tmp_path / "empty")
