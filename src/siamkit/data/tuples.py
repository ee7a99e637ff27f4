"""Seeded, vectorised pair and triplet generation from class labels (SPEC §2.2–2.3).

Pairs carry label 1 (same class) or 0 (different). Classes with fewer than 2 images can give no positive
pair: they are left out as anchors of positives and counted (``ClassIndex.n_small``).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from math import comb

import numpy as np

from siamkit.config import SamplingConfig
from siamkit.data.imageset import TupleTable
from siamkit.errors import ConfigError, DataError

log = logging.getLogger(__name__)
PAIR_STRATEGIES = ("per-image", "coin-flip", "balanced")
TRIPLET_STRATEGIES = ("random", "combinations")


class ClassIndex:
    """Items grouped by class for O(1) vectorised draws of a same-class partner or an other-class item."""

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = np.asarray(labels)
        if len(self.labels) == 0:
            raise DataError("no images to draw pairs from")
        self.order = np.argsort(self.labels, kind="stable")
        classes, starts, counts = np.unique(self.labels[self.order], return_index=True, return_counts=True)
        self.classes, self.starts, self.counts = classes, starts, counts
        cls_of = np.searchsorted(classes, self.labels)
        self.start_of, self.count_of = starts[cls_of], counts[cls_of]
        self.pos_of = np.empty(len(self.labels), np.int64)
        self.pos_of[self.order] = np.arange(len(self.labels)) - np.repeat(starts, counts)
        self.eligible = np.flatnonzero(self.count_of >= 2)
        self.n_small = int((counts < 2).sum())
        if len(classes) < 2:
            raise DataError("all images share one class: no negative pair can be drawn; add a second class")
        if len(self.eligible) == 0:
            raise DataError("every class has fewer than 2 images: no positive pair can be drawn")

    def positives(self, anchors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A random other item of each anchor's class (anchors must be eligible)."""
        n = self.count_of[anchors]
        offset = rng.integers(1, n)  # 1..n-1: never the anchor itself
        return self.order[self.start_of[anchors] + (self.pos_of[anchors] + offset) % n]

    def negatives(self, anchors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A uniformly random item of another class for each anchor."""
        n_other = len(self.labels) - self.count_of[anchors]
        u = rng.integers(0, n_other)
        u = np.where(u >= self.start_of[anchors], u + self.count_of[anchors], u)
        return self.order[u]


def _report_small(index: ClassIndex) -> None:
    if index.n_small:
        log.warning("%d classes with fewer than 2 images left out of positive pairs", index.n_small)


def per_image_pairs(labels: np.ndarray, rng: np.random.Generator) -> TupleTable:
    """Source A: for each image one random positive (label 1) and one random negative (label 0) → 2N pairs."""
    index = ClassIndex(labels)
    _report_small(index)
    a = index.eligible
    pos = np.stack([a, index.positives(a, rng)], 1)
    neg = np.stack([a, index.negatives(a, rng)], 1)
    return TupleTable(np.concatenate([pos, neg]), np.repeat(np.array([1, 0], np.int64), len(a)))


def coin_flip_pairs(labels: np.ndarray, rng: np.random.Generator) -> TupleTable:
    """Source B: per image, with probability 0.5 a same-class partner, else a different-class one."""
    index = ClassIndex(labels)
    _report_small(index)
    a = index.eligible
    same = rng.random(len(a)) < 0.5
    partner = np.where(same, index.positives(a, rng), index.negatives(a, rng))
    return TupleTable(np.stack([a, partner], 1), same.astype(np.int64))


def balanced_pairs(labels: np.ndarray, n_pos: int, n_neg: int, rng: np.random.Generator) -> TupleTable:
    """Source C: ``n_pos`` positive and ``n_neg`` negative pairs with uniformly drawn anchors (with replacement)."""
    index = ClassIndex(labels)
    _report_small(index)
    a_pos = index.eligible[rng.integers(0, len(index.eligible), n_pos)]
    a_neg = rng.integers(0, len(labels), n_neg)
    pairs = np.concatenate(
        [np.stack([a_pos, index.positives(a_pos, rng)], 1), np.stack([a_neg, index.negatives(a_neg, rng)], 1)]
    )
    tags = np.concatenate([np.ones(n_pos, np.int64), np.zeros(n_neg, np.int64)])
    return TupleTable(pairs, tags)


def _canonical_keys(pairs: np.ndarray, n: int) -> np.ndarray:
    """One integer per unordered pair ``(i, j)``: (min, max) packed, so that (i, j) and (j, i) coincide."""
    return np.minimum(pairs[:, 0], pairs[:, 1]) * n + np.maximum(pairs[:, 0], pairs[:, 1])


def distinct_count(pairs: np.ndarray, n: int | None = None) -> int:
    """How many distinct unordered pairs the rows of ``pairs`` ``(M, 2)`` hold."""
    if len(pairs) == 0:
        return 0
    return len(np.unique(_canonical_keys(np.asarray(pairs, np.int64), n or int(pairs.max()) + 1)))


def _all_genuine(index: ClassIndex) -> np.ndarray:
    rows = []
    for start, count in zip(index.starts, index.counts, strict=True):
        if count >= 2:
            members = index.order[start : start + count]
            i, j = np.triu_indices(int(count), 1)
            rows.append(np.stack([members[i], members[j]], 1))
    return np.concatenate(rows).astype(np.int64)


def _all_impostors(index: ClassIndex) -> np.ndarray:
    rows = []
    for start, count in zip(index.starts, index.counts, strict=True):
        members, later = index.order[start : start + count], index.order[start + count :]
        if len(later):
            rows.append(np.stack(np.meshgrid(members, later, indexing="ij"), -1).reshape(-1, 2))
    return np.concatenate(rows).astype(np.int64)


def _distinct_draw(
    n: int, total: int, enumerate_all: Callable[[], np.ndarray], draw: Callable[[int], np.ndarray], *,
    size: int, rng: np.random.Generator,
) -> np.ndarray:  # fmt: skip
    """``n`` distinct unordered pairs out of ``total`` possible ones: every pair when ``total ≤ n``, a random
    subset of the enumerated pairs when they are few, else repeated draws with duplicates removed (the draw's
    own distribution, first occurrences kept)."""
    if n <= 0:
        return np.zeros((0, 2), np.int64)
    if total <= 2 * n:
        pairs = enumerate_all()
        return pairs if total <= n else pairs[np.sort(rng.choice(len(pairs), n, replace=False))]
    seen: set[int] = set()
    kept: list[np.ndarray] = []
    need = n
    for _ in range(64):
        cand = draw(need + need // 4 + 8)
        keys = _canonical_keys(cand, size)
        _, first = np.unique(keys, return_index=True)
        first = np.sort(first)
        fresh = np.array([k not in seen for k in keys[first].tolist()], bool)
        pick = first[fresh][:need]
        seen.update(keys[pick].tolist())
        kept.append(cand[pick])
        need -= len(pick)
        if need == 0:
            break
    if need:
        log.info("%d of %d requested distinct pairs could not be drawn", need, n)
    return np.concatenate(kept)


def distinct_pairs(labels: np.ndarray, n_pos: int, n_neg: int, rng: np.random.Generator) -> TupleTable:
    """Evaluation pairs: up to ``n_pos`` distinct genuine and ``n_neg`` distinct impostor pairs (every pair of a
    kind when the split has no more than requested). Anchors are drawn as in ``balanced_pairs``; a pair counts
    once whichever its order, so no duplicate inflates the impostor count behind a low-FPR figure."""
    index = ClassIndex(labels)
    _report_small(index)
    n = len(labels)
    n_genuine = int(sum(comb(int(c), 2) for c in index.counts))
    n_impostor = comb(n, 2) - n_genuine

    def draw_pos(m: int) -> np.ndarray:
        a = index.eligible[rng.integers(0, len(index.eligible), m)]
        return np.stack([a, index.positives(a, rng)], 1)

    def draw_neg(m: int) -> np.ndarray:
        a = rng.integers(0, n, m)
        return np.stack([a, index.negatives(a, rng)], 1)

    pos = _distinct_draw(n_pos, n_genuine, lambda: _all_genuine(index), draw_pos, size=n, rng=rng)
    neg = _distinct_draw(n_neg, n_impostor, lambda: _all_impostors(index), draw_neg, size=n, rng=rng)
    tags = np.concatenate([np.ones(len(pos), np.int64), np.zeros(len(neg), np.int64)])
    return TupleTable(np.concatenate([pos, neg]), tags)


def random_triplets(labels: np.ndarray, rng: np.random.Generator) -> TupleTable:
    """One (anchor, positive, negative) per eligible image."""
    index = ClassIndex(labels)
    _report_small(index)
    a = index.eligible
    return TupleTable(np.stack([a, index.positives(a, rng), index.negatives(a, rng)], 1))


def combination_triplets(labels: np.ndarray, cap: int, rng: np.random.Generator) -> TupleTable:
    """Source C: every 3-combination within a class gives (anchor, positive) = its first two items, plus a
    random other-class negative. The count grows as Σ C(n_c, 3), so above ``cap`` a uniform sample of ``cap``
    combinations (with replacement) is drawn instead, and logged."""
    index = ClassIndex(labels)
    sizes = np.array([comb(int(n), 3) for n in index.counts])
    total = int(sizes.sum())
    if total == 0:
        raise DataError("no class has 3 images: no 3-combination triplets; use sampling.triplets=random")
    if total <= cap:
        rows = []
        for start, count in zip(index.starts, index.counts, strict=True):
            members = index.order[start : start + count]
            rows += [(m[0], m[1]) for m in itertools.combinations(members, 3)]
        ap = np.asarray(rows, np.int64)
    else:
        log.info("%d 3-combination triplets exceed the cap %d: sampling %d", total, cap, cap)
        cls = rng.choice(len(sizes), size=cap, p=sizes / total)
        n = index.counts[cls]
        pos = rng.integers(0, n[:, None], (cap, 3))
        bad = (pos[:, 0] == pos[:, 1]) | (pos[:, 0] == pos[:, 2]) | (pos[:, 1] == pos[:, 2])
        while bad.any():  # redraw rows whose three positions are not distinct
            pos[bad] = rng.integers(0, n[bad, None], (int(bad.sum()), 3))
            bad = (pos[:, 0] == pos[:, 1]) | (pos[:, 0] == pos[:, 2]) | (pos[:, 1] == pos[:, 2])
        pos.sort(axis=1)
        ap = index.order[index.starts[cls][:, None] + pos[:, :2]]
    neg = index.negatives(ap[:, 0], rng)
    return TupleTable(np.column_stack([ap, neg]))


class TupleSampler:
    """The pairs or triplets one split yields per epoch: drawn from labels (fresh each epoch when
    ``regenerate``) or the split's fixed CSV tuples."""

    def __init__(self, labels: np.ndarray, fixed: TupleTable | None, kind: str, cfg: SamplingConfig, seed: int):
        if kind not in ("pairs", "triplets"):
            raise ValueError(kind)
        if cfg.pairs not in PAIR_STRATEGIES:
            raise ConfigError(f"unknown sampling.pairs {cfg.pairs!r}; choose one of: {', '.join(PAIR_STRATEGIES)}")
        if cfg.triplets not in TRIPLET_STRATEGIES:
            raise ConfigError(
                f"unknown sampling.triplets {cfg.triplets!r}; choose one of: {', '.join(TRIPLET_STRATEGIES)}"
            )
        if fixed is not None and kind == "triplets" and fixed.kind == "pairs":
            raise DataError("a triplet loss needs triplets or labelled images, but the data is a pairs CSV")
        self.labels, self.fixed, self.kind, self.cfg, self.seed = labels, fixed, kind, cfg, seed
        self._once: TupleTable | None = None

    def draw(self, epoch: int) -> TupleTable:
        if self.fixed is not None:
            return self.fixed.as_pairs() if self.kind == "pairs" else self.fixed
        if not self.cfg.regenerate:
            if self._once is None:
                self._once = self._generate(np.random.default_rng(self.seed))
            return self._once
        return self._generate(np.random.default_rng([self.seed, epoch]))

    def _generate(self, rng: np.random.Generator) -> TupleTable:
        c = self.cfg
        if self.kind == "triplets":
            if c.triplets == "random":
                return random_triplets(self.labels, rng)
            return combination_triplets(self.labels, c.max_triplets, rng)
        if c.pairs == "per-image":
            return per_image_pairs(self.labels, rng)
        if c.pairs == "coin-flip":
            return coin_flip_pairs(self.labels, rng)
        return balanced_pairs(self.labels, c.n_pairs, c.n_pairs, rng)


def fixed_tuples(labels: np.ndarray, fixed: TupleTable | None, kind: str, n: int, seed: int) -> TupleTable:
    """Tuples drawn once (validation loss, evaluation): up to n + n distinct pairs (``distinct_pairs``), or n
    random triplets."""
    if fixed is not None:
        return fixed.as_pairs() if kind == "pairs" else fixed
    rng = np.random.default_rng(seed)
    if kind == "pairs":
        return distinct_pairs(labels, n, n, rng)
    index = ClassIndex(labels)
    a = index.eligible[rng.integers(0, len(index.eligible), n)]
    return TupleTable(np.stack([a, index.positives(a, rng), index.negatives(a, rng)], 1))
