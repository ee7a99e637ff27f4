"""The ``hog`` backbone: the gradient-orientation descriptor against a plain-loop reference, its invariances, and
the residual branch that starts at zero and then learns."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from siamkit.config import ModelConfig
from siamkit.models import create_backbone
from siamkit.models.descriptors import GradientHistogram
from siamkit.models.siamese import build_model


def loop_hog(img: np.ndarray, bins: int, grids: tuple[int, ...], edges: str = "replicate") -> np.ndarray:
    """One image ``(C, H, W)``, pixel by pixel: the reference for ``GradientHistogram``."""
    c, h, w = img.shape

    def px(ch: int, i: int, j: int) -> float:
        if 0 <= i < h and 0 <= j < w:
            return float(img[ch, i, j])
        return 0.0 if edges == "zeros" else float(img[ch, min(max(i, 0), h - 1), min(max(j, 0), w - 1)])

    maps = np.zeros((bins, h, w))
    for i in range(h):
        for j in range(w):
            best = (-1.0, 0.0, 0.0)
            for ch in range(c):
                gx = px(ch, i, j + 1) - px(ch, i, j - 1)
                gy = px(ch, i + 1, j) - px(ch, i - 1, j)
                mag = math.hypot(gx, gy)
                if mag > best[0]:
                    best = (mag, gx, gy)
            mag, gx, gy = best
            angle = math.atan2(gy, gx) % math.pi
            pos = angle / math.pi * bins - 0.5  # soft: shared by the two nearest bin centres, circularly
            low = math.floor(pos)
            maps[low % bins, i, j] += mag * (1 - (pos - low))
            maps[(low + 1) % bins, i, j] += mag * (pos - low)
    out = []
    for g in grids:
        cells = []
        for b in range(bins):
            for gi in range(g):
                for gj in range(g):
                    # adaptive pooling's cell bounds: floor(k·n/g) to ceil((k+1)·n/g)
                    r0, r1 = gi * h // g, -(-(gi + 1) * h // g)
                    c0, c1 = gj * w // g, -(-(gj + 1) * w // g)
                    cells.append(math.sqrt(maps[b, r0:r1, c0:c1].mean()))
        v = np.array(cells)
        out.append(v / max(np.linalg.norm(v), 1e-12))
    return np.concatenate(out)


@pytest.mark.parametrize("edges", ["replicate", "zeros"])
@pytest.mark.parametrize("shape", [(1, 9, 7), (3, 8, 8)])
def test_descriptor_matches_a_plain_loop(shape, edges):
    x = torch.rand(3, *shape)
    x[1, :, :, :3] = 0.5  # flat regions: gradient 0, the bin does not matter
    d = GradientHistogram(bins=6, grids=(3, 2, 1), edges=edges)
    got = d(x)
    assert got.shape == (3, d.num_features) and d.num_features == 6 * (9 + 4 + 1)
    for k in range(3):
        np.testing.assert_allclose(got[k].numpy(), loop_hog(x[k].double().numpy(), 6, (3, 2, 1), edges), atol=1e-5)


def test_descriptor_ignores_the_input_normalisation_and_is_float32_under_autocast():
    x = torch.rand(4, 1, 28, 28)
    d = GradientHistogram()
    ref = d(x)
    torch.testing.assert_close(d((x - 0.3) / 0.35), ref, atol=1e-5, rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = d(x.bfloat16())
    assert out.dtype == torch.float32
    # a turned image is another descriptor (orientation is what it records)
    assert not torch.allclose(d(x.transpose(2, 3)), ref, atol=1e-3)


def _edge(angle_deg: float, size: int = 32) -> torch.Tensor:
    """An image ``(1, 1, size, size)``: a linear ramp whose gradient points at ``angle_deg`` (inside the border, every
    pixel's gradient has exactly that orientation)."""
    t = math.radians(angle_deg)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")  # fmt: skip
    along = xx * math.cos(t) + yy * math.sin(t)
    return ((along - along.min()) / (along.max() - along.min())).float()[None, None]


def test_a_fraction_of_a_degree_across_a_bin_edge_barely_moves_the_descriptor():
    # 9 bins over 180°: a bin edge at 20°; the hard binning moved all the mass from bin 0 to bin 1 (cosine 0.33)
    d = GradientHistogram()
    a, b = d(_edge(19.9)), d(_edge(20.1))
    assert float(torch.nn.functional.cosine_similarity(a, b)) > 0.99
    far = d(_edge(80.0))
    assert float(torch.nn.functional.cosine_similarity(a, far)) < 0.9  # it still tells orientations apart


def test_bad_descriptor_options_are_refused():
    with pytest.raises(ValueError, match="bins"):
        GradientHistogram(bins=0)
    with pytest.raises(ValueError, match="grid"):
        GradientHistogram(grids=())
    with pytest.raises(ValueError, match="edges"):
        GradientHistogram(edges="wrap")


def test_untrained_hog_backbone_is_the_descriptor_and_training_moves_it():
    model = build_model(ModelConfig(backbone="hog", embedding_dim=0), in_channels=1)
    descriptor = model.backbone.descriptor
    x = torch.rand(16, 1, 28, 28)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.features(x), descriptor(x))
    # the learned branch sees no gradient while its output layer is zero, then does
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    branch_first = next(model.backbone.branch.parameters())
    for step in range(2):
        opt.zero_grad()
        emb = model.embed(x)
        (emb[:8] * emb[8:]).sum().backward()  # pull pairs apart: any loss that depends on the embedding
        if step == 0:
            assert branch_first.grad is not None and not branch_first.grad.any()
            assert model.backbone.out.weight.grad.abs().sum() > 0
        opt.step()
    assert branch_first.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(model.features(x), descriptor(x), atol=1e-4)


def test_descriptor_alone_has_nothing_to_train():
    b = create_backbone("hog", in_channels=3, residual=False, grids=[4, 2])
    assert sum(p.numel() for p in b.parameters()) == 0
    assert b.num_features == 9 * (16 + 4) and b(torch.rand(2, 3, 32, 32)).shape == (2, 180)


def test_training_a_model_with_nothing_to_train_is_refused_in_one_line(tmp_path, capsys):
    from siamkit.cli import main

    argv = ["train", "--epochs", "1", "--runs-dir", str(tmp_path), "--name", "r", "-q", "--set", "model.backbone=hog",
            "--set", "model.backbone_args={residual: false}", "--set", "model.embedding_dim=0"]  # fmt: skip
    assert main(argv) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing to train" in err[0] and "model.embedding_dim" in err[0]
    assert not (tmp_path / "r").exists()
