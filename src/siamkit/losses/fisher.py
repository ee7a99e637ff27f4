"""Fisher Discriminant Triplet (FDT) and Contrastive (FDC) losses (Ghojogh, Sikaroudi, Shafiei, Tizhoosh,
Karray, Crowley, IJCNN 2020, arXiv 2004.04674; SPEC §4.1).

The scatter matrices are built from the **second-to-last** layer's outputs ``o`` (``model.features``) and
projected by the **last** layer's weight as in×out, ``U = head.weight.T`` (bias ignored):
``S_W = Σ (o_a − o_p)ᵀ(o_a − o_p) + εI`` over anchor–neighbour pairs, ``S_B`` likewise over anchor–distant
pairs; the hinge acts once on the batch scalar. Defaults are the authors' code: λ = 0.01, α = 0.25, ε = 1e-4.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from siamkit.data.batch import Batch, LabelBatch, PairBatch, TripletBatch
from siamkit.distances import as_dissimilarity, get_distance
from siamkit.errors import ConfigError
from siamkit.losses.base import LOSSES, SiameseLoss, empty_loss, expect
from siamkit.losses.functional import fdc_loss, fdt_loss, fisher_trace_projected
from siamkit.models.siamese import SiameseNet


def projection(model: nn.Module) -> torch.Tensor:
    """``U`` ``(F, D)``: the embedding head's weight as in×out (``nn.Linear.weight`` is out×in)."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear):
        raise ConfigError(
            f"loss fdt/fdc needs a model whose embedding head is an nn.Linear (U = head.weight.T); this model's "
            f"head is {type(head).__name__}: use a SiameseNet or pick another loss"
        )
    return head.weight.T


