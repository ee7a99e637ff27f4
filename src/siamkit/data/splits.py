"""Train / validation / test splits (SPEC §2.4): random fraction, fixed count per class, identity-disjoint."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np

from siamkit.config import DataConfig
from siamkit.data.imageset import ImageSet, TupleTable
from siamkit.data.readers import DatasetBundle, class_groups
from siamkit.errors import ConfigError, DataError
from siamkit.text import name_list

log = logging.getLogger(__name__)
SPLIT_METHODS = ("auto", "random", "per-class", "identity")
AUTO_IDENTITY_MIN = 8
"""``data.split=auto`` chooses identities for class-per-folder / flat data with at least this many classes: 2 for
validation, 2 for test and 4 or more to train on."""
MIN_HELD_IDENTITIES = 2


@dataclass
class Split:
    """One split: its images, and the fixed tuples indexing them when the source is a CSV manifest."""

    images: ImageSet
    tuples: TupleTable | None = None


@dataclass
class Splits:
    train: Split
    val: Split
    test: Split
    method: str = "random"
    """The split actually made (``auto`` resolved)."""
    identities: dict[str, list[str]] | None = None
    """Identity splits: the class names in each of ``train``, ``validation``, ``test`` (pairwise disjoint)."""

    @property
    def n_classes(self) -> int:
        """The size of the label space over all three parts (a proxy loss needs a row for every label it meets:
        validation labels too, which an identity split keeps out of training)."""
        return 1 + max(int(x.images.labels.max(initial=-1)) for x in (self.train, self.val, self.test))


def split_indices(
    labels: np.ndarray, method: str, fraction: float, per_class: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Return (kept, held-out) index arrays, both sorted.

    - ``random``: a random ``fraction`` of all items.
    - ``per-class``: ``per_class`` items of every class (or ``fraction`` of each class when ``per_class`` is 0).
    - ``identity``: whole classes (``fraction`` of them, at least one): held-out identities never appear in
      the kept part — the open-set protocol.
    """
    n = len(labels)
    if method == "random":
        perm = rng.permutation(n)
        k = int(round(fraction * n))
        held = perm[:k]
    elif method == "per-class":
        held_parts = []
        for c in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == c))
            k = per_class if per_class > 0 else int(round(fraction * len(members)))
            if k >= len(members):
                raise DataError(f"class {c} has {len(members)} images: cannot hold out {k} of them per class")
            held_parts.append(members[:k])
        held = np.concatenate(held_parts) if held_parts else np.empty(0, np.int64)
    elif method == "identity":
        classes = rng.permutation(np.unique(labels))
        k = max(1, int(round(fraction * len(classes)))) if fraction > 0 else 0
        if k >= len(classes):
            raise DataError(f"identity split of {len(classes)} classes leaves none for training; lower the fraction")
        held = np.flatnonzero(np.isin(labels, classes[:k]))
    else:
        raise ConfigError(f"unknown data.split {method!r}; choose one of: {', '.join(SPLIT_METHODS)}")
    mask = np.zeros(n, bool)
    mask[held] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def resolve_split(bundle: DatasetBundle, cfg: DataConfig) -> str:
    """``data.split`` with ``auto`` resolved: identities for one's own class-per-folder folders, flat folders or
    labelled-images CSVs with at least ``AUTO_IDENTITY_MIN`` classes (or whenever class lists are given),
    ``random`` otherwise."""
    if cfg.split not in SPLIT_METHODS:
        raise ConfigError(f"unknown data.split {cfg.split!r}; choose one of: {', '.join(SPLIT_METHODS)}")
    if cfg.split != "auto":
        return cfg.split
    if any(v is not None for v in (cfg.train_classes, cfg.val_classes, cfg.test_classes)):
        return "identity"
    if bundle.tuples is None and bundle.layout in ("folder", "flat", "labels-csv"):
        n = len(np.unique(bundle.images.labels))
        if n >= AUTO_IDENTITY_MIN:
            return "identity"
        log.warning("%s: %d identities are too few for an identity (open-set) split (%d needed): splitting images "
                    "at random, so test figures are on identities seen in training", bundle.name, n,
                    AUTO_IDENTITY_MIN)  # fmt: skip
    return "random"


def _warn_shared_images(name: str, train: TupleTable | None, test: TupleTable | None) -> None:
    """One line when images of the test rows also appear in training rows (the CSV split is by row)."""
    if train is None or test is None:
        return
    test_images = np.unique(test.index)
    shared = np.intersect1d(test_images, np.unique(train.index))
    if len(shared):
        log.warning("%s: %d of the %d images in test rows also appear in training rows: test figures are partly on "
                    "images the model trained on (give separate CSVs, or a folder with data.split=identity, for a "
                    "held-out test)", name, len(shared), len(test_images))  # fmt: skip


