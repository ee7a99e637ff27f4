"""Loss interface: a loss receives the model and a batch, so that losses needing model internals
(FDC/FDT use the second-to-last layer and the last layer's weight) plug in without touching the trainer.

Three kinds of batch reach a loss: fixed ``PairBatch`` / ``TripletBatch`` tuples, or, when the loss carries a
miner, a ``LabelBatch`` of images and class labels (a P×K batch) whose pairs or triplets the miner picks.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from siamkit.data.batch import Batch
from siamkit.errors import ConfigError
from siamkit.losses.miners import Miner, PairIndices, TripletIndices, create_miner
from siamkit.losses.selfsup import SelfSupervised
from siamkit.models.siamese import SiameseNet
from siamkit.registry import Registry


class SiameseLoss(nn.Module):
    """Base class for every loss.

    ``tuple_kind`` is what the loss takes without a miner (``"pairs"`` or ``"triplets"``); with a miner
    (``set_miner``) it takes ``LabelBatch`` and ``input_kind`` becomes ``"labels"``. ``miner_outputs`` lists the
    miner outputs the loss can use (a pair loss also takes a triplet miner: (a, p) and (a, n) become pairs).
    """

    tuple_kind: ClassVar[str] = "pairs"
    miner_outputs: ClassVar[tuple[str, ...]] = ("pairs", "triplets")
    needs_sigmoid_head: ClassVar[bool] = False
    miner: Miner | None = None
    self_supervised: SelfSupervised | None = None
    """A term on two augmented views of the batch's images (``losses.selfsup.SelfSupervised``), added by the fit
    loop; ``make_batch`` then draws the second view."""
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None
    """Set by distributed training: all-gathers per-sample rows (embeddings, features, labels) across ranks, so
    that mining and the loss see the global batch (``siamkit.distributed.Gatherer``)."""

    def gathered(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The rows of every rank (this rank's alone when not distributed)."""
        gather = self.gather
        return tensors if gather is None else tuple(gather(t) for t in tensors)

    @property
    def input_kind(self) -> str:
        """``"pairs"``, ``"triplets"`` or ``"labels"`` (labelled batches: a mining or proxy loss)."""
        return "labels" if self.miner is not None else self.tuple_kind

    def set_miner(self, miner: Miner | None) -> None:
        if miner is not None and miner.output not in self.miner_outputs:
            raise ConfigError(
                f"loss.miner gives {miner.output}, but this loss takes mined {' or '.join(self.miner_outputs)}; "
                "choose a matching miner"
            )
        self.miner = miner

    def forward(self, model: SiameseNet, batch: Batch) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def mine_pairs(self, dist: torch.Tensor, labels: torch.Tensor) -> PairIndices:
        assert self.miner is not None
        mined = self.miner(dist.detach(), labels)
        return mined.as_pairs() if isinstance(mined, TripletIndices) else mined

    def mine_triplets(self, dist: torch.Tensor, labels: torch.Tensor) -> TripletIndices:
        assert self.miner is not None
        mined = self.miner(dist.detach(), labels)
        assert isinstance(mined, TripletIndices)
        return mined


LOSSES: Registry[SiameseLoss] = Registry("loss", providers=tuple(
    f"siamkit.losses.{family}" for family in ("pairs", "triplet", "fisher", "proxy", "multisim")
))  # fmt: skip


def create_loss(
    name: str, params: dict[str, object] | None = None, miner: str | None = None,
    miner_params: dict[str, object] | None = None, context: dict[str, object] | None = None,
) -> SiameseLoss:  # fmt: skip
    """Build the loss registered as ``name`` (or a user's ``package.module:Class``) with strict ``params``,
    and attach the miner ``miner`` (strict ``miner_params``) when given. ``context`` holds data-dependent
    values (``num_classes``, ``embedding_dim``) passed to a loss whose signature asks for them and whose
    ``params`` do not set them."""
    params = dict(params or {})
    check_margins("loss.params", params)
    check_margins("loss.miner_params", miner_params or {})
    if context:
        accepted = inspect.signature(LOSSES.get(name)).parameters
        params.update({k: v for k, v in context.items() if k in accepted and k not in params})
    loss = LOSSES.create(name, **params)
    if not isinstance(loss, SiameseLoss):
        raise ConfigError(f"loss {name!r} is a {type(loss).__name__}, not a siamkit.losses.SiameseLoss")
    if miner:
        loss.set_miner(create_miner(miner, **miner_margin_defaults(loss, miner, miner_params or {})))
    elif miner_params:
        raise ConfigError("loss.miner_params is set but loss.miner is not; name a miner or drop the params")
    return loss


MARGIN_KEYS = ("margin", "neg_margin", "pos_margin")


def check_margins(section: str, params: dict[str, object]) -> None:
    """A margin is a distance: a number ≥ 0 (a negative one turns a hinge inside out and trains nothing sensible)."""
    for key in MARGIN_KEYS:
        if key not in params or params[key] is None:
            continue
        value = params[key]
        if not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0:
            raise ConfigError(f"{section}.{key} must be a number ≥ 0 (a distance); got {value!r}")


MINER_MARGIN_KEYS = ("margin", "neg_margin")


def miner_margin_defaults(loss: SiameseLoss, miner: str, params: dict[str, object]) -> dict[str, object]:
    """``params`` with the miner's margin (``margin``, or ``neg_margin`` of a pair miner) defaulting to the loss's
    own ``margin`` when not set: a semi-hard or batch-all band, or the negatives a pair miner keeps, then match
    the hinge the loss trains (a contrastive margin m keeps exactly the negatives with a non-zero loss)."""
    margin = getattr(loss, "margin", None)
    if not isinstance(margin, (int, float)) or isinstance(margin, bool):
        return params
    from siamkit.losses.miners import MINERS

    accepted = inspect.signature(MINERS.get(miner)).parameters
    out = dict(params)
    for key in MINER_MARGIN_KEYS:
        if key in accepted and key not in out:
            out[key] = float(margin)
    return out


def expect(batch: Batch, *kinds: type) -> None:
    if not isinstance(batch, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise TypeError(f"this loss takes {names}, got {type(batch).__name__}")


def embed_many(model: SiameseNet, *batches: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One forward pass over the concatenated batches (shared BatchNorm statistics, fewer kernel calls)."""
    sizes = [len(b) for b in batches]
    return tuple(model.embed(torch.cat(batches)).split(sizes))


def empty_loss(reference: torch.Tensor) -> torch.Tensor:
    """A zero that keeps the graph (nothing was mined: no gradient, but backward still works)."""
    return reference.sum() * 0.0
