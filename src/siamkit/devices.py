"""Which device a run uses (``train.device`` and ``--device``), checked before any work: a light module, so the
service and ``verify`` need nothing of training to pick one."""

from __future__ import annotations

import torch

from siamkit.errors import ConfigError

__all__ = ["keep_freed_memory", "resolve_device"]


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


_TUNED = False


def keep_freed_memory() -> bool:
    """On Linux with glibc: let ``malloc`` keep freed memory for reuse instead of handing every large buffer back
    to the system (``mallopt``: no ``mmap`` for large blocks, trim above 1 GiB). A CPU training step allocates and
    frees activation buffers of tens of MB; served by fresh ``mmap`` pages, each costs page faults and zeroing
    every step — measured 122 → 188 images/s on a 2-core machine (``benchmarks/data_scale.py``). Resident memory
    stays at the peak the steps need. Once per process; True when applied."""
    global _TUNED
    if _TUNED:
        return True
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    _TUNED = bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    return _TUNED
