"""Models: registered backbones, the embedding head and the Siamese wrapper."""

from siamkit.models.registry import BACKBONES, create_backbone, list_backbones
from siamkit.models.siamese import SiameseNet, build_model, count_parameters

__all__ = ["BACKBONES", "SiameseNet", "build_model", "count_parameters", "create_backbone", "list_backbones"]
