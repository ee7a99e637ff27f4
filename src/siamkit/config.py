"""Run configuration as dataclasses: strict YAML load/dump and type-checked ``a.b=value`` overrides.

Every key is checked against the schema: an unknown key or a value of the wrong type is a ``ConfigError``
naming the key. ``dict`` fields (``*.params``, ``model.backbone_args``) hold keyword arguments that the
registry checks against the component's own signature.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from siamkit.errors import ConfigError
from siamkit.files import atomic_write_text

T = TypeVar("T")


@dataclass
class AugmentConfig:
    """Batched random augmentation of training images only (SPEC §2.5). All off by default."""

    enabled: bool = False
    degrees: float = 10.0
    translate: float = 0.1
    scale_min: float = 0.9
    scale_max: float = 1.1
    hflip: float = 0.0
    shear: float = 0.0
    """Largest shear angle in degrees (x and y, drawn independently), as Koch et al.'s affine distortions."""
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0


@dataclass
class DataConfig:
    source: str = "digits"
    """``digits``, ``fashion-mnist``, or a path: class-per-folder dir, flat dir, IDX dir, pairs/triplets/labels CSV."""
    layout: str = "auto"
    """``auto`` | ``folder`` | ``flat`` | ``pairs-csv`` | ``triplets-csv`` | ``labels-csv`` | ``idx`` | ``digits`` |
    ``fashion-mnist``."""
    flat_field: int = 1
    """Flat layout: the class is this ``_``-separated field of the file name (0-based)."""
    flat_regex: str | None = None
    """Flat layout: a regex whose group ``class`` (or group 1) is the class; overrides ``flat_field``."""
    image_size: int | None = None
    """Resize every image to this square size; None takes it from the data: the size most images share, else their
    median height and width."""
    channels: int | None = None
    """1 (grayscale) or 3 (RGB); None takes it from the data: 3 when at least a tenth of the images are colour."""
    skip_bad: bool = False
    """Skip unreadable images and report them instead of failing."""
    grouped: bool | None = None
    """Class-per-folder data: ``true`` reads ``root/<group>/<class>/<image>`` (classes grouped, e.g. characters by
    alphabet: the identity split then holds out whole groups), ``false`` reads ``root/<class>/…`` (images at any
    depth under a class folder are that class), None detects the grouped layout (top folders holding only
    folders of images, a median of at least 5 each)."""
    split: str = "auto"
    """How validation/test are carved: ``random`` | ``per-class`` | ``identity`` (open-set: training, validation
    and test identities pairwise disjoint) | ``auto``: ``identity`` for one's own class-per-folder or flat folders
    holding at least 8 identities (a folder per person asks how the model does on the next person), ``random``
    otherwise (digits, IDX sets, CIFAR-10: their standard closed-set protocol)."""
    train_classes: list[str] | str | None = None
    """Identity split: the training identities, by class name or index (a list, or ``"0,2,4"``); None = every
    identity not used for validation or test. Without ``val_classes``, validation identities are carved from
    these."""
    val_classes: list[str] | str | None = None
    """Identity split: the validation identities (checkpoint, early stopping, threshold); None = a
    ``val_fraction`` of the training identities (at least 2)."""
    test_classes: list[str] | str | None = None
    """Identity split: the test identities; None = a ``test_fraction`` of the identities (at least 2), taken from
    the source's own test files when it has them (IDX, CIFAR-10)."""
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    """Share held out for testing when the source has no test split of its own."""
    val_per_class: int = 0
    test_per_class: int = 0
    mean: list[float] | None = None
    """Per-channel normalisation; None computes it from the training images."""
    std: list[float] | None = None
    limit: int | None = None
    """Use only N training images, sampled (seeded) and stratified by class (quick experiments)."""
    cache: bool = True
    """Folders and CSVs: decode once, in parallel, into a cache file that later runs open in seconds
    (``siamkit.data.cache``); false decodes in memory every run."""
    cache_dir: str | None = None
    """Where decoded caches go; None = ``$SIAMKIT_CACHE`` or ``~/.cache/siamkit``, then ``decoded/``."""
    workers: int = 0
    """Decoding processes; 0 = one per core."""
    memory_limit_mb: float = 1024
    """A decoded set up to this size is loaded into memory; a larger one stays in the cache file and each batch
    reads its rows (resident memory bounded whatever the dataset's size)."""
    progress: bool = True
    """A decoding progress bar (images/s) on a terminal."""
    faces: str = "auto"
    """``align``: every image becomes its face chip, found and aligned as dlib's face ResNet was trained (HOG
    detector, 5-point landmarks, 150×150, padding 0.25; ``siamkit.data.faces``; needs ``siamkit[faces]``);
    ``off``: images as they are; ``auto``: ``align`` with the ``dlib-face`` backbone, else ``off``. The run
    records the resolved value, and ``verify``, galleries and the service apply it to their images too."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class SamplingConfig:
    pairs: str = "per-image"
    """``per-image`` (1 positive + 1 negative each) | ``coin-flip`` | ``balanced``."""
    n_pairs: int = 2000
    """``balanced``: n positive and n negative pairs."""
    triplets: str = "random"
    """``random`` (one per image) | ``combinations`` (all 3-combinations per class, capped)."""
    max_triplets: int = 20000
    regenerate: bool = True
    """Draw fresh pairs/triplets every epoch (fresh negatives) instead of fixing them once."""
    val_tuples: int = 2000
    """Pairs or triplets drawn once from the validation split for the validation loss."""
    p: int = 8
    """Online mining (``loss.miner`` set): classes per P×K batch (capped at the number of classes)."""
    k: int = 16
    """Online mining: images per class in a P×K batch (batches then hold P·K images; ``train.batch_size`` is
    not used)."""


@dataclass
class ModelConfig:
    backbone: str = "convnet"
    backbone_args: dict[str, Any] = field(default_factory=dict)
    embedding_dim: int = 64
    """Width of the embedding head ``Linear(num_features → embedding_dim)``; 0 = no head: the backbone's pooled
    features are the embedding."""
    normalize: bool = True
    """L2-normalise embeddings."""
    sigmoid_head: bool = False
    """Dense(1, sigmoid) on the distance (SPEC §3.1); forced on by the ``bce`` loss."""


DEFAULT_LOSS = "contrastive"


@dataclass
class LossConfig:
    """The default is the measured default recipe (docs/recipes.md): contrastive loss, margin 0.5, on the pairs
    of P×K batches mined by ``hard-pairs``. Naming another loss in a config file or override starts from that
    loss's own defaults (``params``, ``miner`` and ``miner_params`` reset unless given too); naming another
    miner (or ``null``) resets ``miner_params``."""

    name: str = DEFAULT_LOSS
    """A registered loss (contrastive, triplet, bce, huber, fdc, fdt, normalized-softmax) or
    ``package.module:Class``."""
    params: dict[str, Any] = field(default_factory=lambda: {"margin": 0.5})
    miner: str | None = "hard-pairs"
    """Online mining on P×K batches: all, batch-all, semi-hard, hard, batch-hard (triplets), all-pairs,
    hard-pairs, batch-hard-pairs (pairs), or ``package.module:Class``; None trains on sampled tuples."""
    miner_params: dict[str, Any] = field(default_factory=dict)
    """The miner's keyword arguments; its ``margin`` (semi-hard, batch-all) or ``neg_margin`` (hard-pairs)
    defaults to the loss's ``margin`` when not given here."""
    ssl_weight: float = 0.0
    """Weight of a self-supervised term (NT-Xent, SimCLR) between two augmented views of every training image,
    added to the loss; needs ``data.augment.enabled``. 0 = off."""
    ssl_temperature: float = 0.1


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    """Pairs or triplets per batch for tuple losses (mining losses use P×K, see ``sampling``)."""
    optimizer: str = "adam"
    lr: float = 2e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    scheduler: str = "cosine"
    """``none`` | ``step`` | ``exponential`` | ``cosine`` (to 0 over ``epochs``)."""
    step_size: int = 10
    gamma: float = 0.1
    patience: int = 5
    """Early stopping: epochs without an improvement of ``monitor``; 0 disables."""
    monitor: str = "auto"
    """What picks the kept checkpoint and drives early stopping: ``val_loss`` (lowest), ``map_at_r`` or
    ``precision_at_1`` (highest; leave-one-out retrieval on the validation split), or ``auto``: ``map_at_r``
    when the validation images carry class labels, else ``val_loss``."""
    device: str = "auto"
    seed: int = 0
    progress: bool = True
    channels_last: bool = True
    """Channels-last memory format for model and batches (faster convolutions on CPU and recent GPUs)."""
    amp: bool = False
    """Mixed precision for the training steps: float16 with gradient scaling on a GPU (its tensor cores),
    bfloat16 on the CPU (only faster where the CPU has bfloat16 instructions); validation and evaluation stay in
    float32."""
    keep_freed_memory: bool = True
    """CPU on Linux/glibc: malloc keeps freed activation buffers for the next step instead of returning them to
    the system (``siamkit.devices.keep_freed_memory``): about 1.5× faster CPU steps."""
    freeze_backbone: bool = False
    """Transfer learning: train only the embedding head; the backbone gets no gradient and no optimiser state."""
    unfreeze_epoch: int = 0
    """With ``freeze_backbone``: from this epoch on, train the backbone too (0 = never)."""
    unfreeze_stages: int = 0
    """What ``unfreeze_epoch`` unfreezes: the last N stages of the backbone (0 = all of it)."""
    sync_batchnorm: bool = False
    """Distributed training on GPUs: BatchNorm statistics over the global batch (SyncBatchNorm)."""
    backbone_lr: float | None = None
    """Learning rate of the backbone's parameter group (None = ``lr``); the head always uses ``lr``."""


