"""dlib's face ResNet read in pure Python (``siamkit.models.dlib_face``) against dlib itself, face detection and
alignment (``siamkit.data.faces``) against dlib's ``get_face_chip``, on real photographs that installed packages
ship (matplotlib's Grace Hopper, scikit-image's astronaut and LFW crops). Needs the faces extra (dev installs it)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

dlib = pytest.importorskip("dlib", reason="the faces extra (pip install -e '.[faces]') is part of dev")
skimage = pytest.importorskip("skimage")
import matplotlib  # noqa: E402

from siamkit.data import faces  # noqa: E402
from siamkit.errors import ConfigError, DataError  # noqa: E402
from siamkit.models import dlib_face  # noqa: E402

GRACE = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
ASTRONAUT = Path(os.path.dirname(skimage.__file__)) / "data" / "astronaut.png"
LFW = Path(os.path.dirname(skimage.__file__)) / "data" / "lfw_subset.npy"


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def net() -> dlib_face.DlibFaceNet:
    return dlib_face.load_dlib_face()


@pytest.fixture(scope="module")
def dlib_models():
    predictor = dlib.shape_predictor(str(dlib_face.model_file(dlib_face.PREDICTOR_FILE)))
    recognizer = dlib.face_recognition_model_v1(str(dlib_face.model_file()))
    return dlib.get_frontal_face_detector(), predictor, recognizer


def embed(net: dlib_face.DlibFaceNet, chips: np.ndarray) -> np.ndarray:
    """dlib's input layer by hand: RGB, (x − mean) / 256."""
    x = torch.from_numpy(np.ascontiguousarray(chips)).permute(0, 3, 1, 2).float()
    x = (x - torch.tensor(dlib_face.DLIB_MEANS).view(1, 3, 1, 1)) / 256.0
    with torch.no_grad():
        return net(x).numpy()


def dlib_chip(image: np.ndarray, dlib_models) -> np.ndarray:
    detector, predictor, _ = dlib_models
    box = max(detector(image, 1), key=lambda r: r.area())
    return dlib.get_face_chip(image, predictor(image, box), size=150, padding=0.25)


@pytest.fixture(scope="module")
def real_chips(dlib_models) -> np.ndarray:
    """Five real faces as 150×150 chips: Grace Hopper and the astronaut aligned by dlib, three LFW faces (25×25
    crops) enlarged."""
    chips = [dlib_chip(rgb(GRACE), dlib_models), dlib_chip(rgb(ASTRONAUT), dlib_models)]
    lfw = np.load(LFW)[:3]  # the first 100 are faces
    for face in lfw:
        grey = Image.fromarray((face * 255).astype(np.uint8)).resize((150, 150), Image.Resampling.BILINEAR)
        chips.append(np.asarray(grey.convert("RGB")))
    return np.stack(chips)


def test_reader_consumes_dlibs_file_and_finds_its_architecture():
    net = dlib_face.read_dlib_resnet(dlib_face.model_file())
    assert len(net.convs) == 29 and len(net.affines) == 29 and net.fc is not None and net.fc.shape == (256, 128)
    params = sum(c.weight.size + c.bias.size for c in net.convs) + sum(2 * g.size for g, _ in net.affines)
    assert params + net.fc.size == 5_614_592
    assert all(c.padding == (0, 0) for c in net.convs if c.stride == (2, 2))  # strided convs: no padding
    assert net.loss == pytest.approx({"margin": 0.04, "distance_threshold": 0.6})
    assert net.means == pytest.approx(dlib_face.DLIB_MEANS, abs=1e-4) and net.size == (150, 150)


def test_reader_refuses_other_files_in_one_line(tmp_path):
    raw = dlib_face.model_file().read_bytes()
    cut = tmp_path / "cut.dat"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(dlib_face.DlibFormatError, match=r"cut\.dat: .*ends early") as err:
        dlib_face.read_dlib_resnet(cut)
    assert "\n" not in str(err.value)
    other = tmp_path / "other.dat"
    other.write_bytes(dlib_face.model_file(dlib_face.PREDICTOR_FILE).read_bytes()[:4096])
    with pytest.raises(dlib_face.DlibFormatError, match=r"other\.dat: not dlib's face-recognition ResNet"):
        dlib_face.read_dlib_resnet(other)
    with pytest.raises(ConfigError, match="not found"):
        dlib_face.read_dlib_resnet(tmp_path / "missing.dat")