def make_splits(bundle: DatasetBundle, cfg: DataConfig, seed: int) -> Splits:
    """Carve test (unless the source has one) and validation parts, deterministically from ``seed``."""
    rng = np.random.default_rng(seed)
    method = resolve_split(bundle, cfg)
    if bundle.tuples is not None:  # CSV manifest: split the rows; images stay shared
        if method == "identity" and cfg.split != "auto":
            raise ConfigError(
                f"data.split=identity needs class labels, but {bundle.name} is a pairs/triplets CSV; use random"
            )
        n = len(bundle.tuples)
        perm = rng.permutation(n)
        n_test = int(round(cfg.test_fraction * n))
        n_val = int(round(cfg.val_fraction * (n - n_test)))
        if n_test < 1:
            raise ConfigError(
                f"{bundle.name}: data.test_fraction={cfg.test_fraction} leaves no test rows, and the test rows may "
                "not be the validation rows (the threshold is chosen on those); set data.test_fraction > 0, e.g. 0.2"
            )
        if n - n_test - n_val < 1 or n_val < 1:
            raise DataError(f"{bundle.name}: {n} rows are too few for a train/validation/test split")
        test_rows, val_rows, train_rows = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
        tr, va, te = (Split(bundle.images, bundle.tuples.rows(np.sort(r))) for r in (train_rows, val_rows, test_rows))
        _warn_shared_images(bundle.name, tr.tuples, te.tuples)
        for part, split, key in (("validation", va, "val_fraction"), ("test", te, "test_fraction")):
            labels = split.tuples.labels if split.tuples is not None else None
            if labels is not None and len(np.unique(labels)) < 2:  # caught now, not after training
                raise DataError(
                    f"{bundle.name}: the {len(labels)} {part} rows (data.{key}={getattr(cfg, key)}) are all "
                    f"{'genuine' if labels[0] == 1 else 'impostor'} pairs; it needs both to choose and score a "
                    f"threshold: raise data.{key}"
                )
        return Splits(tr, va, te, method="random")
    pool = bundle.images
    if not pool.has_labels:
        raise DataError(f"{bundle.name}: images have no class labels")
    if method == "identity":
        return identity_splits(bundle, cfg, rng)
    if bundle.test is not None:
        test = bundle.test
    else:
        keep, held = split_indices(pool.labels, method, cfg.test_fraction, cfg.test_per_class, rng)
        test, pool = pool.subset(held), pool.subset(keep)
    keep, held = split_indices(pool.labels, method, cfg.val_fraction, cfg.val_per_class, rng)
    if len(held) == 0 or len(keep) == 0:
        raise DataError(f"{bundle.name}: the validation split is empty; raise data.val_fraction")
    for part, labels in (
        ("train", pool.labels[keep]),
        ("validation", pool.labels[held]),
        ("test", test.labels),
    ):
        if len(np.unique(labels)) < 2:
            raise DataError(
                f"{bundle.name}: the {part} split holds {len(np.unique(labels))} class(es); pairs need at least 2 — "
                "add identities or change data.val_fraction / data.test_fraction"
            )
        if part != "train":
            _need_genuine_pairs(bundle.name, part, labels, "raise data.val_fraction / data.test_fraction")
    log.info("split %s: train %d, validation %d, test %d", method, len(keep), len(held), len(test))
    return Splits(Split(pool.subset(keep)), Split(pool.subset(held)), Split(test), method=method)


def _need_genuine_pairs(name: str, part: str, labels: np.ndarray, fix: str) -> None:
    """Validation and test need an identity with two images: no genuine pair (and no retrieval query) without."""
    if len(labels) and np.bincount(labels).max() < 2:
        raise DataError(
            f"{name}: no identity has two images in the {part} split ({len(labels)} images, one each): "
            f"genuine pairs need two; add images per identity or {fix}"
        )


def parse_class_list(value: list[str] | str | None, names: list[str], key: str) -> list[int] | None:
    """Class ids of ``value`` (names, or indices into ``names``; a list or a comma-separated string). A token
    that is a class name means that class, even when it looks like a number."""
    if value is None:
        return None
    tokens = [t.strip() for t in value.split(",")] if isinstance(value, str) else [str(t).strip() for t in value]
    ids: list[int] = []
    for tok in tokens:
        if tok in names:
            ids.append(names.index(tok))
        elif tok.lstrip("-").isdigit() and 0 <= int(tok) < max(len(names), 1):
            ids.append(int(tok))
        else:
            shown = ", ".join(names[:12]) + (" …" if len(names) > 12 else "")
            raise ConfigError(f"{key}: no class {tok!r}; give class names ({shown}) or indices 0–{len(names) - 1}")
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{key} names a class twice")
    return ids


