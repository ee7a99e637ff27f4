"""Every registered optimiser and learning-rate schedule builds from a TrainConfig and behaves as its formula says."""

from __future__ import annotations

import math

import pytest
import torch

from siamkit.config import TrainConfig
from siamkit.training.optim import OPTIMIZERS, SCHEDULERS, build_optimizer, build_scheduler


@pytest.mark.parametrize("name", OPTIMIZERS.list())
def test_every_optimizer_takes_a_step_downhill(name):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.tensor([3.0, -2.0]))
    opt = build_optimizer([w], TrainConfig(optimizer=name, lr=0.1, weight_decay=0.0))
    assert opt.param_groups[0]["lr"] == 0.1
    before = float((w**2).sum())
    for _ in range(5):
        opt.zero_grad()
        (w**2).sum().backward()
        opt.step()
    assert float((w**2).sum()) < before


@pytest.mark.parametrize("name", SCHEDULERS.list())
def test_every_schedule_follows_its_formula(name):
    cfg = TrainConfig(scheduler=name, lr=1.0, epochs=4, step_size=2, gamma=0.5)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = build_scheduler(opt, cfg)
    rates = []
    for _ in range(4):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
    want = {
        "none": [1.0, 1.0, 1.0, 1.0],
        "step": [1.0, 1.0, 0.5, 0.5],
        "exponential": [1.0, 0.5, 0.25, 0.125],
        "cosine": [0.5 * (1 + math.cos(math.pi * t / 4)) for t in range(4)],
    }
    assert name in want, f"give schedule {name!r} its closed form here"
    assert rates == pytest.approx(want[name])
