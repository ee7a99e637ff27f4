"""CIFAR-10 reader on batch files written in the real format, the downloader's checksum and offline paths, the
augmentation preset, and the classification study end to end on tiny data (every figure written)."""

from __future__ import annotations

import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from siamkit.classify.study import FIGURES, confusion, most_confused
from siamkit.cli import main
from siamkit.data.cifar import (
    CIFAR10_FOLDER,
    download_cifar10,
    fashion_stand_in,
    md5sum,
    read_cifar10,
    read_cifar_batch,
)
from siamkit.data.imageset import ImageSet
from siamkit.data.transforms import BatchAugment, augment_preset
from siamkit.errors import ConfigError, DataError
from siamkit.models.blocks import BaseCNN


def write_batch(path: Path, n: int, seed: int, classes: int = 10) -> tuple[np.ndarray, list[int]]:
    """A batch exactly as CIFAR-10 ships it: a protocol-2 pickle of a dict with bytes keys."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(i % classes) for i in range(n)]
    batch = {b"batch_label": b"training batch", b"labels": labels, b"data": data,
             b"filenames": [f"img_{i}.png".encode() for i in range(n)]}  # fmt: skip
    with path.open("wb") as f:
        pickle.dump(batch, f, protocol=2)
    return data, labels


def write_cifar(root: Path, per_batch: int = 20, test: int = 20) -> Path:
    folder = root / CIFAR10_FOLDER
    folder.mkdir(parents=True)
    for i in range(1, 6):
        write_batch(folder / f"data_batch_{i}", per_batch, seed=i)
    write_batch(folder / "test_batch", test, seed=99)
    return folder


def test_reader_on_real_format_batches(tmp_path):
    folder = write_cifar(tmp_path)
    data, labels = write_batch(folder / "data_batch_1", 20, seed=1)
    images, got = read_cifar_batch(folder / "data_batch_1")
    assert images.shape == (20, 3, 32, 32) and images.dtype == torch.uint8
    assert got.tolist() == labels
    # channel-major rows: the first 1024 values are the red plane, row by row
    assert np.array_equal(images[3, 0].numpy().ravel(), data[3, :1024])
    assert np.array_equal(images[3, 2].numpy().ravel(), data[3, 2048:])
    train, test = read_cifar10(tmp_path)
    assert len(train) == 100 and len(test) == 20 and train.class_names[3] == "cat"


def test_tampered_batch_is_refused_not_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2))
    with pytest.raises(DataError, match="not a readable CIFAR-10 batch"):
        read_cifar_batch(path)
    assert not (tmp_path / "pwned").exists()
    bad = tmp_path / "bad_shape"
    bad.write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, protocol=2))
    with pytest.raises(DataError, match="N×3072"):
        read_cifar_batch(bad)


def _archive(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    write_cifar(src)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / CIFAR10_FOLDER, arcname=CIFAR10_FOLDER)
    return archive


def test_download_verifies_the_checksum_and_caches(tmp_path):
    archive = _archive(tmp_path)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="checksum mismatch"):
        download_cifar10(cache, url=archive.as_uri(), md5="0" * 32)
    assert not any(cache.iterdir())  # nothing half-written left behind
    folder = download_cifar10(cache, url=archive.as_uri(), md5=md5sum(archive))
    assert folder == cache / CIFAR10_FOLDER and (cache / "cifar-10-python.tar.gz").is_file()
    archive.unlink()  # the cache answers now, no fetch
    assert download_cifar10(cache, url=archive.as_uri(), md5="unused") == folder


def test_a_corrupt_cached_archive_fails_its_checksum(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "cifar-10-python.tar.gz").write_bytes(b"truncated")
    with pytest.raises(DataError, match="checksum mismatch.*delete it"):
        download_cifar10(cache, url="file:///nowhere.tar.gz")


def test_offline_download_says_where_to_put_the_files(tmp_path):
    with pytest.raises(DataError) as err:
        download_cifar10(tmp_path / "c", url=(tmp_path / "absent.tar.gz").as_uri())
    msg = str(err.value)
    assert "absent.tar.gz" in msg and str(tmp_path / "c") in msg and "\n" not in msg
    assert not [p for p in (tmp_path / "c").iterdir()]


def test_cifar_through_the_siamese_readers(tmp_path):
    write_cifar(tmp_path)
    from siamkit.config import load_config
    from siamkit.data.readers import load_dataset

    bundle = load_dataset(load_config(None, [f"data.source={tmp_path}"]).data)
    assert bundle.name == "cifar10" and bundle.images.shape == (3, 32, 32) and len(bundle.test) == 20


def test_stand_in_pads_and_repeats():
    x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    s = fashion_stand_in(ImageSet(x, np.arange(4), ["a"] * 4))
    assert s.images.shape == (4, 3, 32, 32)
    assert torch.equal(s.images[:, 1, 2:30, 2:30], x[:, 0]) and s.images[:, :, :2].sum() == 0


def test_cifar_augmentation_preset_changes_images_and_keeps_range():
    cfg = augment_preset("cifar")
    assert (cfg.hflip, cfg.brightness, cfg.contrast, cfg.saturation, cfg.degrees) == (0.5, 0.25, 0.25, 0.25, 10.0)
    x = torch.rand(16, 3, 32, 32)
    y = BatchAugment(cfg, torch.Generator().manual_seed(0))(x)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1 and not torch.allclose(x, y)
    with pytest.raises(ConfigError, match="preset"):
        augment_preset("heavy")


def test_confusion_and_most_confused_pair():
    true = np.array([0, 0, 1, 1, 2, 2, 3, 3, 3])
    pred = np.array([0, 1, 1, 0, 2, 3, 2, 3, 2])
    cm = confusion(true, pred, 4)
    assert cm.sum() == 9 and cm[0, 1] == 1 and cm[3, 2] == 2
    assert most_confused(cm) == (2, 3, 3)


def test_the_command_lines_block_names_are_the_models():
    from siamkit.classify.study import ClassifyConfig
    from siamkit.cli import classify as cli_classify
    from siamkit.models.blocks import BLOCK_KINDS

    assert cli_classify.BLOCK_KINDS == BLOCK_KINDS  # written out there: models.blocks imports torch
    assert ClassifyConfig().blocks == cli_classify.DEFAULT_BLOCKS


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    folder = root / CIFAR10_FOLDER
    folder.mkdir()
    for i in range(1, 6):
        write_batch(folder / f"data_batch_{i}", 12, seed=i)
    write_batch(folder / "test_batch", 10, seed=9)
    return root


def test_classify_train_writes_every_figure(tmp_path, tiny_cifar, capsys):
    code = main(["classify", "train", "--blocks", "ABCDEDdwAB", "--data", str(tiny_cifar), "--epochs", "2",
                 "--set", "val_per_class=2", "--set", "batch_size=20", "--runs-dir", str(tmp_path), "--name", "c", "-q"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "most confused" in out and "trainable parameters" in out
    run = tmp_path / "c"
    for name in [*FIGURES, "metrics.json", "history.csv", "config.yaml", "model.safetensors"]:
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    for name in FIGURES:
        with Image.open(run / name) as im:
            assert im.size[0] > 100 and im.size[1] > 50
    m = json.loads((run / "metrics.json").read_text())
    assert m["epochs_run"] == 2 and m["split_sizes"] == {"train": 40, "validation": 20}
    assert m["trainable_parameters"] == sum(p.numel() for p in BaseCNN("ABCDEDdwAB").parameters())
    assert np.array(m["confusion_matrix"]).sum() == 20 and 0 <= m["best_val_accuracy"] <= 1
    assert "test_accuracy" in m and m["train_seconds"] > 0
    assert len((run / "history.csv").read_text().strip().splitlines()) == 3


def test_classify_compare_under_a_budget(tmp_path, tiny_cifar, capsys):
    code = main(["classify", "compare", "--blocks", "A", "Ddw", "--data", str(tiny_cifar), "--epochs", "3",
                 "--set", "budget_seconds=0.01", "--set", "val_per_class=2", "--runs-dir", str(tmp_path), "--name",
                 "cmp", "--set", "augment=none", "-q", "--format", "json"])  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    rows = {r["block"]: r for r in result["rows"]}
    assert set(rows) == {"A", "Ddw"} and rows["A"]["params"] == 7_771_658 and rows["Ddw"]["params"] == 1_139_338
    assert all(r["epochs"] == 1 for r in rows.values())  # the budget stopped each after its first batch
    csv_lines = (tmp_path / "cmp" / "compare.csv").read_text().strip().splitlines()
    assert csv_lines[0].startswith("block,params") and len(csv_lines) == 3
    assert (tmp_path / "cmp" / "A" / "confusion.png").is_file()


def test_classify_errors_are_one_line(tmp_path, capsys):
    assert main(["classify", "train", "--blocks", "AAX", "--data", str(tmp_path)]) == 2
    assert "bad block string" in capsys.readouterr().err
    assert main(["classify", "train", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no CIFAR-10 python batches" in err and err.count("\n") == 1