def _pick(candidates: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    k = max(MIN_HELD_IDENTITIES, int(round(fraction * len(candidates))))
    return np.sort(rng.permutation(candidates)[: min(k, len(candidates))])


def _pick_groups(candidates: np.ndarray, group_of: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Whole groups of ``candidates`` (class ids; ``group_of`` maps a class id to its group), drawn in a seeded
    order until they hold ``fraction`` of the candidates (at least ``MIN_HELD_IDENTITIES``), one group at least
    left over."""
    groups = rng.permutation(np.unique(group_of[candidates]))
    k = max(MIN_HELD_IDENTITIES, int(round(fraction * len(candidates))))
    taken: list[int] = []
    for g in groups[:-1]:
        if len(taken) >= k:
            break
        taken += candidates[group_of[candidates] == g].tolist()
    return np.sort(np.asarray(taken, np.int64))


def identity_splits(bundle: DatasetBundle, cfg: DataConfig, rng: np.random.Generator) -> Splits:
    """Open-set splits (SPEC §10): training, validation and test identities pairwise disjoint.

    A source with test files of its own (IDX, CIFAR-10) gives the test identities' images from those files and
    the training and validation identities' images from its training files; otherwise all come from the one
    pool. Explicit ``data.{train,val,test}_classes`` win; the rest are drawn (seeded): test = ``test_fraction``
    of the identities, validation = ``val_fraction`` of the training identities, at least 2 each."""
    pool, test_pool = bundle.images, bundle.test
    names = pool.class_names or [str(c) for c in range(int(pool.labels.max()) + 1)]
    if test_pool is not None and len(test_pool.class_names) > len(names):
        names = test_pool.class_names
    names = list(names) + [str(c) for c in range(len(names), int(pool.labels.max()) + 1)]
    given = {
        part: parse_class_list(getattr(cfg, f"{part}_classes"), names, f"data.{part}_classes")
        for part in ("train", "val", "test")
    }
    sets = [set(v) for v in given.values() if v is not None]
    for i, a in enumerate(sets):
        for b in sets[i + 1 :]:
            if a & b:
                raise ConfigError(
                    f"data.train_classes / val_classes / test_classes overlap in {', '.join(names[c] for c in a & b)}; "
                    "identities must be in one split only"
                )
    pool_classes = np.unique(pool.labels)
    test_source = test_pool if test_pool is not None else pool
    found = class_groups(names) if test_pool is None else None
    group_of = found[0] if found is not None and len(found[1]) >= 3 else None
    pick = _pick if group_of is None else functools.partial(_pick_groups, group_of=group_of)
    if group_of is not None and found is not None and any(given[p] is None for p in ("val", "test")):
        log.info("identity split by group: validation and test identities are whole groups (%d groups), never seen "
                 "in training", len(found[1]))  # fmt: skip
    if given["test"] is not None:
        test_ids = np.array(sorted(given["test"]), np.int64)
    else:
        taken = set(given["train"] or []) | set(given["val"] or [])
        candidates = np.array([c for c in np.unique(test_source.labels) if c not in taken], np.int64)
        test_ids = pick(candidates, fraction=cfg.test_fraction, rng=rng)
    if given["val"] is not None:
        val_ids = np.array(sorted(given["val"]), np.int64)
    else:
        base = given["train"] if given["train"] is not None else [c for c in pool_classes if c not in set(test_ids)]
        val_ids = pick(np.array(sorted(base), np.int64), fraction=cfg.val_fraction, rng=rng)
    if given["train"] is not None:
        train_ids = np.array(sorted(set(given["train"]) - set(val_ids.tolist())), np.int64)
    else:
        train_ids = np.array([c for c in pool_classes if c not in set(test_ids) | set(val_ids)], np.int64)
    parts = {"train": (pool, train_ids), "validation": (pool, val_ids), "test": (test_source, test_ids)}
    subsets: dict[str, ImageSet] = {}
    for part, (source, ids) in parts.items():
        missing = [names[c] for c in ids if not (source.labels == c).any()]
        if missing:
            raise DataError(f"{bundle.name}: {part} identities {', '.join(missing)} have no images in that part")
        need = 2 if part == "train" else MIN_HELD_IDENTITIES
        if len(ids) < need:
            raise DataError(
                f"{bundle.name}: the identity split leaves {len(ids)} identit{'y' if len(ids) == 1 else 'ies'} for "
                f"{part} (at least {need} needed); add identities, or set data.val_fraction / data.test_fraction "
                "or the data.*_classes lists"
            )
        subsets[part] = source.subset(np.flatnonzero(np.isin(source.labels, ids)))
        if part != "train":
            _need_genuine_pairs(bundle.name, part, subsets[part].labels, "name other identities in data.*_classes")
    identities = {part: [names[c] for c in ids] for part, (_, ids) in parts.items()}
    for part, held in identities.items():
        log.info("identities %s (%d, %d images): %s", part, len(held), len(subsets[part]), name_list(held, 20))
    for part in ("validation", "test"):
        if len(identities[part]) < 4:
            log.warning("only %d %s identities: its figures describe very few people/classes and vary a lot from "
                        "split to split", len(identities[part]), part)  # fmt: skip
    return Splits(Split(subsets["train"]), Split(subsets["validation"]), Split(subsets["test"]), "identity", identities)
