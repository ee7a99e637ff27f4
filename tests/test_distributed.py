"""Distributed training on gloo/CPU, two processes spawned by the test: one DDP step on a fixed global batch
equals one single-process step on that batch (loss and parameters); distributed evaluation of a set whose size
the world size does not divide gives exactly the single-process embeddings and metrics; torchrun end to end."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from siamkit.config import EvalConfig
from siamkit.data.batch import LabelBatch, PairBatch, TripletBatch
from siamkit.data.imageset import ImageSet
from siamkit.data.transforms import Preprocess
from siamkit.distributed import DistInfo, Gatherer, gather_embeddings, shard, wrap_model
from siamkit.evaluate.evaluator import evaluate_split
from siamkit.losses import create_loss
from siamkit.models import SiameseNet, create_backbone

WORLD = 2
# (loss, params, miner, batch kind): triplet with batch-hard mining and FDT as the issue names them, plus the
# losses with parameters after the gather (sigmoid head, proxies) and FDT/FDC on fixed tuples.
CASES = [
    ("triplet", {"margin": 0.2}, "batch-hard", "labels"),
    ("fdt", {"alpha": 5.0}, "batch-hard", "labels"),
    ("fdt", {"alpha": 5.0}, None, "triplets"),
    ("fdc", {"alpha": 5.0}, None, "pairs"),
    ("contrastive", {"margin": 1.0}, "hard-pairs", "labels"),
    ("bce", {}, "all-pairs", "labels"),
    ("normalized-softmax", {"num_classes": 4, "embedding_dim": 8}, None, "labels"),
]


def _model(sigmoid: bool) -> SiameseNet:
    torch.manual_seed(0)
    # no BatchNorm and no dropout: each rank's forward equals that of its rows in the global batch
    backbone = create_backbone("seed_cnn", in_channels=1, filters=6, dropout=0.0)
    return SiameseNet(backbone, embedding_dim=8, normalize=True, sigmoid_head=sigmoid)


def _batch(kind: str, rank: int | None):
    """The fixed global batch (16 rows), or rank ``rank``'s contiguous share of it."""
    g = torch.Generator().manual_seed(1)
    x = [torch.randn(16, 1, 8, 8, generator=g) for _ in range(3)]
    labels = torch.arange(4).repeat_interleave(4)
    y = (torch.arange(16) % 2).float()
    sl = slice(None) if rank is None else shard(16, rank, WORLD)
    if kind == "labels":
        return LabelBatch(x[0][sl], labels[sl])
    if kind == "pairs":
        return PairBatch(x[0][sl], x[1][sl], y[sl])
    return TripletBatch(x[0][sl], x[1][sl], x[2][sl])


def _step(case, rank: int | None, info: DistInfo | None) -> tuple[float, dict[str, torch.Tensor]]:
    name, params, miner, kind = case
    model = _model(sigmoid=name == "bce")
    torch.manual_seed(2)
    loss_fn = create_loss(name, dict(params), miner)
    view = model
    if info is not None:
        loss_fn.gather = Gatherer(info)
        view = wrap_model(model, info, torch.device("cpu"))
    opt = torch.optim.SGD([*model.parameters(), *loss_fn.parameters()], lr=0.5)
    loss = loss_fn(view, _batch(kind, rank))
    opt.zero_grad()
    loss.backward()
    opt.step()
    state = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    state.update({f"loss.{k}": v.detach().clone() for k, v in loss_fn.state_dict().items()})
    return float(loss.detach()), state


