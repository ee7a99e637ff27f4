"""Dynamic batching: concurrent requests share forward passes and every caller gets its own answer, equal to an
unbatched call."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

import siamkit
from siamkit.serve.app import create_app
from siamkit.serve.batching import Batcher, Batching


def _fn(calls):
    def embed(x: torch.Tensor) -> np.ndarray:
        calls.append(len(x))
        time.sleep(0.01)  # a forward pass takes a while: requests queue up meanwhile
        return x.reshape(len(x), -1).float().sum(1, keepdim=True).numpy() * np.array([[1.0, -1.0]])

    return embed


def test_every_caller_gets_its_own_rows():
    calls: list[int] = []
    batcher = Batcher(_fn(calls), max_batch=8, max_wait_ms=20)
    rng = np.random.default_rng(0)
    requests = [rng.integers(0, 256, (int(rng.integers(1, 4)), 1, 2, 2), dtype=np.uint8) for _ in range(25)]

    async def run():
        return await asyncio.gather(*(batcher.embed(r) for r in requests))

    answers = asyncio.run(run())
    for r, got in zip(requests, answers, strict=True):
        want = r.reshape(len(r), -1).astype(np.float64).sum(1, keepdims=True) * np.array([[1.0, -1.0]])
        np.testing.assert_allclose(got, want)
    assert sum(calls) == sum(len(r) for r in requests)
    assert max(calls) <= 8 and len(calls) < len(requests)  # shared passes, never above the cap
    assert batcher.batches == len(calls)


def test_batching_off_runs_each_request_alone():
    calls: list[int] = []
    batcher = Batcher(_fn(calls), max_batch=1)

    async def run():
        return await asyncio.gather(*(batcher.embed(np.full((1, 1, 2, 2), i, np.uint8)) for i in range(5)))

    asyncio.run(run())
    assert calls == [1] * 5


def test_an_error_reaches_every_caller_of_its_batch():
    def boom(x):
        raise RuntimeError("model failed")

    batcher = Batcher(boom, max_batch=16, max_wait_ms=20)

    async def run():
        return await asyncio.gather(*(batcher.embed(np.zeros((1, 1, 2, 2), np.uint8)) for _ in range(4)),
                                    return_exceptions=True)  # fmt: skip

    assert [str(e) for e in asyncio.run(run())] == ["model failed"] * 4
    with pytest.raises(ValueError):
        Batcher(boom, max_batch=0)


def test_the_service_batches_concurrent_requests(small_run, digits_images):
    model = siamkit.load(small_run)
    files = sorted(digits_images.rglob("*.png"))[:24]
    want = model.embed([str(p) for p in files])
    app = create_app(model, batching=Batching(max_batch=32, max_wait_ms=50))
    answers: dict[int, list[float]] = {}
    with TestClient(app) as client:

        def call(i: int) -> None:
            r = client.post("/embed", files={"image": files[i].read_bytes()})
            assert r.status_code == 200, r.text
            answers[i] = r.json()["embeddings"][0]

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(files))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        passes = client.get("/health").json()["batching"]["forward_passes"]
        a, b = files[0].read_bytes(), files[1].read_bytes()
        v = client.post("/verify", files={"image_a": a, "image_b": b}).json()
    for i in range(len(files)):
        np.testing.assert_allclose(answers[i], want[i], atol=1e-5)
    assert passes < len(files)  # requests shared forward passes
    assert v["distance"] == pytest.approx(model.verify(str(files[0]), str(files[1])).distance, abs=1e-5)


def test_bad_batching_flags_are_one_line(small_run, capsys):
    from siamkit.cli import main

    assert main(["serve", str(small_run), "--max-batch", "0"]) == 2
    assert "--max-batch must be at least 1" in capsys.readouterr().err
