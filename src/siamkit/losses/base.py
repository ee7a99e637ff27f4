"""Loss interface: ``SiameseLoss.forward(model, batch)`` — what the trainer calls — embeds the batch once, gathers
it across ranks once and mines it once, then hands the result (an ``Embedded``: embeddings, labels, tuple indices,
the distance object and whatever else the loss declared it ``needs``) to the loss's own ``compute``. So a loss is
a small function of embeddings (pytorch-metric-learning's distance × miner composition), and a loss needing model
internals (FDC/FDT: the second-to-last layer and the last layer's weight) declares them instead of running the
model itself.

Three kinds of batch reach a loss: fixed ``PairBatch`` / ``TripletBatch`` tuples, or, when the loss carries a
miner, a ``LabelBatch`` of images and class labels (a P×K batch) whose pairs or triplets the miner picks. Fixed
tuples become index tuples over their stacked embeddings, so ``compute`` has one code path for both.

A new loss is one new file in this package: a subclass with ``compute`` and one ``@LOSSES.register("name")``
line; every module of the package is a provider of ``LOSSES``, imported on its first lookup.
"""

from __future__ import annotations

import inspect
import pkgutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from siamkit.data.batch import Batch, LabelBatch, PairBatch, TripletBatch
from siamkit.distances import Distance, Euclidean, as_dissimilarity
from siamkit.errors import ConfigError
from siamkit.losses.embedded import Embedded, Gather, fixed_pairs, fixed_triplets, gather_rows, projection
from siamkit.losses.embedded import empty_loss as empty_loss
from siamkit.losses.miners import Miner, PairIndices, TripletIndices, create_miner, every_tuple
from siamkit.losses.selfsup import SelfSupervised
from siamkit.models.siamese import SiameseNet
from siamkit.registry import Registry

NEEDS = ("features", "head_weight")
"""What a loss may ask for besides the embeddings (``SiameseLoss.needs``)."""
_FIXED: dict[str, type] = {"pairs": PairBatch, "triplets": TripletBatch}
"""The fixed batch each ``tuple_kind`` takes without a miner (``"labels"``: none, a ``LabelBatch`` as it is)."""


