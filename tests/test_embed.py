"""``siamkit embed``: a run's vectors for files and folders, written as .npy + CSV, Parquet or JSON lines, and
re-read equal to the model's own embeddings."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from siamkit.cli import main


def _expected(run_dir: Path, paths: list[str]) -> np.ndarray:
    import siamkit

    model = siamkit.load(run_dir)
    return model.embed(paths)


def test_embed_a_folder_to_npy_and_csv(small_run: Path, digits_images: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "v.npy"
    assert main(["embed", str(small_run), str(digits_images), "--out", str(out), "--batch-size", "64"]) == 0
    vectors = np.load(out, allow_pickle=False)
    with (tmp_path / "v.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert vectors.shape == (200, 64) and vectors.dtype == np.float32 and len(rows) == 200
    assert [int(r["row"]) for r in rows] == list(range(200))
    assert {r["label"] for r in rows} == {str(d) for d in range(10)}  # class folders label their images
    assert all(Path(r["path"]).parent.name == r["label"] for r in rows)
    np.testing.assert_allclose(vectors, _expected(small_run, [r["path"] for r in rows]), atol=1e-5)
    assert "200 vectors of 64 dimensions" in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if p.name not in ("v.npy", "v.csv")]  # no temp files left


def test_embed_to_parquet(small_run: Path, digits_images: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "v.parquet"
    assert main(["embed", str(small_run), str(digits_images / "3"), "--out", str(out), "-q"]) == 0
    table = pq.read_table(out).to_pydict()
    paths = table["path"]
    assert len(paths) == len(list((digits_images / "3").iterdir())) and set(table["label"]) == {None}
    vectors = np.asarray(table["vector"], np.float32)
    np.testing.assert_allclose(vectors, _expected(small_run, paths), atol=1e-5)


def test_embed_json_lines_on_stdout(small_run: Path, digits_images: Path, capsys) -> None:
    files = sorted(str(p) for p in (digits_images / "7").iterdir())[:3]
    assert main(["embed", str(small_run), *files, "--format", "json", "--label", "seven"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["path"] for x in lines] == [str(Path(f).resolve()) for f in files]
    assert {x["label"] for x in lines} == {"seven"}
    np.testing.assert_allclose(np.asarray([x["vector"] for x in lines]), _expected(small_run, files), atol=1e-5)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--out", "v.txt"], "give a .npy file"),
        ([], "give --out FILE.npy"),
        (["--out", "missing_dir/v.npy"], "does not exist"),
        (["--out", "v.npy", "--batch-size", "0"], "--batch-size must be at least 1"),
    ],
)
def test_embed_bad_options_are_one_line(small_run, digits_images, tmp_path, capsys, monkeypatch, extra, match) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["embed", str(small_run), str(digits_images / "1"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing written


def test_embed_skips_bad_images_when_asked(small_run: Path, digits_images: Path, tmp_path: Path, capsys) -> None:
    good = sorted((digits_images / "2").iterdir())[0]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert main(["embed", str(small_run), str(good), str(bad), "--out", str(tmp_path / "v.npy")]) == 2
    assert "bad.png" in capsys.readouterr().err and not (tmp_path / "v.npy").exists()
    assert main(["embed", str(small_run), str(good), str(bad), "--out", str(tmp_path / "v.npy"), "--skip-bad"]) == 0
    assert np.load(tmp_path / "v.npy").shape[0] == 1 and "1 unreadable images skipped" in capsys.readouterr().out
