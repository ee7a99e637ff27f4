"""Training throughput of ``torchrun --nproc_per_node=N -m siamkit train`` for each N (gloo on CPUs, NCCL on
GPUs), same recipe and global batch: one JSON line per world size with the training images/s (all ranks) and
the test metrics of the run. Threads: the cores are split between the processes (``OMP_NUM_THREADS``).

    .venv/bin/python benchmarks/distributed.py                        # N = 1 and 2, 2 epochs of Fashion-MNIST
    .venv/bin/python benchmarks/distributed.py --nproc 1 2 4 --epochs 3 --data digits
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="CPU threads shared by the processes")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        print("distributed.py: error: torchrun not found (it comes with torch)", file=sys.stderr)
        return 2
    for n in args.nproc:
        with tempfile.TemporaryDirectory() as runs:
            env = {**os.environ, "OMP_NUM_THREADS": str(max(1, args.cores // n))}
            cmd = [torchrun, f"--nproc_per_node={n}", f"--master_port={free_port()}", "--master_addr=127.0.0.1",
                   "-m", "siamkit", "train", "--data", args.data, "--epochs", str(args.epochs), "--runs-dir", runs,
                   "--name", "ddp", "--format", "json", "--set", "train.progress=false", "--set", "train.patience=0",
                   "--set", "data.val_fraction=0.05", *[a for o in args.overrides for a in ("--set", o)]]  # fmt: skip
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                print(f"distributed.py: error: nproc {n}: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                return 2
            r = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("{")))
        print(json.dumps({
            "benchmark": "distributed", "nproc": n, "backend": "nccl" if "cuda" in r.get("device", "") else "gloo",
            "threads_per_process": int(env["OMP_NUM_THREADS"]), "data": args.data, "epochs": r["epochs_run"],
            "train_seconds": r["train_seconds"], "images_per_second": r["images_per_second"],
            "wall_seconds": round(wall, 1), "precision_at_1": round(r["test"]["precision_at_1"], 4),
            "map_at_r": round(r["test"]["map_at_r"], 4), "auc": round(r["test"]["auc"], 4),
        }), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
