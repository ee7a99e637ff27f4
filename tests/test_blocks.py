"""BaseCNN blocks A–E: exact parameter counts, block strings, forward/backward, summary; transfer learning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from siamkit.cli import main
from siamkit.errors import ConfigError
from siamkit.models import SiameseNet, create_backbone
from siamkit.models.blocks import BLOCK_KINDS, BaseCNN, parse_blocks
from siamkit.models.summary import parse_input, summarize, summarize_named
from siamkit.models.transfer import backbone_stages, param_groups

REPORTED = {"A": 7_771_658, "B": 7_774_226, "C": 7_901_354, "D": 7_935_498, "Ddw": 1_139_338, "E": 752_266}


@pytest.mark.parametrize("kind", sorted(REPORTED))
def test_parameter_counts_equal_the_reported_ones(kind):
    net = BaseCNN(kind * 8 if kind != "Ddw" else "Ddw" * 8)
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == REPORTED[kind]


@pytest.mark.parametrize("kind", sorted(REPORTED))
def test_summary_prints_the_reported_counts(capsys, kind):
    assert main(["summary", kind]) == 0
    out = capsys.readouterr().out
    assert f"total parameters: {REPORTED[kind]:,}   trainable: {REPORTED[kind]:,}   frozen: 0" in out
    assert main(["summary", kind, "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["trainable_params"] == REPORTED[kind] and d["input_shape"] == [3, 32, 32]
    assert d["layers"][-1]["output_shape"] == [10]
    # every parameter is in exactly one row
    assert sum(r["params"] for r in d["layers"]) == REPORTED[kind]


def test_only_stem_convs_and_gate_carry_a_bias():
    net = BaseCNN("ABCDEDdwAB")
    with_bias = [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d) and m.bias is not None]
    assert with_bias == ["stem.0", "stem.3", "stem.6", "blocks.1.gate.0", "blocks.9.gate.0"]


def test_block_strings():
    assert parse_blocks("A") == ["A"] * 8
    assert parse_blocks("Ddw") == ["Ddw"] * 8
    assert parse_blocks("ABCDDdwEAB") == ["A", "B", "C", "D", "Ddw", "E", "A", "B"]
    assert parse_blocks(["A", "B", "C", "D", "E", "A", "B", "C"])[4] == "E"
    for bad in ("AAF", "AAAA", "", "dw", "AAAAAAAAA"):
        with pytest.raises(ConfigError):
            parse_blocks(bad)


@pytest.mark.parametrize("kind", BLOCK_KINDS)
def test_every_block_forward_backward(kind):
    net = BaseCNN(kind)
    x = torch.randn(2, 3, 32, 32)
    logits = net(x)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    assert net.features(x).shape == (2, 512)
    logits.logsumexp(1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_output_sizes_halve_after_blocks_2_4_7():
    s = summarize(BaseCNN("A"), (3, 32, 32))
    shapes = {r.name: r.output_shape for r in s.layers}
    assert shapes["blocks.3"] == [256, 16, 16]  # the pool after block 2 (128 → 256)
    assert shapes["blocks.6"] == [256, 8, 8]
    assert shapes["blocks.10"] == [512, 4, 4]
    conv = next(r for r in s.layers if r.name == "stem.0")
    assert conv.arithmetic == "⌊(32 + 2·1 − 3)/1⌋ + 1 = 32"


def test_basecnn_as_a_siamese_encoder():
    net = SiameseNet(create_backbone("basecnn", in_channels=3, blocks="E"), embedding_dim=32)
    assert net.embed(torch.randn(3, 3, 32, 32)).shape == (3, 32)
    assert not any(isinstance(m, nn.Linear) and m.out_features == 10 for m in net.modules())


def test_summary_of_a_backbone_counts_frozen_parameters():
    net = SiameseNet(create_backbone("convnet", in_channels=1), embedding_dim=16)
    net.freeze_backbone()
    s = summarize(net, (1, 28, 28), "convnet")
    head = 512 * 16 + 16  # the embedding head on the 512-wide neck
    assert s.trainable_params == head and s.frozen_params == s.total_params - head
    assert summarize_named("convnet", embedding_dim=16).trainable_params == s.total_params
    assert parse_input("3x64x48") == (3, 64, 48)
    with pytest.raises(ConfigError, match="CxHxW"):
        parse_input("64x64")


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _step(net: SiameseNet, opt: torch.optim.Optimizer) -> None:
    x = torch.randn(8, 1, 28, 28)
    net.train()
    loss = net.embed(x).pow(2).sum() + net(x, x.flip(0)).sum()
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_freezing_really_freezes_and_unfreezing_works():
    net = SiameseNet(create_backbone("convnet", in_channels=1), embedding_dim=16)
    net.freeze_backbone()
    opt = torch.optim.Adam(param_groups(net, 1e-2, 1e-3, []), lr=1e-2)
    before = _snapshot(net.backbone)
    head_before = net.head.weight.detach().clone()
    _step(net, opt)
    after = _snapshot(net.backbone)
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN running stats
    assert all(p.grad is None for p in net.backbone.parameters())
    assert all(p not in opt.state for p in net.backbone.parameters())
    assert not torch.equal(head_before, net.head.weight)
    # unfreeze the last stage only: that stage moves, the rest stays
    stages = backbone_stages(net.backbone)
    net.unfreeze_backbone(last_stages=1)
    last = {id(p) for p in stages[-1].parameters()}
    assert all(p.requires_grad == (id(p) in last) for p in net.backbone.parameters())
    _step(net, opt)
    moved = [not torch.equal(a, b) for a, b in zip(before.values(), _snapshot(net.backbone).values())]
    assert any(moved)
    assert all(torch.equal(p, before[n]) for n, p in net.backbone.named_parameters() if id(p) not in last)
    # unfreeze all: everything trains, with the backbone's own learning rate
    net.unfreeze_backbone()
    assert all(p.requires_grad for p in net.parameters())
    groups = {g["name"]: g["lr"] for g in opt.param_groups}
    assert groups == {"head": 1e-2, "backbone": 1e-3}


def test_stages_of_each_backbone():
    assert len(backbone_stages(create_backbone("basecnn", blocks="A"))) == 9
    assert len(backbone_stages(create_backbone("resnet18"))) == 5
    assert len(backbone_stages(create_backbone("efficientnet_b0"))) == 9
    convnet = backbone_stages(create_backbone("convnet", in_channels=1))
    assert len(convnet) == 4  # three conv stages and the neck


def test_train_run_with_a_frozen_backbone_keeps_it(tmp_path):
    from siamkit.config import load_config
    from siamkit.models.siamese import build_model
    from siamkit.runs.artifact import load_run
    from siamkit.training.checkpoint import load_state
    from siamkit.training.pipeline import train_run

    common = ["train.epochs=2", "train.progress=false", f"runs_dir={tmp_path}", "eval.n_pairs=200"]
    cfg = load_config(None, [*common, "name=frozen", "train.freeze_backbone=true"])
    r = train_run(cfg)
    torch.manual_seed(cfg.train.seed)
    fresh = build_model(cfg.model, 1)
    trained = load_run(r["run_dir"]).model
    for k, v in fresh.backbone.state_dict().items():
        assert torch.equal(v, trained.backbone.state_dict()[k]), k
    assert not torch.equal(fresh.head.weight, trained.head.weight)
    cfg2 = load_config(None, [*common, "name=thaw", "train.freeze_backbone=true", "train.unfreeze_epoch=2",
                              "train.backbone_lr=1e-4"])  # fmt: skip
    r2 = train_run(cfg2)
    last = load_state(Path(r2["run_dir"]) / "last.pt")["model"]  # the weights after epoch 2, not the best
    assert any(not torch.equal(v, last[f"backbone.{k}"]) for k, v in fresh.backbone.state_dict().items())
    with pytest.raises(ConfigError, match="freeze_backbone"):
        train_run(load_config(None, [*common, "name=bad", "train.unfreeze_epoch=2"]))
