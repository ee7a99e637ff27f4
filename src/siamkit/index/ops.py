"""Gallery jobs behind ``siamkit index build|add|remove|info`` and ``siamkit search``: list images from the
core layouts, embed them in batches with a progress bar, update and commit the gallery."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from siamkit.data.images import SKIP_HINT
from siamkit.data.sources import collect_images
from siamkit.errors import DataError
from siamkit.files import made_folder
from siamkit.index.folder import locked
from siamkit.index.gallery import FaissGallery
from siamkit.index.protocol import Gallery, Hit
from siamkit.index.qdrant import QdrantGallery
from siamkit.index.qdrant import migrate as to_qdrant
from siamkit.runs.embedders import ModelSource
from siamkit.runs.model import Model, open_model
from siamkit.thresholds import decision_info

log = logging.getLogger(__name__)


def embed_paths(
    model: Model, items: Sequence[tuple[str, str | None]], batch_size: int = 256, progress: bool = False,
    skip_bad: bool = False,
) -> tuple[np.ndarray, list[tuple[str, str | None]], list[str]]:  # fmt: skip
    """Decode and embed ``items`` batch by batch (memory stays one batch of images). Returns (embeddings ``(N, D)``,
    the items kept, the paths skipped as unreadable — only with ``skip_bad``; otherwise the first bad file is a
    ``DataError`` naming it)."""
    from tqdm import tqdm

    kept: list[tuple[str, str | None]] = []
    skipped: list[str] = []
    parts: list[np.ndarray] = []
    log.info("embedding %s images, %d at a time…", f"{len(items):,}", batch_size)
    bar = tqdm(total=len(items), desc="embed", unit="img", disable=None if progress else True, leave=False)
    for s in range(0, len(items), batch_size):
        arrays = []
        for path, lab in items[s : s + batch_size]:
            try:
                arrays.append(model.prepare(path))
                kept.append((path, lab))
            except DataError as exc:
                if not skip_bad:
                    raise
                skipped.append(path)
                log.warning("skipped %s", exc)
        if arrays:
            parts.append(model.embed(torch.from_numpy(np.stack(arrays))))
        bar.update(min(batch_size, len(items) - s))
    bar.close()
    if skipped:
        log.warning("%d unreadable images skipped", len(skipped))
    vectors = np.concatenate(parts) if parts else np.empty((0, model.embedding_dim), np.float32)
    return vectors, kept, skipped


def build(
    run_dir: str, sources: Sequence[str], out: str, kind: str = "flat", *, options: dict[str, Any] | None = None,
    backend: str | ModelSource = "torch", progress: bool = False, skip_bad: bool = False, overwrite: bool = False,
    batch_size: int = 256, backend_url: str | None = None, collection: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Embed every image of ``sources`` with the run's model and write a new gallery to ``out`` — a faiss index
    in the folder, or, with ``backend_url``, a Qdrant collection (``http://host:6333`` or ``local:PATH``)."""
    model = open_model(run_dir, backend)
    gallery: Gallery
    if backend_url:
        gallery = QdrantGallery.create_on(out, model.describe(), backend_url, collection, overwrite)
    else:
        gallery = FaissGallery.create(out, model.describe(), kind, options, overwrite)
    items = collect_images(sources)
    vectors, kept, skipped = embed_paths(model, items, batch_size, progress, skip_bad)
    if not kept:
        raise DataError(f"none of the {len(items)} images could be read; {SKIP_HINT}")
    with made_folder(Path(out)), locked(out):  # a failed build leaves no folder behind
        log.info("writing the %s index of %s vectors…", "Qdrant" if backend_url else kind, f"{len(kept):,}")
        gallery.add(vectors, [p for p, _ in kept], [lab for _, lab in kept])
        gallery.save()
    return {**gallery.describe(), "added": len(kept), "skipped": skipped}


def _open_for(gallery_dir: str, run_dir: str | None, backend: str | ModelSource) -> tuple[Gallery, Model]:
    gallery = Gallery.open(gallery_dir)
    model = open_model(run_dir or gallery.meta["run_dir"], backend)
    gallery.check_model(model.describe())
    return gallery, model