@dataclass
class EvalConfig:
    n_pairs: int = 5000
    """Genuine and impostor pairs each, sampled (seeded) from the evaluation split."""
    n_triplets: int = 5000
    recall_at: list[int] = field(default_factory=lambda: [1, 5, 10])
    batch_size: int = 512
    tsne_points: int = 2000
    """t-SNE map of at most this many test embeddings in the run's report (0: none)."""
    threshold: str = "accuracy"
    """How the verification threshold is chosen on the validation pairs: ``accuracy`` (the most pairs right),
    ``fpr:<rate>`` (the largest threshold whose false-accept rate is at most ``rate``, e.g. ``fpr:0.001``), or a
    fixed distance (e.g. ``0.8``)."""
    distance: str = "euclidean"
    """How embeddings are compared for verification, retrieval and ``verify``: euclidean, squared_euclidean,
    cosine, or cosine_similarity (a similarity: thresholds then apply to its negative)."""
    episodes: int = 1000
    """N-way K-shot episodes on the test identities (``siamkit.evaluate.episodes``: nearest prototype, the mean of
    the K support embeddings), for every way × shot below; 0: none."""
    way: list[int] = field(default_factory=lambda: [5, 20])
    shot: list[int] = field(default_factory=lambda: [1, 5])
    query: int = 15
    """Query images per class and episode (fewer when the classes have fewer images)."""
    episode_seed: int = 0
    within_group: bool = False
    """Draw each episode's classes from one group (an alphabet of characters: ``data.grouped`` folders), as Koch
    and Lake's "within alphabet" protocol; the data must be grouped."""


