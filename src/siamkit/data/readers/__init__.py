"""Readers for every layout of SPEC §2.1, on the generic registry :data:`READERS` (``data.layout``), all returning
``ImageSet``s (folders and CSVs through the decode cache):

- class per folder: ``root/<identity>/<image>`` (``folder``), grouped ``root/<group>/<identity>/<image>``
- flat folder: ``<prefix>_<class>_<rest>.png``, field index or regex (``flat``)
- CSV manifests: pairs (``path_a,path_b,label``), triplets (``anchor,positive,negative``) and labelled images
  (``path,label[,group]``), columns by header (``pairs-csv``, ``triplets-csv``, ``labels-csv``)
- MNIST-family IDX files, gzipped or not (``idx``); CIFAR-10 batches (``cifar10``); scikit-learn's digits and
  Fashion-MNIST by name (``digits``, ``fashion-mnist``)

One module per reader family; each registers a :class:`Reader` (its ``detect``, ``read``, ``list_images``,
``by_name``, ``priority``) with ``@READERS.register("name")``. A new reader is one new module and its name in
:data:`~siamkit.data.readers.base.PROVIDERS`. This package's namespace re-exports the public functions.
"""

from siamkit.data.readers.base import PROVIDERS, READERS, ArrayReader, DatasetBundle, Item, Reader
from siamkit.data.readers.csvfiles import csv_columns, csv_header, csv_text
from siamkit.data.readers.decode import (
    AUTO_SIZE_CAP,
    MIN_SIDE,
    Header,
    auto_channels,
    auto_size,
    cache_settings,
    decode_all,
    decode_file,
    read_header,
    read_headers,
)
from siamkit.data.readers.digits import read_digits
from siamkit.data.readers.export import write_class_folders
from siamkit.data.readers.fashion import FASHION_MNIST_CLASSES, FASHION_MNIST_DIRS, read_fashion_mnist
from siamkit.data.readers.flat import read_flat
from siamkit.data.readers.folder import GROUP_SEP, MIN_GROUP_CLASSES, class_groups, grouped_layout, read_folder
from siamkit.data.readers.idx import MAX_DEFLATE_RATIO, read_idx, read_idx_dir, read_idx_pair
from siamkit.data.readers.labels_csv import read_labels_csv
from siamkit.data.readers.listing import (
    PHOTO_FORMATS_PILLOW_LACKS,
    SPLIT_FOLDER_NAMES,
    class_files,
    class_folders,
    image_extensions,
    list_files,
    note_left_out,
)
from siamkit.data.readers.load import (
    LAYOUTS,
    detect_layout,
    get_reader,
    load_dataset,
    readers_in_order,
    stratified_sample,
)
from siamkit.data.readers.tuples_csv import TUPLE_COLUMNS, read_tuples_csv

__all__ = [
    "AUTO_SIZE_CAP", "FASHION_MNIST_CLASSES", "FASHION_MNIST_DIRS", "GROUP_SEP", "LAYOUTS", "MAX_DEFLATE_RATIO",
    "MIN_GROUP_CLASSES", "MIN_SIDE", "PHOTO_FORMATS_PILLOW_LACKS", "PROVIDERS", "READERS", "SPLIT_FOLDER_NAMES",
    "TUPLE_COLUMNS", "ArrayReader", "DatasetBundle", "Header", "Item", "Reader", "auto_channels", "auto_size",
    "cache_settings", "class_files", "class_folders", "class_groups", "csv_columns", "csv_header", "csv_text",
    "decode_all", "decode_file", "detect_layout", "get_reader", "grouped_layout", "image_extensions", "list_files",
    "load_dataset", "note_left_out", "read_digits", "read_fashion_mnist", "read_flat", "read_folder", "read_header",
    "read_headers", "read_idx", "read_idx_dir", "read_idx_pair", "read_labels_csv", "read_tuples_csv",
    "readers_in_order", "stratified_sample", "write_class_folders",
]  # fmt: skip
