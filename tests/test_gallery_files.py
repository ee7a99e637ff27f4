"""Galleries on disk as found: a damaged sidecar, database or index is one line naming the file and the fix (no
traceback), and a gallery on a read-only mount can be opened and searched."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from siamkit.errors import DataError
from siamkit.index.gallery import Gallery


def _model() -> dict:
    return {"model_hash": "d" * 64, "run_dir": "/runs/x", "input_shape": [1, 8, 8], "embedding_dim": 4,
            "distance": "euclidean", "threshold": 0.5}  # fmt: skip


def _gallery(directory: Path) -> Path:
    g = Gallery.create(directory, _model())
    g.add(np.eye(4, dtype=np.float32), [f"/img/{i}.png" for i in range(4)], ["a", "b", "c", "d"])
    g.save()
    g = Gallery.open(directory)
    g.add(np.ones((1, 4), np.float32), ["/img/new.png"], ["e"])
    g.save()  # one logged edit on top of the base
    return directory


@pytest.mark.parametrize(
    ("key", "value"),
    [("dim", "abc"), ("dim", -3), ("index", 5), ("index", {"kind": "flat", "options": {"nprobe": 2}}),
     ("metric", ["euclidean"]), ("normalized", "yes"), ("threshold", "low"), ("model_hash", None)],
)  # fmt: skip
def test_a_damaged_sidecar_is_one_line_naming_the_key(tmp_path, key, value):
    directory = _gallery(tmp_path / "g")
    sidecar = directory / "gallery.json"
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), key: value}))
    with pytest.raises(DataError) as err:
        Gallery.open(directory)
    message = str(err.value)
    assert len(message.splitlines()) == 1 and "gallery.json" in message and f"'{key}" in message
    assert "rebuild" in message


@pytest.mark.parametrize("damage", ["garbage", "empty", "truncated"])
def test_a_damaged_database_is_one_line(tmp_path, damage):
    directory = _gallery(tmp_path / "g")
    db = directory / "gallery.db"
    raw = db.read_bytes()
    db.write_bytes({"garbage": b"not a database" * 100, "empty": b"", "truncated": raw[:200]}[damage])
    with pytest.raises(DataError, match="gallery.db|rebuild") as err:
        Gallery.open(directory)
    assert len(str(err.value).splitlines()) == 1


def _mount_tmpfs(mount: Path) -> None:
    """A small tmpfs at ``mount`` (an empty folder); the test skips where mounting needs privileges it lacks."""
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                                                       capture_output=True).returncode != 0:  # fmt: skip
        pytest.skip("mounting a file system needs privileges this machine does not give")


def test_a_gallery_on_a_read_only_mount_can_be_searched(tmp_path):
    mount = tmp_path / "ro"
    mount.mkdir()
    _mount_tmpfs(mount)
    try:
        _gallery(mount / "g")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True, capture_output=True)
        g = Gallery.open(mount / "g")
        _, ids = g.search(np.eye(4, dtype=np.float32)[:2], k=1)
        assert ids[:, 0].tolist() == [0, 1] and len(g) == 5
        assert not g.is_stale() and g.refresh() is g
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)
            pytest.fail("the read-only gallery kept a file open: it could not be unmounted")


def test_a_gallery_at_a_mount_point_is_refused_a_rebuild_in_one_line_and_kept(tmp_path):
    mount = tmp_path / "mnt"
    mount.mkdir()
    _mount_tmpfs(mount)
    try:
        _gallery(mount)  # the mount point itself is the gallery folder: it cannot be swapped
        g = Gallery.create(mount, _model(), overwrite=True)
        g.add(np.ones((2, 4), np.float32), ["/x.png", "/y.png"], [None, None])
        with pytest.raises(DataError, match="cannot replace the gallery") as err:
            g.save()
        assert len(str(err.value).splitlines()) == 1
        assert len(Gallery.open(mount)) == 5 and not list(tmp_path.glob(".mnt.new-*"))
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)
