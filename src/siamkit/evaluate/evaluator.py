"""Embed a split and compute its verification and retrieval metrics."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from siamkit.config import EvalConfig
from siamkit.data.cache import ImageArray, as_tensor
from siamkit.data.imageset import ImageSet, TupleTable
from siamkit.data.transforms import Preprocess
from siamkit.data.tuples import distinct_count, fixed_tuples
from siamkit.distances import Distance, as_dissimilarity, get_distance, verification_accuracy
from siamkit.errors import ConfigError
from siamkit.evaluate import metrics as M
from siamkit.evaluate.episodes import episode_metrics
from siamkit.models.siamese import SiameseNet


@torch.no_grad()
def embed_images(
    model: SiameseNet, images: ImageArray, preprocess: Preprocess, batch_size: int = 512,
    device: torch.device | str = "cpu", *, progress: bool = False,
) -> torch.Tensor:  # fmt: skip
    """Embeddings ``(N, D)`` (float32, on the CPU) of uint8 images ``(N, C, H, W)``, in eval mode. Under
    distributed training each rank embeds its share and every rank gets all rows, in order, without the padding
    duplicates (``siamkit.distributed.gather_embeddings``)."""
    from siamkit.distributed import current, gather_embeddings

    info = current()
    if info.enabled and len(images):
        return gather_embeddings(
            lambda idx: _embed_local(model, images[idx], preprocess, batch_size, device, progress=progress),
            len(images),
            info,
        )
    return _embed_local(model, images, preprocess, batch_size, device, progress=progress)


def _embed_local(
    model: SiameseNet, images: ImageArray, preprocess: Preprocess, batch_size: int, device: torch.device | str,
    *, progress: bool,
) -> torch.Tensor:  # fmt: skip
    was_training = model.training
    model.eval()
    out = []
    from tqdm import tqdm

    for s in tqdm(
        range(0, len(images), batch_size), desc="embed", leave=False, unit="batch", disable=None if progress else True
    ):  # a bar on a terminal only
        x = preprocess(images[s : s + batch_size].to(device))
        out.append(model.embed(x).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, model.embedding_dim)


@dataclass
class PairScores:
    """Distances of evaluation pairs ``(M,)`` and their labels (1 genuine, 0 impostor)."""

    distances: np.ndarray
    labels: np.ndarray
    index: np.ndarray | None = None
    """The image indices ``(M, 2)`` of each pair, when known: counts distinct pairs."""
    groups: np.ndarray | None = None
    """The identities ``(M, 2)`` of each pair's images, when known: the 10-fold protocol's folds are then
    identity-disjoint (``metrics.kfold_verification_accuracy``)."""

    def distinct(self, label: int) -> int:
        """How many distinct unordered pairs carry ``label`` (every row when the indices are unknown)."""
        rows = self.labels == label
        return int(rows.sum()) if self.index is None else distinct_count(self.index[rows])

    def choose_threshold(self, rule: str) -> float:
        """The threshold ``rule`` (``eval.threshold``) picks on these pairs: ``accuracy`` (the best-accuracy
        threshold), ``fpr:<rate>`` (the largest one whose false-accept rate is at most ``rate``) or a number."""
        kind, value = parse_threshold_rule(rule)
        if kind == "accuracy":
            return M.best_threshold(self.distances, self.labels)
        if kind == "fpr":
            return M.threshold_at_fpr(self.distances, self.labels, value)
        return value

    def accuracy_at(self, threshold: float | None = None) -> tuple[float, float]:
        """(threshold, verification accuracy) at ``threshold``, or at the best-accuracy threshold of these pairs
        when it is None (calibration)."""
        if threshold is None:
            threshold = M.best_threshold(self.distances, self.labels)
        return threshold, verification_accuracy(self.distances, self.labels, threshold)


THRESHOLD_RULES = "accuracy, fpr:<rate> (e.g. fpr:0.001) or a distance (e.g. 0.8)"


def parse_threshold_rule(rule: str | float) -> tuple[str, float]:
    """``accuracy`` → ("accuracy", nan); ``fpr:0.001`` → ("fpr", 0.001); ``0.8`` → ("fixed", 0.8)."""
    text = str(rule).strip().lower()
    if text == "accuracy":
        return "accuracy", float("nan")
    kind, sep, raw = text.partition(":")
    try:
        if sep and kind.strip() in ("fpr", "far"):
            rate = float(raw)
            if not 0.0 <= rate <= 1.0:
                raise ValueError
            return "fpr", rate
        if not sep:
            return "fixed", float(text)
    except ValueError:
        pass
    raise ConfigError(f"eval.threshold {rule!r} is not a threshold rule; use {THRESHOLD_RULES}")


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    pairs: PairScores
    embeddings: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)


PAIR_CHUNK_VALUES = 16_000_000  # pair rows gathered at once: at most this many values per side (64 MB of float32)


def pair_distances(emb: torch.Tensor, i: torch.Tensor, j: torch.Tensor, distance: Distance) -> torch.Tensor:
    """Dissimilarities ``(M,)`` of the embedding pairs ``(i, j)`` (a similarity is negated: smaller = closer),
    gathered a chunk of pairs at a time: wide embeddings (raw pixels of photos) never copy one row per pair at
    once."""
    step = max(1, PAIR_CHUNK_VALUES // max(1, emb.shape[1] if emb.ndim > 1 else 1))
    parts = [distance.pairwise(emb[i[s : s + step]], emb[j[s : s + step]]) for s in range(0, len(i), step)]
    values = torch.cat(parts) if parts else torch.empty(0, dtype=emb.dtype)
    return as_dissimilarity(values, distance)


def pair_scores(emb: torch.Tensor, table: TupleTable, distance: Distance | None = None) -> PairScores:
    idx = torch.from_numpy(table.index)
    d = pair_distances(emb, idx[:, 0], idx[:, 1], distance or get_distance("euclidean")).numpy()
    assert table.labels is not None
    return PairScores(d.astype(np.float64), table.labels, table.index)


def evaluate_split(
    model: SiameseNet, images: ImageSet, tuples: TupleTable | None, preprocess: Preprocess, cfg: EvalConfig,
    *, threshold: float | None, seed: int, device: torch.device | str = "cpu", episodes: bool = False,
) -> EvalResult:  # fmt: skip
    """Verification metrics on seeded pairs of the split (or its fixed CSV tuples); retrieval metrics when the
    images carry labels (and episodes, see ``evaluate_embeddings``). ``threshold`` (chosen on validation) gives the
    verification accuracy."""
    emb = embed_images(model, images.images, preprocess, cfg.batch_size, device)
    return evaluate_embeddings(emb, images, tuples, cfg, threshold, seed=seed, episodes=episodes)


def pixel_embeddings(images: ImageArray) -> torch.Tensor:
    """The raw-pixel baseline ``(N, C·H·W)``: uint8 images ``(N, C, H, W)`` at the run's input size, flattened and
    L2-normalised (float32)."""
    flat = as_tensor(images).reshape(len(images), -1).float()
    return torch.nn.functional.normalize(flat, dim=1)


def evaluate_embeddings(
    emb: torch.Tensor, images: ImageSet, tuples: TupleTable | None, cfg: EvalConfig, threshold: float | None,
    *, seed: int, episodes: bool = False,
) -> EvalResult:  # fmt: skip
    """``evaluate_split`` on given embeddings ``(N, D)`` of ``images``: the same seed draws the same pairs and
    triplets, so a model and its baselines (raw pixels, the untrained network) are scored on one protocol. With
    ``episodes`` (test identities) and labelled images, the N-way K-shot figures too (``eval.episodes``: the same
    episodes for every embedding, from ``eval.episode_seed``)."""
    labelled = tuples is None and images.has_labels
    dist = get_distance(cfg.distance)
    pairs = fixed_tuples(images.labels, tuples, "pairs", cfg.n_pairs, seed)
    scores = pair_scores(emb, pairs, dist)
    if tuples is None and images.has_labels:
        scores.groups = np.asarray(images.labels)[pairs.index]
    out: dict[str, Any] = verification_metrics(scores, threshold)
    if tuples is not None and tuples.kind == "triplets":
        trip = tuples
    elif labelled:
        trip = fixed_tuples(images.labels, None, "triplets", cfg.n_triplets, seed + 1)
    else:
        trip = None
    if trip is not None:
        idx = torch.from_numpy(trip.index)
        d_ap = pair_distances(emb, idx[:, 0], idx[:, 1], dist).numpy()
        d_an = pair_distances(emb, idx[:, 0], idx[:, 2], dist).numpy()
        out["similarity_accuracy"] = M.similarity_accuracy(d_ap, d_an)
        out["n_triplets"] = len(trip)
    if labelled:
        out.update(M.retrieval_metrics(emb, images.labels, tuple(cfg.recall_at), distance=dist))
        if episodes and cfg.episodes:
            out["episodes"] = episode_metrics(emb, images.labels, images.class_names, cfg)
    return EvalResult(out, scores, emb if labelled else None)


def verification_metrics(scores: PairScores, threshold: float | None) -> dict[str, Any]:
    s = -scores.distances
    n_impostor_distinct = scores.distinct(0)
    out: dict[str, Any] = {
        "auc": M.auc(scores.labels, s),
        "eer": M.eer(scores.labels, s),
        "tpr_at_fpr": [t.as_dict() for t in M.tpr_at_fpr(scores.labels, s, n_distinct=n_impostor_distinct)],
        "n_genuine": int((scores.labels == 1).sum()),
        "n_impostor": int((scores.labels == 0).sum()),
        "n_genuine_distinct": scores.distinct(1),
        "n_impostor_distinct": n_impostor_distinct,
    }
    if threshold is not None:
        out.update(threshold_metrics(scores, threshold))
    with contextlib.suppress(ValueError):  # the LFW protocol: threshold chosen on 9 folds, scored on the 10th
        out["verification_accuracy_10fold"] = M.kfold_verification_accuracy(scores.distances, scores.labels,
                                                                           groups=scores.groups)  # fmt: skip
    return out


def threshold_metrics(scores: PairScores, threshold: float) -> dict[str, float]:
    """The decision ``same = distance ≤ threshold`` on these pairs: its accuracy and error rates."""
    far, frr = M.rates_at(scores.distances, scores.labels, threshold)
    return {"threshold": threshold, "verification_accuracy": verification_accuracy(scores.distances,
            scores.labels, threshold), "false_accept_rate": far, "false_reject_rate": frr}  # fmt: skip
