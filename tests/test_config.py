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


# ---- the second bad-input round (issue 30): unreadable, unbounded or nonsensical YAML; names checked at load ----
def _laughs(levels: int = 8, width: int = 10) -> str:
    return "".join(f"    l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]\n" for i in range(1, levels + 1))


def test_a_config_file_that_is_not_utf8_is_one_line_naming_it(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_bytes(b"train:\n  lr: 0.1\n  # caf\xe9\n")
    with pytest.raises(ConfigError, match=r"c.yaml: not UTF-8 text \(byte 24 cannot be decoded\)"):
        load_config(p)
    p.write_bytes(b"\xef\xbb\xbftrain:\n  lr: 0.1\n")  # a byte-order mark is fine
    assert load_config(p).train.lr == 0.1


@pytest.mark.parametrize("opening, closing", [("[", "]"), ("{a: ", "}")])
def test_5000_deep_nesting_is_refused_before_the_stack_runs_out(tmp_path, opening, closing):
    p = tmp_path / "c.yaml"
    p.write_text(
        "model:\n  backbone_args:\n    x: " + opening * 5000 + ("1" if "a" in opening else "") + closing * 5000
    )
    with pytest.raises(ConfigError, match="nested more than 64 levels deep") as info:
        load_config(p)
    assert str(p) in str(info.value)
    with pytest.raises(ConfigError, match="model.backbone_args.*nested more than 64"):
        load_config(None, ["model.backbone_args={x: " + "[" * 5000 + "]" * 5000 + "}"])


def test_an_alias_bomb_in_a_dict_typed_key_is_refused_at_once(tmp_path):
    """1 kB of ``&l{i} [*l{i-1} × 10]`` lines would expand to 10⁸ values inside ``model.backbone_args``: refused
    from the composed node graph (no value is built), in well under a second."""
    import time

    p = tmp_path / "c.yaml"
    p.write_text("model:\n  backbone_args:\n    l0: &l0 [lol]\n" + _laughs())
    assert p.stat().st_size < 1200
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="aliases expand to more than 100,000 values"):
        load_config(p)
    assert time.perf_counter() - start < 1.0
    laughs = ", ".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9))
    with pytest.raises(ConfigError, match="override model.backbone_args.*aliases expand"):
        load_config(None, [f"loss.params={{l0: &l0 [lol], {laughs}}}".replace("loss.params", "model.backbone_args")])


def test_an_alias_to_its_own_collection_is_refused(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  backbone_args: &a {widths: [8], me: *a}\n")
    with pytest.raises(ConfigError, match="refers to the collection that holds it"):
        load_config(p)


def test_ordinary_aliases_still_work(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lr: &lr 0.01\n  backbone_lr: *lr\nmodel:\n  backbone_args: &w {widths: [8, 16]}\n")
    cfg = load_config(p)
    assert cfg.train.backbone_lr == cfg.train.lr == 0.01 and cfg.model.backbone_args == {"widths": [8, 16]}


def test_a_huge_config_file_is_refused_unread(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    with pytest.raises(ConfigError, match="is no config file"):
        load_config(p)


@pytest.mark.parametrize("std", ["[0]", "[1e-12]", "[0.0009]", "[.nan]", "[.inf]", "[-0.2]"])
def test_a_std_near_zero_is_refused_naming_the_key(std):
    with pytest.raises(ConfigError, match="'data.std'"):
        load_config(None, [f"data.std={std}"])
    assert load_config(None, ["data.std=[0.001]"]).data.std == [0.001]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.optimizer=adamm"], "unknown train.optimizer 'adamm'"),
        (["train.scheduler=linear"], "unknown train.scheduler 'linear'"),
        (["train.monitor=auc"], "unknown train.monitor 'auc'"),
        (["eval.distance=manhattan"], "unknown distance 'manhattan'"),
        (["data.split=weird"], "unknown data.split 'weird'"),
        (["recipe=weird"], "unknown recipe 'weird'"),
        (["loss.name=nope"], "unknown loss 'nope'"),
        (["loss.name=triplet", "loss.miner=nope"], "unknown miner 'nope'"),
        (["loss.params={marginn: 1}"], "no option 'marginn'"),
        (["loss.name=triplet", "loss.params={marginn: 1}"], "loss 'triplet' has no option 'marginn'"),
        (["loss.params={margin: -1}"], "loss.params.margin must be a number ≥ 0"),
        (["model.backbone=nope"], "unknown backbone 'nope'"),
        (["train.unfreeze_epoch=2"], "train.freeze_backbone is false"),
        (["data.mean=[0.5, 0.5]"], "'data.mean' needs 1 or 3 values"),
        (["data.channels=1", "data.std=[0.2, 0.2, 0.2]"], "'data.std' needs 1 values"),
        (["loss.name=triplet", "loss.miner_params={margin: 1}"], "loss.miner_params is set but loss.miner is not"),
        (["recipe=closed-set", "loss.ssl_weight=1"], "data.augment.enabled=true"),
    ],
)
def test_names_and_combinations_are_checked_before_a_run_reads_data(overrides, message):
    from siamkit.checks import check_names

    with pytest.raises(ConfigError, match=message):
        check_names(load_config(None, overrides))


def test_names_a_recipe_may_still_set_are_left_to_it():
    """Keyword arguments that some loss a recipe may choose accepts, a self-supervised term whose augmentation the
    auto recipe may turn on, and plugin names (imported only when built) pass the checks."""
    from siamkit.checks import check_names

    for overrides in (["loss.params={base: 0.5}"], ["loss.ssl_weight=1"],  # multi-similarity's; auto may augment
                      ["loss.name=mypkg.losses:Mine", "model.backbone=mypkg.nets:Net"]):  # fmt: skip
        check_names(load_config(None, overrides))


@pytest.mark.parametrize("device, message", [("cuda:7", "cuda:7"), ("gpu9", "train.device"), ("cuda:-1", "device")])
def test_check_device_refuses_a_device_this_machine_lacks(device, message):
    import torch

    from siamkit.checks import check_device

    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    cfg = load_config(None, [f"train.device={device}"])  # the device is machine-dependent: not refused at load
    with pytest.raises(ConfigError, match=message) as info:
        check_device(cfg)
    assert "\n" not in str(info.value)
    check_device(load_config(None, ["train.device=cpu"]))
    check_device("auto")
