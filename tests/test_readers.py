"""Every reader on files the test writes, including odd modes, corrupt files and reordered CSV columns."""

from __future__ import annotations

import gzip
import logging
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from siamkit.config import DataConfig
from siamkit.data.images import load_image
from siamkit.data.readers import (
    detect_layout,
    load_dataset,
    read_fashion_mnist,
    read_flat,
    read_folder,
    read_idx,
    read_idx_dir,
    read_labels_csv,
    read_tuples_csv,
)
from siamkit.errors import DataError


def _img(path: Path, mode: str, value: int = 128, size: tuple[int, int] = (10, 12)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        Image.fromarray(np.full(size[::-1], value * 257, np.uint16)).save(path)
    elif mode == "CMYK":
        Image.new("CMYK", size, (0, 0, 0, 255 - value)).save(path.with_suffix(".jpg"), quality=100)
        return path.with_suffix(".jpg")
    elif mode == "P":
        Image.new("RGB", size, (value, value, value)).convert("P").save(path)
    elif mode == "RGBA":
        Image.new("RGBA", size, (value, value, value, 255)).save(path)
    else:
        Image.new(mode, size, value if mode == "L" else (value, value, value)).save(path)
    return path


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "CMYK", "I;16"])
def test_modes_convert_explicitly(tmp_path, mode):
    p = _img(tmp_path / "x.png", mode, value=100)
    gray = load_image(p, 1, None)
    rgb = load_image(p, 3, (8, 8))
    assert gray.shape == (1, 12, 10) and gray.dtype == np.uint8
    assert rgb.shape == (3, 8, 8)
    assert abs(int(gray.mean()) - 100) <= 3, mode


def test_transparent_rgba_composites_on_white(tmp_path):
    p = tmp_path / "t.png"
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(p)
    assert load_image(p, 3, None).min() == 255


def test_folder_reader_with_small_class_and_odd_modes(tmp_path):
    root = tmp_path / "faces"
    _img(root / "alice" / "1.png", "RGB", 50)
    _img(root / "alice" / "2.png", "RGBA", 60)
    _img(root / "alice" / "3.png", "P", 70)
    _img(root / "bob" / "1.png", "I;16", 200)
    _img(root / "bob" / "2.png", "CMYK", 210)
    _img(root / "carol" / "only.png", "L", 90)  # one-image class
    (root / "alice" / ".hidden").write_text("ignored")
    s = read_folder(root, channels=3, size=(16, 16))
    assert s.images.shape == (6, 3, 16, 16)
    assert s.class_names == ["alice", "bob", "carol"]
    assert s.labels.tolist() == [0, 0, 0, 1, 1, 2]


def test_corrupt_file_is_a_clear_error_or_skipped(tmp_path, caplog):
    root = tmp_path / "data"
    _img(root / "a" / "1.png", "L")
    _img(root / "a" / "2.png", "L")
    _img(root / "b" / "1.png", "L")
    bad = root / "b" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DataError, match="broken.png") as err:
        read_folder(root)
    assert "--skip-bad" in str(err.value) and "\n" not in str(err.value)
    s = read_folder(root, skip_bad=True)
    assert len(s) == 3 and s.skipped == [str(bad)]
    bad.unlink()
    (root / "b" / "notes.txt").write_text("hello")  # not an image by its name: left out, said once
    (root / "b" / "Thumbs.db").write_bytes(b"\0junk")
    with caplog.at_level(logging.WARNING):
        assert len(read_folder(root)) == 3
    assert "2 files (Thumbs.db, notes.txt) left out, no image" in caplog.text
    (root / "b" / "notes.txt").unlink()
    (root / "b" / "IMG_0001.HEIC").write_bytes(b"\0junk")  # a phone's photo this Pillow cannot decode
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert len(read_folder(root)) == 3
    assert "1 file (IMG_0001.HEIC) left out: images in a format this Pillow cannot decode" in caplog.text
    assert "pillow-heif" in caplog.text and "1 file (Thumbs.db) left out, no image" in caplog.text
    (root / "b" / "photo.jpg").write_text("hello")  # an image by its name: its bytes are checked
    with pytest.raises(DataError, match="photo.jpg"):
        read_folder(root, skip_bad=False)


