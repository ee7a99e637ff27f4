"""Optimisers and learning-rate schedules (``train.optimizer``, ``train.scheduler``): registries of factories
over the run's :class:`~siamkit.config.TrainConfig`, so that a new one is one function and one decorator."""

from __future__ import annotations

from typing import Any

import torch

from siamkit.config import TrainConfig
from siamkit.registry import Registry

OPTIMIZERS: Registry[torch.optim.Optimizer] = Registry("train.optimizer")
"""``train.optimizer``: factories ``(params, cfg: TrainConfig) → Optimizer`` (``lr``, ``weight_decay``,
``momentum`` from the config)."""
SCHEDULERS: Registry[torch.optim.lr_scheduler.LRScheduler | None] = Registry("train.scheduler")
"""``train.scheduler``: factories ``(optimizer, cfg: TrainConfig) → LRScheduler | None``, stepped once per epoch."""


@OPTIMIZERS.register("adam")
def _adam(params: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam (Kingma & Ba, 2015) with L2 weight decay. Every optimiser here uses PyTorch's multi-tensor
    (``foreach``) update on every device — one call per step over all parameters, the default only on CUDA."""
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)


@OPTIMIZERS.register("adamw")
def _adamw(params: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (Loshchilov & Hutter, 2019): decoupled weight decay."""
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)


@OPTIMIZERS.register("sgd")
def _sgd(params: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with (heavy-ball) momentum ``train.momentum``."""
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True)


@SCHEDULERS.register("none")
def _constant(opt: torch.optim.Optimizer, cfg: TrainConfig) -> None:
    return None


@SCHEDULERS.register("step")
def _step(opt: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """lr_t = lr_0·γ^⌊t / step_size⌋."""
    return torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)


@SCHEDULERS.register("exponential")
def _exponential(opt: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """lr_t = lr_0·γ^t."""
    return torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.gamma)


@SCHEDULERS.register("cosine")
def _cosine(opt: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine annealing to 0 over ``train.epochs`` (Loshchilov & Hutter, 2017, without restarts)."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))


def build_optimizer(params: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser ``cfg.optimizer`` (registered in ``OPTIMIZERS``) over ``params``."""
    return OPTIMIZERS.get(cfg.optimizer)(params, cfg)


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The learning-rate schedule ``cfg.scheduler`` (registered in ``SCHEDULERS``), or None for a constant rate."""
    return SCHEDULERS.get(cfg.scheduler)(opt, cfg)
