from __future__ import annotations

import pytest

from siamkit.config import load_config
from siamkit.pipeline import train_run


def _cfg(tmp_path, *extra):
    return load_config(None, [f"runs_dir={tmp_path}", "train.progress=false", "data.limit=300", "eval.n_pairs=300",
                              "sampling.val_tuples=200", *extra])  # fmt: skip


def test_early_stopping_when_validation_does_not_improve(tmp_path):
    # lr = 0 and no BatchNorm (its running statistics would still move): the model is frozen, so no epoch beats
    # the initial weights (epoch 0, a candidate too) on validation MAP@R → stop after `patience` epochs, keep epoch 0
    r = train_run(_cfg(tmp_path, "train.lr=0", "train.epochs=10", "train.patience=2", "model.backbone=seed_cnn"))
    assert r["epochs_run"] == 2 and r["best_epoch"] == 0 and r["stopped_early"] is True
    r = train_run(_cfg(tmp_path, "train.lr=0", "train.epochs=10", "train.patience=2", "model.backbone=seed_cnn",
                       "train.monitor=val_loss"))  # fmt: skip
    assert r["epochs_run"] == 3 and r["best_epoch"] == 1 and r["stopped_early"] is True


def test_exponential_schedule_and_sgd(tmp_path):
    r = train_run(_cfg(tmp_path, "train.optimizer=sgd", "train.scheduler=exponential", "train.gamma=0.5",
                       "train.epochs=3", "train.lr=0.1", "train.patience=0", "loss.name=contrastive"))  # fmt: skip
    import csv
    from pathlib import Path

    rows = list(csv.DictReader((Path(r["run_dir"]) / "history.csv").open()))
    assert [float(x["lr"]) for x in rows] == pytest.approx([0.1, 0.05, 0.025])


def test_unknown_optimizer_is_named(tmp_path):
    from siamkit.errors import ConfigError

    with pytest.raises(ConfigError, match="'adamm'"):
        train_run(_cfg(tmp_path, "train.optimizer=adamm"))
