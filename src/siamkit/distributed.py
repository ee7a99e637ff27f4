"""Multi-process / multi-machine training on PyTorch's own engine: ``torchrun`` + DistributedDataParallel.

``torchrun --nproc_per_node=N -m siamkit train ...`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; ``setup()``
then joins the process group (NCCL on GPUs, gloo on CPUs, chosen automatically) and pins each process to its
GPU. What this module adds to DDP:

- ``shard_plan``: every rank takes its contiguous slice of each *global* batch (a P×K batch splits by whole
  classes when P is divisible by the world size), so the ranks' parts together are exactly the batch one
  process would train on, and an epoch covers every sample as in single-process training.
- ``Gatherer``: losses and miners see the embeddings of **all** ranks. Each rank all-gathers the others' rows
  (detached) and puts its own rows, with their graph, in its slot, so gradients flow through each rank's own
  part only. That part's gradient is scaled by the world size (``GradScale``): DDP then averages the ranks'
  gradients back to exactly the single-process gradient of the loss over the global batch — for the encoder,
  whose gradient arrives through the gathered rows, and for parameters used after the gather (the sigmoid
  head, FDT/FDC's U, proxies), whose gradient every rank computes in full.
- ``gather_embeddings``: distributed evaluation — each rank embeds its share (DistributedSampler's split,
  padded to equal sizes), and the gathered result drops the padding duplicates and restores the order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistInfo()


def env_info() -> DistInfo:
    """What torchrun (or another launcher) put in the environment; a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    return DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def setup(device_name: str = "auto") -> tuple[DistInfo, torch.device | None]:
    """Join the process group when launched by torchrun; returns the rank info and, on GPUs, this rank's
    device (None: let ``train.device`` decide)."""
    info = env_info()
    if not info.enabled:
        return info, None
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        if use_cuda:
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
        log.info("rank %d/%d joined the process group (%s)", info.rank, info.world_size, backend)
    return info, torch.device("cuda", info.local_rank) if use_cuda else None


def current() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return SINGLE


def barrier() -> None:
    if current().enabled:
        dist.barrier()


def shard(n: int, rank: int, world: int) -> slice:
    """Rank ``rank``'s contiguous share of ``n`` rows (``np.array_split`` sizes: the first ones one larger)."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


class GradScale(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``scale``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


def _all_gather_rows(t: torch.Tensor, world: int) -> list[torch.Tensor]:
    """Every rank's ``t`` (rows may differ in number): padded to the largest, gathered, trimmed."""
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    longest = int(max(int(s) for s in sizes))
    padded = t.new_zeros((longest, *t.shape[1:]))
    padded[: t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return [p[: int(s)] for p, s in zip(parts, sizes, strict=True)]


class Gatherer:
    """All-gather along the first dimension with gradients through this rank's own rows only, scaled by the
    world size (see the module docstring). Rows come back in rank order."""

    def __init__(self, info: DistInfo) -> None:
        self.info = info

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        if not self.info.enabled:
            return t
        parts = _all_gather_rows(t.detach(), self.info.world_size)
        own = GradScale.apply(t, float(self.info.world_size)) if t.requires_grad else t
        parts[self.info.rank] = own
        return torch.cat(parts)


def gather_embeddings(
    embed: Callable[[torch.Tensor], torch.Tensor], n: int, info: DistInfo | None = None
) -> torch.Tensor:  # fmt: skip
    """Embeddings of items ``0..n-1`` computed across ranks: rank r embeds positions ``r, r+W, r+2W, …`` of the
    list padded (as ``DistributedSampler`` pads) to a multiple of the world size; the gathered rows are put back
    in order and the padding duplicates dropped. ``embed(index)`` returns this rank's rows on any device."""
    info = info or current()
    if not info.enabled:
        return embed(torch.arange(n))
    world = info.world_size
    total = -(-n // world) * world
    padded = np.concatenate([np.arange(n), np.arange(total - n) % max(n, 1)])
    mine = torch.from_numpy(padded[info.rank : total : world])
    local = embed(mine)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    parts = _all_gather_rows(local.to(device), world)
    out = torch.empty((total, *local.shape[1:]), dtype=local.dtype)
    for r, p in enumerate(parts):
        out[r:total:world] = p.cpu()
    return out[:n]


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class DDPView:
    """What losses see of a DDP-wrapped ``SiameseNet``: ``embed``/``features`` run through DDP's forward (so that
    its gradient synchronisation is armed); every other attribute (``head``, ``similarity_logit``, …) is the
    wrapped model's."""

    def __init__(self, ddp: torch.nn.parallel.DistributedDataParallel) -> None:
        self.ddp = ddp
        self.module = ddp.module

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.ddp(x, mode="embed")
        return out

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.ddp(x, mode="features")
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.module, name)


def wrap_model(model: torch.nn.Module, info: DistInfo, device: torch.device) -> DDPView:
    """DDP around ``model`` (already on ``device``); only parameters that train now are synchronised, so a
    model whose frozen part is unfrozen later is wrapped again."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else info.local_rank] if device.type == "cuda" else None
    return DDPView(DistributedDataParallel(model, device_ids=ids))


def convert_sync_batchnorm(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """BatchNorm statistics over the global batch (``train.sync_batchnorm``); PyTorch's SyncBatchNorm runs on
    GPUs only."""
    from siamkit.errors import ConfigError

    if device.type != "cuda":
        raise ConfigError(
            "train.sync_batchnorm needs GPUs (PyTorch's SyncBatchNorm runs on CUDA only); unset it on CPUs"
        )
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def all_reduce_sum(value: float, device: torch.device) -> float:
    if not current().enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not current().enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not current().enabled:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s random draws (augmentation, dropout): ``seed`` itself on rank 0 (a single process
    is unchanged), a distinct one derived from (seed, rank) elsewhere, so ranks do not draw the same masks."""
    if rank == 0:
        return seed
    import numpy as np

    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])
