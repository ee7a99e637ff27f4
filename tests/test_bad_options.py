"""Options no sensible model can be built from are refused in one line naming the key (issue 30's "no silent
acceptance"): negative or non-numeric margins, empty or non-numeric widths, a pooling grid below 1; freezing a
backbone that has no pretrained weights is said."""

from __future__ import annotations

import logging

import pytest

from siamkit.errors import ConfigError
from siamkit.losses.base import create_loss
from siamkit.models.registry import create_backbone


@pytest.mark.parametrize(
    ("params", "miner_params", "match"),
    [
        ({"margin": -1.0}, None, r"loss.params.margin must be a number ≥ 0 .*-1.0"),
        ({"margin": [1, 2]}, None, r"loss.params.margin must be a number ≥ 0 .*\[1, 2\]"),
        ({"margin": float("nan")}, None, "loss.params.margin must be a number"),
        ({}, {"neg_margin": -0.1}, "loss.miner_params.neg_margin must be a number ≥ 0"),
    ],
)
def test_a_bad_margin_is_refused(params, miner_params, match) -> None:
    with pytest.raises(ConfigError, match=match):
        create_loss("contrastive", params, "hard-pairs" if miner_params else None, miner_params)


def test_good_margins_still_build() -> None:
    assert create_loss("contrastive", {"margin": 0.0}) is not None
    assert create_loss("triplet", {"margin": 2}) is not None


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ({"widths": []}, r"widths must list each stage's channels"),
        ({"widths": "abc"}, r"widths must list each stage's channels"),
        ({"widths": [24, "x"]}, r"widths must be whole numbers above 0"),
        ({"widths": [24, 0]}, r"widths must be whole numbers above 0"),
        ({"pool_size": -3}, r"pool_size must be a whole number ≥ 1; got -3"),
        ({"neck": -1}, r"neck must be a whole number ≥ 0"),
    ],
)
def test_a_convnet_that_cannot_be_built_is_one_line(args, match) -> None:
    with pytest.raises(ConfigError, match=match):
        create_backbone("convnet", in_channels=1, **args)


def test_freezing_a_random_backbone_is_said(caplog) -> None:
    from siamkit.config import load_config
    from siamkit.training.pipeline import prepare_data

    with caplog.at_level(logging.WARNING):
        prepare_data(load_config(None, ["train.freeze_backbone=true", "data.limit=300"]))
    assert any("random initial weights" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        prepare_data(load_config(None, ["data.limit=300"]))
    assert not any("random initial weights" in r.getMessage() for r in caplog.records)
