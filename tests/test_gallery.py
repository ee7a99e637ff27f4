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
from siamkit.index import Gallery, store
from siamkit.index.gallery import locked


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
    d, i = g.search(queries, k=10)  # before the first commit: all in the delta
    for row, (want_d, want_i) in enumerate(_brute(queries, vectors, distance)):
        np.testing.assert_allclose(d[row], want_d[:10], atol=1e-4)
        assert i[row].tolist() == want_i[:10].tolist()
    g.save()  # now the base holds them: same answers
    d2, i2 = g.search(queries, k=10)
    np.testing.assert_allclose(d2, d, atol=1e-4)
    assert i2.tolist() == i.tolist()
    # edits on top of the base: the merged answer equals brute force over what remains
    more = rng.normal(size=(40, 8)).astype(np.float32)
    g.add(more, [str(i) for i in range(200, 240)], [None] * 40)
    gone = [int(x) for x in rng.choice(240, size=30, replace=False)]
    g.remove(gone)
    g.save()
    everything = np.concatenate([vectors, more])
    kept = np.array([i for i in range(240) if i not in gone])
    for reopened in (g, Gallery.open(tmp_path / "g")):
        d, i = reopened.search(queries, k=10)
        for row, (want_d, want_i) in enumerate(_brute(queries, everything[kept], distance)):
            np.testing.assert_allclose(d[row], want_d[:10], atol=1e-4)
            assert i[row].tolist() == kept[want_i[:10]].tolist()


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
    # the edits were logged, not written into a new index: the base is still generation 1
    assert sorted(p.name for p in (tmp_path / "g").glob("index-*.faiss")) == ["index-000001.faiss"]
    assert g.describe()["pending_edits"] == 9 + 1 + 1  # delta 30..39 less 31, plus 40; base id 3 removed
    g.save()
    g.compact()  # folded into generation 2: same answers, nothing pending
    assert sorted(p.name for p in (tmp_path / "g").glob("index-*.faiss")) == ["index-000002.faiss"]
    g = Gallery.open(tmp_path / "g")
    assert g.describe()["pending_edits"] == 0 and g.meta["generation"] == 2 and len(g) == 39
    _, ids = g.search(vectors[[3, 31, 5]], k=1)
    assert ids[2, 0] == 5 and 3 not in ids[0] and 31 not in ids[1]
    with pytest.raises(KeyError):
        g.remove([999])


class _FailingCommit:
    """A database connection whose COMMIT fails (a crash at the commit point)."""

    def __init__(self, con):
        self.con = con

    def execute(self, sql, *args):
        if sql == "COMMIT":
            raise OSError("disk full")
        return self.con.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.con, name)


def test_a_crash_during_commit_leaves_the_previous_gallery(tmp_path, monkeypatch):
    g = Gallery.create(tmp_path / "g", _model())
    g.add(np.eye(4, dtype=np.float32), list("abcd"), [None] * 4)
    g.save()
    g.add(np.ones((1, 4), np.float32), ["e"], [None])
    g.remove([0])
    real = store.connect
    monkeypatch.setattr(store, "connect", lambda d: _FailingCommit(real(d)))
    with pytest.raises(OSError):
        g.save()  # the edit's transaction is rolled back
    monkeypatch.undo()
    reopened = Gallery.open(tmp_path / "g")
    assert sorted(reopened.items) == [0, 1, 2, 3] and reopened.meta["index_file"] == "index-000001.faiss"
    # a crash while compacting: the new base file is written, the transaction naming it is not
    reopened.add(np.ones((1, 4), np.float32), ["e"], [None])
    reopened.save()
    monkeypatch.setattr(store, "connect", lambda d: _FailingCommit(real(d)))
    with pytest.raises(OSError):
        reopened.compact()
    monkeypatch.undo()
    assert (tmp_path / "g" / "index-000002.faiss").exists()  # the orphan of the failed compaction
    again = Gallery.open(tmp_path / "g")
    assert len(again) == 5 and again.meta["index_file"] == "index-000001.faiss"
    again.compact()
    assert sorted(p.name for p in (tmp_path / "g").glob("index-*")) == ["index-000002.faiss"]
    final = Gallery.open(tmp_path / "g")
    assert len(final) == 5 and final.describe()["pending_edits"] == 0
    _, ids = final.search(np.ones((1, 4), np.float32), k=1)
    assert ids[0, 0] == 4


def test_edits_cost_what_they_change(tmp_path):
    """An add or a remove writes a few database rows, never the index file or every item again."""
    rng = np.random.default_rng(0)
    g = Gallery.create(tmp_path / "g", _model(dim=8))
    g.add(rng.normal(size=(3000, 8)).astype(np.float32), [f"p{i}" for i in range(3000)], ["x"] * 3000)
    g.save()
    index_file = tmp_path / "g" / g.meta["index_file"]
    before = index_file.stat().st_mtime_ns, (tmp_path / "g" / "gallery.json").stat().st_mtime_ns
    g.add(rng.normal(size=(1, 8)).astype(np.float32), ["new"], ["y"])
    g.remove([5])
    g.save()
    assert (index_file.stat().st_mtime_ns, (tmp_path / "g" / "gallery.json").stat().st_mtime_ns) == before
    con = store.connect(tmp_path / "g")
    assert con.execute("SELECT op, id FROM log ORDER BY seq").fetchall() == [("add", 3000), ("remove", 5)]
    con.close()