def test_truncated_image_is_an_error(tmp_path):
    p = _img(tmp_path / "a" / "x.png", "RGB", size=(64, 64))
    p.write_bytes(p.read_bytes()[:60])
    with pytest.raises(DataError, match="x.png"):
        load_image(p, 3, None)


def test_flat_reader_field_and_regex(tmp_path):
    for name in ["img_cat_001.png", "img_cat_002.png", "img_dog_001.png", "img_dog_7.png"]:
        _img(tmp_path / name, "L")
    s = read_flat(tmp_path)
    assert s.class_names == ["cat", "dog"] and s.labels.tolist() == [0, 0, 1, 1]
    s2 = read_flat(tmp_path, regex=r"_(?P<class>[a-z]+)_\d+")
    assert s2.labels.tolist() == [0, 0, 1, 1]
    _img(tmp_path / "nofields.png", "L")
    with pytest.raises(DataError, match="nofields.png"):
        read_flat(tmp_path)


def test_flat_names_of_two_fields_say_which_one_is_the_class(tmp_path, caplog):
    for name in ["alice_001.png", "alice_002.png", "bob_001.png"]:
        _img(tmp_path / name, "L")
    with caplog.at_level(logging.WARNING):
        assert read_flat(tmp_path).class_names == ["001", "002"]  # the spec's rule: the 2nd field
    assert "set data.flat_field=0" in caplog.text
    caplog.clear()
    assert read_flat(tmp_path, field=0).class_names == ["alice", "bob"] and "flat_field" not in caplog.text


def test_pairs_csv_reads_columns_by_header_name(tmp_path):
    for n in "abc":
        _img(tmp_path / "img" / f"{n}.png", "L", value=ord(n))
    (tmp_path / "pairs.csv").write_text("label,path_b,path_a\n1,img/b.png,img/a.png\n0,img/c.png,img/a.png\n")
    images, table = read_tuples_csv(tmp_path / "pairs.csv", "pairs")
    assert table.labels.tolist() == [1, 0]
    first = [Path(images.paths[i]).name for i in table.index[0]]
    assert first == ["a.png", "b.png"]  # (path_a, path_b), whatever the column order
    assert detect_layout(str(tmp_path / "pairs.csv")) == "pairs-csv"


def test_triplets_csv_header_order_differs_from_tuple_order(tmp_path):
    for n in "apn":
        _img(tmp_path / f"{n}.png", "L")
    (tmp_path / "t.csv").write_text("Anchor,Negative,Positive\na.png,n.png,p.png\n")
    images, table = read_tuples_csv(tmp_path / "t.csv", "triplets")
    names = [Path(images.paths[i]).stem for i in table.index[0]]
    assert names == ["a", "p", "n"]


def test_csv_missing_column_names_it(tmp_path):
    (tmp_path / "p.csv").write_text("path_a,label\nx.png,1\n")
    with pytest.raises(DataError, match="missing column 'path_b'"):
        read_tuples_csv(tmp_path / "p.csv", "pairs")
    with pytest.raises(DataError, match="neither pairs"):
        detect_layout(str(tmp_path / "p.csv"))


def _labels_csv(root: Path, groups: int, classes: int, images: int, group_column: bool = True) -> Path:
    rng = np.random.default_rng(0)
    rows = ["Label,extra,Path" + (",group" if group_column else "")]
    for g in range(groups):
        for c in range(classes):
            for i in range(images):
                name = f"img/g{g}c{c}_{i}.png"
                _img(root / name, "L", value=int(rng.integers(0, 255)))
                rows.append(f"char{c},x,{name}" + (f",script{g}" if group_column else ""))
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def test_labels_csv_reads_identities_and_groups_by_header_name(tmp_path):
    csv_path = _labels_csv(tmp_path, 2, 3, 2)
    assert detect_layout(str(csv_path)) == "labels-csv"
    s = read_labels_csv(csv_path)
    assert len(s) == 12 and s.class_names[:2] == ["script0/char0", "script0/char1"]
    assert Path(s.paths[0]).name == "g0c0_0.png" and s.class_names[s.labels[0]] == "script0/char0"
    assert s.class_names[s.labels[-1]] == "script1/char2"  # the same label in two groups: two identities
    (tmp_path / "plain.csv").write_text("path,label\nimg/g0c0_0.png,a\nimg/g0c0_1.png,b\n")
    assert read_labels_csv(tmp_path / "plain.csv").class_names == ["a", "b"]


