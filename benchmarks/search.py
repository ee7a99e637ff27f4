"""Gallery search speed and quality on random vectors: siamkit's Gallery against raw faiss with the same index.

For each index kind (flat = exact, hnsw, ivf) this builds the same faiss index twice — once inside a siamkit
Gallery (ids, sidecar items, distance conversion), once bare — on N random 128-d vectors, runs the same Q
queries through both, and prints one JSON line: queries/s of each, the ratio, build seconds and, for the
approximate kinds, recall@10 against the exact answer.

    .venv/bin/python benchmarks/search.py                       # 1M × 128, 1,000 queries, all kinds
    .venv/bin/python benchmarks/search.py --n 100000 --kinds flat ivf
    .venv/bin/python benchmarks/search.py --kinds flat --persist   # + commit / reopen / edit times of 1M items
    .venv/bin/python benchmarks/search.py --data clustered          # 10k identities × 100: embedding-like
    .venv/bin/python benchmarks/search.py --n 100000 --kinds flat --qdrant   # + the Qdrant gallery (local mode)
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time

import numpy as np

from siamkit.index.gallery import Gallery, index_options, new_index, set_search_params


def _model(dim: int) -> dict[str, object]:
    return {"model_hash": "benchmark", "run_dir": "-", "input_shape": [1, 1, 1], "embedding_dim": dim,
            "distance": "squared_euclidean", "threshold": None}  # fmt: skip


def _qps(search, queries: np.ndarray, k: int, repeats: int) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
    search(queries[:10], k)  # warm-up
    best = float("inf")
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = search(queries, k)
        best = min(best, time.perf_counter() - t)
    assert out is not None
    return len(queries) / best, out


def _persistence(gallery: Gallery, labels_for: int, queries: np.ndarray, k: int, repeats: int) -> dict[str, object]:
    """Commit the gallery to a temp folder, reopen it, then time single edits — add one item, remove one item (each
    a commit: ``gallery.save()``), the reopen after them, a search with edits pending against the same search on a
    freshly compacted gallery — and the compaction itself. Seconds and file sizes."""
    import shutil
    import tempfile
    from pathlib import Path

    from siamkit.index.gallery import locked

    folder = Path(tempfile.mkdtemp(prefix="siamkit-gallery-bench-"))
    rng = np.random.default_rng(7)
    try:
        gallery.directory = folder
        gallery.fresh = True
        t = time.perf_counter()
        gallery.save()
        save_s = time.perf_counter() - t
        t = time.perf_counter()
        reopened = Gallery.open(folder)
        open_s = time.perf_counter() - t
        adds, removes = [], []
        for r in range(5):  # each edit as a CLI or the service makes it: under the lock, one commit
            vector = rng.standard_normal((1, gallery.meta["dim"]), dtype=np.float32)
            t = time.perf_counter()
            with locked(folder):
                reopened.add(vector, [f"/data/new/{r}.png"], ["new"])
                reopened.save()
            adds.append(time.perf_counter() - t)
            t = time.perf_counter()
            with locked(folder):
                reopened.remove([r * 1000])
                reopened.save()
            removes.append(time.perf_counter() - t)
        t = time.perf_counter()
        after_edits = Gallery.open(folder)
        reopen_edits_s = time.perf_counter() - t
        qps_pending, _ = _qps(after_edits.search, queries, k, repeats)
        t = time.perf_counter()
        after_edits.compact()
        compact_s = time.perf_counter() - t
        qps_compacted, _ = _qps(after_edits.search, queries, k, repeats)
        sizes = {f.name.split("-")[0].split(".")[0]: f.stat().st_size for f in folder.iterdir() if f.is_file()}
        return {"benchmark": "gallery_persistence", "n": labels_for, "save_s": round(save_s, 2),
                "open_s": round(open_s, 2), "add_one_ms": round(1000 * float(np.median(adds)), 1),
                "remove_one_ms": round(1000 * float(np.median(removes)), 1),
                "add_one_ms_max": round(1000 * max(adds), 1), "remove_one_ms_max": round(1000 * max(removes), 1),
                "reopen_after_edits_s": round(reopen_edits_s, 2), "compact_s": round(compact_s, 2),
                "qps_with_10_edits_pending": round(qps_pending, 1), "qps_compacted": round(qps_compacted, 1),
                "database_bytes": (folder / "gallery.db").stat().st_size,
                "index_bytes": sizes.get("index")}  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _qdrant(data: np.ndarray, queries: np.ndarray, k: int, paths: list[str], labels: list[str | None],
            faiss_ids: np.ndarray) -> dict[str, object]:  # fmt: skip
    """The same items in a Qdrant gallery (embedded local mode, a temp folder): build, search, one add and one
    remove (each a commit), reopen; and the share of the exact top-k it returns."""
    import shutil
    import tempfile
    from pathlib import Path

    from siamkit.index.qdrant import QdrantGallery

    folder = Path(tempfile.mkdtemp(prefix="siamkit-qdrant-bench-"))
    try:
        t = time.perf_counter()
        g = QdrantGallery.create_on(folder / "g", _model(data.shape[1]), f"local:{folder / 'db'}")
        ids = g.add(data, paths, labels)
        g.save()
        build_s = time.perf_counter() - t
        t = time.perf_counter()
        _, found = g.search(queries, k)
        qps = len(queries) / (time.perf_counter() - t)
        to_row = {i: r for r, i in enumerate(ids)}
        rows = np.vectorize(lambda i: to_row.get(int(i), -1))(found)
        recall = sum(len(set(a) & set(b)) for a, b in zip(rows.tolist(), faiss_ids.tolist(), strict=True))
        t = time.perf_counter()
        g.add(queries[:1], ["/new.png"], ["new"])
        g.save()
        add_ms = 1000 * (time.perf_counter() - t)
        t = time.perf_counter()
        g.remove([ids[0]])
        g.save()
        remove_ms = 1000 * (time.perf_counter() - t)
        t = time.perf_counter()
        QdrantGallery.open_folder(folder / "g", json.loads((folder / "g" / "gallery.json").read_text()))
        open_s = time.perf_counter() - t
        return {"benchmark": "gallery_qdrant", "mode": "local (embedded)", "n": len(data), "dim": data.shape[1],
                "queries": len(queries), "k": k, "build_s": round(build_s, 1), "qps": round(qps, 1),
                "recall_at_k_vs_exact": round(recall / faiss_ids.size, 4), "add_one_ms": round(add_ms, 1),
                "remove_one_ms": round(remove_ms, 1), "open_s": round(open_s, 2)}  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--kinds", nargs="+", default=["flat", "hnsw", "ivf"], choices=("flat", "hnsw", "ivf"))
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--nprobe", type=int, nargs="+", default=[16, 64, 256], help="IVF: one line per value")
    ap.add_argument("--m", type=int, default=32)
    ap.add_argument("--ef-search", type=int, nargs="+", default=[64, 256], help="HNSW: one line per value")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--persist", action="store_true", help="also time save / open / remove+save of the flat gallery")
    ap.add_argument("--qdrant", action="store_true", help="also the same items in a Qdrant gallery (local mode)")
    ap.add_argument("--data", choices=("random", "clustered"), default="random",
                    help="random: i.i.d. Gaussian (default); clustered: n/100 identities of 100 points")  # fmt: skip
    args = ap.parse_args()
    import faiss

    rng = np.random.default_rng(args.seed)
    if args.data == "random":  # i.i.d. Gaussian: no structure at all, the hardest case for approximate search
        data = rng.standard_normal((args.n, args.dim), dtype=np.float32)
        queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    else:  # identities: n/100 cluster centres, 100 points each, spread 0.5 around a unit-variance centre
        centres = rng.standard_normal((max(1, args.n // 100), args.dim), dtype=np.float32)
        data = centres[rng.integers(0, len(centres), args.n)]
        data += 0.5 * rng.standard_normal(data.shape, dtype=np.float32)
        queries = centres[rng.integers(0, len(centres), args.queries)]
        queries += 0.5 * rng.standard_normal(queries.shape, dtype=np.float32)
    paths = [f"/data/images/id_{i % 10000:05d}/img_{i:07d}.png" for i in range(args.n)]  # realistic sidecar sizes
    labels: list[str | None] = [f"id_{i % 10000:05d}" for i in range(args.n)]
    exact_ids = None
    for kind in ["flat", *[k for k in args.kinds if k != "flat"]]:
        opts = {"flat": {}, "hnsw": {"m": args.m, "ef_search": args.ef_search[0]},
                "ivf": {"nlist": args.nlist, "nprobe": args.nprobe[0]}}[kind]  # fmt: skip
        t = time.perf_counter()
        gallery = Gallery.create("/nonexistent-benchmark-gallery", _model(args.dim), kind, opts)
        gallery.add(data, paths, labels)
        build_siamkit = time.perf_counter() - t
        # the same faiss index, bare: no id map, no sidecar, no distance conversion
        full = index_options(kind, opts)
        t = time.perf_counter()
        if kind == "flat":
            raw = faiss.IndexFlatL2(args.dim)
        elif kind == "hnsw":
            raw = faiss.IndexHNSWFlat(args.dim, full["m"])
            raw.hnsw.efConstruction = full["ef_construction"]
        else:
            raw = new_index(kind, args.dim, "squared_euclidean", full)
            raw.train(data)
        raw.add(data)
        build_raw = time.perf_counter() - t
        settings = {"flat": [{}], "hnsw": [{"ef_search": v} for v in args.ef_search],
                    "ivf": [{"nprobe": v} for v in args.nprobe]}[kind]  # fmt: skip
        for setting in settings:
            params = {**full, **setting}
            if kind == "hnsw":
                raw.hnsw.efSearch = params["ef_search"]
            elif kind == "ivf":
                set_search_params(raw, "ivf", params)
            ours = functools.partial(gallery.search, **setting)  # the per-call nprobe / ef_search override
            qps_siamkit, (_, ids) = _qps(ours, queries, args.k, args.repeats)
            qps_raw, (_, raw_ids) = _qps(raw.search, queries, args.k, args.repeats)
            assert (ids == raw_ids).mean() > 0.95, "the wrapped and bare index disagree"
            line: dict[str, object] = {
                "benchmark": "search", "data": args.data, "kind": kind, "n": args.n, "dim": args.dim,
                "queries": args.queries, "k": args.k, "options": params, "qps_siamkit": round(qps_siamkit, 1),
                "qps_raw_faiss": round(qps_raw, 1),
                "siamkit_over_raw": round(qps_siamkit / qps_raw, 3), "build_s_siamkit": round(build_siamkit, 2),
                "build_s_raw": round(build_raw, 2),
            }  # fmt: skip
            if kind == "flat":
                exact_ids = ids
            else:
                assert exact_ids is not None
                hits = sum(len(set(a) & set(b)) for a, b in zip(ids.tolist(), exact_ids.tolist(), strict=True))
                line["recall_at_10"] = round(hits / exact_ids.size, 4)
            line.update({"faiss": faiss.__version__, "threads": faiss.omp_get_max_threads(), "cpus": os.cpu_count(),
                         "machine": platform.machine()})  # fmt: skip
            print(json.dumps(line), flush=True)
        if kind == "flat" and args.persist:
            print(json.dumps(_persistence(gallery, args.n, queries, args.k, args.repeats)), flush=True)
        if kind == "flat" and args.qdrant:
            print(json.dumps(_qdrant(data, queries, args.k, paths, labels, ids)), flush=True)
        del gallery, raw


if __name__ == "__main__":
    main()
