"""N-way K-shot episodes (Vinyals et al. 2016; Snell et al. 2017): the few-shot question a Siamese network answers.

An episode draws ``way`` classes, ``shot`` support and ``query`` query images of each (disjoint); every query is
assigned the class whose prototype — the mean of its ``shot`` support embeddings — is nearest under the run's
distance. The accuracy over all queries of an episode is that episode's score; the figure is the mean over
``episodes`` episodes with its 95 % interval ``1.96·σ/√E`` and chance ``1/way``. Episodes are drawn from a seed, so
a model and its baselines (raw pixels, the untrained network, the descriptor) are scored on the same episodes.

With ``groups`` (a group per class: an alphabet for a character) each episode's classes come from one group
(Koch et al. 2015, Lake et al. "within alphabet"), a harder test: neighbours of the same script look alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from siamkit.distances import as_dissimilarity, get_distance
from siamkit.errors import ConfigError

DEFAULT_SETTINGS = ((5, 1), (5, 5), (20, 1), (20, 5))
"""(way, shot) pairs scored by default: ``eval.way`` × ``eval.shot``."""


@dataclass(frozen=True)
class EpisodePlan:
    """Image indices of ``E`` episodes: ``support`` ``(E, way, shot)`` and ``query`` ``(E, way, q)``."""

    way: int
    shot: int
    query: int
    support: np.ndarray
    queries: np.ndarray
    within_group: bool

    @property
    def key(self) -> str:
        return f"{self.way}way{self.shot}shot"


def plan_episodes(
    labels: np.ndarray, way: int, shot: int, query: int, episodes: int, *, seed: int,
    groups: np.ndarray | None = None,
) -> EpisodePlan | str:  # fmt: skip
    """Draw ``episodes`` episodes over images with class ``labels`` ``(N,)``; ``groups`` ``(n_classes,)`` maps a
    class id to its group (None: classes drawn from all). Only classes with at least ``shot + 1`` images take
    part; the queries per class are ``query``, or fewer when fewer than ``way`` classes have ``shot + query``
    images (the largest number that ``way`` classes have). Returns the reason, as a string, when no episode can be
    drawn (fewer than ``way`` eligible classes, within a group when asked)."""
    if way < 2 or shot < 1 or query < 1 or episodes < 1:
        raise ConfigError(f"episodes need way ≥ 2, shot ≥ 1, query ≥ 1 and episodes ≥ 1, got {way}, {shot}, {query}, "
                          f"{episodes}")  # fmt: skip
    labels = np.asarray(labels, np.int64)
    classes, counts = np.unique(labels[labels >= 0], return_counts=True)
    spare = counts - shot  # images a class has beyond its support
    eligible = spare >= 1
    if eligible.sum() < way:
        return f"needs {way} classes with {shot + 1}+ images, the data has {int(eligible.sum())}"
    q = min(query, int(np.sort(spare[eligible])[-way]))  # `way` classes have at least q queries
    classes = classes[spare >= q]
    if groups is not None:
        g = np.asarray(groups, np.int64)[classes]
        values, sizes = np.unique(g, return_counts=True)
        usable = values[sizes >= way]
        if not len(usable):
            return f"no group has {way} classes with {shot + q} images"
        members = [classes[g == u] for u in usable]
    else:
        members = [classes]
    by_class = {int(c): np.flatnonzero(labels == c) for c in classes}
    rng = np.random.default_rng(seed)
    support = np.empty((episodes, way, shot), np.int64)
    queries = np.empty((episodes, way, q), np.int64)
    for e in range(episodes):
        pool = members[int(rng.integers(len(members)))]
        for j, c in enumerate(rng.choice(pool, way, replace=False)):
            pick = rng.choice(by_class[int(c)], shot + q, replace=False)
            support[e, j], queries[e, j] = pick[:shot], pick[shot:]
    return EpisodePlan(way, shot, q, support, queries, groups is not None)


def episode_scores(emb: torch.Tensor, plan: EpisodePlan, distance: str = "euclidean", chunk: int = 100) -> np.ndarray:
    """Each episode's accuracy ``(E,)``: the share of its queries whose nearest prototype (mean of the class's
    support embeddings, under ``distance``) is their own class's; ties go to the lower class position."""
    dist = get_distance(distance)
    emb = emb.float()
    out = []
    for s in range(0, len(plan.support), chunk):
        sup = emb[torch.from_numpy(plan.support[s : s + chunk])]  # (e, way, shot, D)
        qry = emb[torch.from_numpy(plan.queries[s : s + chunk])]  # (e, way, q, D)
        proto = sup.mean(2)  # (e, way, D)
        e, way, q, d = qry.shape
        flat = qry.reshape(e, way * q, d)
        scores = torch.stack([as_dissimilarity(dist.matrix(flat[i], proto[i]), dist) for i in range(e)])
        pred = scores.argmin(2)  # (e, way·q)
        truth = torch.arange(way).repeat_interleave(q)
        out.append((pred == truth).float().mean(1).numpy())
    return np.concatenate(out).astype(np.float64)


