"""Class-balanced P×K batches for online mining (Hermans et al. 2017; SPEC §8–9).

Every batch holds ``P`` distinct classes with ``K`` images each. An epoch covers every image at least once:
each class's images are shuffled and cut into chunks of ``K`` (the last chunk topped up with other images of
the class), and chunks are dealt into batches of ``P`` different classes, the classes with the most chunks
left drawn first (with probability proportional to what they have left). When fewer than ``P`` classes still
have chunks, the batch is completed with fresh chunks of other classes. Classes with fewer than ``K`` images
are drawn with replacement and reported.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from siamkit.errors import ConfigError, DataError

log = logging.getLogger(__name__)


class PKSampler:
    """Seeded P×K batch plans: ``batches(epoch)`` → a list of index arrays ``(P·K,)`` into ``labels``.

    Example:
        >>> s = PKSampler(np.repeat(np.arange(4), 5), p=2, k=3, seed=0)
        >>> b = s.batches(1)
        >>> len(b[0]), len(set(np.repeat(np.arange(4), 5)[b[0]]))
        (6, 2)
    """

    def __init__(self, labels: np.ndarray, p: int, k: int, seed: int = 0, split: str = "") -> None:
        where = f" {split}" if split else ""  # which split's batches a warning is about
        if k < 2:
            raise ConfigError(f"sampling.k must be at least 2 (a positive per anchor), got {k}")
        if p < 2:
            raise ConfigError(f"sampling.p must be at least 2 (negatives need a second class), got {p}")
        self.labels = np.asarray(labels)
        if len(self.labels) == 0:
            raise DataError("no images to draw P×K batches from")
        classes, inverse = np.unique(self.labels, return_inverse=True)
        if len(classes) < 2:
            raise DataError("all images share one class: a P×K batch needs at least 2 classes; add a second class")
        order = np.argsort(inverse, kind="stable")
        counts = np.bincount(inverse)
        self.members = np.split(order, np.cumsum(counts)[:-1])
        if p > len(classes):
            log.warning("sampling.p=%d exceeds the %d%s classes: using P=%d for the%s batches", p, len(classes), where,
                        len(classes), where)  # fmt: skip
            p = len(classes)
        self.p, self.k, self.seed = p, k, seed
        self.n_small = int((counts < k).sum())
        self.n_single = int((counts < 2).sum())
        if self.n_small:
            log.warning(
                "%d of %d%s classes have fewer than K=%d images (%d with a single image): drawn with replacement",
                self.n_small, len(classes), where, k, self.n_single,
            )  # fmt: skip

    @property
    def batch_size(self) -> int:
        return self.p * self.k

    def __len__(self) -> int:
        """Batches per epoch (at least; the exact count can be a few more)."""
        return sum(math.ceil(len(m) / self.k) for m in self.members) // self.p

    def _chunks(self, members: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The class's images shuffled and cut into rows of K, topped up: ``(ceil(n/K), K)``."""
        n, k = len(members), self.k
        perm = rng.permutation(members)
        if n < k:
            return np.concatenate([perm, rng.choice(members, k - n, replace=True)])[None]
        pad = -n % k
        if pad:  # top up the last chunk with images not already in it
            perm = np.concatenate([perm, rng.choice(perm[: n - (k - pad)], pad, replace=False)])
        return perm.reshape(-1, k)

    def batches(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        chunks = [self._chunks(m, rng) for m in self.members]
        left = np.array([len(c) for c in chunks])
        taken = np.zeros(len(chunks), np.int64)
        out: list[np.ndarray] = []
        while left.sum() > 0:
            avail = np.flatnonzero(left)
            if len(avail) >= self.p:
                pick = rng.choice(avail, self.p, replace=False, p=left[avail] / left[avail].sum())
                rows = [chunks[c][taken[c]] for c in pick]
            else:
                others = np.setdiff1d(np.arange(len(chunks)), avail)
                extra = rng.choice(others, self.p - len(avail), replace=False)
                pick = avail
                rows = [chunks[c][taken[c]] for c in avail]
                rows += [self._chunks(self.members[c], rng)[0] for c in extra]
            taken[pick] += 1
            left[pick] -= 1
            out.append(np.concatenate(rows))
        return out
