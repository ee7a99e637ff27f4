"""Every registered loss, miner and distance, built by its name and run on a tiny batch (parametrised over the
registries, so a new one is picked up); pair losses on every registered distance against plain loops; the base's
template (what reaches ``compute``) and ``score_all``; a loss of one's own as one file."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from test_mining import FeatureInput  # a backbone passing its input through: the test sets the features

import siamkit
from siamkit.data.batch import LabelBatch, PairBatch, TripletBatch
from siamkit.distances import DISTANCES, as_dissimilarity, get_distance
from siamkit.errors import ConfigError
from siamkit.losses import LOSSES, MINERS, SiameseLoss, TripletIndices, create_loss, create_miner
from siamkit.losses.base import NEEDS
from siamkit.losses.embedded import Embedded
from siamkit.losses.functional import contrastive_loss
from siamkit.models.siamese import SiameseNet

CONTEXT = {"num_classes": 3, "embedding_dim": 4}
LABELS = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 1, 2])


def tiny_model(normalize: bool = False) -> SiameseNet:
    torch.manual_seed(0)
    return SiameseNet(FeatureInput(5), 4, normalize=normalize, sigmoid_head=True).double()


def rows(seed: int, n: int = 6) -> torch.Tensor:
    return torch.randn(n, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def labelled() -> LabelBatch:
    return LabelBatch(rows(0, len(LABELS)), LABELS.clone())


def fixed(kind: str) -> PairBatch | TripletBatch:
    if kind == "pairs":
        return PairBatch(rows(1), rows(2), torch.tensor([1.0, 0, 1, 0, 0, 1], dtype=torch.float64))
    return TripletBatch(rows(1), rows(2), rows(3))


def plain_dist(u: torch.Tensor, v: torch.Tensor, name: str) -> float:
    """A dissimilarity (smaller = closer) by plain loops for the built-in distances; another registered one is
    taken from its own ``pairwise`` on the two rows (its formula is not known here)."""
    if name in ("cosine", "cosine_similarity"):
        dot = sum(float(a) * float(b) for a, b in zip(u, v, strict=True))
        cos = dot / math.sqrt(sum(float(a) ** 2 for a in u) * sum(float(b) ** 2 for b in v))
        return 1.0 - cos if name == "cosine" else -cos
    if name in ("euclidean", "squared_euclidean"):
        sq = sum((float(a) - float(b)) ** 2 for a, b in zip(u, v, strict=True))
        return sq if name == "squared_euclidean" else math.sqrt(sq)
    d = get_distance(name)
    return float(as_dissimilarity(d.pairwise(u[None], v[None]), d)[0])


def exercise(loss: SiameseLoss) -> list[float]:
    """Run ``loss`` on every batch it takes — its fixed tuples (or labelled batch) and, for each registered miner
    whose output it takes, a mined labelled batch: forward, backward, ``score_all``. The values it gave."""
    loss.double()
    setups = [None] + [m for m in MINERS.list() if create_miner(m).output in loss.miner_outputs]
    values = []
    for miner in setups:
        loss.set_miner(None if miner is None else create_miner(miner))
        net = tiny_model(normalize=True)
        batch = labelled() if loss.input_kind == "labels" else fixed(loss.input_kind)
        value = loss(net, batch)
        value.backward()
        assert torch.isfinite(value), (miner, float(value))
        assert net.head.weight.grad is not None, miner  # the loss reached the model
        with torch.no_grad():
            assert torch.isfinite(loss.score_all(net, batch)), miner
        values.append(float(value.detach()))
    loss.set_miner(None)
    return values


# --- every registry entry, by name --------------------------------------------------------------------------


@pytest.mark.parametrize("name", LOSSES.list())
def test_every_registered_loss_runs_on_embeddings(name):
    loss = create_loss(name, context=CONTEXT)
    # on embeddings: the base embeds, gathers and mines; the loss only computes
    assert type(loss).compute is not SiameseLoss.compute and type(loss).forward is SiameseLoss.forward
    assert set(loss.needs) <= set(NEEDS)
    assert any(v > 0 for v in exercise(loss))


@pytest.mark.parametrize("name", MINERS.list())
def test_every_registered_miner_picks_valid_tuples_that_a_loss_trains_on(name):
    miner = create_miner(name)
    emb = tiny_model().embed(labelled().x).detach()
    mined = miner(get_distance("euclidean").matrix(emb, emb), LABELS)
    assert len(mined) > 0
    if isinstance(mined, TripletIndices):
        for a, p, n in zip(mined.a.tolist(), mined.p.tolist(), mined.n.tolist(), strict=True):
            assert a != p and LABELS[a] == LABELS[p] and LABELS[n] != LABELS[a]
    else:
        for i, j, y in zip(mined.i.tolist(), mined.j.tolist(), mined.y.tolist(), strict=True):
            assert i != j and y == int(LABELS[i] == LABELS[j])
    loss = create_loss("triplet" if miner.output == "triplets" else "contrastive", miner=name).double()
    value = loss(tiny_model(normalize=True), labelled())
    value.backward()
    assert torch.isfinite(value)


@pytest.mark.parametrize("name", DISTANCES.list())
def test_every_registered_distance_agrees_with_a_loop_and_drives_a_triplet_loss(name):
    d = get_distance(name)
    a, b = rows(4, 5), rows(5, 7)
    m = d.matrix(a, b)
    assert m.shape == (5, 7)
    for i in range(5):
        for j in range(7):
            assert float(as_dissimilarity(m[i, j], d)) == pytest.approx(plain_dist(a[i], b[j], name), abs=1e-9)
    assert torch.allclose(d.pairwise(a, b[:5]), m.diagonal())
    assert torch.equal(d.score(m), m if d.higher_is_closer else -m)
    # a triplet loss with it: on fixed triplets against a loop over them, then on every batch it takes
    net = tiny_model(normalize=True)
    t = fixed("triplets")
    with torch.no_grad():
        ea, ep, en = (net.embed(x) for x in (t.a, t.p, t.n))
        got = float(create_loss("triplet", {"margin": 0.3, "distance": name})(net, t))
    want = sum(max(plain_dist(ea[k], ep[k], name) - plain_dist(ea[k], en[k], name) + 0.3, 0) for k in range(6)) / 6
    assert got == pytest.approx(want, rel=1e-9)
    assert exercise(create_loss("triplet", {"distance": name}))


# --- pair losses on any registered distance ------------------------------------------------------------------


def loop_pair_loss(name: str, d: list[float], y: list[int], net: SiameseNet) -> float:
    """Contrastive (margin 0.7), Huber-contrastive (margin 0.7, δ 0.5) or BCE on the model's head, by loops."""
    total = 0.0
    for dk, yk in zip(d, y, strict=True):
        if name == "contrastive":
            total += dk**2 if yk else max(0.0, 0.7 - dk) ** 2
        elif name == "huber":
            x = dk if yk else max(0.0, 0.7 - dk)
            total += 0.5 * x * x if abs(x) <= 0.5 else 0.5 * (abs(x) - 0.25)
        else:
            assert net.verifier is not None
            w, b = float(net.verifier.weight.detach().reshape(())), float(net.verifier.bias.detach().reshape(()))
            p = 1.0 / (1.0 + math.exp(-(w * dk + b)))
            total += -math.log(p) if yk else -math.log(1.0 - p)
    return total / len(d)


