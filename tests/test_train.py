from __future__ import annotations

import logging
from pathlib import Path

import pytest

from siamkit.config import load_config
from siamkit.training.pipeline import train_run


def _cfg(tmp_path, *extra):
    return load_config(None, [f"runs_dir={tmp_path}", "train.progress=false", "data.limit=300", "eval.n_pairs=300",
                              "sampling.val_tuples=200", *extra])  # fmt: skip


def test_early_stopping_when_validation_does_not_improve(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="siamkit")
    # lr = 0 and no BatchNorm (its running statistics would still move): the model is frozen, so no epoch beats
    # the initial weights (epoch 0, a candidate too) on validation MAP@R → stop after `patience` epochs, keep epoch 0
    r = train_run(_cfg(tmp_path, "train.lr=0", "train.epochs=10", "train.patience=2", "model.backbone=seed_cnn"))
    assert r["epochs_run"] == 2 and r["best_epoch"] == 0 and r["stopped_early"] is True
    assert "stopped early at epoch 2: no gain in 2 epochs on validation MAP@R (best: epoch 0" in caplog.text
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


class _Crash(Exception):
    pass


def test_resume_continues_the_same_run(tmp_path):
    # dropout (seed_cnn) and augmentation both draw random numbers every step: 2 epochs, a crash, and a resumed
    # third epoch must give exactly the weights of 3 uninterrupted epochs
    import torch

    from siamkit.training.checkpoint import load_state

    extra = ["model.backbone=seed_cnn", "data.augment.enabled=true", "train.epochs=3", "train.patience=0",
             "train.monitor=val_loss"]  # fmt: skip
    full = train_run(_cfg(tmp_path / "a", *extra))

    def crash_after_two(row):  # epoch 3 trained but its state never written: a crash during epoch 3
        if row["epoch"] == 3:
            raise _Crash

    run_dir = tmp_path / "b" / "default"
    with pytest.raises(_Crash):
        train_run(_cfg(tmp_path / "b", *extra), run_dir=run_dir, on_epoch=crash_after_two)
    assert load_state(run_dir / "last.pt")["epoch"] == 2
    train_run(_cfg(tmp_path / "b", *extra), resume=True, run_dir=run_dir)
    want = load_state(Path(full["run_dir"]) / "last.pt")["model"]
    got = load_state(run_dir / "last.pt")["model"]
    assert want.keys() == got.keys()
    for k in want:
        assert torch.equal(want[k], got[k]), k


def test_mixed_precision_steps_learn(tmp_path):
    """train.amp on the CPU: the steps run in bfloat16 (autocast) and the model still learns — better than the
    untrained network on the same test pairs — while evaluation stays in float32."""
    import torch

    seen = []
    real = torch.autocast.__init__

    def spy(self, device_type, dtype=None, enabled=True, *a, **k):
        seen.append((device_type, dtype, enabled))
        real(self, device_type, dtype, enabled, *a, **k)

    torch.autocast.__init__ = spy  # type: ignore[method-assign]
    try:
        r = train_run(_cfg(tmp_path, "train.amp=true", "train.epochs=3", "train.patience=0"))
    finally:
        torch.autocast.__init__ = real  # type: ignore[method-assign]
    assert ("cpu", torch.bfloat16, True) in seen
    assert r["test"]["map_at_r"] > r["baselines"]["untrained"]["test"]["map_at_r"] + 0.05


def test_the_history_keeps_the_self_supervised_term_apart(tmp_path):
    r = train_run(_cfg(tmp_path, "train.epochs=1", "train.patience=0", "loss.ssl_weight=0.5",
                       "data.augment.enabled=true"))  # fmt: skip
    import csv

    rows = list(csv.DictReader((Path(r["run_dir"]) / "history.csv").open()))
    assert len(rows) == 1
    for row in rows:
        sup, ssl, total = (float(row[k]) for k in ("train_supervised_loss", "train_self_supervised_loss",
                                                    "train_loss"))  # fmt: skip
        assert ssl > 0 and sup > 0 and abs(sup + ssl - total) < 1e-5
    assert (Path(r["run_dir"]) / "loss_curve.png").stat().st_size > 0