def summarise(scores: np.ndarray, plan: EpisodePlan) -> dict[str, Any]:
    """The figure of one setting: mean accuracy, its 95 % interval half-width, chance and the protocol."""
    n = len(scores)
    std = float(scores.std(ddof=1)) if n > 1 else 0.0
    return {"accuracy": float(scores.mean()), "ci95": 1.96 * std / math.sqrt(n), "chance": 1.0 / plan.way,
            "episodes": n, "way": plan.way, "shot": plan.shot, "query": plan.query,
            "within_group": plan.within_group}  # fmt: skip


def plan_settings(
    labels: np.ndarray, settings: Sequence[tuple[int, int]], query: int, episodes: int, seed: int,
    *, groups: np.ndarray | None = None,
) -> dict[str, EpisodePlan | str]:  # fmt: skip
    """One plan (or the reason there is none) per (way, shot), keyed ``"<way>way<shot>shot"``; each setting its
    own seed, so that adding a setting changes no other's episodes."""
    return {f"{w}way{k}shot": plan_episodes(labels, w, k, query, episodes, seed=seed + 1000 * w + k, groups=groups)
            for w, k in settings}  # fmt: skip


def score_plans(emb: torch.Tensor, plans: dict[str, EpisodePlan | str], distance: str = "euclidean") -> dict[str, Any]:
    """``{"<way>way<shot>shot": {"accuracy", "ci95", "chance", …}}``; a setting that could not be drawn is
    ``{"skipped": reason}``."""
    return {key: {"skipped": plan} if isinstance(plan, str) else summarise(episode_scores(emb, plan, distance), plan)
            for key, plan in plans.items()}  # fmt: skip


def episode_metrics(emb: torch.Tensor, labels: np.ndarray, class_names: Sequence[str], cfg: Any) -> dict[str, Any]:
    """The ``episodes`` entry of a split's metrics under ``cfg`` (``EvalConfig``: ``episodes``, ``way``,
    ``shot``, ``query``, ``episode_seed``, ``within_group``, ``distance``); empty with ``episodes: 0``."""
    if not cfg.episodes:
        return {}
    groups = None
    if cfg.within_group:
        from siamkit.data.readers import class_groups

        found = class_groups(class_names)
        if found is None:
            raise ConfigError("eval.within_group needs grouped classes (root/<group>/<class>/ folders, "
                              "data.grouped); this data has none: set eval.within_group=false")  # fmt: skip
        groups = found[0]
    settings = [(w, k) for w in cfg.way for k in cfg.shot]
    plans = plan_settings(labels, settings, cfg.query, cfg.episodes, cfg.episode_seed, groups=groups)
    return score_plans(emb, plans, cfg.distance)
