"""What a run is made of, decided before any training: the data read and split, the config resolved against it,
the model, the untrained baseline, the loss and the batch sources — :func:`prepare` gives the :class:`Plan` that
training (``siamkit.training.pipeline``), evaluation (``siamkit.evaluate.run``), studies and benchmarks share.

Resolving is done once, here, on a copy of the config: every value the run decides (the recipe's, a pretrained
backbone's input, the loss's geometry, the training images' statistics) is set by :func:`prepare_data`, and
:class:`ConfigSources` records which key came from the user, which from a recipe, the data or a component; the
run writes both (``config.yaml``, ``config-sources.json``)."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from siamkit.config import RunConfig, flat_values
from siamkit.data.faces import CHIP_SIZE, face_alignment, resolve_mode
from siamkit.data.readers import DatasetBundle, load_dataset
from siamkit.data.samplers import PKSampler
from siamkit.data.splits import Splits, make_splits
from siamkit.data.transforms import Preprocess, channel_stats
from siamkit.data.tuples import TupleSampler, fixed_tuples
from siamkit.errors import ConfigError, DataError
from siamkit.evaluate.evaluator import parse_threshold_rule
from siamkit.losses import create_loss
from siamkit.losses.base import SiameseLoss
from siamkit.losses.selfsup import SelfSupervised
from siamkit.models.pretrained import backbone_preset
from siamkit.models.siamese import SiameseNet, build_model
from siamkit.recipes import apply_recipe, loss_trait
from siamkit.training.batches import BatchSource, ClassBatches, FixedBatches, TupleBatches, table_plan
from siamkit.training.pretrained_start import apply_pretrained_defaults, init_identity_head

log = logging.getLogger(__name__)


class ConfigSources:
    """Where each config key's value came from: ``user`` for the keys the config's file and overrides set
    (``load_config``'s ``explicit_keys``; every key of a config built otherwise, e.g. a saved run's), then, as
    :func:`prepare_data` resolves, the step that set or changed each other key (``note``). Keys left at their
    defaults are not listed.

    Example:
        >>> from siamkit.config import load_config
        >>> cfg = load_config(None, ["train.epochs=3"])
        >>> sources = ConfigSources(cfg)
        >>> cfg.train.lr = 0.5
        >>> sources.note(cfg, "recipe metric")
        >>> sources.sources
        {'train.epochs': 'user', 'train.lr': 'recipe metric'}
    """

    def __init__(self, cfg: RunConfig) -> None:
        explicit: frozenset[str] | None = getattr(cfg, "explicit_keys", None)
        self._last = flat_values(cfg)
        given = explicit if explicit is not None else frozenset(self._last)
        self.sources: dict[str, str] = {k: "user" for k in sorted(given)}

    def note(self, cfg: RunConfig, source: str) -> None:
        """Credit ``source`` with every key whose value changed since the last note (a value the user gave and a
        step then completed, such as a relative data path, stays the user's)."""
        now = flat_values(cfg)
        for key, value in now.items():
            if value != self._last.get(key) and self.sources.get(key) != "user":
                self.sources[key] = source
        self._last = now


@dataclass
class Prepared:
    cfg: RunConfig
    bundle: DatasetBundle
    splits: Splits
    preprocess: Preprocess
    input_shape: tuple[int, int, int]
    recipe_reason: str = ""
    """Why ``cfg.recipe`` (``siamkit.recipes.resolve_recipe``)."""
    sources: dict[str, str] = field(default_factory=dict)
    """Where each config key that is not a default came from (:class:`ConfigSources`)."""


def prepare_data(cfg: RunConfig) -> Prepared:
    """Load and split the data and resolve the config against it, on a copy (``cfg`` itself is left as given):
    ``Prepared.cfg`` is the run's config with every value decided — a pretrained backbone's input size, channels
    and normalisation (unless the config sets them), the recipe's values, the loss's head and geometry, the
    training images' statistics — and ``Prepared.sources`` says where each decided value came from."""
    cfg = copy.deepcopy(cfg)
    sources = ConfigSources(cfg)
    cfg.data.source = absolute_source(cfg.data.source)  # the saved config works from any folder
    preset = backbone_preset(cfg.model.backbone, cfg.model.backbone_args)
    if cfg.train.freeze_backbone and preset is None and cfg.model.backbone not in FIXED_BACKBONES:
        log.warning("train.freeze_backbone=true on %s without pretrained weights: the backbone stays at its random "
                    "initial weights and only the head trains; give model.backbone_args.weights (or pretrained) or "
                    "drop train.freeze_backbone", cfg.model.backbone)  # fmt: skip
    cfg.data.faces = resolve_mode(cfg.data.faces, cfg.model.backbone)  # the run records what it read
    if cfg.data.faces == "align" and cfg.data.image_size is None:
        cfg.data.image_size = CHIP_SIZE
    if preset is not None:
        cfg.data.image_size = cfg.data.image_size or preset.input_size
        cfg.data.channels = cfg.data.channels or preset.channels
        if cfg.data.mean is None or cfg.data.std is None:
            cfg.data.mean, cfg.data.std = list(preset.mean), list(preset.std)
        log.info("input %d×%d, %d channels, normalisation of the %s weights", cfg.data.image_size,
                 cfg.data.image_size, cfg.data.channels, cfg.model.backbone)  # fmt: skip
    sources.note(cfg, f"the {cfg.model.backbone} weights and face alignment")
    parse_threshold_rule(cfg.eval.threshold)  # a bad rule fails now, not after training
    with face_alignment(cfg.data.faces):
        bundle = load_dataset(cfg.data)
    splits = make_splits(bundle, cfg.data, cfg.train.seed)
    if training_input(cfg, bundle, splits):  # the input chosen from all images differs: decode again
        with face_alignment(cfg.data.faces):
            bundle = load_dataset(cfg.data)
        splits = make_splits(bundle, cfg.data, cfg.train.seed)
    sources.note(cfg, "the training identities' images")
    reason = apply_recipe(cfg, splits.method, len(np.unique(splits.train.images.labels)))
    sources.note(cfg, f"recipe {cfg.recipe}")
    apply_pretrained_defaults(cfg)  # dlib-face: the model before training is the pretrained one
    sources.note(cfg, f"the pretrained start of {cfg.model.backbone}")
    if loss_trait(cfg, "needs_sigmoid_head", False):  # the model is built with the head the loss trains
        cfg.model.sigmoid_head = True
    explicit: frozenset[str] | None = getattr(cfg, "explicit_keys", None)
    if not loss_trait(cfg, "normalized_embedding", True) and explicit is not None and "model.normalize" not in \
            explicit and cfg.model.normalize:  # fmt: skip
        cfg.model.normalize = False  # evaluated in the geometry the loss trains (FDT/FDC: z = o·U)
        log.info("loss %s trains unnormalised embeddings: model.normalize=false", cfg.loss.name)
    sources.note(cfg, f"loss {cfg.loss.name}")
    train_images = splits.train.images.images
    if cfg.data.mean is None or cfg.data.std is None:  # a value the config gives is kept, the other computed
        mean, std = channel_stats(train_images)
        cfg.data.mean = cfg.data.mean if cfg.data.mean is not None else mean
        cfg.data.std = cfg.data.std if cfg.data.std is not None else std
    c, h, w = splits.train.images.shape
    if len(cfg.data.mean) != c or len(cfg.data.std) != c:
        got = len(cfg.data.mean) if len(cfg.data.mean) != c else len(cfg.data.std)
        raise ConfigError(f"data.mean/data.std need {c} values (one per channel), got {got}")
    cfg.data.channels = c
    if cfg.data.image_size is None and h == w:
        cfg.data.image_size = h
    sources.note(cfg, "the training images")
    pre = Preprocess(cfg.data.mean, cfg.data.std, cfg.data.augment, seed=cfg.train.seed)
    log.info("input %d×%d×%d (channels × height × width) from %s", c, h, w, bundle.name)
    return Prepared(cfg, bundle, splits, pre, (c, h, w), reason, sources.sources)


FIXED_BACKBONES = ("hog",)
"""Backbones whose features are fixed by design (a descriptor): freezing them is no mistake."""
FILE_LAYOUTS = ("folder", "flat", "labels-csv")
"""Layouts whose input size and channels are chosen from the files' headers when the config leaves them unset."""


def training_input(cfg: RunConfig, bundle: DatasetBundle, splits: Splits) -> bool:
    """On an identity split of image files, set ``data.channels`` / ``data.image_size`` (whichever the config left
    unset) to what the **training** identities' images alone give (``auto_channels``, ``auto_size``): the test
    identities' images must not choose the input. True when that differs from the input decoded (from every
    image's header) and the data must be decoded again. A non-square training size that differs cannot be
    written to ``data.image_size``: kept as decoded, said in one line."""
    from siamkit.data.readers import auto_channels, auto_size, read_headers

    auto_c, auto_s = cfg.data.channels is None, cfg.data.image_size is None
    paths = splits.train.images.paths
    if splits.method != "identity" or bundle.layout not in FILE_LAYOUTS or not paths or not (auto_c or auto_s):
        return False
    used_c, used_h, used_w = (int(v) for v in bundle.images.images.shape[1:])
    files = [Path(p) for p in paths]
    headers = read_headers(files)
    c = (auto_channels(files, headers) or used_c) if auto_c else used_c
    h, w = (auto_size(files, headers) or (used_h, used_w)) if auto_s else (used_h, used_w)
    if (h, w) != (used_h, used_w) and h != w:
        log.warning("the training identities' images give a %d×%d input, the run keeps %d×%d (from every image): "
                    "set data.image_size to choose", h, w, used_h, used_w)  # fmt: skip
        h, w = used_h, used_w
    if (c, h, w) == (used_c, used_h, used_w):
        return False
    log.info("input %d×%d×%d from the training identities' images (every image gave %d×%d×%d): decoding again",
             c, h, w, used_c, used_h, used_w)  # fmt: skip
    cfg.data.channels = c
    if (h, w) != (used_h, used_w):
        cfg.data.image_size = h
    return True


def make_loss(cfg: RunConfig, num_classes: int = 0, embedding_dim: int | None = None) -> SiameseLoss:
    """The configured loss; ``num_classes`` and ``embedding_dim`` (default: ``model.embedding_dim``) fill the
    parameters of losses that ask for them (proxies, class centres). A loss that needs the sigmoid head has
    already turned ``model.sigmoid_head`` on (``prepare_data``), before the model is built."""
    dim = embedding_dim if embedding_dim is not None else cfg.model.embedding_dim
    context: dict[str, object] = {"num_classes": num_classes, "embedding_dim": dim}
    loss = create_loss(cfg.loss.name, cfg.loss.params, cfg.loss.miner, cfg.loss.miner_params, context)
    if cfg.loss.ssl_weight:
        if loss.input_kind != "labels":
            raise ConfigError("loss.ssl_weight needs labelled (P×K) batches: use a mining or proxy loss")
        loss.self_supervised = SelfSupervised(cfg.loss.ssl_weight, cfg.loss.ssl_temperature)
    return loss


def batch_sources(cfg: RunConfig, loss: SiameseLoss, splits: Splits) -> tuple[BatchSource, BatchSource]:
    """Training and validation batches for ``loss``: P×K batches when it mines, else sampled tuples."""
    seed, s = cfg.train.seed, splits
    if loss.input_kind == "labels" and s.train.tuples is not None:
        if loss.miner is None:
            raise DataError(f"loss {cfg.loss.name!r} needs labelled images, but the data is a pairs/triplets CSV")
        log.warning("the data is a pairs/triplets CSV with no class labels to mine: training on its tuples instead")
        loss.set_miner(None)
    if loss.input_kind == "labels":
        train = ClassBatches(PKSampler(s.train.images.labels, cfg.sampling.p, cfg.sampling.k, seed, "training"))
        val = ClassBatches(PKSampler(s.val.images.labels, cfg.sampling.p, cfg.sampling.k, seed + 1, "validation"))
        return train, FixedBatches(val.plan(0))
    kind = loss.input_kind
    sampler = TupleSampler(s.train.images.labels, s.train.tuples, kind, cfg.sampling, seed)
    val_table = fixed_tuples(s.val.images.labels, s.val.tuples, kind, cfg.sampling.val_tuples, seed + 1)
    return TupleBatches(sampler, cfg.train.batch_size, seed), FixedBatches(
        table_plan(val_table, cfg.train.batch_size, None)
    )


def absolute_source(source: str) -> str:
    """A data source as saved with a run: an existing path made absolute (the run then evaluates from any folder);
    a built-in name (digits, fashion-mnist, cifar10) as is."""
    if source in ("digits", "fashion-mnist", "cifar10"):
        return source
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else source


@dataclass
class Plan:
    """Everything a run trains and is scored with, built from its config before the first step."""

    prepared: Prepared
    model: SiameseNet
    untrained: SiameseNet
    """The network before training: these very initial weights, the "untrained network" baseline."""
    loss: SiameseLoss
    train_batches: BatchSource
    val_batches: BatchSource

    @property
    def cfg(self) -> RunConfig:
        return self.prepared.cfg


def prepare(cfg: RunConfig) -> Plan:
    """Data, resolved config, model, its untrained copy, loss and batch sources; torch's generator seeded by
    ``train.seed`` first, so that the same config builds the same initial weights."""
    torch.manual_seed(cfg.train.seed)
    prep = prepare_data(cfg)
    cfg = prep.cfg
    model = build_model(cfg.model, prep.input_shape[0])
    if init_identity_head(model, cfg.model.backbone):
        log.info("embedding head initialised to the identity: the model before training is %s's", cfg.model.backbone)
    loss = make_loss(cfg, prep.splits.n_classes, model.embedding_dim)
    untrained = copy.deepcopy(model).eval()
    train_batches, val_batches = batch_sources(cfg, loss, prep.splits)
    return Plan(prep, model, untrained, loss, train_batches, val_batches)
