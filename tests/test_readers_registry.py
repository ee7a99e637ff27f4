"""The data readers on the generic Registry: every registered reader is read, detected and listed on a tiny source
the test writes; a reader added as one new module (and one provider line) is picked up by ``load_dataset``,
``detect_layout`` and ``collect_images``; a user's ``package.module:Class`` reader is read by name."""

from __future__ import annotations

import gzip
import json
import pickle
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from siamkit.config import DataConfig
from siamkit.data.readers import (
    LAYOUTS,
    PROVIDERS,
    READERS,
    Reader,
    detect_layout,
    get_reader,
    load_dataset,
    read_folder,
    readers_in_order,
    write_class_folders,
)
from siamkit.data.sources import collect_images
from siamkit.errors import DataError


def _png(path: Path, value: int, size: int = 10) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (size, size), value).save(path)
    return path


def _folder(root: Path) -> Path:
    for c in ("alice", "bob"):
        for i in range(2):
            _png(root / "faces" / c / f"{i}.png", 40 * i + (100 if c == "bob" else 0))
    return root / "faces"


def _flat(root: Path) -> Path:
    for c in ("001", "002"):
        for i in range(2):
            _png(root / "flat" / f"img_{c}_{i}.png", 30 * i + int(c) * 50)
    return root / "flat"


def _labels_csv(root: Path) -> Path:
    _folder(root)
    rows = ["path,label,group", "faces/alice/0.png,alice,g1", "faces/alice/1.png,alice,g1", "faces/bob/0.png,bob,g2"]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def _pairs_csv(root: Path) -> Path:
    _folder(root)
    rows = ["path_a,path_b,label", "faces/alice/0.png,faces/alice/1.png,1", "faces/alice/0.png,faces/bob/0.png,0"]
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    return root / "pairs.csv"


def _triplets_csv(root: Path) -> Path:
    _folder(root)
    rows = ["anchor,positive,negative", "faces/alice/0.png,faces/alice/1.png,faces/bob/0.png",
            "faces/bob/0.png,faces/bob/1.png,faces/alice/1.png"]  # fmt: skip
    (root / "triplets.csv").write_text("\n".join(rows) + "\n")
    return root / "triplets.csv"


def _write_idx(path: Path, arr: np.ndarray) -> None:
    payload = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload))


def _idx(root: Path) -> Path:
    d = root / "idx"
    d.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 6), ("t10k", 2)):
        _write_idx(d / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 9, 9), dtype=np.uint8))
        _write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 3)
    return d


def _cifar10(root: Path) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": np.full((2, 3072), 7, np.uint8), b"labels": [0, 9]}
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))
    return root


# name → (tiny source written under the folder given, or the name itself; whether ``auto`` detects the layout;
# whether the source lists image files for ``index build``)
CASES: dict[str, tuple[Callable[[Path], Path | str], bool, bool]] = {
    "folder": (_folder, True, True),
    "flat": (_flat, True, True),
    "labels-csv": (_labels_csv, True, True),
    "pairs-csv": (_pairs_csv, True, True),
    "triplets-csv": (_triplets_csv, True, True),
    "idx": (_idx, True, False),
    "cifar10": (_cifar10, True, False),
    "fashion-mnist": (_idx, False, False),  # its IDX files in a folder, read with data.layout=fashion-mnist
    "digits": (lambda root: "digits", True, False),
}


def test_every_registered_reader_has_a_case_here():
    assert sorted(CASES) == READERS.list(), "give each registered reader a tiny source in CASES"


