"""Data: readers for each layout, splits, pair/triplet generation and batch transforms."""

from siamkit.data.imageset import ImageSet, TupleTable
from siamkit.data.readers import DatasetBundle, load_dataset

__all__ = ["DatasetBundle", "ImageSet", "TupleTable", "load_dataset"]