def add(
    gallery_dir: str, sources: Sequence[str], label: str | None = None, run_dir: str | None = None, *,
    backend: str | ModelSource = "torch", progress: bool = False, skip_bad: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Embed ``sources`` and add them (a folder per class gives labels; ``label`` labels the rest)."""
    with locked(gallery_dir):
        gallery, model = _open_for(gallery_dir, run_dir, backend)
        items = collect_images(sources, label)
        unlabelled = sum(lab is None for _, lab in items)
        if unlabelled:
            log.warning("%d of the %d images have no label (not in a class folder, and no --label NAME): search "
                        "hits on them will show none", unlabelled, len(items))  # fmt: skip
        vectors, kept, skipped = embed_paths(model, items, progress=progress, skip_bad=skip_bad)
        ids = gallery.add(vectors, [p for p, _ in kept], [lab for _, lab in kept])
        gallery.save()
    return {**gallery.describe(), "added_ids": ids, "skipped": skipped}


def remove(gallery_dir: str, ids: Sequence[int]) -> dict[str, Any]:
    """Remove items by id (all or none)."""
    with locked(gallery_dir):
        gallery = Gallery.open(gallery_dir)
        try:
            removed = gallery.remove(ids)
        except KeyError as exc:
            raise DataError(f"{gallery_dir}: {exc.args[0]}; list the ids with: siamkit index info {gallery_dir}") \
                from None  # fmt: skip
        gallery.save()
    for item in removed:  # uploads belong to the gallery: delete them once the removal is committed
        owned = gallery.owned_upload(item)
        if owned is not None:
            owned.unlink(missing_ok=True)
    return {**gallery.describe(), "removed_ids": [it.id for it in removed]}


def hits_to_dicts(hits: list[Hit]) -> list[dict[str, Any]]:
    return [{"rank": h.rank, "id": h.id, "distance": h.distance, "label": h.label, "match": h.match, "path": h.path}
            for h in hits]  # fmt: skip


def search(
    gallery_dir: str, queries: Sequence[str], k: int = 10, run_dir: str | None = None, *,
    backend: str | ModelSource = "torch", figure: str | None = None, figure_style: str = "grid",
) -> dict[str, Any]:  # fmt: skip
    """The ``k`` nearest gallery items of each query image; optionally the neighbours figure (SPEC §7)."""
    gallery, model = _open_for(gallery_dir, run_dir, backend)
    known = {it.label for it in gallery.items.values() if it.label is not None}
    # a query file in a folder named like a gallery label (digits/8/008.png) is labelled by it: its hits can then
    # be marked right or wrong (green / red in the figure)
    items = [(p, lab if lab is not None or Path(p).parent.name not in known else Path(p).parent.name)
             for p, lab in collect_images(queries)]  # fmt: skip
    vectors, kept, _ = embed_paths(model, items)
    distances, ids = gallery.search(vectors, k)
    hits = gallery.hits(distances, ids, model.threshold)
    results = [
        {"query": path, "label": lab, "neighbours": hits_to_dicts(h)} for (path, lab), h in zip(kept, hits, strict=True)
    ]
    out: dict[str, Any] = {"gallery": str(gallery_dir), "k": k, "metric": gallery.metric, "results": results}
    given = backend.threshold if isinstance(backend, ModelSource) else None
    out["threshold_info"] = decision_info(model.run_dir, given)  # where the "match" marks' threshold holds
    if figure is not None:
        from siamkit.index.figures import neighbours_figure

        drawn = neighbours_figure(gallery, kept, hits, Path(figure), style=figure_style, threshold=model.threshold)
        out["figure"] = str(drawn)
    return out


def info(gallery_dir: str, limit: int = 20) -> dict[str, Any]:
    gallery = Gallery.open(gallery_dir)
    labels: dict[str, int] = {}
    for it in gallery.items.values():
        key = it.label if it.label is not None else "(none)"
        labels[key] = labels.get(key, 0) + 1
    first = sorted(gallery.items.values(), key=lambda it: it.id)[:limit]
    return {**gallery.describe(), "labels": labels,
            "items": [{"id": it.id, "label": it.label, "path": it.path} for it in first]}  # fmt: skip


def compact(gallery_dir: str) -> dict[str, Any]:
    """Fold the gallery's logged edits into a new base index (a commit, under the gallery's lock)."""
    with locked(gallery_dir):
        gallery = Gallery.open(gallery_dir)
        folded = gallery.describe()["pending_edits"]
        if folded:
            gallery.compact()
    return {**gallery.describe(), "folded_edits": folded}


def migrate(gallery_dir: str, out: str, backend_url: str, collection: str | None = None) -> dict[str, Any]:
    """A copy of the faiss gallery ``gallery_dir`` as a new gallery ``out`` on the Qdrant at ``backend_url``."""
    with locked(gallery_dir), made_folder(Path(out)):
        gallery = to_qdrant(gallery_dir, out, backend_url, collection)
    return {**gallery.describe(), "source": str(gallery_dir)}
