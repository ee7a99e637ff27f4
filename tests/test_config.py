from __future__ import annotations

import pytest

from siamkit.config import RunConfig, dump_config, load_config
from siamkit.errors import ConfigError


def test_defaults_overrides_and_round_trip(tmp_path):
    cfg = load_config(None, ["train.lr=3e-4", "model.backbone_args={widths: [8, 16]}", "data.image_size=16"])
    assert cfg.train.lr == pytest.approx(3e-4) and cfg.model.backbone_args == {"widths": [8, 16]}
    dump_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again == cfg
    assert isinstance(again, RunConfig)


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="'train.lrr'"):
        load_config(None, ["train.lrr=0.1"])
    with pytest.raises(ConfigError, match="'nope'"):
        load_config(None, ["nope=1"])


def test_unknown_key_in_yaml(tmp_path):
    (tmp_path / "c.yaml").write_text("train:\n  epochs: 3\n  batchsize: 8\n")
    with pytest.raises(ConfigError, match="'train.batchsize'"):
        load_config(tmp_path / "c.yaml")


def test_type_errors():
    with pytest.raises(ConfigError, match="'train.epochs' must be an integer"):
        load_config(None, ["train.epochs=many"])
    with pytest.raises(ConfigError, match="'model.normalize' must be true or false"):
        load_config(None, ["model.normalize=3"])
    assert load_config(None, ["data.image_size=null"]).data.image_size is None
    with pytest.raises(ConfigError, match="must look like"):
        load_config(None, ["train.epochs"])


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_a_yaml_key_given_twice_is_refused_with_both_lines(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lr: 0.1\n  epochs: 2\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match=r"line 4: key 'lr' is given twice \(first on line 2\)"):
        load_config(p)
    p.write_text("train:\n  lr: 0.1\nloss:\n  name: triplet\n")  # the same key in two sections is fine
    assert load_config(p).train.lr == 0.1
    p.write_text("train: !!python/object/apply:os.system ['true']\n")  # still no object-building tags
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