def test_labels_csv_group_column_gives_a_group_disjoint_split(tmp_path):
    from siamkit.data.splits import make_splits

    cfg = DataConfig(source=str(_labels_csv(tmp_path, 6, 5, 2)), cache=False)
    splits = make_splits(load_dataset(cfg), cfg, 0)
    assert splits.method == "identity" and splits.identities is not None
    groups = {part: {n.split("/")[0] for n in ids} for part, ids in splits.identities.items()}
    assert groups["train"] and groups["validation"] and groups["test"]
    assert not (groups["train"] & groups["test"]) and not (groups["validation"] & groups["test"])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("path,name\na.png,x\n", "missing column 'label'"),
        ("path,label\n", "header but no rows"),
        ("path,label\na.png,\n", ":2: empty 'label'"),
        ("path,label,group\na.png,x,\n", ":2: empty 'group'"),
        ("path,label\na.png,x\n./a.png,y\na.png,z\n", ":3: './a.png' is listed twice \\(first on line 2\\)"),
        ("path,label,group\na.png,x/y,g\n", "contains '/'"),
    ],
)
def test_labels_csv_bad_rows_are_one_line_naming_the_line(tmp_path, text, match):
    _img(tmp_path / "a.png", "L")
    (tmp_path / "l.csv").write_text(text)
    with pytest.raises(DataError, match=match):
        read_labels_csv(tmp_path / "l.csv")


def _write_idx(path: Path, arr: np.ndarray, gz: bool) -> None:
    payload = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_reader(tmp_path, gz):
    ext = ".gz" if gz else ""
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 8, 9), dtype=np.uint8)
    _write_idx(tmp_path / f"train-images-idx3-ubyte{ext}", imgs, gz)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{ext}", np.array([0, 1, 2, 1, 0]), gz)
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{ext}", imgs[:2], gz)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{ext}", np.array([1, 0]), gz)
    assert np.array_equal(read_idx(tmp_path / f"train-images-idx3-ubyte{ext}"), imgs)
    train, test = read_idx_dir(tmp_path)
    assert train.images.shape == (5, 1, 8, 9) and train.labels.tolist() == [0, 1, 2, 1, 0]
    assert test is not None and len(test) == 2
    assert detect_layout(str(tmp_path)) == "idx"


def test_idx_bad_magic_and_size(tmp_path):
    (tmp_path / "x-images-idx3-ubyte").write_bytes(b"\x00\x00\x09\x03" + b"\x00" * 12)
    with pytest.raises(DataError, match="magic"):
        read_idx(tmp_path / "x-images-idx3-ubyte")
    _write_idx(tmp_path / "y-images-idx3-ubyte", np.zeros((2, 2, 2)), False)
    (tmp_path / "y-images-idx3-ubyte").write_bytes((tmp_path / "y-images-idx3-ubyte").read_bytes()[:-1])
    with pytest.raises(DataError, match="= 8 bytes, but the 23-byte file holds at most 7"):
        read_idx(tmp_path / "y-images-idx3-ubyte")


def _idx_set(root: Path, images: np.ndarray, gz: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    _write_idx(root / f"train-images-idx3-ubyte{ext}", images, gz)
    _write_idx(root / f"train-labels-idx1-ubyte{ext}", np.arange(len(images)) % 2, gz)
    return root


@pytest.mark.parametrize("side", [1, 7])
def test_idx_images_below_8_px_are_refused_as_other_readers_refuse_them(tmp_path, side):
    from siamkit.data.readers import MIN_SIDE

    root = _idx_set(tmp_path / "idx", np.zeros((4, side, 28), np.uint8))
    with pytest.raises(DataError, match=f"28×{side} images are below the {MIN_SIDE}-px minimum") as info:
        read_idx_dir(root)
    assert "train-images-idx3-ubyte" in str(info.value) and "\n" not in str(info.value)
    assert len(read_idx_dir(_idx_set(tmp_path / "ok", np.zeros((4, MIN_SIDE, MIN_SIDE), np.uint8)))[0]) == 4


@pytest.mark.parametrize("gz", [True, False])
def test_an_empty_idx_set_is_refused(tmp_path, gz):
    root = _idx_set(tmp_path / "idx", np.zeros((0, 28, 28), np.uint8), gz)
    with pytest.raises(DataError, match="holds no images"):
        read_idx_dir(root)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_header_dims_beyond_the_file_are_refused_before_reading(tmp_path, gz, monkeypatch):
    """A header asking for 4,294,967,295³ bytes (or any payload the file cannot hold, even decompressed) is refused
    from the file's size: the payload is never read (the gzip stream is not inflated)."""
    path = tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2**32 - 1, 2**32 - 1, 2**32 - 1)
    payload = header + b"\x00" * 64
    path.write_bytes(gzip.compress(payload) if gz else payload)
    reads: list[int] = []
    real_read = gzip.GzipFile.read
    monkeypatch.setattr(gzip.GzipFile, "read", lambda self, n=-1: reads.append(n) or real_read(self, n))
    with pytest.raises(DataError, match="bytes, but the .*-byte file holds at most") as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert all(0 <= n <= 12 for n in reads)  # the magic and the dims, nothing more
    path.write_bytes(gzip.compress(header[:9]) if gz else header[:9])  # cut inside the dims
    with pytest.raises(DataError, match="truncated IDX header"):
        read_idx(path)


