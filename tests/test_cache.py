"""The decode cache: decoded once (in parallel), reused bit-exactly, updated for what changed, never taken for
complete when half-written, built once by concurrent builders, and read row by row when larger than memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from PIL import Image

from siamkit.data import cache as cache_mod
from siamkit.data.cache import CacheSettings, DiskImages
from siamkit.data.readers import decode as readers_decode
from siamkit.data.readers import read_folder
from siamkit.errors import DataError


@pytest.fixture
def folder(tmp_path):
    """24 RGB images of 3 classes, of two sizes (the input size is the most common)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for c in range(3):
        (root / f"id{c}").mkdir(parents=True)
        for i in range(8):
            side = 20 if i < 6 else 26
            arr = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / f"id{c}" / f"{i}.png")
    return root


def _settings(tmp_path, **kw):
    return CacheSettings(tmp_path / "cache", **{"workers": 2, **kw})


def _count_decodes(monkeypatch):
    calls = []
    real = readers_decode.decode_file

    def counting(path, channels, size):
        calls.append(str(path))
        return real(path, channels, size)

    monkeypatch.setattr(readers_decode, "decode_file", counting)
    return calls


def test_the_cache_round_trips_bit_exactly(folder, tmp_path, monkeypatch):
    plain = read_folder(folder)  # today's in-memory decode
    cold = read_folder(folder, cache=_settings(tmp_path))
    assert isinstance(cold.images, torch.Tensor) and torch.equal(cold.images, plain.images)
    assert cold.paths == plain.paths and (cold.labels == plain.labels).all() and cold.class_names == plain.class_names
    calls = _count_decodes(monkeypatch)
    warm = read_folder(folder, cache=_settings(tmp_path, workers=1))
    assert calls == []  # nothing decoded, no header read: every file unchanged
    assert torch.equal(warm.images, plain.images) and warm.paths == plain.paths


def test_changed_added_and_removed_files_are_redone_alone(folder, tmp_path, monkeypatch):
    read_folder(folder, cache=_settings(tmp_path))
    changed = folder / "id0" / "1.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(changed)
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new mtime even on a coarse clock
    (folder / "id2" / "3.png").unlink()
    Image.fromarray(np.full((20, 20, 3), 200, np.uint8)).save(folder / "id1" / "new.png")
    calls = _count_decodes(monkeypatch)
    updated = read_folder(folder, cache=_settings(tmp_path, workers=1))
    assert sorted(calls) == sorted([str(changed), str(folder / "id1" / "new.png")])
    monkeypatch.undo()
    plain = read_folder(folder)
    assert torch.equal(updated.images, plain.images) and updated.paths == plain.paths
    manifests = list((tmp_path / "cache").rglob("manifest.json"))
    assert len(manifests) == 1 and len(list(manifests[0].parent.glob("images-*.u8"))) == 1  # the old file went


def test_a_crash_while_writing_leaves_no_cache_taken_for_complete(folder, tmp_path, monkeypatch):
    def crash(data, todo, *args, **kwargs):
        with open(data, "r+b") as fh:  # half the rows written, then the process dies
            fh.write(b"\x07" * 1000)
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_mod, "_decode_parallel", crash)
    with pytest.raises(KeyboardInterrupt):
        read_folder(folder, cache=_settings(tmp_path))
    monkeypatch.undo()
    entry = next((tmp_path / "cache").iterdir())
    assert not (entry / "manifest.json").exists() and not list(entry.glob("*.tmp")) and not list(entry.glob("*.u8"))
    again = read_folder(folder, cache=_settings(tmp_path))
    assert torch.equal(again.images, read_folder(folder).images)


