"""Pretrained backbones: weights files the test writes (state dict and safetensors), the torch hub cache, the
one-line error when weights are absent, presets that follow the weights, timm by name."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from siamkit.config import load_config
from siamkit.errors import ConfigError
from siamkit.models import SiameseNet, create_backbone
from siamkit.models.pretrained import IMAGENET_MEAN, TORCHVISION, backbone_preset, hub_checkpoint


@pytest.fixture(autouse=True)
def _empty_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


def _full_model_state(name: str, seed: int) -> dict[str, torch.Tensor]:
    """A torchvision classifier's whole state dict (classifier included), random but seeded."""
    torch.manual_seed(seed)
    return TORCHVISION[name].build().state_dict()


def _same_backbone(net, state: dict[str, torch.Tensor], skip: str) -> bool:
    own = net.net.state_dict()
    return all(torch.equal(own[k], v) for k, v in state.items() if not k.startswith(skip))


@pytest.mark.parametrize("name,skip", [("resnet18", "fc."), ("efficientnet_b0", "classifier.")])
@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_weights_from_a_local_file(tmp_path, name, skip, fmt):
    state = _full_model_state(name, seed=123)
    path = tmp_path / f"w.{fmt}"
    if fmt == "pth":
        torch.save({"state_dict": state}, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    torch.manual_seed(0)
    net = create_backbone(name, weights=str(path))
    assert _same_backbone(net, state, skip)
    assert not _same_backbone(create_backbone(name), state, skip)  # a fresh one differs


def test_pretrained_from_the_torch_hub_cache(tmp_path):
    state = _full_model_state("resnet18", seed=7)
    path = hub_checkpoint(TORCHVISION["resnet18"].weights_url)
    assert str(path).startswith(str(tmp_path))
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    assert _same_backbone(create_backbone("resnet18", pretrained=True), state, "fc.")


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0"])
def test_absent_pretrained_weights_say_how_to_supply_them(name):
    with pytest.raises(ConfigError) as err:
        create_backbone(name, pretrained=True)
    msg = str(err.value)
    assert "\n" not in msg and TORCHVISION[name].weights_url in msg and "weights=FILE" in msg
    assert str(hub_checkpoint(TORCHVISION[name].weights_url)) in msg


def test_bad_weights_files_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        create_backbone("resnet18", weights=str(tmp_path / "missing.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not a readable weights file"):
        create_backbone("resnet18", weights=str(junk))
    other = tmp_path / "effnet.pth"
    torch.save(_full_model_state("efficientnet_b0", 0), other)
    with pytest.raises(ConfigError, match="another architecture"):
        create_backbone("resnet18", weights=str(other))


def test_a_pickled_object_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": Evil()}, path)
    with pytest.raises(ConfigError, match="not a readable weights file"):
        create_backbone("resnet18", weights=str(path))


def test_presets_follow_the_weights(tmp_path):
    assert backbone_preset("resnet18", {}) is None  # random init: the data's own statistics
    preset = backbone_preset("resnet18", {"weights": "x.pth"})
    assert preset is not None and preset.input_size == 224 and preset.mean == IMAGENET_MEAN
    path = tmp_path / "r18.pth"
    torch.save(_full_model_state("resnet18", 1), path)
    from siamkit.plan import prepare_data

    cfg = load_config(None, ["model.backbone=resnet18", f"model.backbone_args={{weights: {path}}}", "data.limit=60"])
    prep = prepare_data(cfg)
    assert prep.input_shape == (3, 224, 224)
    assert prep.cfg.data.mean == IMAGENET_MEAN and prep.cfg.data.image_size == 224 and prep.cfg.data.channels == 3
    assert cfg.data.mean is None  # the given config is left as it was: the resolved one is the run's


def test_grayscale_input_to_an_imagenet_backbone():
    net = SiameseNet(create_backbone("resnet18", in_channels=1), embedding_dim=8)
    assert net.embed(torch.rand(2, 1, 32, 32)).shape == (2, 8)


def test_timm_backbone_by_name(tmp_path):
    pytest.importorskip("timm")
    net = SiameseNet(create_backbone("timm/resnet18", in_channels=3), embedding_dim=8)
    x = torch.randn(2, 3, 32, 32)
    net.embed(x).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    torch.manual_seed(3)
    src = create_backbone("timm/resnet18")
    path = tmp_path / "timm.safetensors"
    save_file({k: v.contiguous() for k, v in src.net.state_dict().items()}, str(path))
    loaded = create_backbone("timm/resnet18", weights=str(path))
    assert all(torch.equal(v, loaded.net.state_dict()[k]) for k, v in src.net.state_dict().items())
    with pytest.raises(ConfigError, match="not in timm's cache"):
        create_backbone("timm/resnet18", pretrained=True)
    with pytest.raises(ConfigError, match="unknown timm model"):
        create_backbone("timm/no_such_net")
    with pytest.raises(ConfigError, match="no option 'depth'"):
        create_backbone("timm/resnet18", depth=3)
    assert backbone_preset("timm/resnet18", {"pretrained": True}).input_size == 224