def _rank_draws(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An augmented batch and a dropout mask, drawn after the seeding ``train_run`` does on each rank."""
    from siamkit.config import AugmentConfig
    from siamkit.training.pipeline import seed_rank

    pre = Preprocess([0.5], [0.25], AugmentConfig(enabled=True, hflip=0.5, brightness=0.3), seed=0)
    seed_rank(0, rank, pre)
    x = torch.full((4, 1, 8, 8), 128, dtype=torch.uint8)
    x[:, :, :, :4] = 255
    return pre(x, train=True), torch.nn.functional.dropout(torch.ones(64), 0.5)


def _worker(rank: int, rdv: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rdv}", rank=rank, world_size=WORLD)
    info = DistInfo(rank, WORLD, rank)
    results = {str(i): _step(case, rank, info) for i, case in enumerate(CASES)}
    # distributed evaluation: 23 images on 2 ranks (DistributedSampler pads one duplicate)
    model = _model(False).eval()
    images = ImageSet(torch.randint(0, 256, (23, 1, 8, 8), generator=torch.Generator().manual_seed(3),
                                    dtype=torch.uint8), np.arange(23) % 4, [])  # fmt: skip
    ev = evaluate_split(model, images, None, Preprocess([0.5], [0.25]), EvalConfig(n_pairs=40, n_triplets=30,
                        batch_size=5), threshold=None, seed=4)  # fmt: skip
    emb = gather_embeddings(lambda idx: torch.stack([idx.float(), -idx.float()], 1), 23, info)
    torch.save({"steps": results, "eval": ev.metrics, "order": emb, "draws": _rank_draws(rank)}, f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def distributed_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(str(tmp / "rdv"), str(tmp / "out")), nprocs=WORLD, join=True)
    return [torch.load(tmp / f"out.{r}", weights_only=True) for r in range(WORLD)]


@pytest.mark.parametrize("i", range(len(CASES)), ids=[f"{c[0]}-{c[2] or c[3]}" for c in CASES])
def test_one_ddp_step_equals_one_step_on_the_global_batch(distributed_results, i):
    want_loss, want = _step(CASES[i], None, None)
    for rank in range(WORLD):
        loss, got = distributed_results[rank]["steps"][str(i)]
        assert loss == pytest.approx(want_loss, rel=1e-5, abs=1e-6)
        assert set(got) == set(want)
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-6, msg=f"rank {rank}: {k}")
    before = {f"model.{k}": v for k, v in _model(CASES[i][0] == "bce").state_dict().items()}
    assert any(not torch.equal(before[k], want[k]) for k in before)  # the step did move the parameters


def test_distributed_evaluation_equals_single_process(distributed_results):
    model = _model(False).eval()
    images = ImageSet(torch.randint(0, 256, (23, 1, 8, 8), generator=torch.Generator().manual_seed(3),
                                    dtype=torch.uint8), np.arange(23) % 4, [])  # fmt: skip
    ev = evaluate_split(model, images, None, Preprocess([0.5], [0.25]), EvalConfig(n_pairs=40, n_triplets=30,
                        batch_size=5), threshold=None, seed=4)  # fmt: skip
    for rank in range(WORLD):
        got = distributed_results[rank]["eval"]
        for key in ("auc", "eer", "precision_at_1", "map_at_r", "r_precision", "similarity_accuracy"):
            assert got[key] == ev.metrics[key], key
        order = distributed_results[rank]["order"]
        assert torch.equal(order[:, 0], torch.arange(23).float())  # in order, padding duplicate dropped


def test_ranks_draw_their_own_augmentations_and_dropout(distributed_results):
    aug = [distributed_results[r]["draws"][0] for r in range(WORLD)]
    drop = [distributed_results[r]["draws"][1] for r in range(WORLD)]
    assert not torch.equal(aug[0], aug[1]) and not torch.equal(drop[0], drop[1])
    single_aug, single_drop = _rank_draws(0)  # rank 0 keeps the run's seed: the same draws as one process
    assert torch.equal(aug[0], single_aug) and torch.equal(drop[0], single_drop)


def test_shards_cover_the_batch():
    for n in (16, 17, 3):
        parts = [shard(n, r, 3) for r in range(3)]
        assert [i for p in parts for i in range(n)[p]] == list(range(n))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="no torchrun")
def test_torchrun_trains_and_rank0_writes(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [torchrun, "--nproc_per_node=2", f"--master_port={_free_port()}", "--master_addr=127.0.0.1", "-m",
           "siamkit", "train", "--epochs", "2", "--runs-dir", str(tmp_path), "--name", "ddp", "--format", "json",
           "--set", "eval.n_pairs=300", "--set", "train.progress=false"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1  # rank 0 alone reports
    result = json.loads(lines[0])
    assert result["world_size"] == 2 and result["epochs_run"] == 2 and result["best_epoch"] >= 1
    untrained = result["baselines"]["untrained"]["test"]  # ≈ AUC 0.80 already: learning is the gain over it
    assert result["test"]["map_at_r"] > untrained["map_at_r"] + 0.05
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]
    m = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert m["world_size"] == 2 and (tmp_path / "ddp" / "model.safetensors").is_file()