def test_two_processes_building_the_same_cache_end_with_one(folder, tmp_path):
    code = textwrap.dedent(f"""
        import logging, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
        from pathlib import Path
        from siamkit.data.cache import CacheSettings
        from siamkit.data.readers import read_folder
        s = read_folder({str(folder)!r}, cache=CacheSettings(Path({str(tmp_path / "cache")!r}), workers=2))
        print(int(s.images.sum()), len(s))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-800:] for o in outs]
    assert outs[0][0] == outs[1][0] == f"{int(read_folder(folder).images.sum())} 24\n"
    logs = [o[1] for o in outs]
    assert sum("decoded 24 images" in text for text in logs) == 1  # built once; the other waited and opened it
    assert sum("from the cache" in text for text in logs) == 1
    assert len(list((tmp_path / "cache").rglob("manifest.json"))) == 1


def test_bad_files_name_themselves_or_are_skipped_and_remembered(folder, tmp_path, caplog):
    bad = folder / "id1" / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match="broken.png"):
        read_folder(folder, cache=_settings(tmp_path))
    assert not list((tmp_path / "cache").rglob("manifest.json"))
    kept = read_folder(folder, cache=_settings(tmp_path), skip_bad=True)
    plain = read_folder(folder, skip_bad=True)
    assert torch.equal(kept.images, plain.images) and kept.skipped == plain.skipped == [str(bad)]
    caplog.clear()
    again = read_folder(folder, cache=_settings(tmp_path), skip_bad=True)
    assert again.skipped == [str(bad)] and "broken.png" in caplog.text and torch.equal(again.images, plain.images)


def test_a_set_larger_than_the_memory_limit_is_read_per_batch(folder, tmp_path):
    plain = read_folder(folder)
    big = read_folder(folder, cache=_settings(tmp_path, memory_limit_mb=0))
    assert isinstance(big.images, DiskImages) and big.images.shape == plain.images.shape
    assert torch.equal(big.images[3], plain.images[3]) and torch.equal(big.images[5:11], plain.images[5:11])
    idx = torch.tensor([17, 2, 2, 9, 23, 0])
    assert torch.equal(big.images[idx], plain.images[idx])
    sub = big.subset(np.array([20, 4, 7, 8]))  # lazy: still rows of the file
    assert isinstance(sub.images, DiskImages) and torch.equal(sub.images[:], plain.images[[20, 4, 7, 8]])
    assert torch.equal(sub.images[np.array([3, 0])], plain.images[[8, 20]])


def test_batches_from_the_file_equal_batches_from_memory(folder, tmp_path):
    from siamkit.data.transforms import Preprocess, channel_stats
    from siamkit.training.batches import BatchIndex, make_batch

    plain = read_folder(folder)
    big = read_folder(folder, cache=_settings(tmp_path, memory_limit_mb=0))
    assert channel_stats(big.images) == channel_stats(plain.images)
    pre = Preprocess(*channel_stats(plain.images))
    for b in (BatchIndex(np.array([3, 9, 14, 22]), np.array([0, 1, 1, 2])),
              BatchIndex(np.array([[0, 5], [7, 20]]), np.array([1, 0]))):  # fmt: skip
        got = make_batch(big.images, b, pre, torch.device("cpu"), train=False)
        want = make_batch(plain.images, b, pre, torch.device("cpu"), train=False)
        for name in got.__dataclass_fields__:
            a, b_ = getattr(got, name), getattr(want, name)
            assert (a is None and b_ is None) or torch.equal(a, b_), name


def test_training_from_the_file_equals_training_from_memory(tmp_path, digits_images):
    from siamkit.config import load_config
    from siamkit.training.pipeline import train_run

    base = [f"data.source={digits_images}", "train.epochs=1", "train.progress=false", "eval.n_pairs=300",
            "eval.tsne_points=0", f"runs_dir={tmp_path}", "data.split=random"]  # fmt: skip
    results = {}
    for name, extra in {"memory": ["data.cache=false"], "file": ["data.memory_limit_mb=0"]}.items():
        results[name] = train_run(load_config(None, [*base, f"name={name}", *extra]))
    for key in ("auc", "map_at_r", "precision_at_1"):
        assert results["file"]["test"][key] == pytest.approx(results["memory"]["test"][key], abs=1e-6), key
    assert json.loads((tmp_path / "file" / "metrics.json").read_text())["test"]["auc"] == pytest.approx(
        results["memory"]["test"]["auc"], abs=1e-6
    )


def _entry_data(tmp_path):
    manifest = next((tmp_path / "cache").rglob("manifest.json"))
    return manifest.parent / json.loads(manifest.read_text())["data"]


@pytest.mark.parametrize("damage", ["zeroed", "rows swapped"])
def test_a_cache_damaged_in_place_is_detected_and_decoded_again(folder, tmp_path, monkeypatch, damage):
    plain = read_folder(folder)
    read_folder(folder, cache=_settings(tmp_path))
    data = _entry_data(tmp_path)
    raw = bytearray(data.read_bytes())
    row = len(raw) // len(plain.images)
    if damage == "zeroed":
        raw[row : 3 * row] = bytes(2 * row)
    else:
        raw[:row], raw[row : 2 * row] = raw[row : 2 * row], raw[:row]
    data.write_bytes(bytes(raw))  # same size, same manifest: only a checksum can tell
    calls = _count_decodes(monkeypatch)
    again = read_folder(folder, cache=_settings(tmp_path, workers=1))
    assert len(calls) == len(plain.images)  # decoded anew, nothing reused from the damaged file
    assert torch.equal(again.images, plain.images)


def test_a_rebuild_never_deletes_the_file_another_run_reads(folder, tmp_path):
    import pickle

    first = read_folder(folder, cache=_settings(tmp_path, memory_limit_mb=0))  # read from the file per batch
    assert isinstance(first.images, DiskImages)
    old = first.images.path
    changed = folder / "id0" / "1.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(changed)
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    second = read_folder(folder, cache=_settings(tmp_path, memory_limit_mb=0))  # another run rebuilds the entry
    assert second.images.path != old and old.exists()  # the first run's file stays while it reads it
    copy = pickle.loads(pickle.dumps(first.images))  # a spawned worker of the first run opens it again
    assert torch.equal(copy[:4], first.images[:4])
    del first, copy
    Image.fromarray(np.ones((20, 20, 3), np.uint8)).save(changed)
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    read_folder(folder, cache=_settings(tmp_path, memory_limit_mb=0))
    assert not old.exists()  # once nobody reads it, the next build removes it
