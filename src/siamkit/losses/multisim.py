"""Multi-similarity loss (Wang, Han, Huang, Dong, Scott — CVPR 2019, "Multi-Similarity Loss with General Pair
Weighting for Deep Metric Learning"), with its own pair mining, on labelled (P×K) batches."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from siamkit.errors import ConfigError
from siamkit.losses.base import LOSSES, SiameseLoss
from siamkit.losses.embedded import Embedded, empty_loss


@LOSSES.register("multi-similarity")
class MultiSimilarityLoss(SiameseLoss):
    """Multi-similarity loss (Wang, Han, Huang, Dong, Scott, "Multi-Similarity Loss with General Pair Weighting
    for Deep Metric Learning", CVPR 2019). Takes a ``LabelBatch``: images ``(B, C, H, W)``, labels ``(B,)``.

    For cosine similarities ``S`` ``(B, B)`` of the L2-normalised embeddings of a labelled batch, each anchor
    ``i`` keeps the informative pairs (the paper's mining):

    - negatives ``k`` with ``S_ik + ε > min_{positives j} S_ij``,
    - positives ``j`` with ``S_ij − ε < max_{negatives k} S_ik``,

    and the loss is the mean over the anchors of
    ``(1/α)·log(1 + Σ_kept-pos exp(−α(S_ij − λ))) + (1/β)·log(1 + Σ_kept-neg exp(β(S_ik − λ)))``
    (an anchor with nothing kept adds 0). The paper's ``α = 2``, ``β = 50``, ``λ = 1``, ``ε = 0.1``."""

    tuple_kind: ClassVar[str] = "labels"
    miner_outputs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, alpha: float = 2.0, beta: float = 50.0, base: float = 1.0, epsilon: float = 0.1) -> None:
        super().__init__()
        if alpha <= 0 or beta <= 0:
            raise ConfigError(f"loss.params.alpha and beta must be > 0, got {alpha}, {beta}")
        self.alpha, self.beta, self.base, self.epsilon = alpha, beta, base, epsilon

    def compute(self, emb: Embedded) -> torch.Tensor:
        assert emb.labels is not None
        params = {"alpha": self.alpha, "beta": self.beta, "base": self.base, "epsilon": self.epsilon}
        return multi_similarity_loss(emb.embeddings, emb.labels, **params)


def multi_similarity_loss(
    emb: torch.Tensor, labels: torch.Tensor, *, alpha: float = 2.0, beta: float = 50.0, base: float = 1.0,
    epsilon: float = 0.1,
) -> torch.Tensor:  # fmt: skip
    """The loss of ``MultiSimilarityLoss`` for embeddings ``(B, D)`` and labels ``(B,)``, vectorised; its
    parameters (keyword-only) default to the paper's."""
    e = F.normalize(emb, dim=1)
    sim = e @ e.T
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=emb.device)
    pos, neg = same & ~eye, ~same
    if not pos.any() or not neg.any():
        return empty_loss(emb)
    s = sim.detach()
    inf = torch.tensor(float("inf"), device=emb.device, dtype=s.dtype)
    min_pos = torch.where(pos, s, inf).min(1, keepdim=True).values
    max_neg = torch.where(neg, s, -inf).max(1, keepdim=True).values
    keep_neg = neg & (s + epsilon > min_pos)
    keep_pos = pos & (s - epsilon < max_neg)
    zero = torch.zeros((), device=emb.device, dtype=sim.dtype)
    # log(1 + Σ exp(x)) over the kept entries: logsumexp with a 0 term, the others masked to −inf
    pos_terms = torch.where(keep_pos, -alpha * (sim - base), -inf)
    neg_terms = torch.where(keep_neg, beta * (sim - base), -inf)
    zeros = zero.expand(len(labels), 1)
    pos_loss = torch.logsumexp(torch.cat([zeros, pos_terms], 1), 1) / alpha
    neg_loss = torch.logsumexp(torch.cat([zeros, neg_terms], 1), 1) / beta
    return (pos_loss + neg_loss).mean()
