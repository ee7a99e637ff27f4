"""What a run config alone decides is wrong, refused before any data is read: names against their registries,
keyword arguments against the components' signatures, combinations of keys, the device.

It sits above :mod:`siamkit.config` (which parses and range-checks, importing no component) and the registries it
consults, so that the config module stays light and free of import cycles; :func:`check_run` is the first thing
:func:`siamkit.training.pipeline.train_run` does."""

from __future__ import annotations

from siamkit.config import RunConfig, dotted_keys, to_dict
from siamkit.data.splits import SPLIT_METHODS
from siamkit.devices import resolve_device
from siamkit.distances import DISTANCES
from siamkit.errors import ConfigError
from siamkit.losses.base import LOSSES, check_margins
from siamkit.losses.miners import MINERS
from siamkit.models.registry import BACKBONES
from siamkit.recipes import RECIPE_NAMES, RECIPES
from siamkit.registry import check_kwargs
from siamkit.training.loop import MONITORS
from siamkit.training.optim import OPTIMIZERS, SCHEDULERS


def check_run(cfg: RunConfig) -> None:
    """Every check below, names first (a config error is reported before a device error)."""
    check_names(cfg)
    check_device(cfg)


def _plugin(name: str | None) -> bool:
    """A ``package.module:Object`` name: imported (or refused) when the component is built, never here."""
    return name is not None and ":" in name


def check_names(cfg: RunConfig, explicit: frozenset[str] | None = None) -> None:
    """Refuse every name and combination the config alone decides is wrong: the recipe, split, distance, monitor,
    optimizer and schedule; the loss, miner and backbone when the config names them (``explicit``, by default the
    keys its file and overrides set: a recipe may otherwise choose them after the split) and their keyword
    arguments. Registered names only: a plugin name is left to the component's builder."""
    given = explicit if explicit is not None else getattr(cfg, "explicit_keys", None)
    if given is None:
        given = frozenset(dotted_keys(to_dict(cfg)))
    if cfg.recipe not in RECIPE_NAMES:
        raise ConfigError(f"unknown recipe {cfg.recipe!r}; choose one of: {', '.join(RECIPE_NAMES)}")
    if cfg.data.split not in SPLIT_METHODS:
        raise ConfigError(f"unknown data.split {cfg.data.split!r}; choose one of: {', '.join(SPLIT_METHODS)}")
    stays_off = "data.augment.enabled" in given or (cfg.recipe != "auto" and not RECIPES.get(cfg.recipe, {}).get(
        "data.augment.enabled"))  # fmt: skip
    if cfg.loss.ssl_weight and not cfg.data.augment.enabled and stays_off:
        raise ConfigError("loss.ssl_weight needs two different views of each image: set data.augment.enabled=true")
    if cfg.train.unfreeze_epoch and not cfg.train.freeze_backbone:
        raise ConfigError("train.unfreeze_epoch is set but train.freeze_backbone is false; set both or neither")
    if not _plugin(cfg.eval.distance):
        DISTANCES.get(cfg.eval.distance)
    if cfg.train.monitor not in MONITORS:
        raise ConfigError(f"unknown train.monitor {cfg.train.monitor!r}; choose one of: {', '.join(MONITORS)}")
    for registry, name in ((OPTIMIZERS, cfg.train.optimizer), (SCHEDULERS, cfg.train.scheduler)):
        if not _plugin(name):
            registry.get(name)
    _check_loss(cfg, given)
    if "model.backbone" in given and not _plugin(cfg.model.backbone):
        BACKBONES.get(cfg.model.backbone)


def _check_loss(cfg: RunConfig, given: frozenset[str]) -> None:
    """Margins, the loss's and miner's names and keyword arguments. ``loss.params`` given without ``loss.name``
    must suit the default loss or one a recipe may choose."""
    check_margins("loss.params", cfg.loss.params)
    check_margins("loss.miner_params", cfg.loss.miner_params)
    if "loss.name" in given and not _plugin(cfg.loss.name):
        check_kwargs(LOSSES.get(cfg.loss.name), cfg.loss.params, f"loss {cfg.loss.name!r}")
    elif "loss.params" in given and not _plugin(cfg.loss.name):
        candidates = [cfg.loss.name, *(r["loss.name"] for r in RECIPES.values() if "loss.name" in r)]
        errors = []
        for name in candidates:
            try:
                check_kwargs(LOSSES.get(name), cfg.loss.params, f"loss {name!r}")
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == len(candidates):
            raise errors[0]
    if "loss.miner" in given:
        if cfg.loss.miner is None and cfg.loss.miner_params:
            raise ConfigError("loss.miner_params is set but loss.miner is not; name a miner or drop the params")
        if cfg.loss.miner is not None and not _plugin(cfg.loss.miner):
            check_kwargs(MINERS.get(cfg.loss.miner), cfg.loss.miner_params, f"miner {cfg.loss.miner!r}")


def check_device(cfg: RunConfig | str) -> None:
    """Refuse (one line naming ``train.device``) a device this machine does not have — ``cuda:7`` with fewer GPUs,
    ``cuda`` or ``mps`` where there is none, a name torch does not know (``gpu9``). Not part of loading a config,
    which also reads saved runs' configs (resumed elsewhere with another ``--set train.device``)."""
    resolve_device(cfg if isinstance(cfg, str) else cfg.train.device)