@dataclass
class RunConfig:
    name: str = "default"
    runs_dir: str = "runs"
    recipe: str = "auto"
    """Defaults for the keys a config file or override does not set (``siamkit.recipes``): ``closed-set`` (the
    default recipe), ``open-set`` (tuned on identities never seen in training), or ``auto``: ``open-set`` when the
    split is an identity split, ``closed-set`` otherwise. The run's ``config.yaml`` records the resolved values."""
    data: DataConfig = field(default_factory=DataConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# Every numeric key's range: (low, high, low inclusive, high inclusive); None = unbounded. ``check_ranges`` applies
# them when a config is built, before any work starts; README's "Value ranges" table is ``ranges_table()``.
INF = float("inf")
RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "data.flat_field": (0, INF, True, False),
    "data.image_size": (4, 4096, True, True),
    "data.channels": (1, 3, True, True),
    "data.val_fraction": (0, 1, False, False),
    "data.test_fraction": (0, 1, True, False),
    "data.val_per_class": (0, INF, True, False),
    "data.test_per_class": (0, INF, True, False),
    "data.limit": (2, INF, True, False),
    "data.workers": (0, 1024, True, True),
    "data.memory_limit_mb": (0, INF, True, False),
    "data.mean": (-INF, INF, False, False),
    "data.std": (0, INF, False, False),
    "data.augment.degrees": (0, 180, True, True),
    "data.augment.translate": (0, 1, True, True),
    "data.augment.scale_min": (0, INF, False, False),
    "data.augment.scale_max": (0, INF, False, False),
    "data.augment.hflip": (0, 1, True, True),
    "data.augment.shear": (0, 60, True, True),
    "data.augment.brightness": (0, 1, True, True),
    "data.augment.contrast": (0, 1, True, True),
    "data.augment.saturation": (0, 1, True, True),
    "sampling.n_pairs": (1, INF, True, False),
    "sampling.max_triplets": (1, INF, True, False),
    "sampling.val_tuples": (1, INF, True, False),
    "sampling.p": (2, INF, True, False),
    "sampling.k": (2, INF, True, False),
    "model.embedding_dim": (0, INF, True, False),
    "loss.ssl_weight": (0, INF, True, False),
    "loss.ssl_temperature": (0, INF, False, False),
    "train.epochs": (0, INF, True, False),
    "train.batch_size": (1, INF, True, False),
    "train.lr": (0, 10, True, True),
    "train.weight_decay": (0, INF, True, False),
    "train.momentum": (0, 1, True, False),
    "train.step_size": (1, INF, True, False),
    "train.gamma": (0, 1, False, True),
    "train.patience": (0, INF, True, False),
    "train.seed": (0, 2**32 - 1, True, True),
    "train.unfreeze_epoch": (0, INF, True, False),
    "train.unfreeze_stages": (0, INF, True, False),
    "train.backbone_lr": (0, 10, True, True),
    "eval.n_pairs": (1, INF, True, False),
    "eval.n_triplets": (1, INF, True, False),
    "eval.recall_at": (1, INF, True, False),
    "eval.batch_size": (1, INF, True, False),
    "eval.tsne_points": (0, INF, True, False),
    "eval.episodes": (0, INF, True, False),
    "eval.way": (2, INF, True, False),
    "eval.shot": (1, INF, True, False),
    "eval.query": (1, INF, True, False),
    "eval.episode_seed": (0, 2**32 - 1, True, True),
}


