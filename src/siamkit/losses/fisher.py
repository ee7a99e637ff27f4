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

from siamkit.distances import Distance, get_distance
from siamkit.errors import ConfigError
from siamkit.losses.base import LOSSES, SiameseLoss
from siamkit.losses.embedded import Embedded, empty_loss, projection
from siamkit.losses.functional import fdc_loss, fdt_loss, fisher_trace_projected
from siamkit.models.siamese import SiameseNet


class FisherLoss(SiameseLoss):
    """Shared parts: parameters, U, and the projected feature rows ``z = o·U`` the tuples pair up.

    The loss ``needs`` the second-to-last layer's rows ``o`` and the head's weight ``U``; its embeddings are the
    projection ``z = o·U`` — no bias, no normalisation —, which the miner's matrix (``distance``) is computed on
    too. A run with it is evaluated in that geometry: ``normalized_embedding = False`` turns ``model.normalize``
    off (unless a config sets it), and the embedding ``o·U + b`` then ranks and thresholds exactly as ``z`` does
    (a shift changes no distance). Normalising would instead score ``normalize(o·U + b)``, where the bias the
    loss never trains tilts every direction."""

    normalized_embedding: ClassVar[bool] = False
    needs: ClassVar[frozenset[str]] = frozenset({"features", "head_weight"})

    def __init__(
        self, lam: float = 0.01, alpha: float = 0.25, eps: float = 1e-4, distance: str | Distance = "euclidean"
    ) -> None:
        super().__init__()
        if not 0.0 <= lam <= 2.0:
            raise ConfigError(f"loss.params.lam must be in [0, 2], got {lam}")
        self.lam, self.alpha, self.eps = lam, alpha, eps
        self.distance = get_distance(distance)  # used only to mine a labelled batch

    def embed_features(self, emb: Embedded) -> torch.Tensor:
        """``z = o·U`` ``(N, D)``: each feature row projected once, before pairing, so no ``(b, F)`` difference or
        F×F scatter is ever built for mined tuples (see ``differences``)."""
        assert emb.features is not None and emb.head_weight is not None
        return emb.features @ emb.head_weight

    @staticmethod
    def differences(emb: Embedded, anchors: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The projected feature differences ``(o_anchor − o_other)·U`` ``(M, D)``, one per index tensor of
        ``others`` ``(M,)``. Mined tuples share rows, so each row is projected once, before pairing
        (``emb.embeddings`` is ``o·U``), and no ``(M, F)`` difference is built; fixed tuples use each row once,
        so they are differenced first and projected after: fewer products, and the authors' order."""
        u, z, feats = emb.head_weight, emb.embeddings, emb.features
        assert u is not None and feats is not None
        if emb.matrix is not None:
            return tuple(z[anchors] - z[other] for other in others)
        rows = feats[anchors]
        return tuple((rows - feats[other]) @ u for other in others)

    def traces(self, zdiff_w: torch.Tensor, zdiff_b: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``tr(Uᵀ S_W U)`` and ``tr(Uᵀ S_B U)`` from *projected* feature differences ``(o_a − o_p)·U``
        ``(b, D)``, through the identity ``tr(Uᵀ(ΔᵀΔ + εI)U) = ||ΔU||²_F + ε||U||²_F``
        (``functional.fisher_trace`` is the scatter form: the same value, tested)."""
        return fisher_trace_projected(zdiff_w, u, self.eps), fisher_trace_projected(zdiff_b, u, self.eps)

    def nothing_mined(self, emb: Embedded) -> torch.Tensor:
        return self.touch_head(emb.model, empty_loss(emb.embeddings))

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

    def compute(self, emb: Embedded) -> torch.Tensor:
        assert emb.triplets is not None and emb.head_weight is not None
        t = emb.triplets
        diff_w, diff_b = self.differences(emb, t.a, t.p, t.n)
        tr_w, tr_b = self.traces(diff_w, diff_b, emb.head_weight)
        return self.touch_head(emb.model, fdt_loss(tr_w, tr_b, self.lam, self.alpha))


@LOSSES.register("fdc")
class FDCLoss(FisherLoss):
    """``(2 − λ)·tr(Uᵀ S_W U) + [−λ·tr(Uᵀ S_B U) + α]₊`` on pairs: the batch's same-class pairs
    (anchor–neighbour) build S_W and its different-class pairs (anchor–distant) build S_B — the authors draw
    the two kinds from the two halves of the batch, as many of each; when the counts differ (mined batches)
    S_B is weighted by n_W / n_B to match."""

    tuple_kind: ClassVar[str] = "pairs"

    def compute(self, emb: Embedded) -> torch.Tensor:
        assert emb.pairs is not None and emb.head_weight is not None
        m = emb.pairs
        (diff,) = self.differences(emb, m.i, m.j)
        same = m.y > 0.5
        diff_w, diff_b = diff[same], diff[~same]
        if len(diff_w) and len(diff_b) and len(diff_w) != len(diff_b):
            # the authors build S_W and S_B from the two halves of a batch: as many anchor–neighbour as
            # anchor–distant pairs. A mined batch holds far more different- than same-class pairs (8×16 with
            # all-pairs: 7,168 vs 960), so S_B is weighted to the count of S_W's pairs, n_W/n_B·ΣΔᵀΔ: the
            # scatter of n_W distant pairs in expectation, from all of them
            diff_b = diff_b * (len(diff_w) / len(diff_b)) ** 0.5
        tr_w, tr_b = self.traces(diff_w, diff_b, emb.head_weight)
        return self.touch_head(emb.model, fdc_loss(tr_w, tr_b, self.lam, self.alpha))
