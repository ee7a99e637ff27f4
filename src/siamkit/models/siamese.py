"""The Siamese wrapper (SPEC §3.1): one shared encoder (backbone + embedding head), a Euclidean distance
layer and an optional sigmoid head on the distance."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from siamkit.config import ModelConfig
from siamkit.models.registry import create_backbone
from siamkit.models.transfer import backbone_stages, frozen_norm_layers, set_frozen


class SiameseNet(nn.Module):
    """Shared encoder ``f`` = backbone → ``Linear(num_features → embedding_dim)`` (→ L2 normalisation);
    ``embedding_dim=0``: no head, the backbone's pooled features ``(B, num_features)`` are the embedding.

    ``features(x)`` is the second-to-last layer's output ``(B, F)`` and ``head`` the last layer (FDC/FDT use
    both); ``embed(x)`` gives ``(B, D)``; ``forward(a, b)`` the per-row Euclidean distance ``(B,)``.

    Example:
        >>> from siamkit.models.cnns import SeedCNN
        >>> net = SiameseNet(SeedCNN(1), embedding_dim=48)
        >>> net(torch.zeros(2, 1, 28, 28), torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2])
    """

    def __init__(
        self, backbone: nn.Module, embedding_dim: int = 64, normalize: bool = True, sigmoid_head: bool = False
    ) -> None:
        super().__init__()
        self.backbone = backbone
        num_features: int = backbone.num_features  # type: ignore[assignment]
        # embedding_dim 0: no head, the pooled features are the embedding (wider, and less fitted to the
        # training classes than a low-dimensional projection trained by the loss)
        self.head: nn.Module = nn.Linear(num_features, embedding_dim) if embedding_dim else nn.Identity()
        self.normalize = normalize
        self.embedding_dim = embedding_dim or num_features
        # Dense(1, sigmoid) on the distance: p(same) = sigmoid(w·D + b); starts at w = -4, b = 2.
        self.verifier: nn.Linear | None = None
        if sigmoid_head:
            self.verifier = nn.Linear(1, 1)
            with torch.no_grad():
                self.verifier.weight.fill_(-4.0)
                self.verifier.bias.fill_(2.0)

    def freeze_backbone(self) -> None:
        """Train only the embedding head (and sigmoid head): the backbone gets no gradient, no optimiser state,
        and its BatchNorm statistics stay fixed."""
        set_frozen([self.backbone], True)
        self.train(self.training)

    def unfreeze_backbone(self, last_stages: int = 0) -> None:
        """Unfreeze the whole backbone (``last_stages=0``) or only its last ``last_stages`` stages."""
        stages = backbone_stages(self.backbone)
        set_frozen([self.backbone] if last_stages <= 0 else stages[-last_stages:], False)
        self.train(self.training)

    def train(self, mode: bool = True) -> SiameseNet:
        super().train(mode)
        if mode:
            for m in frozen_norm_layers(self.backbone):
                m.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Second-to-last layer output ``(B, F)``: the input of the embedding layer."""
        return self.backbone(x)

    def embed_features(self, feats: torch.Tensor) -> torch.Tensor:
        z = self.head(feats)
        return F.normalize(z, dim=1) if self.normalize else z

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(B, D)`` of images ``(B, C, H, W)``."""
        return self.embed_features(self.features(x))

    @staticmethod
    def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-row Euclidean distance ``(B,)`` between embeddings ``(B, D)``."""
        return (a - b).pow(2).sum(1).clamp_min(1e-12).sqrt()

    def similarity_logit(self, distance: torch.Tensor) -> torch.Tensor:
        """Logit of p(same) from the sigmoid head, ``(B,)``; requires ``sigmoid_head=True``."""
        if self.verifier is None:
            raise RuntimeError("this model has no sigmoid head (model.sigmoid_head=false)")
        return self.verifier(distance.unsqueeze(1)).squeeze(1)

    def forward(self, a: torch.Tensor, b: torch.Tensor | None = None, mode: str = "distance") -> torch.Tensor:
        """``mode="distance"``: the per-row distance of ``a`` and ``b``; ``"embed"`` / ``"features"``: those of
        ``a`` (the entry points DistributedDataParallel calls through)."""
        if mode == "embed":
            return self.embed(a)
        if mode == "features":
            return self.features(a)
        assert b is not None, "SiameseNet(a, b) needs two batches"
        emb = self.embed(torch.cat([a, b]))
        return self.distance(*emb.split(len(a)))


def build_model(cfg: ModelConfig, in_channels: int) -> SiameseNet:
    backbone = create_backbone(cfg.backbone, in_channels=in_channels, **cfg.backbone_args)
    return SiameseNet(backbone, cfg.embedding_dim, cfg.normalize, cfg.sigmoid_head)


def count_parameters(model: nn.Module, trainable: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad == trainable)
