"""Galleries: embeddings of images in a persisted faiss index (items and edits in SQLite) or a Qdrant collection,
searched by nearest neighbour."""

from siamkit.index.gallery import Gallery, Hit, Item

__all__ = ["Gallery", "Hit", "Item"]
