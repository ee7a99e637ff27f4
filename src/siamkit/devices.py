"""Which device a run uses (``train.device`` and ``--device``), checked before any work: a light module, so the
service and ``verify`` need nothing of training to pick one."""

from __future__ import annotations

import torch

from siamkit.errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown train.device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"train.device={name}: this machine has no CUDA GPU; use cpu or auto")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"train.device={name}: there is no GPU {device.index} (this machine has {count}: "
                              f"cuda:0–cuda:{count - 1})")  # fmt: skip
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"train.device={name}: MPS is not available here; use cpu or auto")
    return device
