"""Pure loss functions on tensors (mean over the batch). ``y`` = 1 similar, 0 dissimilar."""

from __future__ import annotations

import torch
import torch.nn.functional as F

CONTRASTIVE_VARIANTS = ("hadsell", "squared-margin")


def contrastive_loss(
    d: torch.Tensor, y: torch.Tensor, margin: float = 1.0, variant: str = "hadsell", half: bool = False
) -> torch.Tensor:
    """Contrastive loss (Hadsell, Chopra, LeCun 2006) on distances ``d`` ``(B,)``.

    - ``hadsell`` (canonical): ``y·D² + (1 − y)·max(0, m − D)²``
    - ``squared-margin``: ``y·D² + (1 − y)·max(0, m² − D²)``
    ``half=True`` multiplies by ½, as the paper writes it (the gradient scale differs, not the optimum).
    """
    y = y.to(d.dtype)
    if variant == "hadsell":
        neg = F.relu(margin - d).pow(2)
    elif variant == "squared-margin":
        neg = F.relu(margin**2 - d.pow(2))
    else:
        raise ValueError(f"unknown contrastive variant {variant!r}; choose one of: {', '.join(CONTRASTIVE_VARIANTS)}")
    loss = y * d.pow(2) + (1.0 - y) * neg
    return (0.5 * loss if half else loss).mean()


def triplet_margin_loss(
    d_ap: torch.Tensor, d_an: torch.Tensor, margin: float = 0.2, soft_margin: bool = False
) -> torch.Tensor:
    """Triplet loss ``max(d(a, p) − d(a, n) + α, 0)`` on distances ``(B,)``, averaged over the batch; with
    ``soft_margin`` the smooth ``log(1 + exp(d(a, p) − d(a, n)))`` (Hermans et al. 2017), margin unused."""
    if soft_margin:
        return F.softplus(d_ap - d_an).mean()
    return F.relu(d_ap - d_an + margin).mean()


def bce_distance_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of ``sigmoid(logits)`` (logits = w·D + b) against ``y`` ``(B,)``."""
    return F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype))


def fisher_trace(diff: torch.Tensor, u: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """``tr(Uᵀ S U)`` with the scatter ``S = diffᵀ·diff + ε·I`` (a sum over the rows, no 1/b, no centring) of
    feature differences ``diff`` ``(b, F)`` and ``U`` ``(F, D)`` (SPEC §4.1). Equals
    ``Σᵢ ||diffᵢ U||² + ε·||U||²_F``."""
    scatter = diff.T @ diff + eps * torch.eye(diff.shape[1], dtype=diff.dtype, device=diff.device)
    return torch.trace(u.T @ scatter @ u)


def fisher_trace_projected(projected_diff: torch.Tensor, u: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """``tr(Uᵀ S U)`` from the projected differences ``diff·U`` ``(b, D)``: ``||diff·U||²_F + ε·||U||²_F``."""
    return projected_diff.pow(2).sum() + eps * u.pow(2).sum()


def fdt_loss(tr_w: torch.Tensor, tr_b: torch.Tensor, lam: float = 0.01, alpha: float = 0.25) -> torch.Tensor:
    """Fisher Discriminant Triplet: ``[(2 − λ)·tr(Uᵀ S_W U) − λ·tr(Uᵀ S_B U) + α]₊`` (Ghojogh et al. 2020)."""
    return F.relu((2.0 - lam) * tr_w - lam * tr_b + alpha)


def fdc_loss(tr_w: torch.Tensor, tr_b: torch.Tensor, lam: float = 0.01, alpha: float = 0.25) -> torch.Tensor:
    """Fisher Discriminant Contrastive: ``(2 − λ)·tr(Uᵀ S_W U) + [−λ·tr(Uᵀ S_B U) + α]₊``."""
    return (2.0 - lam) * tr_w + F.relu(alpha - lam * tr_b)
