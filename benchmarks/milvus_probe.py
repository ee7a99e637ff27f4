"""Milvus Lite (the embedded Milvus) on the same 100k × 128 random vectors as ``search.py --qdrant``: build,
search speed and recall@10 against exact, one insert, one delete, reopen — the measurement behind choosing Qdrant
for siamkit's second gallery backend. Not a siamkit backend: it runs in any environment with
``pip install pymilvus milvus-lite`` (it does not need siamkit).

    python benchmarks/milvus_probe.py --n 100000
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("-k", type=int, default=10)
    args = ap.parse_args()
    from pymilvus import MilvusClient

    rng = np.random.default_rng(0)  # the same draws as search.py's random data
    data = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    folder = Path(tempfile.mkdtemp(prefix="milvus-probe-"))
    try:
        db = str(folder / "milvus.db")
        client = MilvusClient(db)
        t = time.perf_counter()
        client.create_collection("g", dimension=args.dim, metric_type="L2", auto_id=False)
        for s in range(0, args.n, 5000):
            rows = [
                {"id": i, "vector": data[i].tolist(), "path": f"/p/{i}.png"} for i in range(s, min(s + 5000, args.n))
            ]
            client.insert("g", rows)
        if hasattr(client, "flush"):
            client.flush("g")
        build_s = time.perf_counter() - t
        t = time.perf_counter()
        found = []  # in batches: Milvus Lite broadcasts queries × items × dim in memory (1000 at once: 48 GB)
        for s in range(0, args.queries, 10):
            found += client.search("g", data=queries[s : s + 10].tolist(), limit=args.k, output_fields=["path"])
        qps = args.queries / (time.perf_counter() - t)
        d2 = (queries**2).sum(1)[:, None] + (data**2).sum(1)[None, :] - 2 * queries @ data.T
        exact = np.argsort(d2, axis=1)[:, : args.k]
        recall = sum(len({h["id"] for h in row} & set(e.tolist())) for row, e in zip(found, exact, strict=True))
        t = time.perf_counter()
        client.insert("g", [{"id": args.n, "vector": queries[0].tolist(), "path": "/new.png"}])
        add_ms = 1000 * (time.perf_counter() - t)
        t = time.perf_counter()
        client.delete("g", ids=[0])
        remove_ms = 1000 * (time.perf_counter() - t)
        client.close()
        t = time.perf_counter()
        again = MilvusClient(db)
        again.load_collection("g")
        open_s = time.perf_counter() - t
        again.close()
        print(json.dumps({"benchmark": "gallery_milvus_lite", "n": args.n, "dim": args.dim, "queries": args.queries,
                          "k": args.k, "build_s": round(build_s, 1), "qps": round(qps, 1),
                          "recall_at_k_vs_exact": round(recall / exact.size, 4), "add_one_ms": round(add_ms, 1),
                          "remove_one_ms": round(remove_ms, 1), "open_s": round(open_s, 2)}))  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
