"""The gallery protocol: faiss and Qdrant are two implementations of :class:`siamkit.index.protocol.Gallery` (neither
extends the other), registered as its backends; what the callers use of a gallery is on the protocol; every
distance has one index metric, the same for both backends."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

import siamkit
from siamkit.distances import DISTANCES
from siamkit.errors import ConfigError
from siamkit.index import FaissGallery, Gallery
from siamkit.index import metrics as index_metrics
from siamkit.index.protocol import BACKENDS
from siamkit.index.qdrant import QdrantGallery

SRC = Path(siamkit.__file__).parent
CALLERS = ("index/ops.py", "index/figures.py", "cli/gallery.py", "runs/model.py", "serve/app.py", "serve/service.py")
"""The modules that use galleries without knowing their backend."""
STATE = {"directory", "meta", "items"}
"""The attributes every gallery has besides the protocol's methods and properties."""


def _model(distance="euclidean", dim=4):
    return {"model_hash": "a" * 64, "run_dir": "/runs/x", "input_shape": [1, 8, 8], "embedding_dim": dim,
            "distance": distance, "threshold": 0.5}  # fmt: skip


def test_faiss_and_qdrant_implement_the_protocol_and_neither_extends_the_other():
    assert issubclass(FaissGallery, Gallery) and issubclass(QdrantGallery, Gallery)
    assert not issubclass(QdrantGallery, FaissGallery) and not issubclass(FaissGallery, QdrantGallery)
    assert not FaissGallery.__abstractmethods__ and not QdrantGallery.__abstractmethods__  # every method implemented
    assert {"add", "remove", "search", "save", "compact", "refresh", "is_stale"} <= Gallery.__abstractmethods__
    assert BACKENDS.list() == ["faiss", "qdrant"]
    assert BACKENDS.get("faiss") is FaissGallery and BACKENDS.get("qdrant") is QdrantGallery


def test_what_the_callers_use_of_a_gallery_is_on_the_protocol():
    """Read from the callers' source: every attribute they take of a ``gallery`` / ``g`` / ``self.gallery``."""
    used: dict[str, set[str]] = {}
    for name in CALLERS:
        path = SRC / name
        if not path.is_file():  # pragma: no cover - a module moved: the list above follows it
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            owner = node.value
            if (isinstance(owner, ast.Name) and owner.id in ("gallery", "g")) or (
                isinstance(owner, ast.Attribute) and owner.attr == "gallery" and isinstance(owner.value, ast.Name)
            ):
                used.setdefault(node.attr, set()).add(name)
    assert {"search", "hits", "check_model"} <= set(used)  # the reader sees them
    missing = {attr: sorted(where) for attr, where in used.items() if attr not in STATE and not hasattr(Gallery, attr)}
    assert missing == {}, f"callers use what only one backend has: {missing}"


def test_create_makes_a_faiss_gallery_and_open_finds_its_backend(tmp_path):
    g = Gallery.create(tmp_path / "g", _model())
    assert type(g) is FaissGallery
    g.add(np.eye(4, dtype=np.float32), list("abcd"), ["x"] * 4)
    g.save()
    opened = Gallery.open(tmp_path / "g")
    assert type(opened) is FaissGallery and len(opened) == 4
    assert set(opened.describe()) == {"directory", "size", "model_hash", "run_dir", "dim", "metric", "normalized",
                                      "index", "generation", "pending_edits"}  # fmt: skip


def test_a_sidecar_naming_an_unknown_backend_is_refused_in_one_line(tmp_path):
    g = Gallery.create(tmp_path / "g", _model())
    g.add(np.eye(4, dtype=np.float32), list("abcd"), ["x"] * 4)
    g.save()
    sidecar = tmp_path / "g" / "gallery.json"
    static = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**static, "backend": {"kind": "nope"}}))
    with pytest.raises(ConfigError, match="unknown gallery backend 'nope'"):
        Gallery.open(tmp_path / "g")


def test_both_backends_describe_themselves_with_the_same_keys(tmp_path):
    pytest.importorskip("qdrant_client")
    vectors = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    galleries: list[Gallery] = [
        Gallery.create(tmp_path / "f", _model("cosine")),
        QdrantGallery.create_on(tmp_path / "q", _model("cosine"), f"local:{tmp_path / 'db'}"),
    ]
    for g in galleries:
        g.add(vectors, [f"p{i}" for i in range(6)], ["x"] * 6)
        g.save()
    faiss_d, qdrant_d = (Gallery.open(tmp_path / name).describe() for name in ("f", "q"))
    assert set(qdrant_d) - set(faiss_d) == {"backend"} and set(faiss_d) <= set(qdrant_d)
    assert {k: faiss_d[k] for k in ("size", "model_hash", "dim", "metric", "normalized")} == {
        k: qdrant_d[k] for k in ("size", "model_hash", "dim", "metric", "normalized")
    }


def test_every_distance_has_one_index_metric_for_both_backends():
    faiss = pytest.importorskip("faiss")
    models = pytest.importorskip("qdrant_client.models")
    assert set(DISTANCES.list()) == set(index_metrics.INDEX_METRICS)
    for name in DISTANCES.list():
        ip = DISTANCES.create(name).name.startswith("cosine")
        assert index_metrics.higher_is_closer(name) is ip and index_metrics.normalized(name) is ip
        want = faiss.METRIC_INNER_PRODUCT if ip else faiss.METRIC_L2
        assert index_metrics.faiss_metric(faiss, name) == want
        assert index_metrics.qdrant_distance(models, name) == (models.Distance.COSINE if ip else models.Distance.EUCLID)
    assert set(index_metrics.IP_METRICS) | set(index_metrics.L2_METRICS) == set(DISTANCES.list())


@pytest.mark.parametrize("distance", ["euclidean", "squared_euclidean", "cosine", "cosine_similarity"])
def test_a_qdrant_score_becomes_the_distance_a_faiss_score_does(distance):
    """Qdrant's EUCLID score is the distance, its COSINE score the similarity; faiss's are the squared distance and
    the inner product of normalised vectors: both end as the run's distance."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 8))
    if index_metrics.normalized(distance):
        a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
        faiss_raw, qdrant_score = float(a @ b), float(a @ b)
    else:
        faiss_raw, qdrant_score = float(((a - b) ** 2).sum()), float(np.linalg.norm(a - b))
    from_faiss = index_metrics.to_distance(np.array([faiss_raw]), distance)
    from_qdrant = index_metrics.to_distance(np.array([index_metrics.from_qdrant_score(qdrant_score, distance)]),
                                            distance)  # fmt: skip
    np.testing.assert_allclose(from_qdrant, from_faiss, rtol=1e-9)
    want = {"euclidean": np.linalg.norm(a - b), "squared_euclidean": ((a - b) ** 2).sum(), "cosine": 1 - a @ b,
            "cosine_similarity": -(a @ b)}[distance]  # fmt: skip
    np.testing.assert_allclose(from_faiss, [want], rtol=1e-9)
