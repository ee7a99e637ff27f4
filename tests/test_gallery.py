"""Galleries: exact answers on vectors whose neighbours are known, every index kind and metric against brute force,
atomic commits, the build → search → add → remove → reload round trip through the CLI, model mismatch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from siamkit.cli import main
from siamkit.distances import as_dissimilarity, get_distance
from siamkit.errors import CheckpointError, ConfigError, DataError
from siamkit.index import Gallery
from siamkit.index import gallery as gallery_mod


def _model(distance="euclidean", dim=4, model_hash="a" * 64):
    return {"model_hash": model_hash, "run_dir": "/runs/x", "input_shape": [1, 8, 8], "embedding_dim": dim,
            "distance": distance, "threshold": 0.5}  # fmt: skip


def _brute(queries, vectors, distance):
    """Plain loop: the dissimilarity of every query to every vector, then a stable sort."""
    dist = get_distance(distance)
    out = []
    for q in queries:
        d = [float(as_dissimilarity(dist.pairwise(torch.tensor(q)[None], torch.tensor(v)[None]), dist)[0])
             for v in vectors]  # fmt: skip
        out.append((np.sort(d), np.argsort(d, kind="stable")))
    return out


def test_points_on_a_line_have_known_neighbours(tmp_path):
    g = Gallery.create(tmp_path / "g", _model(dim=2))
    xs = np.array([[0, 0], [1, 0], [3, 0], [7, 0], [15, 0]], np.float32)
    ids = g.add(xs, [f"p{i}" for i in range(5)], ["a", "a", "b", "b", None])
    assert ids == [0, 1, 2, 3, 4]
    d, i = g.search(np.array([[2.9, 0]], np.float32), k=3)
    assert i.tolist() == [[2, 1, 0]]
    np.testing.assert_allclose(d, [[0.1, 1.9, 2.9]], atol=1e-5)
    hits = g.hits(d, i)[0]
    assert [(h.rank, h.id, h.label, h.path) for h in hits] == [(1, 2, "b", "p2"), (2, 1, "a", "p1"), (3, 0, "a", "p0")]
    assert [h.match for h in hits] == [True, False, False]  # threshold 0.5
    d, i = g.search(np.zeros((1, 2), np.float32), k=50)  # k larger than the gallery: all, nearest first
    assert i.tolist() == [[0, 1, 2, 3, 4]]


@pytest.mark.parametrize("distance", ["euclidean", "squared_euclidean", "cosine", "cosine_similarity"])
@pytest.mark.parametrize(
    "kind,options", [("flat", {}), ("hnsw", {"ef_search": 256}), ("ivf", {"nlist": 4, "nprobe": 4})]
)
def test_every_index_and_metric_matches_brute_force(tmp_path, distance, kind, options):
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(200, 8)).astype(np.float32)
    queries = rng.normal(size=(6, 8)).astype(np.float32)
    g = Gallery.create(tmp_path / "g", _model(distance, dim=8), kind, options)
    g.add(vectors, [str(i) for i in range(200)], [None] * 200)
    d, i = g.search(queries, k=10)
    for row, (want_d, want_i) in enumerate(_brute(queries, vectors, distance)):
        np.testing.assert_allclose(d[row], want_d[:10], atol=1e-4)
        assert i[row].tolist() == want_i[:10].tolist()


@pytest.mark.parametrize("kind,options", [("flat", {}), ("hnsw", {"m": 8}), ("ivf", {"nlist": 2, "nprobe": 2})])
def test_add_remove_save_reload(tmp_path, kind, options):
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(40, 4)).astype(np.float32)
    g = Gallery.create(tmp_path / "g", _model(), kind, options)
    g.add(vectors[:30], [f"f{i}" for i in range(30)], ["x"] * 30)
    g.save()
    g = Gallery.open(tmp_path / "g")
    assert len(g) == 30 and g.meta["generation"] == 1
    new = g.add(vectors[30:], [f"f{i}" for i in range(30, 40)], ["y"] * 10)
    assert new == list(range(30, 40))
    removed = g.remove([3, 31])
    assert [it.id for it in removed] == [3, 31]
    g.save()
    g = Gallery.open(tmp_path / "g")
    assert len(g) == 38 and sorted(g.items) == [i for i in range(40) if i not in (3, 31)]
    _, ids = g.search(vectors[[3, 31, 5]], k=1)
    assert ids[2, 0] == 5  # still there
    assert 3 not in ids[0] and 31 not in ids[1]  # removed items are never returned
    assert g.add(vectors[:1], ["again"], [None]) == [40]  # ids are never reused
    assert sorted(p.name for p in (tmp_path / "g").glob("index-*.faiss")) == ["index-000002.faiss"]
    with pytest.raises(KeyError):
        g.remove([999])


def test_a_crash_during_commit_leaves_the_previous_gallery(tmp_path, monkeypatch):
    g = Gallery.create(tmp_path / "g", _model())
    g.add(np.eye(4, dtype=np.float32), list("abcd"), [None] * 4)
    g.save()
    g.add(np.ones((1, 4), np.float32), ["e"], [None])

    def crash(path, text):
        raise OSError("disk full")

    monkeypatch.setattr(gallery_mod, "atomic_write_text", crash)  # the index file is written, the sidecar is not
    with pytest.raises(OSError):
        g.save()
    assert (tmp_path / "g" / "index-000002.faiss").exists()  # the orphan of the failed commit
    reopened = Gallery.open(tmp_path / "g")
    assert len(reopened) == 4 and reopened.meta["index_file"] == "index-000001.faiss"
    monkeypatch.undo()
    reopened.add(np.ones((1, 4), np.float32), ["e"], [None])
    reopened.save()
    assert sorted(p.name for p in (tmp_path / "g").glob("index-*")) == ["index-000002.faiss"]
    assert len(Gallery.open(tmp_path / "g")) == 5


def test_model_mismatch_and_bad_input(tmp_path):
    g = Gallery.create(tmp_path / "g", _model())
    with pytest.raises(CheckpointError, match="built with model aaaaaaaaaaaa .* rebuild the gallery"):
        g.check_model(_model(model_hash="b" * 64))
    with pytest.raises(ConfigError, match="does not apply to a flat index"):
        Gallery.create(tmp_path / "h", _model(), "flat", {"nprobe": 3})
    with pytest.raises(ConfigError, match="unknown index kind"):
        Gallery.create(tmp_path / "h", _model(), "annoy")
    ivf = Gallery.create(tmp_path / "i", _model(), "ivf", {"nlist": 64})
    with pytest.raises(DataError, match="needs at least 64 images"):
        ivf.add(np.ones((10, 4), np.float32), ["p"] * 10, [None] * 10)
    with pytest.raises(DataError, match="not a gallery"):
        Gallery.open(tmp_path / "nowhere")
    g.save()
    with pytest.raises(DataError, match="a gallery exists there"):
        Gallery.create(tmp_path / "g", _model())


# ---- through the CLI, with a trained model -----------------------------------------------------------------------


def _json(capsys, *argv):
    code = main([*argv, "--format", "json", "-q"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_build_search_add_remove_reload_round_trip(small_run, digits_images, tmp_path, capsys):
    from siamkit.runs.embedders import TorchEmbedder

    gdir = tmp_path / "gallery"
    r = _json(capsys, "index", "build", str(small_run), str(digits_images), "--out", str(gdir))
    assert r["added"] == 200 and r["size"] == 200 and r["index"]["kind"] == "flat"
    files = sorted(p.relative_to(digits_images).as_posix() for p in digits_images.rglob("*.png"))
    # the expected answer, by a plain loop over the model's embeddings of every file
    emb = TorchEmbedder(small_run).embed_files([str(digits_images / f) for f in files])
    queries = [digits_images / files[i] for i in (0, 57, 123)]
    want = _brute(emb[[0, 57, 123]], emb, "euclidean")
    r = _json(capsys, "search", str(gdir), *map(str, queries), "-k", "5")
    for res, (want_d, want_i) in zip(r["results"], want):
        got_paths = [Path(h["path"]).relative_to(digits_images).as_posix() for h in res["neighbours"]]
        assert got_paths == [files[j] for j in want_i[:5]]
        np.testing.assert_allclose([h["distance"] for h in res["neighbours"]], want_d[:5], atol=1e-4)
        assert res["neighbours"][0]["distance"] < 1e-3  # each query is in the gallery: itself comes first
        assert res["neighbours"][0]["label"] == Path(res["query"]).parent.name

    # add a copy of query 57 under a new label: it ties with the original at distance 0
    extra = tmp_path / "extra"
    extra.mkdir()
    shutil.copy(queries[1], extra / "copy.png")
    r = _json(capsys, "index", "add", str(gdir), str(extra), "--label", "copy")
    assert r["added_ids"] == [200] and r["size"] == 201
    r = _json(capsys, "search", str(gdir), str(queries[1]), "-k", "2")
    top = r["results"][0]["neighbours"]
    assert {h["id"] for h in top} == {200, files.index(queries[1].relative_to(digits_images).as_posix())}
    assert all(h["distance"] < 1e-3 for h in top)

    # remove the original: the copy is now the nearest, and stays so after reloading from disk
    original = next(h["id"] for h in top if h["id"] != 200)
    r = _json(capsys, "index", "remove", str(gdir), str(original))
    assert r["removed_ids"] == [original] and r["size"] == 200
    r = _json(capsys, "search", str(gdir), str(queries[1]), "-k", "1")
    assert r["results"][0]["neighbours"][0]["id"] == 200 and r["results"][0]["neighbours"][0]["label"] == "copy"
    info = _json(capsys, "index", "info", str(gdir))
    assert (
        info["size"] == 200
        and info["labels"]["copy"] == 1
        and info["model_hash"] == TorchEmbedder(small_run).model_hash
    )

    # the figure, both styles, is a real PNG
    for style in ("grid", "hub"):
        fig = tmp_path / f"{style}.png"
        r = _json(
            capsys, "search", str(gdir), str(digits_images), "-k", "10", "--figure", str(fig), "--figure-style", style
        )
        assert len(r["results"]) == 200 and Image.open(fig).size[0] > 300

    # the text table names ranks, ids and distances
    assert main(["search", str(gdir), str(queries[0]), "-k", "3", "-q"]) == 0
    out = capsys.readouterr().out
    assert out.count(" id ") == 3 and files[0].split("/")[1] in out


def test_search_with_another_model_is_refused(small_run, digits_images, tmp_path, capsys):
    from siamkit.runs.artifact import read_weights
    from siamkit.training.checkpoint import save_weights

    gdir = tmp_path / "g"
    assert main(["index", "build", str(small_run), str(digits_images / "3"), "--out", str(gdir), "-q"]) == 0
    other = tmp_path / "other"
    shutil.copytree(small_run, other)
    state, meta = read_weights(other / "model.safetensors")
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}
    module = torch.nn.Module()
    module.state_dict = lambda: state  # type: ignore[method-assign]
    save_weights(module, other / "model.safetensors", meta)
    capsys.readouterr()
    code = main(["search", str(gdir), str(digits_images / "3"), "--run", str(other)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "the gallery was built with model" in err and "rebuild the gallery" in err


def test_bad_images_name_the_file_or_are_skipped(small_run, digits_images, tmp_path, capsys):
    src = tmp_path / "imgs"
    shutil.copytree(digits_images / "1", src / "1")
    (src / "1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code = main(["index", "build", str(small_run), str(src), "--out", str(tmp_path / "g")])
    err = capsys.readouterr().err
    assert code == 2 and "broken.png" in err and "--skip-bad" in err
    assert not (tmp_path / "g" / "gallery.json").exists()  # nothing half-written
    r = _json(capsys, "index", "build", str(small_run), str(src), "--out", str(tmp_path / "g"), "--skip-bad")
    assert r["added"] == len(list((digits_images / "1").iterdir())) and r["skipped"][0].endswith("broken.png")


def test_hnsw_and_ivf_galleries_from_the_cli(small_run, digits_images, tmp_path, capsys):
    for kind, extra in (("hnsw", ["--m", "8", "--ef-search", "200"]), ("ivf", ["--nlist", "4", "--nprobe", "4"])):
        gdir = tmp_path / kind
        r = _json(
            capsys, "index", "build", str(small_run), str(digits_images), "--out", str(gdir), "--index", kind, *extra
        )
        assert r["index"]["kind"] == kind and r["size"] == 200
        q = str(digits_images / "4")
        r = _json(capsys, "search", str(gdir), q, "-k", "1")
        assert all(res["neighbours"][0]["path"] == res["query"] for res in r["results"])
        r = _json(capsys, "index", "remove", str(gdir), "0", "1")
        assert r["size"] == 198
