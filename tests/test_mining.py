"""Miners and mined losses against brute-force loops over explicit pairs/triplets; the FDT/FDC trace oracle;
closed forms; gradient flow for every loss with and without a miner."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from siamkit.data.batch import LabelBatch, PairBatch, TripletBatch
from siamkit.distances import as_dissimilarity, get_distance
from siamkit.errors import ConfigError
from siamkit.losses import LOSSES, MINERS, create_loss, create_miner
from siamkit.losses.fisher import projection
from siamkit.losses.functional import fdc_loss, fdt_loss, fisher_trace
from siamkit.losses.pairs import huber
from siamkit.models.cnns import SeedCNN
from siamkit.models.siamese import SiameseNet

SEEDS = [0, 1, 2]
DISTANCES = ["euclidean", "squared_euclidean", "cosine", "cosine_similarity"]


class FeatureInput(nn.Module):
    """A backbone that passes features through, so a test controls the second-to-last layer exactly."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def batch(seed: int, n: int = 12, dim: int = 5, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    labels[:classes] = torch.arange(classes)  # every class present
    return torch.randn(n, dim, generator=g, dtype=torch.float64), labels


def plain_dist(u: torch.Tensor, v: torch.Tensor, name: str) -> float:
    """Distance (smaller = closer) of two vectors by plain loops; a similarity is negated."""
    if name in ("cosine", "cosine_similarity"):
        dot = sum(float(a) * float(b) for a, b in zip(u, v))
        cos = dot / math.sqrt(sum(float(a) ** 2 for a in u) * sum(float(b) ** 2 for b in v))
        return 1.0 - cos if name == "cosine" else -cos
    sq = sum((float(a) - float(b)) ** 2 for a, b in zip(u, v))
    return sq if name == "squared_euclidean" else math.sqrt(sq)


def loop_triplets(emb, labels, name, keep):
    """All (a, p, n) with a ≠ p same class, n other class, for which keep(d_ap, d_an) holds."""
    n = len(labels)
    out = set()
    for a, p, q in itertools.product(range(n), repeat=3):
        valid = a != p and labels[a] == labels[p] and labels[q] != labels[a]
        if valid and keep(plain_dist(emb[a], emb[p], name), plain_dist(emb[a], emb[q], name)):
            out.add((a, p, q))
    return out


def dist_matrix(emb, name):
    d = get_distance(name)
    return as_dissimilarity(d.matrix(emb, emb), d)


