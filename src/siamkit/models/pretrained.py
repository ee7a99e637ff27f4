"""Pretrained backbones by name (SPEC §3.4): torchvision ResNet-18 and EfficientNet-B0, and any timm model as
``timm/<name>`` when timm is installed (``pip install siamkit[timm]``).

Each gives pooled features (ResNet-18 512, EfficientNet-B0 1,280) to the Siamese embedding head. Weights come
from a local file (``weights=FILE``: a state dict ``.pth``/``.pt`` read with ``weights_only=True``, or
``.safetensors``) or, with ``pretrained=true``, from the framework's cache (torch hub's ``checkpoints/`` folder;
timm's Hugging Face cache). Nothing is downloaded: absent weights give one line that says how to supply them.
With weights, the input size and normalisation follow them (``backbone_preset``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from siamkit.errors import ConfigError
from siamkit.models.registry import BACKBONES

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
TIMM_PREFIX = "timm/"


@dataclass
class Preset:
    """What a backbone's weights expect: square input size, channels and normalisation."""

    input_size: int
    mean: list[float]
    std: list[float]
    channels: int = 3


@dataclass
class TorchvisionSpec:
    build: Callable[[], nn.Module]
    weights_url: str
    num_features: int
    head_keys: tuple[str, ...]  # classifier keys dropped from a full checkpoint
    stages: Callable[[nn.Module], list[nn.Module]]


def _tv_resnet18() -> nn.Module:
    from torchvision.models import resnet18

    return resnet18(weights=None)


def _tv_efficientnet_b0() -> nn.Module:
    from torchvision.models import efficientnet_b0

    return efficientnet_b0(weights=None)


def _resnet_stages(m: Any) -> list[nn.Module]:
    stem = nn.ModuleList([m.conv1, m.bn1])
    return [stem, m.layer1, m.layer2, m.layer3, m.layer4]


def _effnet_stages(m: Any) -> list[nn.Module]:
    return list(m.features)


TORCHVISION: dict[str, TorchvisionSpec] = {
    "resnet18": TorchvisionSpec(
        _tv_resnet18, "https://download.pytorch.org/models/resnet18-f37072fd.pth", 512, ("fc.",), _resnet_stages
    ),
    "efficientnet_b0": TorchvisionSpec(
        _tv_efficientnet_b0, "https://download.pytorch.org/models/efficientnet_b0_rwightman-7f5810bc.pth", 1280,
        ("classifier.",), _effnet_stages,
    ),
}  # fmt: skip
TORCHVISION_PRESET = Preset(224, IMAGENET_MEAN, IMAGENET_STD)
DLIB_FACE_PRESET = Preset(150, [122.782 / 255.0, 117.001 / 255.0, 104.298 / 255.0], [256.0 / 255.0] * 3)
"""dlib's face ResNet: 150×150 RGB chips, ``(x − mean) / 256`` on 0–255 pixels, i.e. these on pixels in [0, 1]."""


def hub_checkpoint(url: str) -> Path:
    """Where torch hub caches the file of ``url`` (``$TORCH_HOME/hub/checkpoints/<name>``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file (``weights_only=True``: never unpickles code);
    unwraps ``{"state_dict": ...}`` / ``{"model": ...}`` and a DDP ``module.`` prefix."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weights file {str(path)!r} not found; give an existing .pth/.pt or .safetensors file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"{path}: not a readable weights file ({type(exc).__name__}: {exc})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path}: expected a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_backbone_weights(
    module: nn.Module, state: dict[str, torch.Tensor], source: str, skip: tuple[str, ...]
) -> None:
    """Load ``state`` into ``module``, ignoring classifier keys ``skip``; a missing or mis-shaped weight is an
    error naming it (a checkpoint of another architecture)."""
    state = {k: v for k, v in state.items() if not k.startswith(skip)}
    own = module.state_dict()
    bad = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if bad:
        raise ConfigError(
            f"{source}: {bad[0]} has shape {tuple(state[bad[0]].shape)}, the model expects {tuple(own[bad[0]].shape)}"
            " (weights of another architecture?)"
        )
    result = module.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(skip)]
    if missing:
        raise ConfigError(
            f"{source}: {len(missing)} weights missing (first: {missing[0]}); weights of another architecture?"
        )


class GrayToRGB(nn.Module):
    """Repeats a 1-channel input to the 3 channels an ImageNet backbone takes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class TorchvisionBackbone(nn.Module):
    """A torchvision classifier with its last layer removed: pooled features ``(B, num_features)``."""

    def __init__(self, name: str, in_channels: int = 3, pretrained: bool = False, weights: str | None = None):
        super().__init__()
        spec = TORCHVISION[name]
        self.name, self.spec = name, spec
        self.net = spec.build()
        if weights is not None:
            load_backbone_weights(self.net, read_state_dict(weights), weights, spec.head_keys)
        elif pretrained:
            path = hub_checkpoint(spec.weights_url)
            if not path.is_file():
                raise ConfigError(
                    f"pretrained weights for {name} are not on this machine and cannot be downloaded here: fetch "
                    f"{spec.weights_url} elsewhere and put it at {path}, or pass model.backbone_args.weights=FILE "
                    "(.pth state dict or .safetensors), or pretrained=false to train from scratch"
                )
            load_backbone_weights(self.net, read_state_dict(path), str(path), spec.head_keys)
        if name == "resnet18":
            self.net.fc = nn.Identity()
        else:
            self.net.classifier = nn.Identity()
        self.adapt = GrayToRGB() if in_channels == 1 else nn.Identity()
        if in_channels not in (1, 3):
            raise ConfigError(f"backbone {name} takes 1- or 3-channel images, not {in_channels}")
        self.num_features = spec.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.adapt(x))

    def stages(self) -> list[nn.Module]:
        return self.spec.stages(self.net)