PAIR_PARAMS = {"contrastive": {"margin": 0.7}, "huber": {"margin": 0.7, "delta": 0.5}, "bce": {}}


@pytest.mark.parametrize("distance", DISTANCES.list())
@pytest.mark.parametrize("name", sorted(PAIR_PARAMS))
@pytest.mark.parametrize("mined", [False, True])
def test_pair_losses_take_any_registered_distance(name, distance, mined):
    params = {**PAIR_PARAMS[name], "distance": distance}
    if get_distance(distance).higher_is_closer and name != "bce":  # a hinge on squared distances needs a distance
        with pytest.raises(ConfigError, match="is a similarity"):
            create_loss(name, params)
        return
    loss = create_loss(name, params, "all-pairs" if mined else None).double()
    net = tiny_model(normalize=True)
    if mined:
        b = labelled()
        e = net.embed(b.x).detach()
        pairs = [(i, j) for i in range(len(LABELS)) for j in range(i + 1, len(LABELS))]
        d = [plain_dist(e[i], e[j], distance) for i, j in pairs]
        y = [int(LABELS[i] == LABELS[j]) for i, j in pairs]
        got = loss(net, b)
    else:
        p = fixed("pairs")
        assert isinstance(p, PairBatch)
        ea, eb = net.embed(p.a).detach(), net.embed(p.b).detach()
        d = [plain_dist(ea[k], eb[k], distance) for k in range(6)]
        y = [int(v) for v in p.y.tolist()]
        got = loss(net, p)
    assert float(got.detach()) == pytest.approx(loop_pair_loss(name, d, y, net), rel=1e-7)