class FisherLoss(SiameseLoss):
    """Shared parts: parameters, U, and the mined (anchor, neighbour) / (anchor, distant) feature rows.

    The loss trains the projection ``z = o·U`` — no bias, no normalisation — so a run with it is evaluated in
    that geometry: ``normalized_embedding = False`` turns ``model.normalize`` off (unless a config sets it), and
    the embedding ``o·U + b`` then ranks and thresholds exactly as ``z`` does (a shift changes no distance).
    Normalising would instead score ``normalize(o·U + b)``, where the bias the loss never trains tilts every
    direction."""

    normalized_embedding: ClassVar[bool] = False

    def __init__(self, lam: float = 0.01, alpha: float = 0.25, eps: float = 1e-4, distance: str = "euclidean"):
        super().__init__()
        if not 0.0 <= lam <= 2.0:
            raise ConfigError(f"loss.params.lam must be in [0, 2], got {lam}")
        self.lam, self.alpha, self.eps = lam, alpha, eps
        self.distance = get_distance(distance)  # used only to mine a labelled batch

    def traces(self, zdiff_w: torch.Tensor, zdiff_b: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``tr(Uᵀ S_W U)`` and ``tr(Uᵀ S_B U)`` from *projected* feature differences ``(o_a − o_p)·U``
        ``(b, D)``, through the identity ``tr(Uᵀ(ΔᵀΔ + εI)U) = ||ΔU||²_F + ε||U||²_F``. The features are
        projected once per row, before pairing, so no ``(b, F)`` difference or F×F scatter is ever built
        (``functional.fisher_trace`` is the scatter form: the same value, tested)."""
        return fisher_trace_projected(zdiff_w, u, self.eps), fisher_trace_projected(zdiff_b, u, self.eps)

    def mined_projection(
        self, model: SiameseNet, batch: LabelBatch, u: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:  # fmt: skip
        """The projected feature rows ``z = o·U`` (of every rank; the embedding before bias), their labels, and
        the mining distance on ``z``, computed once for both."""
        feats, labels = self.gathered(model.features(batch.x), batch.labels)
        z = feats @ u
        zd = z.detach()
        return z, labels, as_dissimilarity(self.distance.matrix(zd, zd), self.distance)

    @staticmethod
    def touch_head(model: SiameseNet, loss: torch.Tensor) -> torch.Tensor:
        """The loss ignores the head's bias (and, when nothing was mined, its weight); a zero term gives them a
        (zero) gradient every step, which DistributedDataParallel needs from every parameter. The value and all
        gradients are unchanged."""
        head = projection(model)
        bias = getattr(getattr(model, "head", None), "bias", None)
        return loss + 0.0 * head.sum() + (0.0 * bias.sum() if bias is not None else 0.0)


@LOSSES.register("fdt")
class FDTLoss(FisherLoss):
    """``[(2 − λ)·tr(Uᵀ S_W U) − λ·tr(Uᵀ S_B U) + α]₊`` on triplets (fixed, or mined by a triplet miner)."""

    tuple_kind: ClassVar[str] = "triplets"
    miner_outputs: ClassVar[tuple[str, ...]] = ("triplets",)

    def forward(self, model: SiameseNet, batch: Batch) -> torch.Tensor:
        expect(batch, TripletBatch, LabelBatch)
        u = projection(model)
        if isinstance(batch, LabelBatch):
            z, labels, dist = self.mined_projection(model, batch, u)
            t = self.mine_triplets(dist, labels)
            if len(t) == 0:
                return self.touch_head(model, empty_loss(z))
            diff_w, diff_b = z[t.a] - z[t.p], z[t.a] - z[t.n]
        else:
            assert isinstance(batch, TripletBatch)
            oa, op, on = self.gathered(*model.features(torch.cat([batch.a, batch.p, batch.n])).split(len(batch.a)))
            diff_w, diff_b = (oa - op) @ u, (oa - on) @ u
        tr_w, tr_b = self.traces(diff_w, diff_b, u)
        return self.touch_head(model, fdt_loss(tr_w, tr_b, self.lam, self.alpha))


@LOSSES.register("fdc")
class FDCLoss(FisherLoss):
    """``(2 − λ)·tr(Uᵀ S_W U) + [−λ·tr(Uᵀ S_B U) + α]₊`` on pairs: the batch's same-class pairs
    (anchor–neighbour) build S_W and its different-class pairs (anchor–distant) build S_B — the authors draw
    the two kinds from the two halves of the batch, as many of each; when the counts differ (mined batches)
    S_B is weighted by n_W / n_B to match."""

    tuple_kind: ClassVar[str] = "pairs"

    def forward(self, model: SiameseNet, batch: Batch) -> torch.Tensor:
        expect(batch, PairBatch, LabelBatch)
        u = projection(model)
        if isinstance(batch, LabelBatch):
            z, labels, dist = self.mined_projection(model, batch, u)
            m = self.mine_pairs(dist, labels)
            if len(m) == 0:
                return self.touch_head(model, empty_loss(z))
            diff, y = z[m.i] - z[m.j], m.y
        else:
            assert isinstance(batch, PairBatch)
            oa, ob = model.features(torch.cat([batch.a, batch.b])).split(len(batch.a))
            oa, ob, y = self.gathered(oa, ob, batch.y)
            diff = (oa - ob) @ u
        same = y > 0.5
        diff_w, diff_b = diff[same], diff[~same]
        if len(diff_w) and len(diff_b) and len(diff_w) != len(diff_b):
            # the authors build S_W and S_B from the two halves of a batch: as many anchor–neighbour as
            # anchor–distant pairs. A mined batch holds far more different- than same-class pairs (8×16 with
            # all-pairs: 7,168 vs 960), so S_B is weighted to the count of S_W's pairs, n_W/n_B·ΣΔᵀΔ: the
            # scatter of n_W distant pairs in expectation, from all of them
            diff_b = diff_b * (len(diff_w) / len(diff_b)) ** 0.5
        tr_w, tr_b = self.traces(diff_w, diff_b, u)
        return self.touch_head(model, fdc_loss(tr_w, tr_b, self.lam, self.alpha))
