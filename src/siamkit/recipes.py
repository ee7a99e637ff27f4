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

- ``metric``: for identity splits with many training identities (``docs/open-set.md``, "Many identities"): the
  multi-similarity loss on P×K batches of many classes and few images each, affine augmentation without mirror
  flips (a mirrored character or face can be another identity), a 128-d head and more epochs on the cosine
  schedule — what the metric-learning literature trains with; on the glyph set's unseen scripts it is far above
  the pixels and the descriptor, at the closed-set recipe's speed.

- ``descriptor``: no training (``train.epochs=0``): the ``hog`` backbone's fixed gradient histograms, the
  embedding that transfers best from too few identities to learn from (the glyph set with 10–20 training
  identities, six Fashion-MNIST splits of three).

``recipe: auto`` (the default) picks ``closed-set`` for splits that are not identity splits; for identity splits
``metric`` when the training part holds at least ``MIN_METRIC_IDENTITIES`` identities (enough for a learned
similarity to carry to new ones: measured on the glyph set with the training identities subsampled), else
``descriptor`` — or ``open-set`` when the config asks for training (``TRAINING_KEYS``: epochs, a backbone). The
rule and the count are logged and written to ``metrics.json`` (``recipe_reason``).
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
    "descriptor": {
        "model.backbone": "hog",
        "model.embedding_dim": 0,
        "train.epochs": 0,
    },
    "metric": {
        "loss.name": "multi-similarity",
        "loss.params": {"base": 0.5},  # PML's default; the paper's 1.0 collapses to one point on small sets
        "loss.miner": None,
        "loss.miner_params": {},
        "sampling.p": 32,
        "sampling.k": 4,
        "data.augment.enabled": True,
        "data.augment.hflip": 0.0,
        "model.embedding_dim": 128,
        "train.epochs": 25,
    },
}
TRAINING_KEYS = frozenset({"train.epochs", "model.backbone", "model.backbone_args"})
"""Keys whose presence in the user's config asks for training: ``auto`` then trains (``open-set``) even with few
identities instead of keeping the untrained descriptor (``descriptor``)."""
MIN_METRIC_IDENTITIES = 30
"""``recipe: auto`` on an identity split: ``metric`` from this many training identities on, ``open-set`` below."""
FISHER_LOSSES = ("fdt", "fdc")  # they project through the embedding head: it stays
RECIPE_NAMES = ("auto", *RECIPES)


def resolve_recipe(cfg: RunConfig, split: str, train_identities: int | None = None) -> tuple[str, str]:
    """The recipe to apply and why, in words (``auto``'s rule with the count it looked at)."""
    if cfg.recipe not in RECIPE_NAMES:
        raise ConfigError(f"unknown recipe {cfg.recipe!r}; choose one of: {', '.join(RECIPE_NAMES)}")
    if cfg.recipe != "auto":
        return cfg.recipe, "named in the config"
    if split != "identity":
        return "closed-set", f"auto: a {split} split (test images of the training classes)"
    if train_identities is not None and train_identities >= MIN_METRIC_IDENTITIES:
        return "metric", (
            f"auto: an identity split with {train_identities} training identities (≥ "
            f"{MIN_METRIC_IDENTITIES}: enough to learn a similarity that carries to new ones)"
        )
    count = "few" if train_identities is None else str(train_identities)
    few = f"auto: an identity split with {count} training identities (< {MIN_METRIC_IDENTITIES}: too few to learn"
    explicit: frozenset[str] | None = getattr(cfg, "explicit_keys", None)
    if explicit is not None and not explicit & TRAINING_KEYS:
        return "descriptor", (
            f"{few} a similarity that carries to new ones, measured in docs/open-set.md): the descriptor, "
            "untrained, ranks new identities better than any epoch trained on so few; --recipe open-set or "
            "--set train.epochs=N trains anyway"
        )
    return "open-set", f"{few} much; the config asks for training): training starts from the descriptor"


def apply_recipe(cfg: RunConfig, split: str, train_identities: int | None = None) -> str:
    """Set, in place, the recipe's values for every key its source (file and overrides, ``load_config``) left
    unset; a config not built by ``load_config`` (a saved run's) counts as setting every key. The self-supervised
    term is left out for a loss that trains on sampled tuples (it needs labelled P×K batches). Returns why this
    recipe (``resolve_recipe``)."""
    name, reason = resolve_recipe(cfg, split, train_identities)
    explicit: frozenset[str] | None = getattr(cfg, "explicit_keys", None)
    values = {k: v for k, v in RECIPES[name].items() if explicit is not None and k not in explicit}
    if values.get("loss.ssl_weight") and not _takes_labelled_batches(cfg):
        values = {k: v for k, v in values.items() if not k.startswith("loss.ssl")}
    if explicit is not None and any(k.startswith("loss.") for k in explicit):  # the user's loss, whole
        values = {k: v for k, v in values.items() if not k.startswith("loss.") or k.startswith("loss.ssl")}
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
        log.info("recipe %s (%s): %s", name, reason, ", ".join(f"{k}={v}" for k, v in values.items()))
    return reason


def loss_trait(cfg: RunConfig, name: str, default: Any) -> Any:
    """A class attribute (``needs_sigmoid_head``, ``tuple_kind``) of the loss registered as ``loss.name`` (or the
    user's ``package.module:Object``), read before the loss is built; ``default`` for a factory without it."""
    from siamkit.losses import LOSSES

    return getattr(LOSSES.get(cfg.loss.name), name, default)


def _takes_labelled_batches(cfg: RunConfig) -> bool:
    return cfg.loss.miner is not None or loss_trait(cfg, "tuple_kind", "") == "labels"