def _interval(low: float, high: float, low_in: bool, high_in: bool) -> str:
    if high == INF:
        return f"{'≥' if low_in else '>'} {low:g}"
    if low == -INF:
        return f"{'≤' if high_in else '<'} {high:g}"
    return f"{'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"


def check_ranges(cfg: Any, prefix: str = "") -> None:
    """Refuse (``ConfigError`` naming the key and its range) any numeric value outside ``RANGES``; lists are checked
    item by item, None (unset) passes."""
    for f in dataclasses.fields(cfg):
        key, value = f"{prefix}{f.name}", getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_ranges(value, f"{key}.")
            continue
        bounds = RANGES.get(key)
        if bounds is None or value is None:
            continue
        low, high, low_in, high_in = bounds
        for v in value if isinstance(value, list) else [value]:
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            ok = (v > low or (low_in and v == low)) and (v < high or (high_in and v == high))
            if not ok or v != v:  # NaN is never in range
                raise ConfigError(f"config key {key!r} must be {_interval(*bounds)}, got {v!r}")
    if prefix == "data." and cfg.std is not None and any(0 < v < MIN_STD for v in cfg.std):
        tiny = next(v for v in cfg.std if 0 < v < MIN_STD)
        raise ConfigError(f"config key 'data.std' must be ≥ {MIN_STD:g} (one grey level is 1/255 ≈ 0.004; a "
                          f"smaller std blows pixel noise up past 1000×), got {tiny!r}; leave it unset to compute "
                          "it")  # fmt: skip
    if prefix == "data." and cfg.channels not in (None, 1, 3):
        raise ConfigError(f"config key 'data.channels' must be 1 (grayscale) or 3 (RGB), got {cfg.channels!r}")
    if prefix == "data.augment." and cfg.scale_min > cfg.scale_max:
        raise ConfigError(f"data.augment.scale_min ({cfg.scale_min}) must not exceed data.augment.scale_max "
                          f"({cfg.scale_max})")  # fmt: skip


