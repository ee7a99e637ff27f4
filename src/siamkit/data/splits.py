"""Train / validation / test splits (SPEC §2.4): random fraction, fixed count per class, identity-disjoint."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from siamkit.config import DataConfig
from siamkit.data.imageset import ImageSet, TupleTable
from siamkit.data.readers import DatasetBundle
from siamkit.errors import ConfigError, DataError

log = logging.getLogger(__name__)
SPLIT_METHODS = ("random", "per-class", "identity")


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


def make_splits(bundle: DatasetBundle, cfg: DataConfig, seed: int) -> Splits:
    """Carve test (unless the source has one) and validation parts, deterministically from ``seed``."""
    rng = np.random.default_rng(seed)
    if bundle.tuples is not None:  # CSV manifest: split the rows; images stay shared
        n = len(bundle.tuples)
        perm = rng.permutation(n)
        n_test = int(round(cfg.test_fraction * n))
        n_val = int(round(cfg.val_fraction * (n - n_test)))
        if n - n_test - n_val < 1 or n_val < 1:
            raise DataError(f"{bundle.name}: {n} rows are too few for a train/validation/test split")
        test_rows, val_rows, train_rows = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
        rows = {"train": train_rows, "val": val_rows, "test": test_rows if n_test else val_rows}
        return Splits(*(Split(bundle.images, bundle.tuples.rows(np.sort(r))) for r in rows.values()))
    pool = bundle.images
    if not pool.has_labels:
        raise DataError(f"{bundle.name}: images have no class labels")
    if bundle.test is not None:
        test = bundle.test
    else:
        keep, held = split_indices(pool.labels, cfg.split, cfg.test_fraction, cfg.test_per_class, rng)
        test, pool = pool.subset(held), pool.subset(keep)
    keep, held = split_indices(pool.labels, cfg.split, cfg.val_fraction, cfg.val_per_class, rng)
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
    log.info("split %s: train %d, validation %d, test %d", cfg.split, len(keep), len(held), len(test))
    return Splits(Split(pool.subset(keep)), Split(pool.subset(held)), Split(test))
