"""The data path at scale: decode once in parallel into the cache, start warm in seconds, train with bounded
memory. Writes a synthetic class-per-folder JPEG dataset itself (deterministic: per identity a smooth random
face-sized pattern, per image a shift, a brightness change and noise), then prints one JSON line per measurement:

- ``decode``: today's single-process in-memory decode (``data.cache=false``) against the parallel cold build of
  the cache (``data.workers`` = cores), on a subset where today's path fits: images/s of each and the ratio;
- ``cache_full``: the cold parallel build of the whole set, and the decoded size;
- ``warm_start``: a fresh process, cache present, from the start of data loading to the end of the first
  training step (seconds; and the import time before it);
- ``train_memory``: a fresh process training on the whole set read from the cache file (the decoded set being
  larger than ``data.memory_limit_mb``): peak resident memory (``ru_maxrss``) and images/s;
- ``train_speed``: training images/s on the subset from the cache file (``memory_limit_mb=0``) against the
  in-memory path, and the ratio.

    .venv/bin/python benchmarks/data_scale.py                        # 100k images 112×112×3 (3.8 GB decoded)
    .venv/bin/python benchmarks/data_scale.py --n 20000 --subset 5000  # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PER_CLASS = 100


def _make_class(task: tuple[Path, int, int, int]) -> int:
    from PIL import Image

    root, cls, side, per_class = task
    rng = np.random.default_rng(cls)
    folder = root / f"id{cls:05d}"
    folder.mkdir(parents=True, exist_ok=True)
    base = rng.integers(0, 256, (side // 8, side // 8, 3), dtype=np.uint8)
    pattern = np.asarray(Image.fromarray(base).resize((side + 16, side + 16), Image.Resampling.BICUBIC), np.float32)
    for i in range(per_class):
        dy, dx = rng.integers(0, 16, 2)
        img = pattern[dy : dy + side, dx : dx + side] * rng.uniform(0.7, 1.3) + rng.normal(0, 12, (side, side, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{i:04d}.jpg", quality=90)
    return per_class


def make_dataset(root: Path, n: int, side: int) -> None:
    """``n`` JPEGs in ``n / 100`` identity folders (skipped when already there)."""
    classes = n // PER_CLASS
    if root.is_dir() and sum(1 for _ in root.glob("id*/*.jpg")) == classes * PER_CLASS:
        return
    shutil.rmtree(root, ignore_errors=True)
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(os.cpu_count()) as pool:
        pool.map(_make_class, [(root, c, side, PER_CLASS) for c in range(classes)], chunksize=8)


def subset_of(root: Path, n: int, out: Path) -> Path:
    """The first ``n / 100`` identities of ``root`` as a folder of links."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for d in sorted(root.iterdir())[: n // PER_CLASS]:
        (out / d.name).symlink_to(d.resolve(), target_is_directory=True)
    return out


def _config(source: Path, cache_dir: Path, steps_batch: int, overrides: list[str]):  # type: ignore[no-untyped-def]
    from siamkit.config import load_config

    return load_config(None, [
        f"data.source={source}", f"data.cache_dir={cache_dir}", "data.channels=3", "data.split=random",
        "data.val_fraction=0.05",
        "data.test_fraction=0.05", "data.progress=false", f"sampling.p={steps_batch // 8}", "sampling.k=8",
        "model.backbone=convnet", "train.progress=false", *overrides,
    ])  # fmt: skip


