"""Dynamic batching: concurrent requests' images gathered into one forward pass.

Every ``/embed``, ``/verify``, ``/search`` and gallery add hands its images to one :class:`Batcher`. A single
consumer on the event loop takes the first waiting request, then keeps taking requests until the batch holds
``max_batch`` images or ``max_wait_ms`` have passed since the first one arrived, runs the model once on all of
them in the thread pool, and gives every caller its own rows. While a batch runs, new requests queue up and form
the next one, so under load batches fill without waiting; a lone request waits at most ``max_wait_ms``.
``max_batch=1`` turns batching off (each request runs alone, as before).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from starlette.concurrency import run_in_threadpool

from siamkit.serve.defaults import MAX_BATCH, MAX_WAIT_MS


@dataclass(frozen=True)
class Batching:
    """``--max-batch`` (images per forward pass; 1 = no batching) and ``--max-wait-ms`` (the longest a request
    waits for others to join its batch)."""

    max_batch: int = MAX_BATCH
    max_wait_ms: float = MAX_WAIT_MS


@dataclass
class _Request:
    images: np.ndarray
    done: asyncio.Future[np.ndarray] = field(repr=False)


class Batcher:
    """Gathers ``embed`` calls (uint8 ``(n, C, H, W)`` each) into batches of at most ``max_batch`` images, waiting at
    most ``max_wait_ms`` for more after the first; ``fn`` embeds one batch ``(N, C, H, W)`` → ``(N, D)``."""

    def __init__(self, fn: Callable[[torch.Tensor], np.ndarray], max_batch: int = 64, max_wait_ms: float = 5.0):
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError("max_batch must be at least 1 and max_wait_ms at least 0")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.queue: asyncio.Queue[_Request] | None = None
        self.worker: asyncio.Task[None] | None = None
        self.batches = 0
        """Forward passes run so far (tests and ``/health`` read it)."""

    async def embed(self, images: np.ndarray) -> np.ndarray:
        """The embeddings ``(n, D)`` of ``images`` ``(n, C, H, W)``, computed within some batch."""
        if self.max_batch == 1 or len(images) >= self.max_batch:
            self.batches += 1
            return await run_in_threadpool(self.fn, torch.from_numpy(images))
        loop = asyncio.get_running_loop()
        if self.queue is None or self.worker is None or self.worker.done():
            self.queue = asyncio.Queue()
            self.worker = loop.create_task(self._run(self.queue))
        request = _Request(images, loop.create_future())
        await self.queue.put(request)
        return await request.done

    async def _run(self, queue: asyncio.Queue[_Request]) -> None:
        loop = asyncio.get_running_loop()
        carry: _Request | None = None
        while True:
            first = carry if carry is not None else await queue.get()
            carry = None
            batch, count = [first], len(first.images)
            deadline = loop.time() + self.max_wait
            while count < self.max_batch:
                try:
                    nxt = queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        nxt = await asyncio.wait_for(queue.get(), remaining)
                    except asyncio.TimeoutError:
                        break
                if count + len(nxt.images) > self.max_batch:
                    carry = nxt  # the next batch starts with it
                    break
                batch.append(nxt)
                count += len(nxt.images)
            await self._serve(batch)

    async def _serve(self, batch: list[_Request]) -> None:
        live = [r for r in batch if not r.done.done()]  # a caller that went away needs no answer
        if not live:
            return
        self.batches += 1
        try:
            vectors = await run_in_threadpool(self.fn, torch.from_numpy(np.concatenate([r.images for r in live])))
        except Exception as exc:  # every caller of the batch gets the error
            for r in live:
                if not r.done.done():
                    r.done.set_exception(exc)
            return
        start = 0
        for r in live:
            if not r.done.done():
                r.done.set_result(vectors[start : start + len(r.images)])
            start += len(r.images)
