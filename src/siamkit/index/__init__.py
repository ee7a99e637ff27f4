"""Galleries: embeddings of images in a persisted faiss index (items and edits in SQLite) or a Qdrant collection,
searched by nearest neighbour. :class:`Gallery` is the protocol every backend implements (``Gallery.open`` opens
any; ``Gallery.create`` makes a faiss one); :class:`FaissGallery` and ``siamkit.index.qdrant.QdrantGallery`` are
the two backends."""

from siamkit.index.gallery import FaissGallery
from siamkit.index.protocol import Gallery, Hit, Item

__all__ = ["FaissGallery", "Gallery", "Hit", "Item"]
