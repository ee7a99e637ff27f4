"""Fine-tuning from a pretrained embedding (``--backbone dlib-face``): the defaults that make the untrained model
*be* the pretrained one, so that it is the epoch-0 candidate and the baseline to beat.

For the ``dlib-face`` backbone, keys the config does not set (and a recipe may have set) become:

- ``model.embedding_dim = 128`` with the head ``Linear(128 → 128)`` initialised to the identity (zero bias): the
  model before training gives dlib's descriptors exactly; ``train.freeze_backbone=true`` trains that linear map
  only ("head only"), otherwise every layer trains;
- ``model.normalize = false``: dlib's descriptors are compared unnormalised (its 0.6 is a Euclidean distance);
- ``train.backbone_lr = train.lr / 10``: the pretrained layers move more slowly than the head;
- ``data.augment.hflip`` left as the recipe says (a mirrored face is the same person).

A head of another width (``model.embedding_dim`` set) starts at random, as for any backbone.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from siamkit.config import RunConfig

log = logging.getLogger(__name__)
PRETRAINED_EMBEDDINGS = {"dlib-face": 128}
"""Backbones whose output is already a trained embedding, and its width."""


def apply_pretrained_defaults(cfg: RunConfig) -> None:
    """Set, in place, the defaults above for keys the config left unset (``explicit_keys``); a saved run's config
    (no ``explicit_keys``) is left as it is."""
    width = PRETRAINED_EMBEDDINGS.get(cfg.model.backbone)
    explicit: frozenset[str] | None = getattr(cfg, "explicit_keys", None)
    if width is None or explicit is None:
        return
    changed = []
    if "model.embedding_dim" not in explicit and cfg.model.embedding_dim != width:
        cfg.model.embedding_dim = width
        changed.append(f"model.embedding_dim={width}")
    if "model.normalize" not in explicit and cfg.model.normalize:
        cfg.model.normalize = False
        changed.append("model.normalize=false")
    if "train.backbone_lr" not in explicit and cfg.train.backbone_lr is None:
        cfg.train.backbone_lr = cfg.train.lr / 10
        changed.append(f"train.backbone_lr={cfg.train.backbone_lr:g}")
    if changed:
        log.info("%s starts from its pretrained embedding: %s", cfg.model.backbone, ", ".join(changed))


def init_identity_head(model: nn.Module, backbone: str) -> bool:
    """Make a square embedding head of a pretrained-embedding backbone the identity (returns whether it did), so
    the model before training is the pretrained one."""
    head = getattr(model, "head", None)
    width = PRETRAINED_EMBEDDINGS.get(backbone)
    if width is None or not isinstance(head, nn.Linear) or head.in_features != head.out_features:
        return False
    with torch.no_grad():
        head.weight.copy_(torch.eye(width))
        if head.bias is not None:
            head.bias.zero_()
    return True
