"""What a person is told: every hint's flag exists where it is suggested, and an eval cannot silently score a
different model's baseline."""

from __future__ import annotations

import json
import shutil

import pytest

from siamkit.cli import main


@pytest.mark.parametrize("key", ["model.backbone=resnet18", "model.embedding_dim=8", "loss.name=triplet",
                                 "data.image_size=16", "train.lr=0.1"])  # fmt: skip
def test_eval_refuses_keys_that_change_the_model(small_run, key, capsys) -> None:
    assert main(["eval", str(small_run), "--set", key]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and key.partition("=")[0] in err[0] and "only eval.*, data.*" in err[0]
    assert "Traceback" not in err[0]


def test_the_skip_bad_hint_names_a_flag_train_has(digits_images, tmp_path, capsys) -> None:
    data = tmp_path / "data"
    shutil.copytree(digits_images, data)
    (data / "3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    argv = ["train", "--data", str(data), "--epochs", "1", "--runs-dir", str(tmp_path / "runs"), "-q"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "broken.png" in err and "--skip-bad" in err
    assert main([*argv, "--skip-bad", "--format", "json"]) == 0  # the flag the hint named
    result = json.loads(capsys.readouterr().out)
    assert result["epochs_run"] == 1