def test_missing_source_is_one_line():
    with pytest.raises(DataError, match="not found") as err:
        load_dataset(DataConfig(source="/no/such/folder"))
    assert "\n" not in str(err.value)


def test_fashion_mnist_missing_says_how_to_install(tmp_path):
    with pytest.raises(DataError, match="apt-get install -y dataset-fashion-mnist"):
        read_fashion_mnist(str(tmp_path))


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="dataset-fashion-mnist not installed"
)
def test_fashion_mnist_real_files():
    train, test = read_fashion_mnist()
    assert train.images.shape == (60000, 1, 28, 28) and test is not None and len(test) == 10000
    assert train.class_counts() == {c: 6000 for c in range(10)}
    assert train.class_names[9] == "Ankle boot"


def test_digits_default_and_resize():
    bundle = load_dataset(DataConfig(image_size=16, channels=3))
    assert bundle.images.images.shape == (1797, 3, 16, 16)
    assert int(bundle.images.images.max()) == 255


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_exif_orientation_turns_the_photo_upright(tmp_path, fmt):
    # a phone's portrait photo: pixels stored 40 wide × 20 high, tag 6 = "turn 90° clockwise to display"
    rng = np.random.default_rng(0)
    stored = Image.fromarray(rng.integers(0, 256, (20, 40), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "people" / "a" / f"portrait.{fmt}"
    path.parent.mkdir(parents=True)
    stored.save(path, exif=exif.tobytes(), **({"quality": 100} if fmt == "jpeg" else {}))
    shown = np.asarray(stored.transpose(Image.Transpose.ROTATE_270))  # clockwise: 20 wide × 40 high
    got = load_image(path, 1, None)
    assert got.shape == (1, 40, 20)
    if fmt == "png":  # lossless: exactly the turned pixels
        assert np.array_equal(got[0], shown)
    else:
        assert np.abs(got[0].astype(int) - shown).mean() < 3
    from siamkit.data.readers import auto_size

    assert auto_size([path]) == (40, 20)  # the header scan sees the upright size too
    Image.fromarray(shown).save(path.parent / "upright.png")  # no tag: the same picture, already upright
    images = read_folder(tmp_path / "people")
    assert images.images.shape[2:] == (40, 20)
    if fmt == "png":
        assert np.array_equal(images.images[0].numpy(), images.images[1].numpy())


def test_the_input_is_chosen_from_the_training_identities_images_only(tmp_path):
    from siamkit.config import load_config
    from siamkit.plan import prepare_data

    rng = np.random.default_rng(0)
    layout = {"train": (["a", "b", "c", "d"], "L", 16, 4), "val": (["e", "f"], "L", 16, 4),
              "test": (["g", "h"], "RGB", 40, 20)}  # fmt: skip
    for names, mode, side, n in layout.values():
        for name in names:
            for i in range(n):
                _img(tmp_path / "d" / name / f"{i}.png", mode, int(rng.integers(0, 255)), (side, side))
    overrides = [f"data.source={tmp_path / 'd'}", "data.split=identity", "data.train_classes=a,b,c,d",
                 "data.val_classes=e,f", "data.test_classes=g,h", "data.cache=false"]  # fmt: skip
    # every image's headers would give 40×40 colour (the test identities' 40 of 64 images): the training ones give
    prep = prepare_data(load_config(None, overrides))
    assert prep.input_shape == (1, 16, 16) and prep.cfg.data.image_size == 16 and prep.cfg.data.channels == 1
    assert prep.splits.test.images.images.shape[1:] == (1, 16, 16)  # the test images are read at that input
    given = prepare_data(load_config(None, [*overrides, "data.image_size=24", "data.channels=3"]))
    assert given.input_shape == (3, 24, 24)  # what the config sets is kept


def test_a_class_folder_linked_back_is_refused_a_link_elsewhere_kept(tmp_path):
    for c in ("a", "b"):
        for i in range(2):
            _img(tmp_path / "d" / c / f"{i}.png", "L", 40 * i)
    _img(tmp_path / "elsewhere" / "0.png", "L")
    _img(tmp_path / "elsewhere" / "1.png", "L", 200)
    (tmp_path / "d" / "c").symlink_to(tmp_path / "elsewhere")  # a class kept somewhere else: fine
    assert read_folder(tmp_path / "d", cache=None).class_names == ["a", "b", "c"]
    for target, said in ((".", "the data folder itself"), ("a", "the class folder 'a'"), ("..", "above the data")):
        link = tmp_path / "d" / "loop"
        link.symlink_to(target)
        with pytest.raises(DataError, match=f"loop: a link to .*{said}.*remove the link"):
            read_folder(tmp_path / "d", cache=None)
        link.unlink()


def test_a_csv_column_named_twice_is_refused(tmp_path):
    _img(tmp_path / "a.png", "L")
    (tmp_path / "p.csv").write_text("path_a,path_b,Label,label \na.png,a.png,1,0\n")
    with pytest.raises(DataError, match="names the column 'label' twice"):
        read_tuples_csv(tmp_path / "p.csv", "pairs")
    (tmp_path / "l.csv").write_text("path,label,path\na.png,x,a.png\n")
    with pytest.raises(DataError, match="names the column 'path' twice"):
        read_labels_csv(tmp_path / "l.csv")


@pytest.mark.parametrize("kind", ["nul", "huge", "unclosed"])
def test_csv_nul_bytes_and_huge_fields_are_one_line_naming_file_and_line(tmp_path, kind):
    from siamkit.data.readers import csv_text

    p = tmp_path / "p.csv"
    body = {"nul": "a.png,b\x00.png,1\n", "huge": "a.png," + "b" * 200_000 + ",1\n",
            "unclosed": '"a.png' + "b" * 200_000 + "\n"}[kind]  # fmt: skip
    p.write_text("path_a,path_b,label\nx.png,y.png,0\n" + body)
    with pytest.raises(DataError, match=f"{p}:3: ") as info:
        read_tuples_csv(p, "pairs")
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="p.csv:3"):
        csv_text(p)  # every CSV reader (galleries' lists too) reads through it


def _cifar_batch(path: Path, labels: list[int] | None = None) -> Path:
    import pickle

    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": labels or [0, 9]}, protocol=2))
    return path


def test_cifar_labels_outside_0_9_are_refused_naming_the_file(tmp_path):
    from siamkit.data.cifar import read_cifar_batch

    assert read_cifar_batch(_cifar_batch(tmp_path / "ok"))[1].tolist() == [0, 9]
    for labels in ([0, 10], [-1, 3]):
        with pytest.raises(DataError, match="outside 0–9") as info:
            read_cifar_batch(_cifar_batch(tmp_path / "data_batch_1", labels))
        assert "data_batch_1" in str(info.value)


def test_cifar_sizes_beyond_the_file_are_refused_before_allocating(tmp_path):
    """An array of 10¹² bytes declared by a 200-byte batch, and a bytes8 length of 2⁴⁰: refused from the file's
    size, nothing allocated (a MemoryError, or a 1 TB allocation where overcommit allows it, before)."""
    import pickle

    from siamkit.data.cifar import read_cifar_batch

    class Huge:
        def __reduce__(self):
            return (np.zeros(1).__reduce__()[0], (np.ndarray, (10**12,), b"b"))

    path = tmp_path / "data_batch_2"
    path.write_bytes(pickle.dumps({b"data": Huge(), b"labels": [0]}, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_2: .*\(1000000000000,\) would need more memory"):
        read_cifar_batch(path)
    path.write_bytes(b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"tiny")
    with pytest.raises(DataError, match="data_batch_2: .*1099511627776 bytes"):
        read_cifar_batch(path)