def test_same_chips_embed_as_dlib_itself(net, dlib_models, real_chips):
    _, _, recognizer = dlib_models
    ours = embed(net, real_chips)
    theirs = np.array([np.array(d) for d in recognizer.compute_face_descriptor(list(real_chips))])
    assert ours.shape == theirs.shape == (5, 128)
    assert np.abs(ours - theirs).max() < 1e-4


def test_alignment_matches_dlibs_chip(dlib_models):
    """Where no pyramid level is needed (the chip's footprint under twice its size) the chip is dlib's to ±1 grey
    level (dlib's rounding); the detector finds each photo's face."""
    aligner = faces.aligner()
    for path, box in ((GRACE, (180, 139, 366, 325)), (ASTRONAUT, (175, 76, 265, 166))):
        image = rgb(path)
        face = faces.pick_face(aligner.detect(image))
        assert np.abs(np.array(face.box) - box).max() <= 2
        diff = np.abs(aligner.chip(image, face).astype(int) - dlib_chip(image, dlib_models).astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.01


def test_similarity_transform_recovers_a_known_one():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([4.0, -2.0])
    a = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    got_a, got_t = faces.similarity_transform(src, src @ a.T + shift)
    assert np.allclose(got_a, a) and np.allclose(got_t, shift)


def warps(image: Image.Image) -> list[Image.Image]:
    w, h = image.size
    return [
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        image.rotate(6, resample=Image.Resampling.BILINEAR),
        image.resize((int(w * 0.8), int(h * 0.8)), Image.Resampling.BILINEAR),
        image.crop((20, 10, w - 10, h - 20)),
        Image.eval(image, lambda v: min(255, int(v * 1.15))),
    ]


def test_same_face_under_small_warps_is_within_dlibs_threshold_and_others_beyond(net):
    aligner = faces.aligner()
    grace, astronaut = Image.open(GRACE).convert("RGB"), Image.open(ASTRONAUT).convert("RGB")
    chips = [np.asarray(aligner.align(img)) for img in [grace, *warps(grace), astronaut, *warps(astronaut)]]
    e = embed(net, np.stack(chips))
    g, a = e[:6], e[6:]
    same = [np.linalg.norm(g[0] - x) for x in g[1:]] + [np.linalg.norm(a[0] - x) for x in a[1:]]
    assert max(same) < 0.6, same
    assert np.linalg.norm(g[:, None] - a[None], axis=2).min() > 0.6


def test_no_face_is_one_line_naming_the_file(tmp_path):
    blank = tmp_path / "wall.png"
    Image.new("RGB", (200, 200), (120, 130, 140)).save(blank)
    from siamkit.data.images import load_image

    with pytest.raises(DataError, match=r"wall\.png: no face found") as err:
        load_image(blank, 3, (150, 150), faces="align")
    assert "\n" not in str(err.value)
    assert load_image(blank, 3, (150, 150)).shape == (3, 150, 150)  # off: the image as it is


def test_several_faces_take_the_largest_then_the_most_confident():
    pts = np.zeros((5, 2))
    small = faces.Face((0, 0, 10, 10), 2.0, pts)
    big = faces.Face((0, 0, 30, 30), 0.1, pts)
    near = faces.Face((0, 0, 29, 29), 1.5, pts)
    assert faces.pick_face([small, big]) is big
    assert faces.pick_face([small, big, near]) is near


def test_dlib_face_backbone_options():
    with pytest.raises(ConfigError, match="dlib-face takes RGB"):
        dlib_face.dlib_face_backbone(in_channels=2)
    random = dlib_face.dlib_face_backbone(pretrained=False)
    assert isinstance(random, dlib_face.DlibFaceNet)
    assert len(random.stages()) == 7
