"""Leave-one-out retrieval metrics (P@1, R-precision, MAP@R) at scale: siamkit's ``retrieval_metrics`` — the
dense chunked ranking and the exact faiss k-NN ranking (the default from 5,000 items) — against
pytorch-metric-learning's ``AccuracyCalculator`` (faiss k-NN; an optional benchmark dependency:
``pip install pytorch-metric-learning``) on the same synthetic embeddings: identities of 100 points around
random centres. One JSON line per size: seconds of each, the speed-up over PML, and the largest difference
between the figures.

    .venv/bin/python benchmarks/retrieval.py                       # 10k × 64 (100 classes), 100k × 128 (1,000)
    .venv/bin/python benchmarks/retrieval.py --sizes 10000x64 --skip-dense
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from siamkit.evaluate.metrics import retrieval_metrics


def embeddings(n: int, dim: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    classes = n // 100
    centres = rng.standard_normal((classes, dim)).astype(np.float32)
    labels = np.repeat(np.arange(classes), 100)
    x = centres[labels] + 0.9 * rng.standard_normal((n, dim)).astype(np.float32)
    return torch.from_numpy(x), labels


def pml(x: torch.Tensor, labels: np.ndarray) -> tuple[dict[str, float], float] | None:
    try:
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    except ImportError:
        return None
    calc = AccuracyCalculator(include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
                              k="max_bin_count")  # fmt: skip
    t = time.perf_counter()
    got = calc.get_accuracy(x, torch.from_numpy(labels), x, torch.from_numpy(labels), ref_includes_query=True)
    seconds = time.perf_counter() - t
    return {"precision_at_1": got["precision_at_1"], "r_precision": got["r_precision"],
            "map_at_r": got["mean_average_precision_at_r"]}, seconds  # fmt: skip


def distances_only(x: torch.Tensor) -> float:
    """Seconds an exact faiss index takes for every query's nearest neighbour alone (k = 1): all N² distances
    and no ranking to keep — the floor of any exact leave-one-out ranking that computes every distance."""
    import faiss

    data = np.ascontiguousarray(x.numpy(), dtype=np.float32)
    index = faiss.IndexFlatL2(data.shape[1])
    index.add(data)
    t = time.perf_counter()
    index.search(data, 1)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["10000x64", "100000x128"], help="NxD, 100 items per class")
    ap.add_argument("--skip-dense", action="store_true", help="do not time the dense ranking (slow at 100k)")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    for size in args.sizes:
        n, dim = (int(v) for v in size.split("x"))
        x, labels = embeddings(n, dim)
        line: dict[str, object] = {"benchmark": "retrieval", "n": n, "dim": dim, "classes": n // 100,
                                   "cpus": os.cpu_count()}  # fmt: skip
        keys = ("precision_at_1", "r_precision", "map_at_r")
        t = time.perf_counter()
        knn = retrieval_metrics(x, labels, (1,), method="knn")
        line["siamkit_knn_s"] = round(time.perf_counter() - t, 2)
        line.update({k: round(knn[k], 6) for k in keys})
        if not args.skip_dense:
            t = time.perf_counter()
            dense = retrieval_metrics(x, labels, (1,), method="dense")
            line["siamkit_dense_s"] = round(time.perf_counter() - t, 2)
            line["max_diff_dense_knn"] = float(max(abs(dense[k] - knn[k]) for k in keys))
        line["distances_only_s"] = round(distances_only(x), 2)
        theirs = pml(x, labels)
        if theirs is None:
            line["pml"] = "not installed (pip install pytorch-metric-learning)"
        else:
            values, seconds = theirs
            line["pml_s"] = round(seconds, 2)
            line["speedup_knn_over_pml"] = round(seconds / float(line["siamkit_knn_s"]), 2)  # type: ignore[arg-type]
            line["max_diff_pml"] = float(max(abs(values[k] - knn[k]) for k in keys))
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
