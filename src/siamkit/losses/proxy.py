"""Proxy losses: one learned vector per class instead of sampled pairs — cheap, stable and strong on
closed-set retrieval (Zhai & Wu 2019, "Classification is a Strong Baseline for Deep Metric Learning")."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from siamkit.errors import ConfigError
from siamkit.losses.base import LOSSES, Batch, LabelBatch, SiameseLoss, expect
from siamkit.models.siamese import SiameseNet


@LOSSES.register("normalized-softmax")
class NormalizedSoftmaxLoss(SiameseLoss):
    """Cross-entropy over ``cos(e, w_c) / T`` for L2-normalised embeddings ``e`` and class proxies ``w_c``.

    Takes labelled batches (any sampler; P×K works). ``num_classes`` and ``embedding_dim`` are filled in from
    the data and the model by ``siamkit train``. The proxies are trained with the model (the trainer optimises
    the loss's parameters too). Class labels must be ``0..num_classes-1``; with an identity (open-set) split
    the validation classes have untrained proxies, so its validation loss only ranks checkpoints loosely.
    """

    tuple_kind: ClassVar[str] = "labels"
    miner_outputs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, num_classes: int = 0, embedding_dim: int = 0, temperature: float = 0.05) -> None:
        super().__init__()
        if num_classes < 2 or embedding_dim < 1:
            raise ConfigError(
                "loss normalized-softmax needs loss.params.num_classes (≥ 2) and embedding_dim; siamkit train fills "
                "them in from the data"
            )
        if temperature <= 0:
            raise ConfigError(f"loss.params.temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.proxies = nn.Parameter(torch.randn(num_classes, embedding_dim) / embedding_dim**0.5)

    def forward(self, model: SiameseNet, batch: Batch) -> torch.Tensor:
        expect(batch, LabelBatch)
        assert isinstance(batch, LabelBatch)
        emb, labels = self.gathered(model.embed(batch.x), batch.labels)
        logits = F.normalize(emb, dim=1) @ F.normalize(self.proxies, dim=1).T / self.temperature
        if int(labels.max()) >= len(self.proxies):
            raise ConfigError(f"class label {int(labels.max())} ≥ loss.params.num_classes={len(self.proxies)}")
        return F.cross_entropy(logits, labels)