def test_the_default_distance_keeps_the_euclidean_numbers():
    # contrastive's default is today's Euclidean: bit for bit the functional loss on Euclidean distances
    net, p = tiny_model(normalize=True), fixed("pairs")
    assert isinstance(p, PairBatch)
    want = contrastive_loss(net(p.a, p.b), p.y, 0.5)  # the model's own Euclidean distance
    got = create_loss("contrastive", {"margin": 0.5})(net, p)
    assert torch.equal(got, want)
    assert get_distance(get_distance("cosine")).name == "cosine"  # a Distance object passes through


# --- the template: what reaches compute ----------------------------------------------------------------------


class Spy(SiameseLoss):
    """Records the ``Embedded`` it is given; its value is the mean of the embeddings."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Embedded] = []

    def compute(self, emb: Embedded) -> torch.Tensor:
        self.seen.append(emb)
        return emb.embeddings.mean()


def spy(kind: str, needs: frozenset[str] = frozenset()) -> Spy:
    """A ``Spy`` taking ``kind`` batches, reading ``needs``."""
    return type(f"Spy_{kind}", (Spy,), {"tuple_kind": kind, "needs": needs})()


def test_fixed_tuples_reach_compute_as_index_tuples_over_their_stacked_embeddings():
    net = tiny_model()
    p, t = fixed("pairs"), fixed("triplets")
    assert isinstance(p, PairBatch) and isinstance(t, TripletBatch)
    loss = spy("pairs")
    loss(net, p)
    emb = loss.seen[-1]
    assert torch.equal(emb.embeddings, net.embed(torch.cat([p.a, p.b])))
    assert emb.pairs is not None and emb.labels is None and emb.matrix is None and emb.triplets is None
    assert emb.pairs.i.tolist() == list(range(6)) and emb.pairs.j.tolist() == list(range(6, 12))
    assert torch.equal(emb.pairs.y, p.y) and emb.distance.name == "euclidean" and emb.model is net
    loss = spy("triplets")
    loss(net, t)
    tr = loss.seen[-1].triplets
    assert tr is not None and (tr.a.tolist(), tr.p.tolist(), tr.n.tolist()) == (
        list(range(6)), list(range(6, 12)), list(range(12, 18))
    )  # fmt: skip
    with pytest.raises(TypeError, match="takes TripletBatch"):
        loss(net, p)
    with pytest.raises(TypeError, match="with a miner"):
        loss(net, labelled())  # no miner: nothing to pick triplets with


def test_mined_batches_reach_compute_with_the_miners_matrix_and_tuples():
    net, b = tiny_model(), labelled()
    loss = spy("pairs")
    loss.set_miner(create_miner("batch-hard"))  # a triplet miner for a pair loss: (a, p) and (a, n) as pairs
    loss(net, b)
    emb = loss.seen[-1]
    e = net.embed(b.x)
    assert torch.equal(emb.embeddings, e) and torch.equal(emb.labels, b.labels)
    assert emb.matrix is not None and torch.equal(emb.matrix, get_distance("euclidean").matrix(e, e))
    assert emb.pairs is not None and len(emb.pairs) == 2 * len(LABELS) and emb.pairs.y.sum() == len(LABELS)
    d, _ = emb.pair_distances()
    assert torch.equal(d, emb.matrix[emb.pairs.i, emb.pairs.j])


def test_a_loss_declares_the_model_internals_it_needs():
    net, b = tiny_model(), labelled()
    loss = spy("labels", frozenset({"features", "head_weight"}))
    loss(net, b)
    emb = loss.seen[-1]
    assert torch.equal(emb.features, net.features(b.x)) and torch.equal(emb.head_weight, net.head.weight.T)
    assert torch.equal(emb.embeddings, net.embed(b.x))  # embedded from the features by the model's own head
    plain = spy("labels")
    plain(net, b)
    assert plain.seen[-1].features is None and plain.seen[-1].head_weight is None


def test_nothing_mined_is_a_zero_that_backpropagates_without_compute():
    loss = spy("triplets")
    loss.set_miner(create_miner("semi-hard", margin=0.0))  # an empty band
    value = loss(tiny_model(), labelled())
    value.backward()
    assert float(value.detach()) == 0.0 and not loss.seen


# --- score_all: every valid tuple ----------------------------------------------------------------------------


def test_score_all_scores_every_tuple_on_this_ranks_rows_and_leaves_the_loss_as_it_was():
    net, b = tiny_model(normalize=True), labelled()
    loss = create_loss("contrastive", {"margin": 0.7}, "hard-pairs").double()
    every = create_loss("contrastive", {"margin": 0.7}, "all-pairs").double()
    miner = loss.miner

    def refuse(t: torch.Tensor) -> torch.Tensor:
        raise AssertionError("score_all gathered")

    loss.gather = refuse
    assert torch.equal(loss.score_all(net, b), every(net, b))
    assert loss.miner is miner and loss.gather is refuse
    triplet = create_loss("triplet", {"margin": 0.3}, "semi-hard").double()
    assert torch.equal(triplet.score_all(net, b), create_loss("triplet", {"margin": 0.3}, "all").double()(net, b))
    fixed_loss = create_loss("triplet").double()  # no miner: the batch's own tuples
    assert torch.equal(fixed_loss.score_all(net, fixed("triplets")), fixed_loss(net, fixed("triplets")))


def test_validation_loss_scores_every_tuple_and_leaves_the_loss_alone():
    from siamkit.data.transforms import Preprocess
    from siamkit.models.registry import create_backbone
    from siamkit.training.batches import BatchIndex, FixedBatches, make_batch
    from siamkit.training.loop import validation_loss

    images = torch.randint(0, 256, (12, 1, 8, 8), generator=torch.Generator().manual_seed(6), dtype=torch.uint8)
    plan = FixedBatches([BatchIndex(np.arange(12), LABELS.numpy()), BatchIndex(np.arange(6), LABELS.numpy()[:6])])
    pre, cpu = Preprocess([0.5], [0.25]), torch.device("cpu")
    torch.manual_seed(0)
    net = SiameseNet(create_backbone("seed_cnn", in_channels=1, filters=4, dropout=0.0), 4)
    loss = create_loss("contrastive", {"margin": 0.7}, "hard-pairs")
    miner = loss.miner

    def refuse(t: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the validation loss gathered")

    loss.gather = refuse
    got = validation_loss(net, loss, images, plan, pre, device=cpu)
    assert loss.miner is miner and loss.gather is refuse and net.training
    every = create_loss("contrastive", {"margin": 0.7}, "all-pairs")
    net.eval()
    with torch.no_grad():
        scores = [(float(every(net, make_batch(images, b, pre, cpu, False))), len(b.index)) for b in plan.plan(0)]
    assert got == pytest.approx(sum(v * n for v, n in scores) / 18, rel=1e-12)


def test_score_all_of_a_loss_with_a_forward_of_its_own():
    class OwnForward(SiameseLoss):
        def forward(self, model, batch):
            e = model.embed(batch.x)
            m = self.mine_pairs(torch.cdist(e, e), batch.labels)
            return torch.tensor(float(len(m)))

    loss = OwnForward()
    loss.set_miner(create_miner("batch-hard-pairs"))
    net, b = tiny_model(), labelled()
    assert float(loss(net, b)) == 2 * len(LABELS)
    n = len(LABELS)
    assert float(loss.score_all(net, b)) == n * (n - 1) / 2  # all-pairs while scoring
    assert loss.miner is not None and loss.miner.output == "pairs" and type(loss.miner).__name__ == "BatchHardPairs"


# --- a new loss is one file ----------------------------------------------------------------------------------

THROWAWAY = '''
"""A throwaway loss: one file, one registration line."""

import torch

from siamkit.losses.base import LOSSES, SiameseLoss


@LOSSES.register("throwaway")
class Throwaway(SiameseLoss):
    """Mean squared distance of the positives plus scale × mean hinged negative, on any pairs."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def compute(self, emb):
        d, y = emb.pair_distances()
        y = y.to(d.dtype)
        return (y * d.pow(2) + self.scale * (1 - y) * torch.relu(1 - d)).mean()
