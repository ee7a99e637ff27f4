"""Transfer learning (SPEC §3.4): freeze a backbone and train only the head, unfreeze it (all of it, or its last
N stages) later, with its own learning rate.

A frozen parameter has ``requires_grad=False``: it gets no gradient, so the optimiser keeps no state for it
and never moves it (weight decay included). Frozen BatchNorm layers also stay in eval mode, so their running
statistics do not drift either (``SiameseNet.train`` re-applies this after every ``model.train()``).
"""

from __future__ import annotations

from typing import Any

from torch import nn


def backbone_stages(backbone: nn.Module) -> list[nn.Module]:
    """The backbone's stages, input to output: its ``stages()`` method when it has one (BaseCNN, torchvision
    wrappers), else its parameterised children, where an ``nn.Sequential`` of blocks (containers, not single
    layers) is opened one level (convnet: its conv stages, then its neck)."""
    method = getattr(type(backbone), "stages", None)
    if callable(method):
        return list(method(backbone))

    def has_params(m: nn.Module) -> bool:
        return any(True for _ in m.parameters())

    out: list[nn.Module] = []
    for child in backbone.children():
        inner = [c for c in child.children() if has_params(c)]
        of_blocks = isinstance(child, nn.Sequential) and inner and all(next(c.children(), None) for c in inner)
        out += inner if of_blocks else [child] if has_params(child) else []
    return out


def set_frozen(modules: list[nn.Module], frozen: bool) -> None:
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(not frozen)


def frozen_norm_layers(module: nn.Module) -> list[nn.Module]:
    """BatchNorm layers whose parameters are all frozen: kept in eval mode while training."""
    norms = (nn.modules.batchnorm._BatchNorm,)
    return [m for m in module.modules() if isinstance(m, norms) and not any(p.requires_grad for p in m.parameters())]


def param_groups(model: nn.Module, lr: float, backbone_lr: float | None, extra: list[nn.Parameter]) -> list[Any]:
    """Optimiser groups: the backbone at ``backbone_lr`` (default ``lr``), everything else at ``lr``. Frozen
    parameters are included (they have no gradient, hence no state) so that unfreezing needs no new optimiser."""
    backbone = getattr(model, "backbone", None)
    bb = list(backbone.parameters()) if backbone is not None else []
    ids = {id(p) for p in bb}
    rest = [p for p in model.parameters() if id(p) not in ids] + extra
    groups = [{"params": rest, "lr": lr, "name": "head"}]
    if bb:
        groups.append({"params": bb, "lr": backbone_lr if backbone_lr is not None else lr, "name": "backbone"})
    return groups