def train_steps(source: Path, cache_dir: Path, steps: int, batch: int, overrides: list[str]) -> dict[str, float]:
    """In this process: load the data (from the cache when there), then ``steps`` training steps of the default
    loss on P×K batches: seconds to the first step's end, images/s over the steps after the first."""
    t0 = time.perf_counter()
    import torch

    from siamkit.devices import keep_freed_memory
    from siamkit.plan import prepare
    from siamkit.training.batches import make_batch

    torch.set_num_threads(os.cpu_count() or 1)
    if "train.keep_freed_memory=false" not in overrides:
        keep_freed_memory()  # as fit() does on the CPU
    imported = time.perf_counter() - t0
    t0 = time.perf_counter()
    cfg = _config(source, cache_dir, batch, overrides)
    plan = prepare(cfg)
    loaded = time.perf_counter() - t0
    cfg, prep, model, loss_fn, train_source = plan.cfg, plan.prepared, plan.model, plan.loss, plan.train_batches
    opt = torch.optim.Adam(list(model.parameters()) + list(loss_fn.parameters()), lr=1e-3)
    images = prep.splits.train.images.images
    device = torch.device("cpu")
    first = 0.0
    seen, timed_from = 0, 0.0
    step = 0
    epoch = 1
    while step < steps:
        for b in train_source.plan(epoch):
            step_batch = make_batch(images, b, prep.preprocess, device, train=True)
            loss = loss_fn(model, step_batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step == 1:
                first = time.perf_counter() - t0
                timed_from = time.perf_counter()
            else:
                seen += b.n_images
            if step >= steps:
                break
        epoch += 1
    seconds = time.perf_counter() - timed_from
    return {"import_s": round(imported, 2), "load_s": round(loaded, 2), "first_step_s": round(first, 2),
            "images_per_second": round(seen / max(seconds, 1e-9), 1), "steps": steps, "batch": batch,
            "train_images": len(images), "images_type": type(images).__name__,
            "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}  # fmt: skip


def in_child(args: list[str]) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="images in the whole set (100 per identity)")
    ap.add_argument("--subset", type=int, default=10_000, help="images where today's in-memory path is compared")
    ap.add_argument("--side", type=int, default=112)
    ap.add_argument("--root", default="/tmp/siamkit-data-scale", help="where the dataset and caches go")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        source, cache_dir, steps, batch, *overrides = args.child
        print(json.dumps(train_steps(Path(source), Path(cache_dir), int(steps), int(batch), overrides)))
        return
    import logging

    logging.basicConfig(level=logging.WARNING)
    root = Path(args.root)
    full = root / f"faces-{args.n}-{args.side}"
    t = time.perf_counter()
    make_dataset(full, args.n, args.side)
    made_s = time.perf_counter() - t
    sub = subset_of(full, args.subset, root / f"subset-{args.subset}")
    cpus = os.cpu_count() or 1
    common = {"cpus": cpus, "side": args.side}

    from siamkit.data.cache import CacheSettings
    from siamkit.data.readers import read_folder

    t = time.perf_counter()
    plain = read_folder(sub, 3, (args.side, args.side))  # today's path: one process, into memory
    single = len(plain) / (time.perf_counter() - t)
    del plain
    cache = root / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    t = time.perf_counter()
    cached = read_folder(sub, 3, (args.side, args.side), cache=CacheSettings(cache, workers=cpus))
    parallel = len(cached) / (time.perf_counter() - t)
    del cached
    print(json.dumps({"benchmark": "data_scale", "measure": "decode", "images": args.subset,
                      "single_process_images_per_s": round(single, 1), "parallel_cold_images_per_s": round(parallel, 1),
                      "ratio": round(parallel / single, 2), "workers": cpus, **common}), flush=True)  # fmt: skip

    t = time.perf_counter()
    whole = read_folder(full, 3, (args.side, args.side), cache=CacheSettings(cache, workers=cpus, memory_limit_mb=0))
    build_s = time.perf_counter() - t
    decoded_gb = len(whole) * 3 * args.side * args.side / 1e9
    del whole
    print(json.dumps({"benchmark": "data_scale", "measure": "cache_full", "images": args.n,
                      "generate_s": round(made_s, 1), "cold_build_s": round(build_s, 1),
                      "images_per_s": round(args.n / build_s, 1), "decoded_gb": round(decoded_gb, 2),
                      **common}), flush=True)  # fmt: skip

    warm = in_child([str(full), str(cache), "1", str(args.batch), f"data.image_size={args.side}"])
    print(json.dumps({"benchmark": "data_scale", "measure": "warm_start", "images": args.n,
                      "seconds_to_first_step": warm["first_step_s"], "load_s": warm["load_s"],
                      "import_s": warm["import_s"], **common}), flush=True)  # fmt: skip

    mem = in_child([str(full), str(cache), str(args.steps), str(args.batch), f"data.image_size={args.side}"])
    print(json.dumps({"benchmark": "data_scale", "measure": "train_memory", "images": args.n,
                      "decoded_gb": round(decoded_gb, 2), "ru_maxrss_mb": mem["ru_maxrss_mb"],
                      "images_per_second": mem["images_per_second"], "read_as": mem["images_type"],
                      "steps": args.steps, "batch": args.batch, **common}), flush=True)  # fmt: skip

    size = f"data.image_size={args.side}"
    from_file = in_child([str(sub), str(cache), str(args.steps), str(args.batch), size, "data.memory_limit_mb=0"])
    in_memory = in_child([str(sub), str(cache), str(args.steps), str(args.batch), size, "data.cache=false"])
    print(json.dumps({"benchmark": "data_scale", "measure": "train_speed", "images": args.subset,
                      "cache_file_images_per_s": from_file["images_per_second"],
                      "in_memory_images_per_s": in_memory["images_per_second"],
                      "ratio": round(from_file["images_per_second"] / in_memory["images_per_second"], 3),
                      "ru_maxrss_mb_file": from_file["ru_maxrss_mb"], "ru_maxrss_mb_memory": in_memory["ru_maxrss_mb"],
                      "steps": args.steps, "batch": args.batch, **common}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