CUBE_RULES = {
    "all": lambda m: lambda ap, an: True,
    "batch-all": lambda m: lambda ap, an: ap - an + m > 0,
    "semi-hard": lambda m: lambda ap, an: ap < an < ap + m,
    "hard": lambda m: lambda ap, an: an <= ap,
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("miner", sorted(CUBE_RULES))
@pytest.mark.parametrize("margin", [0.1, 0.5])
def test_triplet_miners_match_loop(seed, distance, miner, margin):
    emb, labels = batch(seed)
    params = {"margin": margin} if miner in ("batch-all", "semi-hard") else {}
    t = create_miner(miner, **params)(dist_matrix(emb, distance), labels)
    got = set(zip(t.a.tolist(), t.p.tolist(), t.n.tolist()))
    assert len(got) == len(t)  # no duplicates
    assert got == loop_triplets(emb, labels, distance, CUBE_RULES[miner](margin))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("distance", DISTANCES)
def test_batch_hard_matches_loop(seed, distance):
    emb, labels = batch(seed)
    t = create_miner("batch-hard")(dist_matrix(emb, distance), labels)
    n = len(labels)
    want = []
    for a in range(n):
        pos = [j for j in range(n) if j != a and labels[j] == labels[a]]
        neg = [j for j in range(n) if labels[j] != labels[a]]
        if pos and neg:
            hp = max(pos, key=lambda j: plain_dist(emb[a], emb[j], distance))
            hn = min(neg, key=lambda j: plain_dist(emb[a], emb[j], distance))
            want.append((a, hp, hn))
    assert list(zip(t.a.tolist(), t.p.tolist(), t.n.tolist())) == want


def test_batch_hard_skips_anchors_without_a_positive():
    labels = torch.tensor([0, 0, 1, 2])  # classes 1 and 2 have a single image
    t = create_miner("batch-hard")(torch.rand(4, 4), labels)
    assert t.a.tolist() == [0, 1]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("pos_margin,neg_margin", [(0.0, 1.0), (2.0, 3.0)])
def test_pair_miners_match_loop(seed, pos_margin, neg_margin):
    emb, labels = batch(seed)
    dist = dist_matrix(emb, "euclidean")
    n = len(labels)
    all_pairs = create_miner("all-pairs")(dist, labels)
    got = set(zip(all_pairs.i.tolist(), all_pairs.j.tolist(), all_pairs.y.tolist()))
    assert got == {(i, j, int(labels[i] == labels[j])) for i in range(n) for j in range(i + 1, n)}
    hard = create_miner("hard-pairs", pos_margin=pos_margin, neg_margin=neg_margin)(dist, labels)
    got = set(zip(hard.i.tolist(), hard.j.tolist(), hard.y.tolist()))
    want = set()
    for i in range(n):
        for j in range(i + 1, n):
            d = plain_dist(emb[i], emb[j], "euclidean")
            same = bool(labels[i] == labels[j])
            if (same and d > pos_margin) or (not same and d < neg_margin):
                want.add((i, j, int(same)))
    assert got == want
    bh = create_miner("batch-hard-pairs")(dist, labels)
    t = create_miner("batch-hard")(dist, labels)
    assert bh.y.tolist() == [1] * len(t) + [0] * len(t)
    assert bh.j.tolist() == t.p.tolist() + t.n.tolist()


# --- mined losses vs loops -------------------------------------------------------------------------------


def feature_model(dim: int = 5, out: int = 4, normalize: bool = True, seed: int = 0) -> SiameseNet:
    torch.manual_seed(seed)
    return SiameseNet(FeatureInput(dim), out, normalize=normalize).double()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("miner", ["all", "batch-all", "semi-hard", "batch-hard"])
@pytest.mark.parametrize("soft", [False, True])
def test_mined_triplet_loss_matches_loop(seed, distance, miner, soft):
    x, labels = batch(seed)
    model = feature_model(seed=seed)
    margin = 0.3
    params = {"margin": margin} if miner in ("batch-all", "semi-hard") else {}
    loss = create_loss("triplet", {"margin": margin, "distance": distance, "soft_margin": soft}, miner, params)
    got = float(loss(model, LabelBatch(x, labels)).detach())
    emb = model.embed(x).detach()
    t = create_miner(miner, **params)(dist_matrix(emb, distance), labels)
    terms = []
    for a, p, n in zip(t.a.tolist(), t.p.tolist(), t.n.tolist()):
        gap = plain_dist(emb[a], emb[p], distance) - plain_dist(emb[a], emb[n], distance)
        terms.append(math.log1p(math.exp(gap)) if soft else max(0.0, gap + margin))
    want = sum(terms) / len(terms) if terms else 0.0
    assert got == pytest.approx(want, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("margin", [0.5, 1.0])
@pytest.mark.parametrize("name", ["contrastive", "huber"])
def test_mined_pair_losses_match_loop(seed, margin, name):
    x, labels = batch(seed)
    model = feature_model(seed=seed)
    delta = 0.3
    params = {"margin": margin, **({"delta": delta} if name == "huber" else {})}
    loss = create_loss(name, params, "hard-pairs", {"neg_margin": margin})
    got = float(loss(model, LabelBatch(x, labels)).detach())
    emb = model.embed(x).detach()

    def h(v: float) -> float:
        return 0.5 * v * v if abs(v) <= delta else delta * (abs(v) - 0.5 * delta)

    terms = []
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            d = plain_dist(emb[i], emb[j], "euclidean")
            if labels[i] == labels[j]:  # pos_margin 0: every positive is kept
                terms.append(d * d if name == "contrastive" else h(d))
            elif d < margin:
                terms.append(max(0.0, margin - d) ** 2 if name == "contrastive" else h(max(0.0, margin - d)))
    assert got == pytest.approx(sum(terms) / len(terms), rel=1e-6)


def test_huber_closed_forms():
    h = huber(1.0)
    x = torch.tensor([0.0, 0.5, 1.0, 3.0, -3.0])
    assert h(x).tolist() == pytest.approx([0.0, 0.125, 0.5, 2.5, 2.5])
    # below δ everywhere, Huber contrastive is the ½-weighted contrastive loss
    from siamkit.losses.functional import contrastive_loss

    d, y = torch.tensor([0.1, 0.4, 0.2, 0.9]), torch.tensor([1.0, 1.0, 0.0, 0.0])
    hub = create_loss("huber", {"margin": 1.0, "delta": 5.0})
    assert float(hub.pair_loss(None, d, y)) == pytest.approx(float(contrastive_loss(d, y, 1.0, half=True)))
    with pytest.raises(ConfigError, match="delta"):
        create_loss("huber", {"delta": 0.0})


# --- Fisher losses ------------------------------------------------------------------------------------


def loop_scatter(rows: list[list[float]], dim: int, eps: float) -> list[list[float]]:
    s = [[eps if i == j else 0.0 for j in range(dim)] for i in range(dim)]
    for r in rows:
        for i in range(dim):
            for j in range(dim):
                s[i][j] += r[i] * r[j]
    return s


def loop_trace(s: list[list[float]], u: torch.Tensor) -> float:
    """tr(Uᵀ S U) by explicit sums."""
    f, d = u.shape
    return sum(float(u[i, k]) * s[i][j] * float(u[j, k]) for k in range(d) for i in range(f) for j in range(f))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("eps", [1e-4, 0.5])
def test_fisher_trace_identity(seed, eps):
    g = torch.Generator().manual_seed(seed)
    diff, u = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    oracle = float(((diff @ u) ** 2).sum() + eps * (u**2).sum())  # Σ||diffᵢU||² + ε||U||²_F
    assert float(fisher_trace(diff, u, eps)) == pytest.approx(oracle, rel=1e-10)
    assert float(fisher_trace(diff, u, eps)) == pytest.approx(loop_trace(loop_scatter(diff.tolist(), 5, eps), u))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("lam,alpha", [(0.01, 0.25), (0.5, 1.0), (1.9, 200.0)])
def test_fdt_on_triplets_matches_loop(seed, lam, alpha):
    model = feature_model(dim=6, out=3, seed=seed)  # F ≠ D: an un-transposed weight could not even multiply
    g = torch.Generator().manual_seed(seed + 10)
    a, p, n = (torch.randn(5, 6, generator=g, dtype=torch.float64) for _ in range(3))
    loss = create_loss("fdt", {"lam": lam, "alpha": alpha})
    got = float(loss(model, TripletBatch(a, p, n)).detach())
    u = model.head.weight.detach().T  # in×out
    assert projection(model).shape == (6, 3)
    tr_w = loop_trace(loop_scatter((a - p).tolist(), 6, 1e-4), u)
    tr_b = loop_trace(loop_scatter((a - n).tolist(), 6, 1e-4), u)
    assert got == pytest.approx(max(0.0, (2 - lam) * tr_w - lam * tr_b + alpha), rel=1e-8, abs=1e-12)
    # the oracle of SPEC §4.1: summed squared embedding distances before the bias, plus a constant
    emb_a, emb_p = (a @ u), (p @ u)
    assert tr_w == pytest.approx(float(((emb_a - emb_p) ** 2).sum() + 1e-4 * (u**2).sum()), rel=1e-8)


@pytest.mark.parametrize("seed", SEEDS)
def test_fdc_on_pairs_matches_loop(seed):
    model = feature_model(dim=6, out=3, seed=seed)
    g = torch.Generator().manual_seed(seed + 20)
    a, b = torch.randn(8, 6, generator=g, dtype=torch.float64), torch.randn(8, 6, generator=g, dtype=torch.float64)
    y = torch.tensor([1.0, 0, 1, 1, 0, 0, 1, 0])
    lam, alpha = 0.2, 5.0
    got = float(create_loss("fdc", {"lam": lam, "alpha": alpha})(model, PairBatch(a, b, y)).detach())
    u = model.head.weight.detach().T
    diffs = (a - b).tolist()
    tr_w = loop_trace(loop_scatter([r for r, t in zip(diffs, y) if t == 1], 6, 1e-4), u)
    tr_b = loop_trace(loop_scatter([r for r, t in zip(diffs, y) if t == 0], 6, 1e-4), u)
    assert got == pytest.approx((2 - lam) * tr_w + max(0.0, alpha - lam * tr_b), rel=1e-8)


def test_fisher_closed_forms():
    # anchors equal to their neighbours: tr_W is ε·||U||²_F alone; far distant pairs switch the hinge off
    u = torch.eye(3, dtype=torch.float64)
    zero, far = torch.zeros(4, 3, dtype=torch.float64), torch.full((4, 3), 100.0, dtype=torch.float64)
    tr_w, tr_b = fisher_trace(zero, u, 1e-4), fisher_trace(far, u, 1e-4)
    assert float(tr_w) == pytest.approx(3e-4)
    assert float(fdt_loss(tr_w, tr_b, 0.01, 0.25)) == 0.0
    assert float(fdc_loss(tr_w, tr_b, 0.01, 0.25)) == pytest.approx(1.99 * 3e-4)
    assert float(fdc_loss(tr_w, torch.tensor(0.0), 0.01, 0.25)) == pytest.approx(1.99 * 3e-4 + 0.25)


@pytest.mark.parametrize("seed", SEEDS)
def test_mined_fdt_uses_features_of_mined_triplets(seed):
    x, labels = batch(seed, dim=6)
    model = feature_model(dim=6, out=3, seed=seed)
    loss = create_loss("fdt", {"lam": 0.5, "alpha": 1.0}, "batch-hard")
    got = float(loss(model, LabelBatch(x, labels)).detach())
    u = model.head.weight.detach().T
    t = create_miner("batch-hard")(dist_matrix(x @ u, "euclidean"), labels)
    tr_w = float(fisher_trace(x[t.a] - x[t.p], u))
    tr_b = float(fisher_trace(x[t.a] - x[t.n], u))
    assert got == pytest.approx(max(0.0, 1.5 * tr_w - 0.5 * tr_b + 1.0), rel=1e-8)


@pytest.mark.parametrize("seed", SEEDS)
def test_mined_fdc_weights_distant_pairs_to_the_neighbour_count(seed):
    # all-pairs on a labelled batch: far more anchor–distant than anchor–neighbour pairs; as in the authors'
    # halves, S_B counts as many pairs as S_W: n_W/n_B·Σ(a−d)ᵀ(a−d) + εI
    x, labels = batch(seed, dim=6)
    model = feature_model(dim=6, out=3, seed=seed)
    lam, alpha = 0.3, 50.0
    got = float(create_loss("fdc", {"lam": lam, "alpha": alpha}, "all-pairs")(model, LabelBatch(x, labels)).detach())
    u = model.head.weight.detach().T
    n = len(labels)
    same = [(i, j) for i in range(n) for j in range(i + 1, n) if labels[i] == labels[j]]
    diff = [(i, j) for i in range(n) for j in range(i + 1, n) if labels[i] != labels[j]]
    assert len(diff) > len(same) > 0
    tr_w = loop_trace(loop_scatter([(x[i] - x[j]).tolist() for i, j in same], 6, 1e-4), u)
    raw_b = loop_trace(loop_scatter([(x[i] - x[j]).tolist() for i, j in diff], 6, 0.0), u)
    tr_b = len(same) / len(diff) * raw_b + 1e-4 * float((u**2).sum())
    assert got == pytest.approx((2 - lam) * tr_w + max(0.0, alpha - lam * tr_b), rel=1e-8)


def test_fisher_losses_are_evaluated_unnormalised(tmp_path):
    from siamkit.config import load_config
    from siamkit.plan import prepare_data

    for loss, want in (("fdt", False), ("fdc", False), ("triplet", True)):
        cfg = load_config(None, [f"loss.name={loss}", "data.limit=200"])
        assert prepare_data(cfg).cfg.model.normalize is want, loss
    kept = load_config(None, ["loss.name=fdt", "model.normalize=true", "data.limit=200"])
    assert prepare_data(kept).cfg.model.normalize is True  # an explicit setting wins


def test_fisher_needs_a_linear_head():
    model = feature_model()
    model.head = nn.Sequential(nn.Linear(5, 4))  # type: ignore[assignment]
    with pytest.raises(ConfigError, match="nn.Linear"):
        create_loss("fdt")(model, TripletBatch(*(torch.randn(2, 5, dtype=torch.float64) for _ in range(3))))


# --- every loss, with and without a miner, trains every parameter -------------------------------------


def images(seed: int = 0, n: int = 8) -> torch.Tensor:
    return torch.randn(n, 1, 12, 12, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", LOSSES.list())
@pytest.mark.parametrize("mined", [False, True])
def test_every_loss_trains_every_parameter(name, mined):
    loss = create_loss(name, context={"num_classes": 4, "embedding_dim": 8})
    if mined:
        if not loss.miner_outputs:
            pytest.skip(f"{name} takes no miner")
        loss.set_miner(create_miner("all" if "triplets" in loss.miner_outputs else "hard-pairs"))
    torch.manual_seed(0)
    net = SiameseNet(SeedCNN(1), 8, normalize=True, sigmoid_head=loss.needs_sigmoid_head)
    if loss.input_kind == "labels":
        b = LabelBatch(images(n=8), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    elif loss.input_kind == "pairs":
        b = PairBatch(images(1, 6), images(2, 6), torch.tensor([1.0, 0, 1, 0, 1, 0]))
    else:
        b = TripletBatch(images(1, 6), images(2, 6), images(3, 6))
    value = loss(net, b)
    value.backward()
    assert torch.isfinite(value) and float(value.detach()) > 0
    # FDT/FDC use U = head.weight only (SPEC §4.1: bias ignored), so the head's bias gets no gradient
    exempt = {"head.bias"} if name in ("fdc", "fdt") else set()
    missing = [n for n, p in net.named_parameters() if n not in exempt and (p.grad is None or not p.grad.abs().sum())]
    missing += [n for n, p in loss.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("temperature", [0.05, 1.0])
def test_normalized_softmax_matches_loop(seed, temperature):
    x, labels = batch(seed)
    model = feature_model(seed=seed)
    loss = create_loss(
        "normalized-softmax", {"temperature": temperature}, context={"num_classes": 3, "embedding_dim": 4}
    )
    loss.double()
    got = float(loss(model, LabelBatch(x, labels)).detach())
    emb, w = model.embed(x).detach(), loss.proxies.detach()
    total = 0.0
    for i in range(len(labels)):
        logits = [plain_cos(emb[i], w[c]) / temperature for c in range(3)]
        top = max(logits)
        total += -(logits[int(labels[i])] - top - math.log(sum(math.exp(v - top) for v in logits)))
    assert got == pytest.approx(total / len(labels), rel=1e-8)
    with pytest.raises(ConfigError, match="num_classes"):
        create_loss("normalized-softmax")


def plain_cos(u, v) -> float:
    return -plain_dist(u, v, "cosine_similarity")


def test_nothing_mined_gives_a_zero_that_backpropagates():
    net = feature_model()
    x = torch.randn(4, 5, dtype=torch.float64)
    loss = create_loss("triplet", {}, "semi-hard", {"margin": 0.0})  # an empty band: nothing is ever mined
    value = loss(net, LabelBatch(x, torch.tensor([0, 0, 1, 1])))
    value.backward()
    assert float(value.detach()) == 0.0


def test_miner_and_loss_must_match():
    with pytest.raises(ConfigError, match="loss.miner gives pairs"):
        create_loss("triplet", {}, "all-pairs")
    with pytest.raises(ConfigError, match="unknown miner 'hardest'"):
        create_loss("triplet", {}, "hardest")
    with pytest.raises(ConfigError, match="'margn'"):
        create_loss("triplet", {}, "semi-hard", {"margn": 0.1})
    with pytest.raises(ConfigError, match="loss.miner_params is set"):
        create_loss("triplet", {}, None, {"margin": 0.1})
    assert create_loss("contrastive", {}, "batch-hard").input_kind == "labels"  # triplets become pairs


def test_unknown_loss_option_is_an_error():
    with pytest.raises(ConfigError, match="'marign'"):
        create_loss("contrastive", {"marign": 1.0})
    with pytest.raises(ConfigError, match="unknown loss 'nope'"):
        create_loss("nope")


def test_registries_list_their_components():
    assert {"contrastive", "triplet", "bce", "huber", "fdc", "fdt", "normalized-softmax"} <= set(LOSSES.list())
    assert {"all", "batch-all", "semi-hard", "hard", "batch-hard", "all-pairs", "hard-pairs"} <= set(MINERS.list())
    assert get_distance("cosine_similarity").higher_is_closer and not get_distance("cosine").higher_is_closer


@pytest.mark.parametrize(
    "loss,params,miner,miner_params,key,want",
    [
        ("triplet", {"margin": 1.0}, "semi-hard", {}, "margin", 1.0),
        ("triplet", {"margin": 1.0}, "batch-all", {}, "margin", 1.0),
        ("triplet", {"margin": 1.0}, "semi-hard", {"margin": 0.3}, "margin", 0.3),  # set: kept
        ("contrastive", {"margin": 0.8}, "hard-pairs", {}, "neg_margin", 0.8),
        ("contrastive", {}, "hard-pairs", {}, "neg_margin", 1.0),  # the loss's own default margin
    ],
)
def test_miner_margin_defaults_to_the_loss_margin(loss, params, miner, miner_params, key, want):
    built = create_loss(loss, params, miner, miner_params)
    assert getattr(built.miner, key) == want


def test_semi_hard_band_follows_the_loss_margin():
    # d(a,p) = 1 and a negative at 1.5: inside the band for margin 1, outside for the miner's old fixed 0.2
    dist = torch.tensor([[0.0, 1.0, 1.5], [1.0, 0.0, 3.0], [1.5, 3.0, 0.0]])
    labels = torch.tensor([0, 0, 1])
    mined = create_loss("triplet", {"margin": 1.0}, "semi-hard", {}).miner(dist, labels)
    assert (0, 1, 2) in set(zip(mined.a.tolist(), mined.p.tolist(), mined.n.tolist(), strict=True))
