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

if os.environ.get("STRICT") == "1" or os.environ.get("CI"):  # CI installs the faces extra (dev): never skip there
    import dlib
    import skimage
else:
    dlib = pytest.importorskip("dlib", reason="the faces extra (pip install -e '.[faces]') is part of dev")
    skimage = pytest.importorskip("skimage")
import matplotlib

from siamkit.data import faces
from siamkit.errors import ConfigError, DataError
from siamkit.models import dlib_face

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


# -- a plain numpy re-derivation of dlib's get_face_chip_details + extract_image_chip (the oracle) ----------------
REFERENCE = np.array([[0.8595674595992, 0.2134981538014], [0.6460604764104, 0.2289674387677],
                      [0.1205750620789, 0.2137274526848], [0.3340850613712, 0.2290642403242],
                      [0.4901123135679, 0.6277975316475]])  # fmt: skip
"""dlib's 5-point reference landmarks in the unit square (``get_face_chip_details``)."""


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The least-squares similarity ``dst ≈ A·src + t`` between point sets ``(N, 2)`` (rotation and uniform scale,
    no reflection; Umeyama 1991, as dlib's ``find_similarity_transform``). Returns ``A`` (2, 2) and ``t`` (2,)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var = (s**2).sum() / len(src)
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(cov) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    scale = float(np.trace(np.diag(sig) @ sign) / var) if var > 0 else 1.0
    a = scale * rot
    return a, mu_d - a @ mu_s


def chip_mapping(landmarks: np.ndarray, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """The affine map ``(2, 3)`` from chip pixel (x, y) to image coordinates, as dlib's ``chip_details`` builds it:
    the similarity transform's rotation and scale around the image point of the chip's centre, the chip's corner
    pixels at the corners of its ``size·scale`` square footprint."""
    ref = (padding + REFERENCE) / (1 + 2 * padding) * size
    a, t = similarity_transform(ref, landmarks)
    angle = float(np.arctan2(a[1, 0], a[0, 0]))
    scale = float(np.hypot(a[0, 0], a[1, 0]))
    centre = a @ np.array([size / 2, size / 2]) + t
    # dlib's centered_drect spans size·scale − 1 pixels from the first corner pixel to the last
    side = (size * scale - 1) / (size - 1)
    cos, sin = np.cos(angle) * side, np.sin(angle) * side
    m = np.array([[cos, -sin], [sin, cos]])
    offset = centre - m @ np.array([(size - 1) / 2, (size - 1) / 2])
    return np.hstack([m, offset[:, None]])


def _halve(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
    x = img[:h, :w].astype(np.float32)
    return (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2]) * 0.25


def extract_chip(image: np.ndarray, mapping: np.ndarray, size: int = 150) -> np.ndarray:
    """Sample the ``size``×``size`` chip of ``image`` ``(H, W, 3)`` uint8 at ``mapping`` (chip → image, ``(2, 3)``),
    bilinearly; the image is halved first while a chip pixel spans more than two image pixels. Returns uint8."""
    src: np.ndarray = image.astype(np.float32)
    m = mapping.copy()
    while np.hypot(m[0, 0], m[1, 0]) > 2.0 and min(src.shape[:2]) >= 4:
        src = _halve(src)
        m = m / 2.0
        m[:, 2] -= 0.25  # pixel centres: x_half = (x + 0.5) / 2 - 0.5
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    sx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    sy = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    h, w = src.shape[:2]
    x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    padded = np.zeros((h + 2, w + 2, src.shape[2]), np.float32)  # one black pixel around: outside is black
    padded[1:-1, 1:-1] = src
    x0c, y0c = np.clip(x0 + 1, 0, w + 1), np.clip(y0 + 1, 0, h + 1)
    x1c, y1c = np.clip(x0 + 2, 0, w + 1), np.clip(y0 + 2, 0, h + 1)
    out = (padded[y0c, x0c] * (1 - fx) * (1 - fy) + padded[y0c, x1c] * fx * (1 - fy)
           + padded[y1c, x0c] * (1 - fx) * fy + padded[y1c, x1c] * fx * fy)  # fmt: skip
    inside = (sx > -1) & (sx < w) & (sy > -1) & (sy < h)
    out[~inside] = 0
    return np.clip(out, 0, 255).astype(np.uint8)  # truncated, as dlib assigns a float pixel


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


def test_alignment_is_dlibs_chip_and_the_numpy_rederivation_agrees(dlib_models):
    """The detector finds each photo's face; the chip is dlib's ``get_face_chip`` of its landmarks; the numpy
    similarity transform re-derived above gives the same chip to ±1 grey level (dlib's rounding) where no pyramid
    level is needed, and the same person (descriptor distance < 0.1) where dlib steps down its pyramid."""
    aligner = faces.aligner()
    for path, box in ((GRACE, (180, 139, 366, 325)), (ASTRONAUT, (175, 76, 265, 166))):
        image = rgb(path)
        face = faces.pick_face(aligner.detect(image))
        assert np.abs(np.array(face.box) - box).max() <= 2
        chip = aligner.chip(image, face)
        assert np.array_equal(chip, dlib_chip(image, dlib_models))
        diff = np.abs(extract_chip(image, chip_mapping(face.landmarks)).astype(int) - chip.astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.01
    big = np.asarray(Image.fromarray(rgb(GRACE)).resize((1536, 1800), Image.Resampling.BICUBIC))  # 3×: a pyramid
    face = faces.pick_face(aligner.detect(big))
    ours = extract_chip(big, chip_mapping(face.landmarks))
    e = embed(dlib_face.load_dlib_face(), np.stack([ours, aligner.chip(big, face)]))
    assert np.linalg.norm(e[0] - e[1]) < 0.1


def test_similarity_transform_recovers_a_known_one():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([4.0, -2.0])
    a = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    got_a, got_t = similarity_transform(src, src @ a.T + shift)
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
