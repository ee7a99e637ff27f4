"""Every loss trains end to end (with and without online mining); a user's loss and miner by dotted path;
the default-recipe config rules."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import yaml

from siamkit.cli import main
from siamkit.config import load_config

QUICK = ["--epochs", "1", "--set", "data.limit=500", "--set", "eval.n_pairs=300", "--set", "train.progress=false"]


def _train(tmp_path, capsys, *extra):
    code = main(["train", "--runs-dir", str(tmp_path / "runs"), "--format", "json", "-q", *QUICK, *extra])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize(
    "loss,miner",
    [
        ("contrastive", "hard-pairs"), ("contrastive", None), ("triplet", "semi-hard"), ("triplet", "batch-hard"),
        ("triplet", None), ("fdt", "batch-hard"), ("fdt", None), ("fdc", "all-pairs"), ("fdc", None),
        ("bce", "batch-hard-pairs"), ("bce", None), ("huber", "hard-pairs"), ("normalized-softmax", None),
        ("arcface", None), ("cosface", None), ("multi-similarity", None),
    ],
)  # fmt: skip
def test_every_loss_trains_on_digits(tmp_path, capsys, loss, miner):
    # 2 epochs on all of digits; "trains" = clearly better than the same network before training, on the same
    # test images and pairs (an untrained network already scores AUC ≈ 0.8 on digits)
    m = _train(tmp_path, capsys, "--loss", loss, "--set", f"loss.miner={miner or 'null'}", "--epochs", "2",
               "--set", "data.limit=null")  # fmt: skip
    untrained = m["baselines"]["untrained"]["test"]
    assert m["best_epoch"] >= 1 and m["images_per_second"] > 0
    assert m["test"]["map_at_r"] > untrained["map_at_r"] + 0.03, (m["test"]["map_at_r"], untrained["map_at_r"])
    cfg = yaml.safe_load((tmp_path / "runs" / "default" / "config.yaml").read_text())
    assert cfg["loss"]["name"] == loss and cfg["loss"]["miner"] == miner
    if loss == "normalized-softmax":  # filled in from the data and the model
        assert m["trainable_parameters"] > 0


def test_user_loss_and_miner_by_dotted_path(tmp_path, capsys, monkeypatch):
    (tmp_path / "my_metric.py").write_text(
        textwrap.dedent('''
        import torch
        from siamkit.losses import SiameseLoss
        from siamkit.data.batch import LabelBatch
        from siamkit.losses.miners import Miner, PairIndices

        class ScaledCosine(SiameseLoss):
            """1 − cos for positives, scale·max(0, cos) for negatives, on mined pairs."""
            tuple_kind = "pairs"
            calls = 0

            def __init__(self, scale: float = 1.0):
                super().__init__()
                self.scale = scale

            def forward(self, model, batch):
                type(self).calls += 1
                e = torch.nn.functional.normalize(model.embed(batch.x), dim=1)
                m = self.mine_pairs(e @ e.T, batch.labels)
                cos = (e[m.i] * e[m.j]).sum(1)
                return torch.where(m.y > 0, 1 - cos, self.scale * cos.clamp_min(0)).mean()

        class EveryPair(Miner):
            output = "pairs"

            def __call__(self, dist, labels):
                i, j = torch.triu_indices(len(labels), len(labels), 1)
                return PairIndices(i, j, (labels[i] == labels[j]).long())
    ''')
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    m = _train(tmp_path, capsys, "--loss", "my_metric:ScaledCosine", "--set", "loss.params={scale: 2.0}",
               "--set", "loss.miner=my_metric:EveryPair", "--epochs", "2", "--set", "data.limit=null")  # fmt: skip
    assert m["best_epoch"] >= 1 and m["test"]["map_at_r"] > m["baselines"]["untrained"]["test"]["map_at_r"] + 0.03
    assert sys.modules["my_metric"].ScaledCosine.calls > 0
    code = main(["train", "--runs-dir", str(tmp_path / "r2"), *QUICK, "--loss", "my_metric:ScaledCosine",
                 "--set", "loss.params={scael: 2.0}"])  # fmt: skip
    assert code == 2 and "'scael'" in capsys.readouterr().err


def test_another_loss_starts_from_its_own_defaults(tmp_path):
    default = load_config()
    assert default.loss.name == "contrastive" and default.loss.miner == "hard-pairs"
    assert default.loss.params == {"margin": 0.5} and default.loss.miner_params == {}
    other = load_config(None, ["loss.name=triplet"])
    assert other.loss.params == {} and other.loss.miner is None and other.loss.miner_params == {}
    kept = load_config(None, ["loss.name=triplet", "loss.miner=semi-hard", "loss.params={margin: 0.3}"])
    assert kept.loss.miner == "semi-hard" and kept.loss.params == {"margin": 0.3}
    (tmp_path / "c.yaml").write_text("loss:\n  name: fdt\n  params: {lam: 0.1}\n")
    from_file = load_config(tmp_path / "c.yaml")
    assert from_file.loss.params == {"lam": 0.1} and from_file.loss.miner is None
    (tmp_path / "d.yaml").write_text("train:\n  epochs: 2\n")
    assert load_config(tmp_path / "d.yaml").loss.miner == "hard-pairs"
