"""A gallery in a Qdrant collection (embedded local mode) behind the Gallery interface: the same answers as the
faiss gallery and as brute force, edits, the model guard, migration from a faiss gallery, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from siamkit.cli import main
from siamkit.errors import CheckpointError, DataError
from siamkit.index import Gallery
from siamkit.index.metrics import qdrant_distance
from siamkit.index.qdrant import QdrantGallery, migrate

pytest.importorskip("qdrant_client")


def _model(distance="euclidean", dim=8, model_hash="b" * 64):
    return {"model_hash": model_hash, "run_dir": "/runs/x", "input_shape": [1, 8, 8], "embedding_dim": dim,
            "distance": distance, "threshold": 0.5}  # fmt: skip


@pytest.mark.parametrize("distance", ["euclidean", "squared_euclidean", "cosine", "cosine_similarity"])
def test_the_same_answers_as_the_faiss_gallery(tmp_path, distance):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(300, 8)).astype(np.float32)
    queries = rng.normal(size=(5, 8)).astype(np.float32)
    faiss_g = Gallery.create(tmp_path / "f", _model(distance))
    faiss_g.add(vectors, [f"p{i}" for i in range(300)], [str(i % 7) for i in range(300)])
    faiss_g.save()
    q = QdrantGallery.create_on(tmp_path / "q", _model(distance), f"local:{tmp_path / 'db'}")
    ids = q.add(vectors, [f"p{i}" for i in range(300)], [str(i % 7) for i in range(300)])
    q.save()
    reopened = Gallery.open(tmp_path / "q")
    assert isinstance(reopened, QdrantGallery) and len(reopened) == 300
    d_f, i_f = faiss_g.search(queries, k=5)
    d_q, i_q = reopened.search(queries, k=5)
    to_id = dict(enumerate(ids))  # the Qdrant gallery's ids are its own
    assert [[to_id[int(i)] for i in row] for row in i_f] == i_q.tolist()
    np.testing.assert_allclose(d_q, d_f, atol=1e-4)
    hits = reopened.hits(d_q, i_q)[0]
    assert hits[0].path == f"p{int(i_f[0, 0])}" and hits[0].label == str(int(i_f[0, 0]) % 7)


def test_edits_guard_and_migration(tmp_path):
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    g = Gallery.create(tmp_path / "f", _model())
    g.add(vectors[:40], [f"p{i}" for i in range(40)], ["a"] * 40)
    g.save()
    g.add(vectors[40:], [f"p{i}" for i in range(40, 50)], ["b"] * 10)
    g.remove([3, 45])
    g.save()  # a base, a delta and a removal: all migrate
    q = migrate(tmp_path / "f", tmp_path / "q", f"local:{tmp_path / 'db'}")
    assert sorted(q.items) == sorted(g.items) and q.items[44].label == "b"
    d_f, i_f = g.search(vectors, k=3)
    d_q, i_q = q.search(vectors, k=3)
    assert i_q.tolist() == i_f.tolist()
    np.testing.assert_allclose(d_q, d_f, atol=1e-4)
    (removed,) = q.remove([7])
    assert removed.path == "p7"
    with pytest.raises(KeyError):
        q.remove([3])  # removed before the migration
    new = q.add(vectors[:1], ["again"], ["c"])
    q.save()
    _, ids = q.search(vectors[[7, 0]], k=1)
    assert ids[0, 0] != 7 and ids[1, 0] in (0, new[0])
    with pytest.raises(CheckpointError, match="built with model"):
        q.check_model(_model(model_hash="c" * 64))


def test_the_cli_on_a_qdrant_gallery(small_run, digits_images, tmp_path, capsys):
    url = f"local:{tmp_path / 'db'}"
    g = tmp_path / "g"
    assert main(["index", "build", str(small_run), str(digits_images / "0"), "--out", str(g), "--backend-url", url,
                 "-q"]) == 0  # fmt: skip
    assert main(["index", "add", str(g), str(digits_images / "1"), "-q"]) == 0
    capsys.readouterr()
    query = sorted((digits_images / "1").glob("*.png"))[0]
    assert main(["search", str(g), str(query), "-k", "2", "--format", "json"]) == 0
    hits = json.loads(capsys.readouterr().out)["results"][0]["neighbours"]
    assert hits[0]["path"] == str(query) and hits[0]["distance"] == pytest.approx(0, abs=1e-4)
    assert main(["index", "remove", str(g), str(hits[0]["id"]), "-q"]) == 0
    capsys.readouterr()
    assert main(["index", "info", str(g), "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    n0, n1 = (len(list((digits_images / d).glob("*.png"))) for d in ("0", "1"))
    assert info["size"] == n0 + n1 - 1 and info["index"]["kind"] == "qdrant"


def test_an_unreachable_qdrant_is_one_line_and_nothing_is_written(small_run, digits_images, tmp_path, capsys):
    code = main(["index", "build", str(small_run), str(digits_images / "0"), "--out", str(tmp_path / "g"),
                 "--backend-url", "http://127.0.0.1:1", "-q"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "http://127.0.0.1:1: no Qdrant answers there" in err and err.count("\n") == 1
    assert not (tmp_path / "g").exists()


def _build_on(tmp_path, name, vectors, collection=None, overwrite=False, model_hash="b" * 64):
    g = QdrantGallery.create_on(tmp_path / name, _model(model_hash=model_hash), f"local:{tmp_path / 'db'}", collection,
                                overwrite)  # fmt: skip
    g.add(vectors, [f"p{i}" for i in range(len(vectors))], ["a"] * len(vectors))
    g.save()
    return g


def test_a_named_collection_is_replaced_only_whole(tmp_path, monkeypatch):
    import siamkit.index.qdrant as qmod

    rng = np.random.default_rng(2)
    old_v, new_v = rng.normal(size=(20, 8)).astype(np.float32), rng.normal(size=(30, 8)).astype(np.float32)
    _build_on(tmp_path, "g", old_v, "people")
    with pytest.raises(DataError, match="'people' exists .* --overwrite"):  # someone's collection is never emptied
        _build_on(tmp_path, "other", new_v, "people")
    assert len(Gallery.open(tmp_path / "g")) == 20

    client = qmod._client(f"local:{tmp_path / 'db'}")
    real_upsert, calls = client.upsert, []

    def cut(*args, **kwargs):  # a crash on the rebuild's second page of points
        calls.append(1)
        if len(calls) > 1:
            raise OSError("power cut")
        return real_upsert(*args, **kwargs)

    monkeypatch.setattr(qmod, "PAGE", 10)
    monkeypatch.setattr(client, "upsert", cut)
    with pytest.raises(OSError, match="power cut"):
        _build_on(tmp_path, "g", new_v, "people", overwrite=True, model_hash="c" * 64)
    monkeypatch.setattr(client, "upsert", real_upsert)
    old = Gallery.open(tmp_path / "g")  # the old gallery, whole: same size, same model, same answers
    assert len(old) == 20 and old.model_hash == "b" * 64
    _, ids = old.search(old_v[:3], k=1)
    assert [old.items[int(i)].path for i in ids[:, 0]] == ["p0", "p1", "p2"]

    new = _build_on(tmp_path, "g", new_v, "people", overwrite=True, model_hash="c" * 64)
    reopened = Gallery.open(tmp_path / "g")
    assert len(reopened) == 30 and reopened.model_hash == "c" * 64
    aliases = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}
    assert aliases == {"people": new.collection} and client.count("people").count == 30  # the name follows
    people = {c.name for c in client.get_collections().collections if c.name.startswith("people")}
    assert people == {new.collection}  # the failed rebuild's partial collection is gone
    _build_on(tmp_path, "g", old_v, "people", overwrite=True)  # again: the alias moves, the previous one goes
    people = {c.name for c in client.get_collections().collections if c.name.startswith("people")}
    assert new.collection not in people and client.count("people").count == 20


def test_a_killed_builds_collection_is_dropped_by_the_next_build(tmp_path):
    import siamkit.index.qdrant as qmod

    rng = np.random.default_rng(3)
    v = rng.normal(size=(12, 8)).astype(np.float32)
    g = _build_on(tmp_path, "g", v, "mine")
    client = qmod._client(f"local:{tmp_path / 'db'}")
    stray = "mine-deadbeef"  # what kill -9 between create_collection and the sidecar leaves: a collection, a note
    client.create_collection(
        stray, vectors_config=qmod._models().VectorParams(size=8, distance=qdrant_distance(qmod._models(), "euclidean"))
    )
    (tmp_path / "g" / qmod.PENDING).write_text(stray + "\n")
    assert len(Gallery.open(tmp_path / "g")) == 12  # the folder's gallery is untouched by the note
    new = _build_on(tmp_path, "g", v[:5], "mine", overwrite=True)
    names = {c.name for c in client.get_collections().collections}
    assert stray not in names and g.collection not in names and new.collection in names
    assert not (tmp_path / "g" / qmod.PENDING).exists() and len(Gallery.open(tmp_path / "g")) == 5
