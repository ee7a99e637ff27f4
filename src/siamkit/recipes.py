"""Named recipes: defaults for the keys a user's config does not set, chosen by measurement.

- ``closed-set``: the dataclass defaults (``docs/recipes.md``: the best closed-set figures on Fashion-MNIST
  under a 250 s CPU budget).
- ``open-set``: for identities never seen in training (``docs/open-set.md``): the closed-set recipe plus
  augmentation, a self-supervised NT-Xent term on two augmented views (it keeps the detail that a supervised
  loss on few training identities throws away), no projection head (the backbone's pooled features are the
  embedding: better on unseen classes than a 64-d head, measured on three class-disjoint splits) and the ``hog``
  backbone: a histogram of oriented gradients plus a learned residual that starts at zero, so the initial
  weights — the epoch-0 candidate — are a descriptor above the raw pixels on unseen classes (measured on six
  class-disjoint Fashion-MNIST splits), and a trained epoch is kept only where it beats it on the validation
  identities. Not applied when the config sets ``model.backbone_args`` (options for the default backbone).

``recipe: auto`` (the default) picks ``open-set`` for identity splits and ``closed-set`` otherwise.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from siamkit.config import RunConfig, from_dict, to_dict
from siamkit.errors import ConfigError

log = logging.getLogger(__name__)

RECIPES: dict[str, dict[str, Any]] = {
    "closed-set": {},
    "open-set": {
        "data.augment.enabled": True,
        "data.augment.hflip": 0.5,
        "data.augment.brightness": 0.3,
        "data.augment.contrast": 0.3,
        "loss.ssl_weight": 1.0,
        "loss.ssl_temperature": 0.2,
        "model.embedding_dim": 0,
        "model.backbone": "hog",
    },
}
FISHER_LOSSES = ("fdt", "fdc")  # they project through the embedding head: it stays
RECIPE_NAMES = ("auto", *RECIPES)


def resolve_recipe(cfg: RunConfig, split: str) -> str:
    if cfg.recipe not in RECIPE_NAMES:
        raise ConfigError(f"unknown recipe {cfg.recipe!r}; choose one of: {', '.join(RECIPE_NAMES)}")
    if cfg.recipe != "auto":
        return cfg.recipe
    return "open-set" if split == "identity" else "closed-set"


def apply_recipe(cfg: RunConfig, split: str) -> None:
    """Set, in place, the recipe's values for every key its source (file and overrides, ``load_config``) left
    unset; a config not built by ``load_config`` (a saved run's) counts as setting every key. The self-supervised
    term is left out for a loss that trains on sampled tuples (it needs labelled P×K batches)."""
    name = resolve_recipe(cfg, split)
    explicit: frozenset[str] | None = getattr(cfg, "explicit_keys", None)
    values = {k: v for k, v in RECIPES[name].items() if explicit is not None and k not in explicit}
    if values.get("loss.ssl_weight") and not _takes_labelled_batches(cfg):
        values = {k: v for k, v in values.items() if not k.startswith("loss.ssl")}
    if cfg.loss.name in FISHER_LOSSES:
        values.pop("model.embedding_dim", None)
    if explicit is not None and "model.backbone_args" in explicit:  # options written for the default backbone
        values.pop("model.backbone", None)
    data = to_dict(cfg)
    data["recipe"] = name
    for key, value in values.items():
        *sections, last = key.split(".")
        node = data
        for section in sections:
            node = node[section]
        node[last] = value
    out: RunConfig = from_dict(RunConfig, data)  # checked against the schema like any config
    for f in dataclasses.fields(RunConfig):
        setattr(cfg, f.name, getattr(out, f.name))
    if values:
        log.info("recipe %s: %s", name, ", ".join(f"{k}={v}" for k, v in values.items()))


def loss_trait(cfg: RunConfig, name: str, default: Any) -> Any:
    """A class attribute (``needs_sigmoid_head``, ``tuple_kind``) of the loss registered as ``loss.name`` (or the
    user's ``package.module:Object``), read before the loss is built; ``default`` for a factory without it."""
    from siamkit.losses import LOSSES

    return getattr(LOSSES.get(cfg.loss.name), name, default)


def _takes_labelled_batches(cfg: RunConfig) -> bool:
    return cfg.loss.miner is not None or loss_trait(cfg, "tuple_kind", "") == "labels"
