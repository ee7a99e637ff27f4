"""What one epoch feeds the loss: fixed pairs/triplets in shuffled batches (``TupleBatches``) or class-
balanced P×K batches for online mining (``ClassBatches``). Both give a plan of ``BatchIndex`` per epoch, and
``make_batch`` turns one into preprocessed tensors on the device."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from siamkit.data.batch import Batch, LabelBatch, PairBatch, TripletBatch
from siamkit.data.cache import ImageArray
from siamkit.data.imageset import TupleTable
from siamkit.data.samplers import PKSampler
from siamkit.data.transforms import Preprocess
from siamkit.data.tuples import TupleSampler


@dataclass
class BatchIndex:
    """Image positions of one batch: ``(B,)`` for a labelled batch (``labels`` = class labels) or ``(B, 2|3)``
    tuples (``labels`` = pair labels 1/0, None for triplets)."""

    index: np.ndarray
    labels: np.ndarray | None

    @property
    def n_images(self) -> int:
        return int(self.index.size)


class BatchSource(Protocol):
    def plan(self, epoch: int) -> list[BatchIndex]: ...


def iterate_batches(n: int, batch_size: int, rng: np.random.Generator | None) -> Iterator[np.ndarray]:
    """Positions ``0..n-1`` in batches (shuffled when ``rng`` is given); the last partial batch is kept
    unless it has a single row (BatchNorm cannot train on one)."""
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for s in range(0, n, batch_size):
        rows = order[s : s + batch_size]
        if len(rows) > 1 or n == 1:
            yield rows


def table_plan(table: TupleTable, batch_size: int, rng: np.random.Generator | None) -> list[BatchIndex]:
    return [
        BatchIndex(table.index[r], None if table.labels is None else table.labels[r])
        for r in iterate_batches(len(table), batch_size, rng)
    ]


class TupleBatches:
    """The sampler's pairs or triplets of the epoch, shuffled (seeded by epoch) into batches."""

    def __init__(self, sampler: TupleSampler, batch_size: int, seed: int) -> None:
        self.sampler, self.batch_size, self.seed = sampler, batch_size, seed

    def plan(self, epoch: int) -> list[BatchIndex]:
        return table_plan(self.sampler.draw(epoch), self.batch_size, np.random.default_rng([self.seed, epoch, 7]))


class FixedBatches:
    """One fixed plan for every epoch (validation)."""

    def __init__(self, batches: list[BatchIndex]) -> None:
        self.batches = batches

    def plan(self, epoch: int) -> list[BatchIndex]:
        return self.batches


class ClassBatches:
    """P×K batches of labelled images (each epoch covers every image at least once)."""

    def __init__(self, sampler: PKSampler) -> None:
        self.sampler = sampler

    def plan(self, epoch: int) -> list[BatchIndex]:
        labels = self.sampler.labels
        return [BatchIndex(b, labels[b]) for b in self.sampler.batches(epoch)]


def make_batch(
    images: ImageArray, b: BatchIndex, preprocess: Preprocess, device: torch.device, train: bool,
    *, channels_last: bool = False, second_view: bool = False,
) -> Batch:  # fmt: skip
    """Gather and preprocess (augmenting when ``train``) the images of ``b`` on ``device``; ``second_view``: a
    labelled batch also gets another augmented draw of its images (``LabelBatch.view``)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def prep(idx: np.ndarray) -> torch.Tensor:
        x = preprocess(images[torch.from_numpy(idx)].to(device, non_blocking=True), train=train)
        return x.contiguous(memory_format=fmt)

    if b.index.ndim == 1:
        assert b.labels is not None
        labels = torch.from_numpy(b.labels).to(device=device, dtype=torch.int64)
        return LabelBatch(prep(b.index), labels, prep(b.index) if second_view else None)
    cols = [prep(b.index[:, j]) for j in range(b.index.shape[1])]
    if b.index.shape[1] == 2:
        assert b.labels is not None
        return PairBatch(cols[0], cols[1], torch.from_numpy(b.labels).to(device=device, dtype=torch.float32))
    return TripletBatch(cols[0], cols[1], cols[2])


class ShardedBatches:
    """One rank's share of another source's global batches: the contiguous slice ``shard(len, rank, world)`` of
    each (a P×K batch splits by whole classes when P is divisible by the world size). The ranks' shares of a
    batch together are the batch; global batches too small to give every rank two rows are dropped (BatchNorm
    cannot train on one)."""

    def __init__(self, source: BatchSource, rank: int, world: int) -> None:
        self.source, self.rank, self.world = source, rank, world

    def plan(self, epoch: int) -> list[BatchIndex]:
        from siamkit.distributed import shard

        out = []
        for b in self.source.plan(epoch):
            if len(b.index) < 2 * self.world:
                continue
            sl = shard(len(b.index), self.rank, self.world)
            out.append(BatchIndex(b.index[sl], None if b.labels is None else b.labels[sl]))
        return out
