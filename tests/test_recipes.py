"""``recipe: auto`` with few training identities: the untrained descriptor (``descriptor``), unless the config asks
for training; the rule stated in the run's metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from siamkit.config import load_config
from siamkit.recipes import MIN_METRIC_IDENTITIES, RECIPES, TRAINING_KEYS, apply_recipe


def test_few_identities_keep_the_untrained_descriptor() -> None:
    cfg = load_config(None, ["data.augment.contrast=0.1"])
    reason = apply_recipe(cfg, "identity", MIN_METRIC_IDENTITIES - 1)
    assert cfg.recipe == "descriptor" and f"{MIN_METRIC_IDENTITIES - 1} training identities" in reason
    assert cfg.train.epochs == 0 and cfg.model.backbone == "hog" and cfg.model.embedding_dim == 0
    assert "--recipe open-set" in reason and "train.epochs" in reason  # says how to train anyway


@pytest.mark.parametrize("override", ["train.epochs=4", "model.backbone=seed_cnn", "model.backbone_args={widths: [8]}"])
def test_few_identities_train_when_the_config_asks_for_it(override: str) -> None:
    assert override.split("=")[0] in TRAINING_KEYS
    cfg = load_config(None, [override])
    apply_recipe(cfg, "identity", 6)
    assert cfg.recipe == "open-set" and cfg.train.epochs != 0
    assert cfg.loss.ssl_weight == RECIPES["open-set"]["loss.ssl_weight"]


def test_many_identities_and_closed_sets_are_unchanged() -> None:
    cfg = load_config(None, [])
    apply_recipe(cfg, "identity", MIN_METRIC_IDENTITIES)
    assert cfg.recipe == "metric" and cfg.train.epochs == RECIPES["metric"]["train.epochs"]
    cfg = load_config(None, [])
    apply_recipe(cfg, "random", 3)
    assert cfg.recipe == "closed-set" and cfg.train.epochs >= 1


def test_a_descriptor_run_keeps_the_descriptor_and_says_why(digits_images: Path, tmp_path: Path) -> None:
    from siamkit.cli import main

    argv = ["train", "--data", str(digits_images), "--runs-dir", str(tmp_path), "--name", "d", "--format", "json",
            "-q", "--set", "eval.n_pairs=300", "--set", "eval.tsne_points=0", "--set", "eval.episodes=20"]  # fmt: skip
    assert main(argv) == 0
    saved = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert saved["recipe"] == "descriptor" and "too few" in saved["recipe_reason"]
    assert saved["epochs_run"] == 0 and saved["best_epoch"] == 0
    from siamkit.report import verdict

    said = verdict(saved)
    assert said is not None and said.startswith("Not trained") and "--recipe open-set" in said
    descriptor = saved["baselines"]["descriptor"]["test"]
    for key in ("auc", "map_at_r", "precision_at_1"):  # the kept model is the descriptor itself
        assert saved["test"][key] == pytest.approx(descriptor[key], abs=1e-6)