'''


def test_every_module_of_the_losses_package_is_a_provider():
    # a new file in siamkit/losses/ is imported on the first lookup: no list of families to extend
    package = Path(siamkit.__file__).parent / "losses"
    modules = {f"siamkit.losses.{p.stem}" for p in package.glob("*.py") if p.stem not in ("__init__", "base")}
    assert set(LOSSES.providers) == modules


def test_a_new_loss_is_one_new_file(tmp_path):
    # a copy of the package with one file added to siamkit/losses/: the registry lists it and it trains
    copy = tmp_path / "siamkit"
    shutil.copytree(Path(siamkit.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "losses" / "throwaway.py").write_text(THROWAWAY)
    code = textwrap.dedent("""
        import torch
        from siamkit.data.batch import LabelBatch
        from siamkit.losses import LOSSES, create_loss
        from siamkit.models.cnns import SeedCNN
        from siamkit.models.siamese import SiameseNet
        assert "throwaway" in LOSSES.list(), LOSSES.list()
        loss = create_loss("throwaway", {"scale": 2.0}, "batch-hard")
        torch.manual_seed(0)
        net = SiameseNet(SeedCNN(1), 8)
        batch = LabelBatch(torch.randn(8, 1, 12, 12), torch.arange(4).repeat(2))
        value = loss(net, batch)
        value.backward()
        print(loss.__module__, float(value.detach()) > 0 and float(loss.score_all(net, batch)) > 0)
    """)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                         cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr[-1500:]
    assert out.stdout.split() == ["siamkit.losses.throwaway", "True"]


def test_a_loss_of_ones_own_by_module_and_class(tmp_path, monkeypatch):
    (tmp_path / "throwaway_plugin.py").write_text(THROWAWAY.replace('@LOSSES.register("throwaway")\n', ""))
    monkeypatch.syspath_prepend(str(tmp_path))
    loss = create_loss("throwaway_plugin:Throwaway", {"scale": 2.0})
    assert "throwaway" not in LOSSES.list()
    assert any(v > 0 for v in exercise(loss))  # the checks every registered loss passes
    with pytest.raises(ConfigError, match="'scael'"):
        create_loss("throwaway_plugin:Throwaway", {"scael": 2.0})