@BACKBONES.register("resnet18")
def resnet18_backbone(in_channels: int = 3, pretrained: bool = False, weights: str | None = None) -> nn.Module:
    """torchvision ResNet-18 (512-d pooled features); ImageNet weights from a file or the torch hub cache."""
    return TorchvisionBackbone("resnet18", in_channels, pretrained, weights)


@BACKBONES.register("efficientnet_b0")
def efficientnet_b0_backbone(in_channels: int = 3, pretrained: bool = False, weights: str | None = None) -> nn.Module:
    """torchvision EfficientNet-B0 (1,280-d pooled features; SPEC §3.4, source B/C's encoder)."""
    return TorchvisionBackbone("efficientnet_b0", in_channels, pretrained, weights)


def _import_timm() -> Any:
    try:
        import timm
    except ImportError:
        raise ConfigError("timm backbones need timm: pip install 'siamkit[timm]' (or pip install timm)") from None
    return timm


class TimmBackbone(nn.Module):
    """Any timm model (``num_classes=0``: pooled features). ``pretrained`` reads timm's cache only (offline)."""

    def __init__(self, name: str, in_channels: int = 3, pretrained: bool = False, weights: str | None = None):
        super().__init__()
        timm = _import_timm()
        if name not in timm.list_models():
            raise ConfigError(f"unknown timm model {name!r}; see timm.list_models()")
        if pretrained and weights is None:
            from huggingface_hub import constants

            offline = constants.HF_HUB_OFFLINE
            constants.HF_HUB_OFFLINE = True  # the cache only: never reach for the network
            try:
                self.net = timm.create_model(name, pretrained=True, num_classes=0, in_chans=in_channels)
            except Exception as exc:  # timm raises many kinds when the cache is empty
                raise ConfigError(
                    f"pretrained weights for timm/{name} are not in timm's cache and cannot be downloaded here "
                    f"({type(exc).__name__}); pass model.backbone_args.weights=FILE (.pth state dict or "
                    ".safetensors), or pretrained=false to train from scratch"
                ) from None
            finally:
                constants.HF_HUB_OFFLINE = offline
        else:
            self.net = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_channels)
            if weights is not None:
                head = getattr(self.net, "default_cfg", {}).get("classifier", "head")
                load_backbone_weights(self.net, read_state_dict(weights), weights, (f"{head}.",))
        self.num_features = int(self.net.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@BACKBONES.register_prefix(TIMM_PREFIX)
def create_timm_backbone(name: str, **kwargs: Any) -> nn.Module:
    from siamkit.registry import check_kwargs

    check_kwargs(TimmBackbone.__init__, kwargs, f"backbone {TIMM_PREFIX}{name}")
    return TimmBackbone(name, **kwargs)


def backbone_preset(name: str, args: dict[str, Any]) -> Preset | None:
    """The input size and normalisation that ``name``'s weights expect, when weights are asked for (``dlib-face``:
    always, its weights being the default)."""
    if name == "dlib-face":
        return DLIB_FACE_PRESET
    if not (args.get("pretrained") or args.get("weights")):
        return None
    if name in TORCHVISION:
        return TORCHVISION_PRESET
    if name.startswith(TIMM_PREFIX):
        timm = _import_timm()
        cfg = timm.get_pretrained_cfg(name[len(TIMM_PREFIX) :])
        if cfg is None:
            return Preset(224, IMAGENET_MEAN, IMAGENET_STD)
        c, h, _ = cfg.input_size
        return Preset(int(h), [float(v) for v in cfg.mean], [float(v) for v in cfg.std], int(c))
    return None
