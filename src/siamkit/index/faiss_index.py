"""The faiss indexes a gallery keeps: ``flat`` (exact), ``hnsw`` and ``ivf`` (approximate), each taking ids so
items can be removed and read back; their options (checked, with defaults) and search parameters. faiss is
imported on first use (``pip install 'siamkit[serve]'``)."""

from __future__ import annotations

import logging
from typing import Any

from siamkit.errors import ConfigError
from siamkit.index.metrics import faiss_metric

INDEX_KINDS = ("flat", "hnsw", "ivf")
DEFAULT_OPTIONS: dict[str, dict[str, int]] = {
    "flat": {},
    "hnsw": {"m": 32, "ef_construction": 80, "ef_search": 64},
    "ivf": {"nlist": 1024, "nprobe": 16},
}


def faiss_module() -> Any:
    """The faiss module, or a one-line error saying how to install it."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its CPU-feature probing is not news
    try:
        import faiss
    except ImportError:
        raise ConfigError("galleries need faiss: pip install 'siamkit[serve]' (or faiss-cpu)") from None
    return faiss


def index_options(kind: str, options: dict[str, Any] | None = None) -> dict[str, int]:
    """Defaults of ``kind`` updated by ``options``; unknown option names are an error."""
    if kind not in INDEX_KINDS:
        raise ConfigError(f"unknown index kind {kind!r}; use one of {', '.join(INDEX_KINDS)}")
    merged = dict(DEFAULT_OPTIONS[kind])
    for key, value in (options or {}).items():
        if key not in merged:
            allowed = ", ".join(merged) or "none"
            raise ConfigError(f"index option {key!r} does not apply to a {kind} index (options: {allowed})")
        if int(value) < 1:
            raise ConfigError(f"index option {key}={value}: must be a positive integer")
        merged[key] = int(value)
    return merged


def new_index(kind: str, dim: int, metric: str, options: dict[str, int]) -> Any:
    """An empty faiss index that takes ids: IDMap2 over Flat or HNSW; IVF-Flat with a hash-table direct map (so
    items can be removed and reconstructed by id). ``metric``: the run's distance (:mod:`siamkit.index.metrics`)."""
    faiss = faiss_module()
    fm = faiss_metric(faiss, metric)
    if kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlat(dim, fm))
    if kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, options["m"], fm)
        inner.hnsw.efConstruction = options["ef_construction"]
        return faiss.IndexIDMap2(inner)
    quantizer = faiss.IndexFlat(dim, fm)
    index = faiss.IndexIVFFlat(quantizer, dim, options["nlist"], fm)
    index.own_fields = True
    quantizer.this.disown()  # the IVF index now owns and frees its quantizer
    index.set_direct_map_type(faiss.DirectMap.Hashtable)
    return index


def set_search_params(index: Any, kind: str, options: dict[str, int]) -> None:
    """The index's default search breadth from its options (``ef_search``, ``nprobe``)."""
    faiss = faiss_module()
    if kind == "hnsw":
        faiss.downcast_index(index.index).hnsw.efSearch = options["ef_search"]
    elif kind == "ivf":
        index.nprobe = options["nprobe"]


def search_params(kind: str, nprobe: int | None = None, ef_search: int | None = None) -> Any:
    """Per-call search parameters (they travel with the call, so they are thread-safe; the index keeps its
    defaults), or None when none applies to ``kind``."""
    faiss = faiss_module()
    if kind == "ivf" and nprobe is not None:
        return faiss.SearchParametersIVF(nprobe=nprobe)
    if kind == "hnsw" and ef_search is not None:
        return faiss.SearchParametersHNSW(efSearch=ef_search)
    return None
