"""Multi-similarity, ArcFace and CosFace against plain loops over explicit pairs / classes, and closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from siamkit.data.batch import LabelBatch
from siamkit.losses import create_loss
from siamkit.losses.multisim import multi_similarity_loss


def _cos(u, v):
    dot = sum(float(a) * float(b) for a, b in zip(u, v))
    return dot / (math.sqrt(sum(float(a) ** 2 for a in u)) * math.sqrt(sum(float(b) ** 2 for b in v)))


def loop_multi_similarity(emb, labels, alpha, beta, base, eps):
    n = len(labels)
    total = 0.0
    for i in range(n):
        pos = [j for j in range(n) if j != i and labels[j] == labels[i]]
        neg = [k for k in range(n) if labels[k] != labels[i]]
        if not pos or not neg:
            continue
        s = {j: _cos(emb[i], emb[j]) for j in range(n)}
        min_pos, max_neg = min(s[j] for j in pos), max(s[k] for k in neg)
        kept_pos = [j for j in pos if s[j] - eps < max_neg]
        kept_neg = [k for k in neg if s[k] + eps > min_pos]
        total += math.log(1 + sum(math.exp(-alpha * (s[j] - base)) for j in kept_pos)) / alpha
        total += math.log(1 + sum(math.exp(beta * (s[k] - base)) for k in kept_neg)) / beta
    return total / n


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize(
    ("alpha", "beta", "base", "eps"), [(2.0, 50.0, 1.0, 0.1), (2.0, 40.0, 0.5, 0.1), (1.0, 10.0, 0.0, 0.5)]
)
def test_multi_similarity_matches_loop(seed, alpha, beta, base, eps):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(12, 5, generator=g)
    labels = torch.randint(0, 3, (12,), generator=g)
    got = float(multi_similarity_loss(emb, labels, alpha=alpha, beta=beta, base=base, epsilon=eps))
    assert got == pytest.approx(loop_multi_similarity(emb, labels.tolist(), alpha, beta, base, eps), rel=1e-4, abs=1e-6)


def test_multi_similarity_mining_drops_easy_pairs():
    # two tight, far-apart classes: every negative is far below every positive, so mining keeps nothing → 0
    emb = torch.tensor([[1.0, 0.0], [0.99, 0.01], [0.0, 1.0], [0.01, 0.99]])
    labels = torch.tensor([0, 0, 1, 1])
    assert float(multi_similarity_loss(emb, labels, alpha=2.0, beta=50.0, base=0.5, epsilon=0.1)) == 0.0
    # one class only: no negatives, the loss is a graph-keeping zero
    loss = multi_similarity_loss(
        emb.requires_grad_(), torch.zeros(4, dtype=torch.long), alpha=2.0, beta=50.0, base=1.0, epsilon=0.1
    )
    loss.backward()
    assert float(loss) == 0.0


def loop_margin_ce(emb, proxies, labels, scale, margin, kind):
    total = 0.0
    for i in range(len(labels)):
        logits = []
        for c in range(len(proxies)):
            cos = _cos(emb[i], proxies[c])
            if c == labels[i]:
                if kind == "cosface":
                    cos = cos - margin
                elif cos > math.cos(math.pi - margin):
                    cos = math.cos(math.acos(max(-1.0, min(1.0, cos))) + margin)
                else:
                    cos = cos - margin * math.sin(margin)
            logits.append(scale * cos)
        top = max(logits)
        lse = top + math.log(sum(math.exp(v - top) for v in logits))
        total += lse - logits[labels[i]]
    return total / len(labels)


class _Embed(torch.nn.Module):
    def embed(self, x):
        return x


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    ("kind", "scale", "margin"),
    [
        ("arcface", 64.0, 0.5),
        ("arcface", 16.0, 0.3),
        ("arcface", 8.0, 1.2),
        ("cosface", 64.0, 0.35),
        ("cosface", 10.0, 0.1),
    ],
)
def test_margin_losses_match_loop(seed, kind, scale, margin):
    g = torch.Generator().manual_seed(seed)
    loss = create_loss(kind, {"scale": scale, "margin": margin}, context={"num_classes": 4, "embedding_dim": 6})
    with torch.no_grad():
        loss.proxies.copy_(torch.randn(4, 6, generator=g))
    emb = torch.randn(10, 6, generator=g)
    labels = torch.randint(0, 4, (10,), generator=g)
    got = float(loss(_Embed(), LabelBatch(emb, labels)))
    want = loop_margin_ce(emb, loss.proxies.detach(), labels.tolist(), scale, margin, kind)
    assert got == pytest.approx(want, rel=1e-4)


def test_zero_margin_is_normalized_softmax():
    g = torch.Generator().manual_seed(0)
    emb, labels = torch.randn(8, 5, generator=g), torch.randint(0, 3, (8,), generator=g)
    ctx = {"num_classes": 3, "embedding_dim": 5}
    losses = [
        create_loss("arcface", {"scale": 20.0, "margin": 0.0}, context=ctx),
        create_loss("cosface", {"scale": 20.0, "margin": 0.0}, context=ctx),
        create_loss("normalized-softmax", {"temperature": 0.05}, context=ctx),
    ]
    for loss in losses:
        with torch.no_grad():
            loss.proxies.copy_(losses[0].proxies)
    values = [float(loss(_Embed(), LabelBatch(emb, labels))) for loss in losses]
    assert values[0] == pytest.approx(values[2], rel=1e-5) and values[1] == pytest.approx(values[2], rel=1e-5)


def test_margin_raises_the_loss_and_bad_params_are_refused():
    g = torch.Generator().manual_seed(1)
    emb, labels = torch.randn(8, 5, generator=g), torch.randint(0, 3, (8,), generator=g)
    ctx = {"num_classes": 3, "embedding_dim": 5}
    lo = create_loss("arcface", {"margin": 0.0}, context=ctx)
    hi = create_loss("arcface", {"margin": 0.5}, context=ctx)
    with torch.no_grad():
        hi.proxies.copy_(lo.proxies)
    assert float(hi(_Embed(), LabelBatch(emb, labels))) > float(lo(_Embed(), LabelBatch(emb, labels)))
    from siamkit.errors import ConfigError

    with pytest.raises(ConfigError, match="margin"):
        create_loss("arcface", {"margin": 2.0}, context=ctx)
    with pytest.raises(ConfigError, match="scale"):
        create_loss("cosface", {"scale": 0.0}, context=ctx)
    with pytest.raises(ConfigError, match="alpha"):
        create_loss("multi-similarity", {"alpha": -1.0})


def loop_nt_xent(z1, z2, t):
    z = [[float(v) for v in row] for row in torch.cat([z1, z2])]
    n2, n = len(z), len(z1)
    total = 0.0
    for i in range(n2):
        sims = {j: _cos(z[i], z[j]) / t for j in range(n2) if j != i}
        pos = (i + n) % n2
        total += -sims[pos] + math.log(sum(math.exp(v) for v in sims.values()))
    return total / n2


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nt_xent_matches_loop(seed, temperature):
    from siamkit.losses.selfsup import nt_xent

    g = torch.Generator().manual_seed(seed)
    z1, z2 = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    assert float(nt_xent(z1, z2, temperature)) == pytest.approx(loop_nt_xent(z1, z2, temperature), rel=1e-5)


def test_ssl_term_needs_augmentation_and_labelled_batches(tmp_path):
    from siamkit.config import load_config
    from siamkit.errors import ConfigError
    from siamkit.training.pipeline import train_run

    base = ["train.epochs=1", "train.progress=false", f"runs_dir={tmp_path}", "loss.ssl_weight=0.5"]
    with pytest.raises(ConfigError, match="data.augment.enabled"):
        train_run(load_config(None, base))
    with pytest.raises(ConfigError, match="labelled"):
        train_run(load_config(None, [*base, "data.augment.enabled=true", "loss.name=triplet"]))


def test_ssl_term_is_attached_and_adds_to_the_loss():
    from siamkit.config import load_config
    from siamkit.losses.selfsup import SelfSupervised
    from siamkit.plan import make_loss

    cfg = load_config(None, ["loss.ssl_weight=0.5", "data.augment.enabled=true"])
    loss = make_loss(cfg, 10)
    assert isinstance(loss.self_supervised, SelfSupervised) and loss.self_supervised.weight == 0.5
    model = torch.nn.Linear(4, 3)
    model.embed = model.forward  # type: ignore[attr-defined]
    x = torch.randn(6, 4)
    assert float(loss.self_supervised(model, x, x + 0.1)) > 0
