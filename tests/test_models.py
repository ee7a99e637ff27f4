from __future__ import annotations

import pytest
import torch

from siamkit.config import AugmentConfig
from siamkit.data.transforms import BatchAugment, Preprocess
from siamkit.errors import ConfigError
from siamkit.models import SiameseNet, create_backbone, list_backbones


@pytest.mark.parametrize("name", list_backbones())
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
def test_every_backbone_forward_backward(name, shape):
    net = SiameseNet(create_backbone(name, in_channels=shape[0]), embedding_dim=16)
    x = torch.randn(4, *shape)
    emb = net.embed(x)
    assert emb.shape == (4, 16) and torch.isfinite(emb).all()
    assert torch.allclose(emb.norm(dim=1), torch.ones(4), atol=1e-5)
    net(x, x.flip(0)).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_seed_cnn_is_the_spec_architecture():
    b = create_backbone("seed_cnn", in_channels=1)
    convs = [m for m in b.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(2, 2), (2, 2)] and [c.out_channels for c in convs] == [64, 64]
    net = SiameseNet(b, embedding_dim=48, normalize=False)
    # conv1 1·64·4+64, conv2 64·64·4+64, dense 64·48+48
    assert sum(p.numel() for p in net.parameters()) == 320 + 16448 + 3120
    assert net.embed(torch.zeros(2, 1, 28, 28)).shape == (2, 48)


def test_identical_inputs_have_zero_distance():
    net = SiameseNet(create_backbone("convnet", in_channels=1)).eval()
    x = torch.randn(3, 1, 16, 16)
    assert torch.allclose(net(x, x), torch.zeros(3), atol=1e-5)


def test_backbone_options_are_strict():
    with pytest.raises(ConfigError, match="'width'"):
        create_backbone("convnet", in_channels=1, width=3)
    with pytest.raises(ConfigError, match="unknown backbone"):
        create_backbone("resnet9000", in_channels=1)


def test_augment_is_per_sample_and_identity_when_neutral():
    x = torch.rand(6, 1, 10, 10)
    neutral = AugmentConfig(enabled=True, degrees=0, translate=0, scale_min=1, scale_max=1)
    assert torch.allclose(BatchAugment(neutral)(x.clone()), x, atol=1e-5)
    flip = AugmentConfig(enabled=True, degrees=0, translate=0, scale_min=1, scale_max=1, hflip=1.0)
    assert torch.allclose(BatchAugment(flip)(x.clone()), x.flip(-1), atol=1e-5)
    same = torch.rand(1, 1, 10, 10).expand(8, -1, -1, -1)
    out = BatchAugment(AugmentConfig(enabled=True, degrees=30), torch.Generator().manual_seed(0))(same.clone())
    assert not torch.allclose(out[0], out[1])  # each image its own transform
    pre = Preprocess([0.5], [0.25], AugmentConfig(enabled=True))
    u8 = torch.full((2, 1, 4, 4), 255, dtype=torch.uint8)
    assert torch.allclose(pre(u8), torch.full((2, 1, 4, 4), 2.0))  # eval: no augmentation


def test_augment_shear_maps_pixels_as_the_drawn_shear_says():
    """A shear alone (no rotation, scale, shift): each output pixel samples the input at (x + tan(sx)·y, tan(sy)·x + y)
    in grid units; a plain per-image reference with the same draws."""
    import math

    import torch.nn.functional as F

    x = torch.rand(4, 1, 9, 9)
    cfg = AugmentConfig(enabled=True, degrees=0, translate=0, scale_min=1, scale_max=1, shear=20)
    out = BatchAugment(cfg, torch.Generator().manual_seed(3))(x.clone())
    gen = torch.Generator().manual_seed(3)
    draws = [torch.rand(4, generator=gen) for _ in range(7)]  # angle, scale, tx, ty, flip, then the two shears
    for i in range(4):
        sx, sy = (math.tan(math.radians(float(d[i]) * 40 - 20)) for d in draws[5:7])
        theta = torch.tensor([[[1.0, sx, 0.0], [sy, 1.0, 0.0]]])
        grid = F.affine_grid(theta, [1, 1, 9, 9], align_corners=False)
        want = F.grid_sample(x[i : i + 1], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        assert torch.allclose(out[i : i + 1], want.clamp(0, 1), atol=1e-5)
    assert not torch.allclose(out, x, atol=1e-3)