def test_another_process_edits_are_caught_up_incrementally(tmp_path):
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(60, 4)).astype(np.float32)
    first = Gallery.create(tmp_path / "g", _model())
    first.add(vectors[:50], [f"p{i}" for i in range(50)], ["a"] * 50)
    first.save()
    reader = Gallery.open(tmp_path / "g")
    with locked(tmp_path / "g"):
        writer = Gallery.open(tmp_path / "g")
        writer.add(vectors[50:], [f"p{i}" for i in range(50, 60)], ["b"] * 10)
        writer.remove([0, 51])
        writer.save()
    assert reader.is_stale()
    same = reader.refresh()
    assert same is reader and not reader.is_stale()  # the log rows alone, the base kept
    assert sorted(reader.items) == sorted(Gallery.open(tmp_path / "g").items)
    for g in (reader, Gallery.open(tmp_path / "g")):
        _, ids = g.search(vectors, k=3)
        assert 0 not in ids and 51 not in ids
        assert ids[55, 0] == 55 and ids[7, 0] == 7
    # an edit from a gallery object that missed a commit is refused rather than lost
    stale = Gallery.open(tmp_path / "g")
    writer = Gallery.open(tmp_path / "g")
    writer.remove([1])
    writer.save()
    stale.remove([2])
    with pytest.raises(CheckpointError, match="another process"):
        stale.save()
    # a compaction elsewhere: the next refresh re-reads everything
    writer.compact()
    fresh = reader.refresh()
    assert fresh is not reader and sorted(fresh.items) == sorted(writer.items)


def test_a_version_1_gallery_is_converted_on_open(tmp_path):
    import faiss

    folder = tmp_path / "old"
    folder.mkdir()
    index = faiss.IndexIDMap2(faiss.IndexFlat(4, faiss.METRIC_L2))
    index.add_with_ids(np.eye(4, dtype=np.float32), np.array([0, 1, 2, 5], dtype=np.int64))
    faiss.write_index(index, str(folder / "index-000003.faiss"))
    model = _model()
    old = {"format": "siamkit-gallery-v1", "model_hash": model["model_hash"], "run_dir": model["run_dir"],
           "input_shape": [1, 8, 8], "dim": 4, "metric": "euclidean", "normalized": False, "threshold": 0.5,
           "index": {"kind": "flat", "options": {}}, "generation": 3, "index_file": "index-000003.faiss",
           "next_id": 6, "items": [[0, "a", "x"], [1, "b", None], [2, "c", "x"], [5, "d", "y"]]}  # fmt: skip
    (folder / "gallery.json").write_text(json.dumps(old))
    g = Gallery.open(folder)
    assert sorted(g.items) == [0, 1, 2, 5] and g.items[5].label == "y" and g.meta["next_id"] == 6
    assert json.loads((folder / "gallery.json").read_text())["format"] == "siamkit-gallery-v2"
    _, ids = g.search(np.eye(4, dtype=np.float32)[3:], k=1)
    assert ids[0, 0] == 5
    assert g.add(np.zeros((1, 4), np.float32), ["e"], [None]) == [6]


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


def test_compact_from_the_cli(small_run, digits_images, tmp_path, capsys):
    g = tmp_path / "g"
    assert main(["index", "build", str(small_run), str(digits_images / "0"), "--out", str(g), "-q"]) == 0
    assert main(["index", "add", str(g), str(digits_images / "1"), "-q"]) == 0
    first = min(Gallery.open(g).items)
    assert main(["index", "remove", str(g), str(first), "-q"]) == 0
    capsys.readouterr()
    assert main(["index", "info", str(g), "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    added = len(list((digits_images / "1").glob("*.png")))
    assert info["generation"] == 1 and info["pending_edits"] == added + 1
    assert main(["index", "compact", str(g)]) == 0
    assert f"{added + 1} logged edits folded into generation 2" in capsys.readouterr().out
    after = Gallery.open(g)
    assert after.describe()["pending_edits"] == 0 and first not in after.items
    assert sorted(p.name for p in g.glob("index-*.faiss")) == ["index-000002.faiss"]


def test_index_add_labels_class_folders_as_build_does(small_run, digits_images, tmp_path):
    root = tmp_path / "people"
    for c in ("4", "7"):
        (root / c).mkdir(parents=True)
        for f in sorted((digits_images / c).glob("*.png"))[:3]:
            shutil.copy(f, root / c / f.name)
    built, added = tmp_path / "built", tmp_path / "added"
    assert main(["index", "build", str(small_run), str(root), "--out", str(built), "-q"]) == 0
    assert main(["index", "build", str(small_run), str(digits_images / "0"), "--out", str(added), "-q"]) == 0
    assert main(["index", "add", str(added), str(root), "-q"]) == 0
    want = sorted((Path(it.path).name, it.label) for it in Gallery.open(built).items.values())
    got = sorted((Path(it.path).name, it.label) for it in Gallery.open(added).items.values() if it.label is not None)
    assert want == [g for g in got if g[1] in ("4", "7")] and {lab for _, lab in want} == {"4", "7"}
