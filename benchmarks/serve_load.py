"""Loopback load on the HTTP service: ``siamkit serve`` in a subprocess, N ``POST /verify`` requests (two PNG
uploads each) from C concurrent clients; prints one JSON line with p50/p90/p99 latency, requests/s and errors.

With ``--mixed`` the requests are verify / search / gallery add / gallery remove (4:3:2:1) on a gallery that a
``siamkit index add`` / ``remove`` loop in another process edits at the same time; the line adds the 5xx count
and the lost updates: ids whose add or removal was acknowledged (HTTP 201/200, or the CLI's JSON) but that the
final gallery does not reflect, and duplicated ids.

    .venv/bin/python benchmarks/serve_load.py                           # trains a digits model first (~10 s)
    .venv/bin/python benchmarks/serve_load.py --run runs/default --requests 10000 --concurrency 16
    .venv/bin/python benchmarks/serve_load.py --backend onnx            # exports model.onnx if missing
    .venv/bin/python benchmarks/serve_load.py --mixed                   # + gallery edits from HTTP and the CLI
    .venv/bin/python benchmarks/serve_load.py --backbone resnet18 --requests 600   # POST /embed at 224×224,
                                                                        # dynamic batching against none

``--backbone NAME`` trains a small run of that backbone at ``--image-size`` (224: resnet18's pretrained input
size; RGB; no weights are downloaded) and loads ``POST /embed`` (one image each) on two services: with dynamic batching
(``--max-batch 64 --max-wait-ms 5``) and without (``--max-batch 1``); one line each, the batched one with its
throughput ratio over the unbatched.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _images(run: Path) -> tuple[bytes, bytes]:
    import io

    from PIL import Image
    from sklearn.datasets import load_digits

    from siamkit.runs.embedders import TorchEmbedder

    c, h, w = TorchEmbedder(run).input_shape
    d = load_digits()
    out = []
    for i in (0, 10):
        img = Image.fromarray(np.round(d.images[i] * 255 / 16).astype(np.uint8)).resize((w, h))
        buf = io.BytesIO()
        img.convert("L" if c == 1 else "RGB").save(buf, format="PNG")
        out.append(buf.getvalue())
    return out[0], out[1]


async def _drive(
    requests: int, concurrency: int, one: Callable[[Any, int], Awaitable[bool]], timeout: float = 60.0
) -> tuple[list[float], int, float]:
    """``requests`` calls of ``one(client, i)`` (True = success) from ``concurrency`` workers sharing one client;
    returns the latencies, the failures and the wall time."""
    import httpx

    latencies: list[float] = []
    errors = 0
    next_request = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors, next_request
        while next_request < requests:
            i = next_request
            next_request += 1
            t = time.perf_counter()
            try:
                ok = await one(client, i)
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t)
            errors += not ok

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return latencies, errors, wall


async def _load_embed(url: str, a: bytes, requests: int, concurrency: int) -> tuple[list[float], int, float]:
    async def one(client: Any, i: int) -> bool:
        r = await client.post(url, files={"image": ("a.png", a, "image/png")})
        return bool(r.status_code == 200 and "embeddings" in r.json())

    return await _drive(requests, concurrency, one, timeout=120.0)


async def _load(url: str, a: bytes, b: bytes, requests: int, concurrency: int) -> tuple[list[float], int, float]:
    async def one(client: Any, i: int) -> bool:
        r = await client.post(url, files={"image_a": ("a.png", a, "image/png"), "image_b": ("b.png", b, "image/png")})
        return bool(r.status_code == 200 and "distance" in r.json())

    return await _drive(requests, concurrency, one, timeout=30.0)


class Ledger:
    """What the clients were told: ids added and removed, by HTTP and by the CLI, and the status codes."""

    def __init__(self) -> None:
        self.added: list[int] = []
        self.removed: list[int] = []
        self.statuses: dict[int, int] = {}
        self.cli_edits = 0

    def status(self, code: int) -> None:
        self.statuses[code] = self.statuses.get(code, 0) + 1


async def _mixed(base: str, a: bytes, b: bytes, requests: int, concurrency: int, ledger: Ledger, token: str
                 ) -> tuple[list[float], int, float]:  # fmt: skip
    """verify / search / add / remove in the ratio 4:3:2:1; a request fails when it is not 2xx."""
    own: list[int] = []  # ids this client added and may remove
    auth = {"Authorization": f"Bearer {token}"}

    async def one(client: Any, i: int) -> bool:
        kind = i % 10
        if kind < 4:
            r = await client.post(f"{base}/verify", files={"image_a": ("a.png", a), "image_b": ("b.png", b)})
        elif kind < 7:
            r = await client.post(f"{base}/search", files={"image": ("a.png", a)}, data={"k": "5"})
        elif kind < 9 or not own:
            r = await client.post(f"{base}/gallery", files={"image": ("b.png", b)}, data={"label": "load"},
                                  headers=auth)  # fmt: skip
            if r.status_code == 201:
                new = int(r.json()["id"])
                ledger.added.append(new)
                own.append(new)
        else:
            victim = own.pop(0)
            r = await client.delete(f"{base}/gallery/{victim}", headers=auth)
            if r.status_code == 200:
                ledger.removed.append(victim)
        ledger.status(r.status_code)
        return 200 <= r.status_code < 300

    return await _drive(requests, concurrency, one)


def _cli_editor(siamkit: list[str], gallery: Path, image: Path, ledger: Ledger, stop: list[bool]) -> None:
    """``siamkit index add`` then ``remove`` of what it added, in a loop, until ``stop[0]``."""
    while not stop[0]:
        r = subprocess.run([*siamkit, "index", "add", str(gallery), str(image), "--label", "cli", "--format", "json"],
                           capture_output=True, text=True)  # fmt: skip
        if r.returncode != 0:
            raise SystemExit(f"index add failed: {r.stderr}")
        ids = json.loads(r.stdout)["added_ids"]
        ledger.added += ids
        ledger.cli_edits += 1
        r = subprocess.run([*siamkit, "index", "remove", str(gallery), *map(str, ids[:1]), "--format", "json"],
                           capture_output=True, text=True)  # fmt: skip
        if r.returncode != 0:
            raise SystemExit(f"index remove failed: {r.stderr}")
        ledger.removed += json.loads(r.stdout)["removed_ids"]
        ledger.cli_edits += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="run directory (default: train a digits model into a temp folder)")
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    ap.add_argument("--mixed", action="store_true", help="verify/search/add/remove while the CLI edits the gallery")
    ap.add_argument("--backbone", help="POST /embed on a run of this backbone, batched against unbatched")
    ap.add_argument("--image-size", type=int, default=224, help="--backbone: the run's input size (default 224)")
    args = ap.parse_args()
    if args.backbone:
        embed_batching(args)
        return
    siamkit = [sys.executable, "-m", "siamkit"]
    tmp = tempfile.TemporaryDirectory()
    run = Path(args.run) if args.run else Path(tmp.name) / "runs" / "load"
    if not args.run:
        subprocess.run([*siamkit, "train", "--runs-dir", str(run.parent), "--name", "load", "-q", "--format", "json"],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    if args.backend == "onnx" and not (run / "model.onnx").exists():
        subprocess.run([*siamkit, "export", str(run), "-q"], check=True, stdout=subprocess.DEVNULL)
    a, b = _images(run)
    port = _free_port()
    cmd = [*siamkit, "serve", str(run), "--port", str(port), "--backend", args.backend, "-q"]
    token = "load-test-token"
    gallery = Path(tmp.name) / "gallery"
    if args.mixed:
        image = Path(tmp.name) / "cli.png"
        image.write_bytes(b)
        subprocess.run([*siamkit, "index", "build", str(run), str(image), "--out", str(gallery), "-q"], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        cmd += ["--gallery", str(gallery), "--token", token]
    ledger = Ledger()
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_until_up(server, port)
        if args.mixed:
            import threading

            initial = set(_gallery_ids(gallery))
            stop = [False]
            editor = threading.Thread(target=_cli_editor, args=(siamkit, gallery, image, ledger, stop))
            editor.start()
            try:
                lat, errors, wall = asyncio.run(_mixed(f"http://127.0.0.1:{port}", a, b, args.requests,
                                                       args.concurrency, ledger, token))  # fmt: skip
            finally:
                stop[0] = True
                editor.join()
        else:
            lat, errors, wall = asyncio.run(_load(f"http://127.0.0.1:{port}/verify", a, b, args.requests,
                                                  args.concurrency))  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=20)
    ms = np.asarray(lat) * 1000
    extra: dict[str, object] = {}
    if args.mixed:
        final = _gallery_ids(gallery)
        expected = (initial | set(ledger.added)) - set(ledger.removed)
        extra = {"status_counts": dict(sorted(ledger.statuses.items())),
                 "server_errors_5xx": sum(n for c, n in ledger.statuses.items() if c >= 500),
                 "acknowledged_adds": len(ledger.added), "acknowledged_removes": len(ledger.removed),
                 "cli_edits": ledger.cli_edits, "final_size": len(final),
                 "lost_updates": len(expected ^ set(final)), "duplicate_ids": len(final) - len(set(final))}  # fmt: skip
    print(json.dumps({
        "benchmark": "serve_load", "backend": args.backend, **extra,
        "endpoint": "verify/search/add/remove 4:3:2:1 + CLI edits" if args.mixed else "POST /verify (2 PNG uploads)",
        "requests": len(lat), "concurrency": args.concurrency, "errors": int(errors),
        "p50_ms": round(float(np.percentile(ms, 50)), 2), "p90_ms": round(float(np.percentile(ms, 90)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2), "max_ms": round(float(ms.max()), 2),
        "requests_per_s": round(len(lat) / wall, 1), "wall_s": round(wall, 2), "cpus": os.cpu_count(),
        "note": "client and server share this machine's CPUs over loopback",
    }))  # fmt: skip


def _wait_until_up(server: subprocess.Popen[bytes], port: int) -> None:
    import httpx

    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.time() > deadline:
            raise SystemExit(f"server did not start: {server.stderr.read().decode() if server.stderr else ''}")
        time.sleep(0.2)


def embed_batching(args: argparse.Namespace) -> None:
    """``POST /embed`` on a ``--backbone`` run: a service with dynamic batching, then one without."""
    siamkit = [sys.executable, "-m", "siamkit"]
    tmp = tempfile.TemporaryDirectory()
    run = Path(args.run) if args.run else Path(tmp.name) / "runs" / "embed"
    if not args.run:
        subprocess.run([*siamkit, "train", "--backbone", args.backbone, "--runs-dir", str(run.parent), "--name",
                        "embed", "--epochs", "1", "--set", "data.limit=64", "--set", "eval.n_pairs=100", "--set",
                        "eval.tsne_points=0", "--set", "data.split=random", "--set",
                        f"data.image_size={args.image_size}", "--set", "data.channels=3", "-q", "--format", "json"],
                       check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
    a, _ = _images(run)
    ceiling = {**_forward_only(run, args.concurrency), "backbone": args.backbone}
    print(json.dumps(ceiling), flush=True)
    results = {}
    for name, flags in (("unbatched", ["--max-batch", "1"]), ("batched", ["--max-batch", "64", "--max-wait-ms", "5"])):
        port = _free_port()
        server = subprocess.Popen([*siamkit, "serve", str(run), "--port", str(port), "-q", *flags],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        try:
            _wait_until_up(server, port)
            asyncio.run(_load_embed(f"http://127.0.0.1:{port}/embed", a, 2 * args.concurrency, args.concurrency))
            lat, errors, wall = asyncio.run(_load_embed(f"http://127.0.0.1:{port}/embed", a, args.requests,
                                                        args.concurrency))  # fmt: skip
        finally:
            server.terminate()
            server.wait(timeout=20)
        ms = np.asarray(lat) * 1000
        results[name] = line = {
            "benchmark": "serve_load", "endpoint": "POST /embed (1 PNG)", "backbone": args.backbone,
            "service": name, "flags": " ".join(flags), "input": f"3x{args.image_size}x{args.image_size}",
            "requests": len(lat), "concurrency": args.concurrency,
            "errors": int(errors), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1), "images_per_s": round(len(lat) / wall, 1),
            "cpus": os.cpu_count(),
        }  # fmt: skip
        if name == "batched":
            line["throughput_over_unbatched"] = round(line["images_per_s"] / results["unbatched"]["images_per_s"], 2)
        print(json.dumps(line), flush=True)


def _forward_only(run: Path, batch: int, seconds: float = 5.0) -> dict[str, Any]:
    """What batching can gain at most here: the model's forward pass alone (no HTTP, no decoding, no client on
    the same CPUs), images/s one at a time and ``batch`` at a time."""
    import torch

    from siamkit.runs.embedders import TorchEmbedder

    emb = TorchEmbedder(run)
    rates = {}
    for size in (1, batch):
        x = torch.randint(0, 256, (size, *emb.input_shape), dtype=torch.uint8)
        emb.embed(x)  # warm-up
        t, n = time.perf_counter(), 0
        while time.perf_counter() - t < seconds:
            emb.embed(x)
            n += size
        rates[size] = n / (time.perf_counter() - t)
    return {
        "benchmark": "serve_load", "measure": "forward pass only (the ceiling of batching)",
        "images_per_s_batch_1": round(rates[1], 1), f"images_per_s_batch_{batch}": round(rates[batch], 1),
        "batch_gain_ceiling": round(rates[batch] / rates[1], 2), "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
    }  # fmt: skip


def _gallery_ids(gallery: Path) -> list[int]:
    from siamkit.index import Gallery

    return list(Gallery.open(gallery).items)


if __name__ == "__main__":
    main()
