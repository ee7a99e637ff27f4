"""End-to-end gallery speed on image files: ``index build`` (decode → resize → embed → faiss → commit) and
``search`` of query files, in images/s, on Fashion-MNIST's test images written as PNGs (a folder per class).

    .venv/bin/python benchmarks/index_build.py                 # trains a 1-epoch Fashion-MNIST model first
    .venv/bin/python benchmarks/index_build.py --run runs/fm --n 10000 --queries 1000
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from siamkit.data.readers import FASHION_MNIST_CLASSES, read_fashion_mnist
from siamkit.index.gallery import Gallery
from siamkit.index.ops import build, search


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="run directory (default: train one Fashion-MNIST epoch into a temp folder)")
    ap.add_argument("--n", type=int, default=10_000, help="gallery images (from the test split)")
    ap.add_argument("--queries", type=int, default=1000, help="query images (from the training split)")
    ap.add_argument("--index", default="flat", choices=("flat", "hnsw", "ivf"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="siamkit-index-bench-"))
    if args.run is None:
        from siamkit.config import load_config
        from siamkit.training.pipeline import train_run

        cfg = load_config(None, ["data.source=fashion-mnist", "train.epochs=1", f"runs_dir={tmp}", "name=fm",
                                 "train.progress=false", "eval.tsne_points=0"])  # fmt: skip
        run = Path(train_run(cfg)["run_dir"])
    else:
        run = Path(args.run)
    train, test = read_fashion_mnist()
    assert test is not None
    for split, images, n, root in ((test, test.images, args.n, tmp / "gallery_png"),
                                   (train, train.images, args.queries, tmp / "query_png")):  # fmt: skip
        for c in range(10):
            (root / FASHION_MNIST_CLASSES[c].replace("/", "-")).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            name = FASHION_MNIST_CLASSES[int(split.labels[i])].replace("/", "-")
            Image.fromarray(images[i, 0].numpy()).save(root / name / f"{i:05d}.png")
    t = time.perf_counter()
    build(str(run), [str(tmp / "gallery_png")], str(tmp / "gallery"), args.index)
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    r = search(str(tmp / "gallery"), [str(tmp / "query_png")], k=10)
    search_s = time.perf_counter() - t
    hits = [res["label"] == res["neighbours"][0]["label"] for res in r["results"]]
    size = sum(f.stat().st_size for f in (tmp / "gallery").iterdir())
    print(json.dumps({
        "benchmark": "index_build", "index": args.index, "gallery_images": args.n, "queries": args.queries,
        "build_s": round(build_s, 2), "build_images_per_s": round(args.n / build_s, 1),
        "search_s": round(search_s, 2), "search_queries_per_s": round(args.queries / search_s, 1),
        "query_label_equals_nearest_label": round(float(np.mean(hits)), 4), "gallery_bytes": size,
        "gallery_size": len(Gallery.open(tmp / "gallery")), "cpus": os.cpu_count(),
        "note": "file decoding, embedding and faiss included; queries are training images, gallery test images",
    }))  # fmt: skip


if __name__ == "__main__":
    main()