@pytest.mark.parametrize("name", READERS.list())
def test_every_registered_reader_reads_detects_and_lists_its_tiny_source(tmp_path, monkeypatch, name):
    assert name in CASES, f"reader {name!r} has no tiny source in CASES"
    make, detected, files = CASES[name]
    source = str(make(tmp_path))
    reader_class = type(get_reader(name))
    calls = []
    real_read = reader_class.read

    def spy(self, cfg):
        calls.append(cfg.source)
        return real_read(self, cfg)

    monkeypatch.setattr(reader_class, "read", spy)
    bundle = load_dataset(DataConfig(source=source, layout=name, cache=False))
    assert calls == [source] and bundle.layout == name and len(bundle.images) > 0
    if detected:
        assert detect_layout(source) == name
        assert load_dataset(DataConfig(source=source, cache=False)).layout == name
    if files:
        items = collect_images([source])
        assert items and all(Path(p).is_absolute() and Path(p).is_file() for p, _ in items)
    else:  # a set held as arrays: written out once as class folders of PNG files, listed from there
        items = collect_images([source])
        n = len(bundle.images) + (len(bundle.test) if bundle.test is not None else 0)
        assert len(items) == n and all(Path(p).is_file() and label is not None for p, label in items)
        assert len({label for _, label in items}) == len(set(bundle.images.labels.tolist()))  # one folder a class
        first = Path(items[0][0]).stat().st_mtime_ns
        assert collect_images([source]) == items and Path(items[0][0]).stat().st_mtime_ns == first  # not rewritten


def test_detection_order_is_the_readers_priority_not_registration_order():
    order = readers_in_order()
    assert [(r.priority, r.name) for r in order] == sorted((r.priority, r.name) for r in order)
    assert list(LAYOUTS) == [r.name for r in order]
    assert order[-1].name == "flat"  # the catch-all for folders comes last
    assert [n for n in LAYOUTS if LAYOUTS[n].by_name] == ["digits", "fashion-mnist", "cifar10"]
    assert all(isinstance(r, Reader) for r in LAYOUTS.values())


def test_an_unknown_layout_is_one_line_naming_the_registered_ones():
    with pytest.raises(DataError, match="unknown data layout 'folders'; use auto, digits, ") as info:
        load_dataset(DataConfig(source="x", layout="folders"))
    assert "flat" in str(info.value)


def test_collect_images_labels_as_training_names_the_classes(tmp_path):
    pairs = collect_images([str(_pairs_csv(tmp_path))])
    faces = tmp_path / "faces"
    assert pairs == [(str(faces / "alice" / "0.png"), None), (str(faces / "alice" / "1.png"), None),
                     (str(faces / "bob" / "0.png"), None)]  # fmt: skip
    triplets = collect_images([str(_triplets_csv(tmp_path))], label="x")
    assert len(triplets) == 4 and {lab for _, lab in triplets} == {"x"}
    labelled = collect_images([str(_labels_csv(tmp_path))])
    assert [lab for _, lab in labelled] == ["g1/alice", "g1/alice", "g2/bob"]
    assert {lab for _, lab in collect_images([str(_flat(tmp_path))])} == {None}
    grouped = tmp_path / "omniglot"
    for alphabet in ("greek", "latin"):
        for ch in range(5):
            _png(grouped / alphabet / f"c{ch}" / "0.png", 10 * ch)
    listed = collect_images([str(grouped)])
    assert {lab for _, lab in listed} == set(read_folder(grouped).class_names)  # group/class, as training reads
    assert "greek/c0" in {lab for _, lab in listed}


def test_a_csv_no_reader_lists_names_the_columns_it_needs(tmp_path):
    (tmp_path / "x.csv").write_text("file,name\na.png,b\n")
    with pytest.raises(DataError, match=r"needs a 'path' column .*pairs .*triplets .*header is \['file', 'name'\]"):
        collect_images([str(tmp_path / "x.csv")])
    (tmp_path / "paths.csv").write_text("path\na.png\n")  # a list of paths: indexed without labels
    assert collect_images([str(tmp_path / "paths.csv")], label="z") == [(str(tmp_path / "a.png"), "z")]


