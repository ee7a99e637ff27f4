"""The config resolved once, on a copy, with where each value came from; a run's Plan; configs built in Python
and typed keyword values behave as a YAML file's keys do."""

from __future__ import annotations

import json

import pytest
import yaml

from siamkit.config import RunConfig, given_keys, load_config, to_dict
from siamkit.errors import ConfigError


def test_a_config_built_in_python_counts_its_changed_keys_as_given(tmp_path):
    cfg = RunConfig()
    cfg.train.epochs = 3
    cfg.loss.params = {"margin": 0.3}
    from_python = load_config(cfg)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"train": {"epochs": 3}, "loss": {"params": {"margin": 0.3}}}))
    from_yaml = load_config(path)
    assert to_dict(from_python) == to_dict(from_yaml)
    assert from_python.explicit_keys == from_yaml.explicit_keys == {"train.epochs", "loss.params"}  # type: ignore[attr-defined]
    assert given_keys(RunConfig()) == {}


def test_typed_values_are_used_as_they_are_and_checked():
    cfg = load_config(None, values={"train.lr": 3e-4, "eval.threshold": "fpr:0.001", "loss.params": {"margin": 0.25}})
    assert cfg.train.lr == 3e-4 and cfg.eval.threshold == "fpr:0.001" and cfg.loss.params == {"margin": 0.25}
    # a string is a string: the YAML round trip read "1e-3" without a dot as a string and "no" as False
    assert load_config(None, values={"name": "no"}).name == "no"
    with pytest.raises(ConfigError, match="train.lrr"):
        load_config(None, values={"train.lrr": 1})
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(None, values={"train.epochs": "many"})


def test_prepare_resolves_a_copy_and_says_where_each_value_came_from():
    from siamkit.plan import prepare

    cfg = load_config(None, ["data.limit=300", "train.epochs=1", "data.split=identity"])
    before = to_dict(cfg)
    plan = prepare(cfg)
    assert to_dict(cfg) == before, "prepare must not change the config it was given"
    sources = plan.prepared.sources
    assert {k: sources[k] for k in ("data.limit", "train.epochs", "data.split")} == dict.fromkeys(
        ("data.limit", "train.epochs", "data.split"), "user"
    )
    resolved = plan.cfg
    assert resolved.data.mean is not None and sources["data.mean"] == "the training images"
    assert resolved.data.channels == 1 and sources["data.channels"] == "the training images"
    recipe_keys = [k for k, v in sources.items() if v.startswith("recipe ")]
    assert sources["recipe"] == f"recipe {resolved.recipe}" and resolved.recipe != "auto"
    for key in recipe_keys:  # a recipe's value is a value the run holds, and never overrides the user's
        assert key not in {"data.limit", "train.epochs", "data.split"}
    assert plan.model is not plan.untrained and plan.loss.input_kind in ("labels", "pairs", "triplets")
    assert plan.train_batches is not None and plan.val_batches is not None


def test_the_same_config_prepares_the_same_initial_weights():
    import torch

    from siamkit.plan import prepare

    cfg = load_config(None, ["data.limit=200"])
    a, b = prepare(cfg).model.state_dict(), prepare(cfg).model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_writes_where_its_config_came_from(tmp_path):
    import siamkit

    cfg = RunConfig()
    cfg.train.epochs = 1
    cfg.data.limit = 200
    cfg.runs_dir = str(tmp_path)
    cfg.eval.n_pairs = 200
    cfg.eval.tsne_points = 0
    cfg.train.progress = False
    model = siamkit.train(cfg, name="from-python", log=False)  # a RunConfig, not a TypeError
    run = tmp_path / "from-python"
    sources = json.loads((run / "config-sources.json").read_text())
    assert sources["train.epochs"] == "user" and sources["name"] == "user"
    assert sources["data.mean"] == "the training images"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["mean"] is not None and saved["train"]["epochs"] == 1
    assert model.result["epochs_run"] == 1
