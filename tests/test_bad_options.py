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
    from siamkit.plan import prepare_data

    with caplog.at_level(logging.WARNING):
        prepare_data(load_config(None, ["train.freeze_backbone=true", "data.limit=300"]))
    assert any("random initial weights" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        prepare_data(load_config(None, ["data.limit=300"]))
    assert not any("random initial weights" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("raw", [2.9, True, float("inf"), "1e400", [3], None, "2.5"])
def test_http_k_must_be_a_whole_number(raw) -> None:
    from types import SimpleNamespace

    from fastapi import HTTPException

    from siamkit.serve.routes import int_field
    from siamkit.serve.uploads import Payload

    with pytest.raises(HTTPException) as err:
        int_field(Payload({}, {"k": raw}), SimpleNamespace(query_params={}), "k", 10, low=1, high=100)  # type: ignore[arg-type]
    assert err.value.status_code == 422 and "k must be an integer" in err.value.detail
    assert int_field(Payload({}, {"k": " 7"}), SimpleNamespace(query_params={}), "k", 10, low=1, high=100) == 7  # type: ignore[arg-type]
    assert int_field(Payload({}, {"k": 3}), SimpleNamespace(query_params={}), "k", 10, low=1, high=100) == 3  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["serve", "RUN", "--max-pixels", "-1"], "--max-pixels at least 1"),
        (["serve", "RUN", "--max-request-mb", "0"], "--max-request-mb must be above 0"),
        (["serve", "RUN", "--port", "70000"], "--port must be 0–65535"),
        (["calibrate", "RUN", "--data", "X", "--pairs-per-kind", "0"], "--pairs-per-kind must be at least 1"),
    ],
)
def test_serve_and_calibrate_limits_are_one_line(small_run, argv, match, capsys) -> None:
    from siamkit.cli import main

    assert main([str(small_run) if a == "RUN" else a for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1
