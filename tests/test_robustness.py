"""Inputs that are odd but valid, and the data-loss cases: a CSV with a byte-order mark, an empty class folder, a
tiny image that sorts first, mixed image sizes, a closed pipe, resume with the run's own config, a finished run
that cannot be resumed, a failed run that leaves a resumable folder."""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from siamkit.cli import main
from siamkit.config import DataConfig
from siamkit.data.readers import auto_size, load_dataset, read_folder, read_tuples_csv
from siamkit.errors import DataError


def _png(path: Path, size=(12, 12), seed=0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8)).save(path)


def test_a_csv_with_a_byte_order_mark_is_read(tmp_path):
    for i in range(3):
        _png(tmp_path / f"{i}.png", seed=i)
    text = "path_a,path_b,label\n0.png,1.png,1\n1.png,2.png,0\n"
    (tmp_path / "p.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())  # what spreadsheets write
    images, table = read_tuples_csv(tmp_path / "p.csv", "pairs")
    assert len(images) == 3 and table.labels.tolist() == [1, 0]


def test_an_empty_class_folder_is_named_and_left_out(tmp_path, caplog):
    for c in ("a", "b"):
        for i in range(2):
            _png(tmp_path / c / f"{i}.png", seed=i)
    (tmp_path / "empty_one").mkdir()
    with caplog.at_level(logging.WARNING):
        images = read_folder(tmp_path)
    assert images.class_names == ["a", "b"] and "empty_one" in caplog.text


def test_input_size_is_the_most_common_not_the_first(tmp_path, caplog):
    for i in range(5):
        _png(tmp_path / "id0" / f"b{i}.png", size=(20, 16), seed=i)
    for i in range(2):
        _png(tmp_path / "id1" / f"c{i}.png", size=(40, 40), seed=i)
    paths = sorted(tmp_path.glob("*/*.png"))
    with caplog.at_level(logging.INFO):
        assert auto_size(paths) == (16, 20)  # (H, W) of 5 of the 7 images
    assert "input size 16×20" in caplog.text
    # a 1×1 image that sorts first is refused (it once shrank the whole dataset to 1×1)...
    Image.new("L", (1, 1)).save(tmp_path / "id0" / "a_tiny.png")
    with pytest.raises(Exception, match="a_tiny.png: a 1×1 image is below the 8-px minimum"):
        read_folder(tmp_path)
    # ...or skipped and reported, and the size stays the common one
    images = read_folder(tmp_path, skip_bad=True)
    assert tuple(images.images.shape[2:]) == (16, 20) and any("a_tiny" in s for s in images.skipped)
    # large photos are capped (aspect kept)
    assert auto_size([tmp_path / "big.png"]) is None  # unreadable: nothing to go by
    _png(tmp_path / "big.png", size=(1000, 500))
    assert auto_size([tmp_path / "big.png"]) == (128, 256)


def test_input_size_of_photos_of_many_sizes_is_the_median(tmp_path, caplog):
    # no size shared by half of them: the most common one (two odd 9×9 images) would be arbitrary
    sizes = [(9, 9), (9, 9), (30, 40), (32, 44), (34, 48), (36, 50), (60, 80)]  # (W, H)
    paths = []
    for i, size in enumerate(sizes):
        _png(tmp_path / f"{i}.png", size=size, seed=i)
        paths.append(tmp_path / f"{i}.png")
    with caplog.at_level(logging.INFO):
        assert auto_size(paths) == (44, 32)  # (H, W): the medians of 9, 9, 40, 44, 48, 50, 80 and of the widths
    assert "median" in caplog.text


def test_a_closed_pipe_is_not_an_error(small_run, digits_images, tmp_path):
    from siamkit.index.ops import build

    build(str(small_run), [str(digits_images)], str(tmp_path / "g"))
    cmd = f"{sys.executable} -m siamkit search {tmp_path / 'g'} {digits_images} -k 20 | head -1"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr[-1000:]
    assert proc.stdout.startswith("query") and proc.returncode == 0


def test_resume_takes_the_runs_own_config(tmp_path, capsys, digits_images):
    runs = tmp_path / "runs"
    argv = ["train", "--data", str(digits_images), "--runs-dir", str(runs), "--name", "r", "--epochs", "2", "-q",
            "--format", "json", "--set", "data.split=random", "--set", "eval.tsne_points=0"]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    # resuming without --data (the default would be digits) continues on the run's own folder, to 3 epochs
    assert main(["train", "--runs-dir", str(runs), "--name", "r", "--resume", "--epochs", "3", "-q", "--format",
                 "json"]) == 0  # fmt: skip
    m = json.loads(capsys.readouterr().out)
    assert m["epochs_run"] == 3 and m["dataset"] == json.loads((runs / "r" / "metrics.json").read_text())["dataset"]
    rows = list(csv.DictReader((runs / "r" / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    # changing the data, model or loss of a resumed run is refused, naming the key
    code = main(["train", "--runs-dir", str(runs), "--name", "r", "--resume", "--loss", "triplet"])
    assert code == 2 and "loss.name cannot change" in capsys.readouterr().err
    # a finished run whose last.pt is gone: --resume would retrain from scratch over its model
    (runs / "r" / "last.pt").unlink()
    model_bytes = (runs / "r" / "model.safetensors").read_bytes()
    code = main(["train", "--runs-dir", str(runs), "--name", "r", "--resume", "--epochs", "4"])
    assert code == 2 and "--force" in capsys.readouterr().err
    assert (runs / "r" / "model.safetensors").read_bytes() == model_bytes
    assert main(["train", "--runs-dir", str(runs), "--name", "r", "--resume", "--epochs", "1", "--force", "-q"]) == 0


def test_a_run_that_fails_after_an_epoch_stays_resumable_and_marked(tmp_path):
    from siamkit.config import load_config
    from siamkit.training.pipeline import train_run

    def boom(row):
        if row["epoch"] == 2:
            raise RuntimeError("disk full")

    cfg = load_config(None, [f"runs_dir={tmp_path}", "train.epochs=3", "train.progress=false", "data.limit=300"])
    with pytest.raises(RuntimeError):
        train_run(cfg, on_epoch=boom)
    run = tmp_path / "default"
    assert (run / "last.pt").is_file() and not (run / "metrics.json").exists()
    assert "disk full" in (run / "FAILED").read_text() and "--resume" in (run / "FAILED").read_text()
    cfg = load_config(None, [f"runs_dir={tmp_path}", "train.epochs=3", "train.progress=false", "data.limit=300"])
    r = train_run(cfg)  # a new run does not take the failed one for finished, nor overwrite it
    assert Path(r["run_dir"]).name == "default-2" and (run / "FAILED").is_file()
    cfg = load_config(None, [f"runs_dir={tmp_path}", "train.epochs=3", "train.progress=false", "data.limit=300"])
    train_run(cfg, resume=True)
    assert not (run / "FAILED").exists() and (run / "metrics.json").is_file()


def test_dataset_config_from_a_folder_logs_the_size(tmp_path, caplog):
    for c in range(3):
        for i in range(3):
            _png(tmp_path / f"id{c}" / f"{i}.png", size=(24, 24), seed=c * 3 + i)
    with caplog.at_level(logging.INFO):
        bundle = load_dataset(DataConfig(source=str(tmp_path)))
    assert tuple(bundle.images.images.shape[1:]) == (1, 24, 24) and "input size 24×24" in caplog.text


def test_colour_is_kept_when_a_grey_image_sorts_first(tmp_path):
    Image.new("L", (12, 12), 90).save(tmp_path / "a_grey.png")  # sorts first
    for i in range(4):
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(tmp_path / f"b{i}.png")
    from siamkit.data.readers import auto_channels

    paths = sorted(tmp_path.glob("*.png"))
    assert auto_channels(paths) == 3
    assert auto_channels(paths[:1]) == 1


def test_train_takes_a_data_folder_where_the_config_goes(tmp_path, capsys):
    from siamkit.cli import build_parser, main
    from siamkit.cli.train import _data_in_config_place

    for c in ("a", "b"):
        _png(tmp_path / "faces" / c / "0.png")
    for given, data, config in ((str(tmp_path / "faces"), str(tmp_path / "faces"), None), ("digits", "digits", None),
                                ("run.yaml", None, "run.yaml"), ("pairs.csv", "pairs.csv", None),
                                ("no_such_folder/", "no_such_folder/", None)):  # fmt: skip
        args = build_parser().parse_args(["train", given])
        _data_in_config_place(args)
        assert (args.data, args.config) == (data, config), given
    assert main(["train", str(tmp_path / "faces"), "--data", "digits"]) == 2
    err = capsys.readouterr().err
    assert "faces is data, and --data digits gives data too" in err and len(err.strip().splitlines()) == 1


def test_class_folders_may_nest_and_split_folders_are_refused(tmp_path, capsys):
    for rel in ("a/session1/0.png", "a/session2/1.png", "a/2.png", "b/0.png", "b/.hidden/3.png"):
        _png(tmp_path / "people" / rel)
    images = read_folder(tmp_path / "people")
    assert images.class_names == ["a", "b"] and images.labels.tolist() == [0, 0, 0, 1]
    assert [Path(p).relative_to(tmp_path / "people").as_posix() for p in images.paths] == [
        "a/2.png", "a/session1/0.png", "a/session2/1.png", "b/0.png"]  # fmt: skip
    for rel in ("train/a/0.png", "train/b/0.png", "test/a/0.png", "test/b/0.png"):
        _png(tmp_path / "splits" / rel)
    with pytest.raises(DataError, match="test, train look like the splits of a dataset") as err:
        read_folder(tmp_path / "splits")
    assert "--data " + str(tmp_path / "splits" / "train") in str(err.value) and "\n" not in str(err.value)
    assert len(read_folder(tmp_path / "splits" / "train")) == 2


def test_validation_identities_of_one_image_each_are_one_error_line(tmp_path):
    from siamkit.config import load_config
    from siamkit.data.splits import make_splits

    for c in range(8):
        for i in range(1 if c < 2 else 4):
            _png(tmp_path / "ids" / f"p{c}" / f"{i}.png", seed=i)
    cfg = load_config(None, [f"data.source={tmp_path / 'ids'}", "data.val_classes=p0,p1"])
    with pytest.raises(DataError, match="no identity has two images in the validation split") as err:
        make_splits(load_dataset(cfg.data), cfg.data, 0)
    assert "\n" not in str(err.value)


def test_a_link_back_up_inside_a_class_folder_ends(tmp_path):
    for rel in ("a/0.png", "a/1.png", "b/0.png"):
        _png(tmp_path / "people" / rel)
    (tmp_path / "people" / "a" / "loop").symlink_to(tmp_path / "people", target_is_directory=True)
    assert read_folder(tmp_path / "people").labels.tolist() == [0, 0, 1]


def test_a_split_of_many_identities_logs_one_readable_line(tmp_path, caplog):
    from siamkit.config import load_config
    from siamkit.data.splits import make_splits
    from siamkit.text import name_list

    assert name_list(["a", "b", "c"], 2) == "a, b, … 1 more" and name_list(["a"], 2) == "a"
    for c in range(120):
        for i in range(2):
            _png(tmp_path / "many" / f"person{c:03d}" / f"{i}.png", seed=i)
    cfg = load_config(None, [f"data.source={tmp_path / 'many'}"])
    with caplog.at_level(logging.INFO):
        splits = make_splits(load_dataset(cfg.data), cfg.data, 0)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("identities train"))
    assert len(splits.identities["train"]) > 20 and line.endswith(f"… {len(splits.identities['train']) - 20} more")