class SiameseLoss(nn.Module):
    """Base class for every loss: the template ``forward`` (embed, gather, mine) around the loss's ``compute``.

    ``tuple_kind`` is what the loss takes without a miner (``"pairs"``, ``"triplets"`` or ``"labels"``); with a
    miner (``set_miner``) it takes ``LabelBatch`` and ``input_kind`` becomes ``"labels"``. ``miner_outputs`` lists
    the miner outputs the loss can use (a pair loss also takes a triplet miner: (a, p) and (a, n) become pairs).
    ``distance`` is the distance object the miner's matrix and the tuples' distances use (a loss with a
    ``distance`` option resolves it from ``siamkit.distances.DISTANCES``). ``needs`` lists the model internals
    ``compute`` reads (``NEEDS``): with ``"features"`` the batch is run through ``model.features`` instead of
    ``model.embed`` and the embeddings are ``embed_features`` of the gathered features.
    """

    tuple_kind: ClassVar[str] = "pairs"
    miner_outputs: ClassVar[tuple[str, ...]] = ("pairs", "triplets")
    needs_sigmoid_head: ClassVar[bool] = False
    needs: ClassVar[frozenset[str]] = frozenset()
    distance: Distance = Euclidean()
    miner: Miner | None = None
    self_supervised: SelfSupervised | None = None
    """A term on two augmented views of the batch's images (``losses.selfsup.SelfSupervised``), added by the fit
    loop; ``make_batch`` then draws the second view."""
    gather: Gather | None = None
    """Set by distributed training: all-gathers per-sample rows (embeddings, features, labels) across ranks, so
    that mining and the loss see the global batch (``siamkit.distributed.Gatherer``)."""

    def compute(self, emb: Embedded) -> torch.Tensor:  # pragma: no cover - abstract
        """The loss (a scalar) on one embedded batch; ``forward`` calls it with at least one tuple to score."""
        raise NotImplementedError

    def forward(self, model: SiameseNet, batch: Batch) -> torch.Tensor:
        """The loss of ``batch``: embedded once, gathered across ranks once, mined once by ``miner``."""
        return self.score(model, batch, miner=self.miner, gather=self.gather)

    def score_all(self, model: SiameseNet, batch: Batch) -> torch.Tensor:
        """The loss over *every* valid tuple of ``batch`` (the ``all`` / ``all-pairs`` miner in place of the loss's
        miner), on this rank's rows alone: the validation yardstick. The average over the tuples a miner keeps is
        none, since as the model improves fewer, harder tuples are kept (batch-all, semi-hard) and it can rise."""
        if type(self).forward is not SiameseLoss.forward:  # a loss with a forward of its own (a user's)
            with self._scoring_every_tuple():
                out: torch.Tensor = self(model, batch)
            return out
        return self.score(model, batch, miner=every_tuple(self.miner), gather=None)

    def score(self, model: SiameseNet, batch: Batch, *, miner: Miner | None, gather: Gather | None) -> torch.Tensor:
        """The template: ``embed`` (with ``miner`` and ``gather``), then ``compute`` — or a graph-keeping zero
        when the miner kept no tuple (``nothing_mined``)."""
        emb = self.embed(model, batch, miner=miner, gather=gather)
        if emb.tuple_count() == 0:
            return self.nothing_mined(emb)
        return self.compute(emb)

    def embed(self, model: SiameseNet, batch: Batch, *, miner: Miner | None, gather: Gather | None) -> Embedded:
        """``batch`` embedded in one forward pass, its rows gathered across ranks, its tuples fixed or mined."""
        self.check_batch(batch, miner)
        if isinstance(batch, LabelBatch):
            rows, labels = gather_rows(gather, self.represent(model, batch.x), batch.labels)
            emb = self.embedded(model, rows, labels)
            if miner is not None:
                self.mine(emb, miner)
            return emb
        images = [batch.a, batch.b] if isinstance(batch, PairBatch) else [batch.a, batch.p, batch.n]
        split = self.represent(model, torch.cat(images)).split([len(x) for x in images])
        if isinstance(batch, PairBatch):
            *parts, y = gather_rows(gather, *split, batch.y)
            emb = self.embedded(model, torch.cat(parts))
            emb.pairs = fixed_pairs(len(y), y)
        else:
            parts = list(gather_rows(gather, *split))
            emb = self.embedded(model, torch.cat(parts))
            emb.triplets = fixed_triplets(len(parts[0]), emb.embeddings.device)
        return emb

    def check_batch(self, batch: Batch, miner: Miner | None) -> None:
        """Refuse a batch of another kind: fixed tuples of ``tuple_kind``, or a ``LabelBatch`` to mine (or, for a
        loss on labelled batches, to take as it is)."""
        fixed = _FIXED.get(self.tuple_kind)
        if isinstance(batch, LabelBatch) and (miner is not None or fixed is None):
            return
        if fixed is not None and isinstance(batch, fixed):
            return
        wants = "LabelBatch" if fixed is None else f"{fixed.__name__} (or, with a miner, LabelBatch)"
        raise TypeError(f"this loss takes {wants}, got {type(batch).__name__}")

    def represent(self, model: SiameseNet, images: torch.Tensor) -> torch.Tensor:
        """This rank's rows of ``images``: their embeddings, or their features when the loss ``needs`` them."""
        return model.features(images) if "features" in self.needs else model.embed(images)

    def embedded(self, model: SiameseNet, rows: torch.Tensor, labels: torch.Tensor | None = None) -> Embedded:
        """The ``Embedded`` of the gathered ``rows`` (``represent``), with what the loss ``needs``."""
        emb = Embedded(model, rows, self.distance, labels)
        if "head_weight" in self.needs:
            emb.head_weight = projection(model, f"loss {type(self).__name__}")
        if "features" in self.needs:
            emb.features = rows
            emb.embeddings = self.embed_features(emb)
        return emb

    def embed_features(self, emb: Embedded) -> torch.Tensor:
        """The embeddings ``(N, D)`` of the gathered ``emb.features`` (a loss that ``needs`` features): the
        model's own head, unless the loss embeds them its own way (FDC/FDT: ``features @ head_weight``)."""
        assert emb.features is not None
        return emb.model.embed_features(emb.features)

    def mine(self, emb: Embedded, miner: Miner) -> None:
        """Set ``emb.matrix`` (the loss's dissimilarities, graph kept) and the tuples ``miner`` picks from it:
        ``emb.pairs`` for a pair loss (a triplet miner's as pairs), else ``emb.triplets``."""
        assert emb.labels is not None
        emb.matrix = as_dissimilarity(self.distance.matrix(emb.embeddings, emb.embeddings), self.distance)
        mined = miner(emb.matrix.detach(), emb.labels)
        if self.tuple_kind == "pairs":
            emb.pairs = mined.as_pairs() if isinstance(mined, TripletIndices) else mined
        elif isinstance(mined, TripletIndices):
            emb.triplets = mined
        else:
            raise ConfigError(f"loss.miner gives pairs, but this loss takes mined {' or '.join(self.miner_outputs)}")

    def nothing_mined(self, emb: Embedded) -> torch.Tensor:
        """The loss when the miner kept no tuple: a zero that keeps the graph."""
        return empty_loss(emb.embeddings)

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

    # --- for a loss with a forward of its own (the API before ``compute``; README: a loss of your own) ----------

    def gathered(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The rows of every rank (this rank's alone when not distributed)."""
        return gather_rows(self.gather, *tensors)

    def mine_pairs(self, dist: torch.Tensor, labels: torch.Tensor) -> PairIndices:
        assert self.miner is not None
        mined = self.miner(dist.detach(), labels)
        return mined.as_pairs() if isinstance(mined, TripletIndices) else mined

    def mine_triplets(self, dist: torch.Tensor, labels: torch.Tensor) -> TripletIndices:
        assert self.miner is not None
        mined = self.miner(dist.detach(), labels)
        assert isinstance(mined, TripletIndices)
        return mined

    @contextmanager
    def _scoring_every_tuple(self) -> Iterator[None]:
        """``miner`` set to its every-tuple miner and no gathering, for ``score_all`` of such a loss."""
        miner, gather = self.miner, self.gather
        self.miner, self.gather = every_tuple(miner), None
        try:
            yield
        finally:
            self.miner, self.gather = miner, gather


def _families() -> tuple[str, ...]:
    """Every module of this package but this one: each may register losses (a new loss is one new file)."""
    here = Path(__file__).parent
    return tuple(sorted(f"{__package__}.{m.name}" for m in pkgutil.iter_modules([str(here)]) if m.name != "base"))


LOSSES: Registry[SiameseLoss] = Registry("loss", providers=_families())


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