def test_an_array_set_written_as_class_folders_can_be_listed(tmp_path):
    bundle = load_dataset(DataConfig(source=str(_idx(tmp_path)), cache=False))
    assert write_class_folders(bundle.images, tmp_path / "out") == 6
    items = collect_images([str(tmp_path / "out")])
    assert len(items) == 6 and {lab for _, lab in items} == {"0", "1", "2"}
    back = read_folder(tmp_path / "out", channels=1)
    assert back.images.shape == (6, 1, 9, 9)


THROWAWAY = '''
"""A reader of ``*.throwaway`` files: one grey level per line, the class after it."""

from pathlib import Path

import numpy as np
import torch

from siamkit.data.imageset import ImageSet
from siamkit.data.readers import READERS, DatasetBundle, Reader


@READERS.register("throwaway")
class ThrowawayReader(Reader):
    priority = 15

    def detect(self, path):
        return path.is_file() and path.suffix == ".throwaway"

    def read(self, cfg):
        rows = [line.split() for line in Path(cfg.source).read_text().splitlines()]
        names = sorted({c for _, c in rows})
        images = torch.stack([torch.full((1, 8, 8), int(v), dtype=torch.uint8) for v, _ in rows])
        labels = np.asarray([names.index(c) for _, c in rows], np.int64)
        return DatasetBundle(Path(cfg.source).stem, ImageSet(images, labels, names))

    def list_images(self, source):
        rows = [line.split() for line in Path(source).read_text().splitlines()]
        return [(str(Path(source).parent / f"{v}.png"), c) for v, c in rows]
'''


def test_a_new_reader_is_one_module_and_one_provider_line(tmp_path):
    """The module above, added to the providers (as its name would be to ``PROVIDERS``) in a fresh process: every
    entry point picks it up, in its priority's place."""
    (tmp_path / "throwaway_reader.py").write_text(THROWAWAY)
    (tmp_path / "set.throwaway").write_text("10 a\n20 b\n30 a\n")
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(tmp_path)!r})
        from siamkit.config import DataConfig
        from siamkit.data.readers import LAYOUTS, READERS, detect_layout, load_dataset
        from siamkit.data.sources import collect_images
        READERS.providers += ("throwaway_reader",)  # the one registration line
        source = {str(tmp_path / "set.throwaway")!r}
        bundle = load_dataset(DataConfig(source=source))
        print(json.dumps({{"detected": detect_layout(source), "layout": bundle.layout, "n": len(bundle.images),
                          "classes": bundle.images.class_names, "listed": collect_images([source]),
                          "order": list(LAYOUTS)}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-1500:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["detected"] == got["layout"] == "throwaway" and got["n"] == 3 and got["classes"] == ["a", "b"]
    assert [lab for _, lab in got["listed"]] == ["a", "b", "a"]
    assert got["order"].index("throwaway") == got["order"].index("cifar10") + 1  # priority 15: after 10, before 20
    assert "throwaway_reader" not in PROVIDERS  # this process's registry is untouched


def test_a_users_reader_class_is_read_by_its_plugin_name(tmp_path, monkeypatch):
    (tmp_path / "my_plugin_reader.py").write_text(THROWAWAY.replace('@READERS.register("throwaway")\n', ""))
    (tmp_path / "set.throwaway").write_text("10 a\n20 b\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    name = "my_plugin_reader:ThrowawayReader"
    bundle = load_dataset(DataConfig(source=str(tmp_path / "set.throwaway"), layout=name))
    assert bundle.layout == name and bundle.images.class_names == ["a", "b"]
    assert "throwaway" not in READERS


def test_an_existing_folder_named_like_a_set_is_listed_as_the_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _png(tmp_path / "digits" / "7" / "a.png", 9)
    assert collect_images(["digits"]) == [(str(tmp_path / "digits" / "7" / "a.png"), "7")]
    monkeypatch.chdir(tmp_path / "digits")  # no folder named digits here: the set by name
    listed = collect_images(["digits"])  # scikit-learn's 1,797, written out as class folders once
    assert len(listed) == 1797 and {label for _, label in listed} == {str(i) for i in range(10)}
