"""Loopback load on the HTTP service: ``siamkit serve`` in a subprocess, N ``POST /verify`` requests (two PNG
uploads each) from C concurrent clients; prints one JSON line with p50/p90/p99 latency, requests/s and errors.

    .venv/bin/python benchmarks/serve_load.py                           # trains a digits model first (~10 s)
    .venv/bin/python benchmarks/serve_load.py --run runs/default --requests 10000 --concurrency 16
    .venv/bin/python benchmarks/serve_load.py --backend onnx            # exports model.onnx if missing
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
from pathlib import Path

import numpy as np


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _images(run: Path) -> tuple[bytes, bytes]:
    import io

    from PIL import Image
    from sklearn.datasets import load_digits

    from siamkit.inference import TorchEmbedder

    c, h, w = TorchEmbedder(run).input_shape
    d = load_digits()
    out = []
    for i in (0, 10):
        img = Image.fromarray(np.round(d.images[i] * 255 / 16).astype(np.uint8)).resize((w, h))
        buf = io.BytesIO()
        img.convert("L" if c == 1 else "RGB").save(buf, format="PNG")
        out.append(buf.getvalue())
    return out[0], out[1]


async def _load(url: str, a: bytes, b: bytes, requests: int, concurrency: int) -> tuple[list[float], int, float]:
    import httpx

    latencies: list[float] = []
    errors = 0
    next_request = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors, next_request
        while next_request < requests:
            next_request += 1
            t = time.perf_counter()
            try:
                r = await client.post(
                    url, files={"image_a": ("a.png", a, "image/png"), "image_b": ("b.png", b, "image/png")}
                )
                ok = r.status_code == 200 and "distance" in r.json()
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t)
            errors += not ok

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return latencies, errors, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="run directory (default: train a digits model into a temp folder)")
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    args = ap.parse_args()
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
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        import httpx

        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.time() > deadline:
                raise SystemExit(f"server did not start: {server.stderr.read().decode() if server.stderr else ''}")
            time.sleep(0.2)
        lat, errors, wall = asyncio.run(_load(f"http://127.0.0.1:{port}/verify", a, b, args.requests, args.concurrency))
    finally:
        server.terminate()
        server.wait(timeout=20)
    ms = np.asarray(lat) * 1000
    print(json.dumps({
        "benchmark": "serve_load", "endpoint": "POST /verify (2 PNG uploads)", "backend": args.backend,
        "requests": len(lat), "concurrency": args.concurrency, "errors": int(errors),
        "p50_ms": round(float(np.percentile(ms, 50)), 2), "p90_ms": round(float(np.percentile(ms, 90)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2), "max_ms": round(float(ms.max()), 2),
        "requests_per_s": round(len(lat) / wall, 1), "wall_s": round(wall, 2), "cpus": os.cpu_count(),
        "note": "client and server share this machine's CPUs over loopback",
    }))  # fmt: skip


if __name__ == "__main__":
    main()
