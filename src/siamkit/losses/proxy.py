"""Proxy losses: one learned vector per class instead of sampled pairs — cheap, stable and strong on
closed-set retrieval. All three are a cross-entropy over scaled cosines ``cos θ_j = ê·ŵ_j`` between the
L2-normalised embedding ``ê`` and class proxies ``ŵ_j``; they differ in how the target logit is penalised:

- ``normalized-softmax`` (Zhai & Wu 2019): ``cos θ_j / T``.
- ``cosface`` (Wang et al. 2018, CosFace / large-margin cosine loss): ``s·(cos θ_y − m)`` for the target.
- ``arcface`` (Deng et al. 2019, additive angular margin): ``s·cos(θ_y + m)`` for the target.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from siamkit.errors import ConfigError
from siamkit.losses.base import LOSSES, SiameseLoss
from siamkit.losses.embedded import Embedded


class ProxyLoss(SiameseLoss):
    """Base of the proxy losses: ``num_classes`` proxies ``(C, D)`` trained with the model (the trainer optimises
    the loss's parameters too). Takes labelled batches (any sampler; P×K works); ``num_classes`` and
    ``embedding_dim`` are filled in from the data and the model by ``siamkit train``. Class labels must be
    ``0..num_classes-1``; with an identity (open-set) split the validation classes have untrained proxies, so
    the validation loss only ranks checkpoints loosely (the default monitor, validation MAP@R, does not use it)."""

    tuple_kind: ClassVar[str] = "labels"
    miner_outputs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, num_classes: int, embedding_dim: int) -> None:
        super().__init__()
        if num_classes < 2 or embedding_dim < 1:
            raise ConfigError(
                f"loss {type(self).__name__} needs loss.params.num_classes (≥ 2) and embedding_dim; siamkit train "
                "fills them in from the data"
            )
        self.proxies = nn.Parameter(torch.randn(num_classes, embedding_dim) / embedding_dim**0.5)

    def cosines(self, emb: torch.Tensor) -> torch.Tensor:
        """``cos θ`` ``(B, C)`` between embeddings ``(B, D)`` and the proxies."""
        return F.normalize(emb, dim=1) @ F.normalize(self.proxies, dim=1).T

    def logits(self, cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def compute(self, emb: Embedded) -> torch.Tensor:
        labels = emb.labels
        assert labels is not None
        if int(labels.max()) >= len(self.proxies):
            raise ConfigError(f"class label {int(labels.max())} ≥ loss.params.num_classes={len(self.proxies)}")
        return F.cross_entropy(self.logits(self.cosines(emb.embeddings), labels), labels)


def _check_positive(**values: float) -> None:
    for key, v in values.items():
        if v <= 0:
            raise ConfigError(f"loss.params.{key} must be > 0, got {v}")


@LOSSES.register("normalized-softmax")
class NormalizedSoftmaxLoss(ProxyLoss):
    """Cross-entropy over ``cos(e, w_c) / T`` (Zhai & Wu 2019, "Classification is a Strong Baseline for Deep
    Metric Learning")."""

    def __init__(self, num_classes: int = 0, embedding_dim: int = 0, temperature: float = 0.05) -> None:
        super().__init__(num_classes, embedding_dim)
        _check_positive(temperature=temperature)
        self.temperature = temperature

    def logits(self, cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return cos / self.temperature


@LOSSES.register("cosface")
class CosFaceLoss(ProxyLoss):
    """CosFace (Wang et al. 2018): logits ``s·(cos θ_j − m·[j = y])``; the paper's ``s = 64``, ``m = 0.35``."""

    def __init__(self, num_classes: int = 0, embedding_dim: int = 0, scale: float = 64.0, margin: float = 0.35) -> None:
        super().__init__(num_classes, embedding_dim)
        _check_positive(scale=scale)
        self.scale, self.margin = scale, margin

    def logits(self, cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.scale * (cos - self.margin * F.one_hot(labels, cos.shape[1]).to(cos.dtype))


@LOSSES.register("arcface")
class ArcFaceLoss(ProxyLoss):
    """ArcFace (Deng et al. 2019): the target logit is ``s·cos(θ_y + m)``, the others ``s·cos θ_j``; the paper's
    ``s = 64``, ``m = 0.5``. Where ``θ_y + m`` would pass π (cos θ_y ≤ cos(π − m)) the target logit is
    ``s·(cos θ_y − m·sin m)`` instead, as in the authors' code, so that it keeps decreasing in θ_y."""

    def __init__(self, num_classes: int = 0, embedding_dim: int = 0, scale: float = 64.0, margin: float = 0.5) -> None:
        super().__init__(num_classes, embedding_dim)
        _check_positive(scale=scale)
        if not 0 <= margin < math.pi / 2:
            raise ConfigError(f"loss.params.margin must be in [0, π/2) radians, got {margin}")
        self.scale, self.margin = scale, margin

    def logits(self, cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        m = self.margin
        target = cos.gather(1, labels[:, None]).clamp(-1.0, 1.0)
        sin = (1.0 - target * target).clamp_min(1e-12).sqrt()
        shifted = target * math.cos(m) - sin * math.sin(m)  # cos(θ + m)
        shifted = torch.where(target > math.cos(math.pi - m), shifted, target - m * math.sin(m))
        return self.scale * cos.scatter(1, labels[:, None], shifted)