def ranges_table() -> str:
    """The ``RANGES`` as a Markdown table (README, "Value ranges")."""
    rows = "\n".join(f"| `{k}` | {_interval(*v)} |" for k, v in RANGES.items())
    return "| key | range |\n|---|---|\n" + rows


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(cls: type[Any], data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys and ill-typed values."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section {prefix or '<root>'!r} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key {full!r}; valid keys here: {', '.join(sorted(names))}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = from_dict(typing.cast(type, hint), value, f"{full}.")
        else:
            kwargs[key] = _coerce(value, hint, full)
    return cls(**kwargs)


class DuplicateKey(Exception):
    """A YAML mapping names one key twice (YAML's last-one-wins would drop the first silently)."""


class UnboundedYAML(Exception):
    """A YAML document nested deeper than ``MAX_YAML_DEPTH`` or whose aliases expand past ``MAX_YAML_NODES``."""


MAX_YAML_DEPTH = 64
"""Deepest nesting of collections a config may have (the schema needs 4; 5,000 exhausted Python's stack)."""
MAX_YAML_NODES = 100_000
"""Most values a config may hold once its aliases are expanded: a few kB of ``&a [*b, *b, …]`` lines otherwise
expand to billions of values ("billion laughs") that every later copy of the config (overrides, the run's
metadata) would materialise; a real config holds a few hundred."""
MAX_CONFIG_BYTES = 1 << 20
"""Largest config file read (a real one is a few kB)."""


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no tags that build objects) that refuses a key given twice in one mapping, nesting
    deeper than ``MAX_YAML_DEPTH`` (before Python's stack runs out) and aliases that expand past
    ``MAX_YAML_NODES`` values or refer to their own collection (checked on the composed node graph, before any
    value is built)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise UnboundedYAML(f"line {mark.line + 1}: nested more than {MAX_YAML_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> Any:
        node = super().compose_document()
        if node is not None:
            expanded_size(node)
        return node


def expanded_size(root: yaml.Node, limit: int = MAX_YAML_NODES, depth: int = MAX_YAML_DEPTH) -> int:
    """How many values the node graph ``root`` holds with every alias expanded (each shared node counted once per
    reference, memoised: linear in the graph); ``UnboundedYAML`` past ``limit`` values, past ``depth`` levels
    (aliases nest too) or for a collection that contains itself through an alias."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node, level: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        line = node.start_mark.line + 1
        if key in active:
            raise UnboundedYAML(f"line {line}: an alias refers to the collection that holds it")
        if level > depth:
            raise UnboundedYAML(f"line {line}: nested more than {depth} levels deep (counting what aliases hold)")
        total = 1
        if isinstance(node, yaml.CollectionNode):
            active.add(key)
            children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else node.value
            for child in children:
                total += size(child, level + 1)
                if total > limit:
                    raise UnboundedYAML(f"line {line}: its aliases expand to more than {limit:,} values (a config "
                                        "holds a few hundred); write the values out instead")  # fmt: skip
            active.discard(key)
        sizes[key] = total
        return total

    return size(root, 1)


def _strict_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, str | int | float | bool) and key in seen:
            raise DuplicateKey(f"line {key_node.start_mark.line + 1}: key {key!r} is given twice (first on line "
                               f"{seen[key]})")  # fmt: skip
        if isinstance(key, str | int | float | bool):
            seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _strict_mapping)


def parse_yaml(text: str) -> Any:
    """``text`` parsed by ``StrictLoader``; raises ``yaml.YAMLError``, ``DuplicateKey`` or ``UnboundedYAML``."""
    return yaml.load(text, Loader=StrictLoader)  # a SafeLoader: no object-building tags


def read_mapping(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML config file's top-level mapping (errors name the file)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} not found; give the path of a YAML file")
    try:
        if p.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{p}: {p.stat().st_size:,} bytes is no config file (at most {MAX_CONFIG_BYTES:,}); "
                              "give the YAML file of the run's settings")  # fmt: skip
        text = p.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the config file ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start} cannot be decoded); save the config as UTF-8") \
            from None  # fmt: skip
    try:
        loaded = parse_yaml(text) or {}
    except DuplicateKey as exc:
        raise ConfigError(f"{p}: {exc}; keep one of them") from None
    except UnboundedYAML as exc:
        raise ConfigError(f"{p}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections")
    return loaded


def load_dataclass(schema: type[T], path: str | os.PathLike[str] | None = None,
                   overrides: list[str] | None = None) -> T:  # fmt: skip
    """Any config dataclass ``schema`` from a YAML file (defaults when ``path`` is None) and ``a.b=value``
    overrides, every key checked against the schema (the run config, the classification study's, ...)."""
    data = read_mapping(path) if path is not None else {}
    for item in overrides or []:
        set_key(data, item, schema)
    return typing.cast(T, from_dict(schema, data))


def load_config(
    path: str | os.PathLike[str] | RunConfig | None = None, overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
) -> RunConfig:  # fmt: skip
    """A run config from a YAML file (defaults when ``path`` is None), or from a ``RunConfig`` built in Python
    (whose keys that differ from the defaults count as given, as a file's would), then ``a.b=value`` overrides
    (values parsed as YAML) and ``values`` (``{"a.b": value}``, typed values used as they are). The keys given
    are kept (``explicit_keys``): a recipe or a component fills only the others."""
    if isinstance(path, RunConfig):
        data: dict[str, Any] = given_keys(path)
    else:
        data = read_mapping(path) if path is not None else {}
    for item in overrides or []:
        set_key(data, item)
    for key, value in (values or {}).items():
        set_value(data, key, value)
    loss = data.get("loss")
    if isinstance(loss, dict):
        if "name" in loss and loss["name"] != DEFAULT_LOSS:
            # another loss starts from its own defaults, not from the default recipe's margin and miner
            loss.setdefault("params", {})
            loss.setdefault("miner", None)
        if "miner" in loss:
            loss.setdefault("miner_params", {})  # likewise another miner (or none)
    cfg = typing.cast(RunConfig, from_dict(RunConfig, data))
    check_ranges(cfg)
    _check_lengths(cfg.data)
    object.__setattr__(cfg, "explicit_keys", frozenset(dotted_keys(data)))
    return cfg


MIN_STD = 1e-3
"""Smallest ``data.std`` a config may give: one grey level is 1/255 ≈ 0.004 of the [0, 1] range; dividing by less
than a quarter of it blows pixel noise up more than a thousandfold (and 1e-12 overflows float16)."""


def _check_lengths(data: DataConfig) -> None:
    """``data.mean`` / ``data.std``: one value per channel (1 or 3, ``data.channels`` when set), as many of each."""
    for key, values in (("data.mean", data.mean), ("data.std", data.std)):
        if values is None:
            continue
        allowed = (data.channels,) if data.channels else (1, 3)
        if len(values) not in allowed:
            raise ConfigError(f"config key {key!r} needs {' or '.join(map(str, allowed))} values (one per channel), "
                              f"got {len(values)}")  # fmt: skip
    if data.mean is not None and data.std is not None and len(data.mean) != len(data.std):
        raise ConfigError(f"data.mean has {len(data.mean)} values and data.std {len(data.std)}; give one per channel "
                          "in both")  # fmt: skip


def dotted_keys(data: dict[str, Any], prefix: str = "", cls: Any = None) -> list[str]:
    """The ``a.b`` keys set in a nested config dict (a ``dict``-typed field such as ``loss.params`` is one key)."""
    cls = cls or RunConfig
    hints = typing.get_type_hints(cls)
    keys = []
    for key, value in data.items():
        hint = hints.get(key)
        if isinstance(value, dict) and hint is not None and dataclasses.is_dataclass(hint):
            keys += dotted_keys(value, f"{prefix}{key}.", hint)
        else:
            keys.append(f"{prefix}{key}")
    return keys


def flat_values(cfg: Any) -> dict[str, Any]:
    """``{dotted key: value}`` of a config (a ``dict``-typed field such as ``loss.params`` is one key).

    Example:
        >>> flat_values(RunConfig())["train.epochs"]
        10
    """
    data = to_dict(cfg)
    out = {}
    for key in dotted_keys(data):
        node: Any = data
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return out


def given_keys(cfg: RunConfig) -> dict[str, Any]:
    """The nested dict of ``cfg``'s values that differ from the defaults (what a YAML file setting them holds).

    Example:
        >>> cfg = RunConfig()
        >>> cfg.train.epochs = 3
        >>> given_keys(cfg)
        {'train': {'epochs': 3}}
    """
    default = flat_values(RunConfig())
    out: dict[str, Any] = {}
    for key, value in flat_values(cfg).items():
        if value != default[key]:
            set_value(out, key, copy.deepcopy(value))
    return out


def set_value(data: dict[str, Any], key: str, value: Any, schema: Any = None) -> None:
    """Set the dotted ``key`` of a nested config dict to ``value`` as it is (no YAML parsing); the key is checked
    against ``schema`` (the run config by default) and the value when the config is built."""
    parts = key.strip().split(".")
    check_key(parts, schema)
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config key {'.'.join(parts)!r}: {part!r} is not a section in this config")
        node = child
    node[parts[-1]] = value


def set_key(data: dict[str, Any], assignment: str, schema: Any = None) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML) to a nested dict; the key is checked against ``schema`` (the
    run config by default) and the value on build."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {assignment!r} must look like section.key=value")
    parts = key.strip().split(".")
    check_key(parts, schema)
    try:
        value = parse_yaml(raw) if raw.strip() else None
    except (DuplicateKey, UnboundedYAML) as exc:
        raise ConfigError(f"override {key.strip()}: its value {_short(raw)}: {exc}") from None
    except yaml.YAMLError:
        value = raw
    node = data
    for i, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            where = ".".join(parts[: i + 1])
            raise ConfigError(f"config key {where!r} is a section, but it was given a value ({node!r}); set its keys "
                              f"instead, e.g. {where}.KEY=VALUE")  # fmt: skip
    node[parts[-1]] = value


def _short(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def check_key(parts: list[str], schema: Any = None) -> None:
    """Refuse (one line, with the valid keys) a dotted key ``parts`` that ``schema`` (the run config by default)
    does not have."""
    cls: Any = schema or RunConfig
    for i, part in enumerate(parts):
        if cls is dict:  # free-form keyword arguments: checked by the registry
            return
        if not dataclasses.is_dataclass(cls):
            raise ConfigError(f"unknown config key {'.'.join(parts)!r}: {'.'.join(parts[:i])!r} is not a section")
        hints = typing.get_type_hints(cls)
        if part not in hints:
            where = ".".join(parts[:i]) or "top level"
            raise ConfigError(
                f"unknown config key {'.'.join(parts)!r}; valid keys in {where}: {', '.join(sorted(hints))}"
            )
        hint = hints[part]
        cls = dict if typing.get_origin(hint) is dict else hint


def dump_config(cfg: RunConfig, path: str | os.PathLike[str]) -> None:
    atomic_write_text(Path(path), yaml.safe_dump(to_dict(cfg), sort_keys=False))


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"config key {key!r} may not be null")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key {key!r} must be a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} must be a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key {key!r} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key {key!r} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key {key!r} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key {key!r} must be a string, got {value!r}")
    raise ConfigError(f"config key {key!r} has an unsupported type {hint!r}")
