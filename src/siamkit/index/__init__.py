"""Galleries: embeddings of images in a persisted faiss index with a sidecar, searched by nearest neighbour."""

from siamkit.index.gallery import Gallery, Hit, Item

__all__ = ["Gallery", "Hit", "Item"]
