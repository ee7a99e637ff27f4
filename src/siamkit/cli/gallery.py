"""``index`` (build, add, remove, info) and ``search``: galleries of embedded images and their nearest items."""

from __future__ import annotations

import argparse

from siamkit.cli.common import Subparsers, command, emit, model_flags, model_source, output_flags


def register(sub: Subparsers) -> None:
    ix = command(sub, "index", None, "galleries: build, add to, remove from, describe (faiss + sidecar)", [
        "siamkit index build runs/default people/ --out gallery/",
        "siamkit index add gallery/ new_person/ --label alice",
    ])  # fmt: skip
    isub = ix.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    ib = command(isub, "build", _build, "embed images with a run's model into a new gallery", [
        "siamkit index build runs/default people/ --out gallery/",
        "siamkit index build runs/default photos.csv --out big/ --index hnsw --ef-search 128",
    ], description=(
        "IMAGES are image files, class-per-folder roots (labels = folder names), flat folders, or CSVs "
        "with a path (and label) column."
    ))  # fmt: skip
    ib.add_argument("run_dir")
    ib.add_argument("images", nargs="+")
    ib.add_argument("--out", required=True, metavar="GALLERY_DIR")
    ib.add_argument("--index", dest="kind", choices=("flat", "hnsw", "ivf"), default="flat",
                    help="flat: exact (default); hnsw or ivf: approximate, for large galleries")  # fmt: skip
    ib.add_argument("--m", type=int, help="HNSW links per node (default 32)")
    ib.add_argument("--ef-construction", type=int, help="HNSW build breadth (default 80)")
    ib.add_argument("--ef-search", type=int, help="HNSW search breadth (default 64)")
    ib.add_argument("--nlist", type=int, help="IVF cells (default 1024; needs at least that many images)")
    ib.add_argument("--nprobe", type=int, help="IVF cells visited per query (default 16)")
    ib.add_argument("--overwrite", action="store_true", help="replace an existing gallery in GALLERY_DIR")
    ib.add_argument("--backend-url", metavar="URL", help="keep the gallery in a Qdrant collection instead of a faiss "
                    "index: http://host:6333, or local:PATH (embedded, one process at a time)")  # fmt: skip
    ib.add_argument("--collection", help="with --backend-url: the collection's name (default: a new one)")
    im = command(isub, "migrate", _migrate, "copy a faiss gallery into a Qdrant collection (a new gallery folder)",
                 ["siamkit index migrate gallery/ --backend-url http://localhost:6333 --out gq/"])  # fmt: skip
    im.add_argument("gallery_dir")
    im.add_argument("--backend-url", required=True, metavar="URL", help="http://host:6333, or local:PATH")
    im.add_argument("--out", required=True, metavar="NEW_GALLERY_DIR")
    im.add_argument("--collection", help="the collection's name (default: a new one)")
    ia = command(isub, "add", _add, "embed more images into a gallery",
                 ["siamkit index add gallery/ new_person/ --label alice"])  # fmt: skip
    ia.add_argument("gallery_dir")
    ia.add_argument("images", nargs="+")
    ia.add_argument("--label", help="label for images not in a class folder")
    ia.add_argument("--run", dest="run_dir", help="the run to embed with (default: the gallery's own)")
    ir = command(isub, "remove", _remove, "remove items by id", ["siamkit index remove gallery/ 17 18"])
    ir.add_argument("gallery_dir")
    ir.add_argument("ids", nargs="+", type=int)
    ic = command(isub, "compact", _compact, "fold the logged edits into a new base index (edits stay cheap)",
                 ["siamkit index compact gallery/"], description=(
        "Adds and removals are logged beside the base index and cost what they change; a commit compacts "
        "by itself once they outgrow the base. This does it now."
    ))  # fmt: skip
    ic.add_argument("gallery_dir")
    ii = command(isub, "info", _info, "size, model, index and labels of a gallery", ["siamkit index info gallery/"])
    ii.add_argument("gallery_dir")
    ii.add_argument("--limit", type=int, default=20, help="list this many items")
    for sp in (ib, ia):
        sp.add_argument("--skip-bad", action="store_true", help="skip unreadable images instead of stopping")
        model_flags(sp)
    for sp in (ib, ia, ir, ic, im, ii):
        output_flags(sp)

    se = command(sub, "search", _search, "nearest gallery items of query images", [
        "siamkit search gallery/ query.png -k 5",
        "siamkit search gallery/ queries/ --figure neighbours.png --figure-style hub",
    ])  # fmt: skip
    se.add_argument("gallery_dir")
    se.add_argument("queries", nargs="+", metavar="QUERY", help="image files or folders")
    se.add_argument("-k", type=int, default=10, help="neighbours per query (default 10)")
    se.add_argument("--run", dest="run_dir", help="the run to embed with (default: the gallery's own)")
    se.add_argument("--figure", metavar="PNG", help="write the neighbours figure (first 5 queries)")
    se.add_argument("--figure-style", choices=("grid", "hub"), default="grid")
    model_flags(se, threshold=True)
    output_flags(se)


def _progress(args: argparse.Namespace) -> bool:
    return not args.quiet and args.format != "json"


def _skipped(r: dict[str, object]) -> str:
    skipped = r.get("skipped")
    return f"\n{len(skipped)} unreadable images skipped" if isinstance(skipped, list) and skipped else ""


def _build(args: argparse.Namespace) -> None:
    from siamkit.index import ops

    names = ("m", "ef_construction", "ef_search", "nlist", "nprobe")
    options = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    r = ops.build(args.run_dir, args.images, args.out, args.kind, options=options, backend=model_source(args),
                  progress=_progress(args), skip_bad=args.skip_bad, overwrite=args.overwrite,
                  backend_url=args.backend_url, collection=args.collection)  # fmt: skip
    text = f"gallery {r['directory']}: {r['added']} images embedded ({r['index']['kind']} index, {r['metric']})"
    emit(r, args.format, text + _skipped(r))


def _add(args: argparse.Namespace) -> None:
    from siamkit.index import ops

    r = ops.add(args.gallery_dir, args.images, args.label, args.run_dir, backend=model_source(args),
                progress=_progress(args), skip_bad=args.skip_bad)  # fmt: skip
    ids = r["added_ids"]
    span = f"ids {ids[0]}–{ids[-1]}" if ids else "nothing"
    emit(r, args.format, f"gallery {r['directory']}: added {len(ids)} ({span}); size {r['size']}" + _skipped(r))


def _remove(args: argparse.Namespace) -> None:
    from siamkit.index import ops

    r = ops.remove(args.gallery_dir, args.ids)
    emit(r, args.format, f"gallery {r['directory']}: removed {len(r['removed_ids'])}; size {r['size']}")


def _migrate(args: argparse.Namespace) -> None:
    from siamkit.index import ops

    r = ops.migrate(args.gallery_dir, args.out, args.backend_url, args.collection)
    b = r["backend"]
    emit(r, args.format, f"gallery {r['directory']}: {r['size']} items copied from {r['source']} into the Qdrant "
         f"collection {b['collection']} at {b['url']}")  # fmt: skip


def _compact(args: argparse.Namespace) -> None:
    from siamkit.index import ops

    r = ops.compact(args.gallery_dir)
    emit(r, args.format, f"gallery {r['directory']}: {r['folded_edits']} logged edits folded into generation "
         f"{r['generation']}; size {r['size']}")  # fmt: skip


def _info(args: argparse.Namespace) -> None:
    from siamkit.index import ops

    r = ops.info(args.gallery_dir, args.limit)
    opts = ", ".join(f"{k} {v}" for k, v in r["index"].get("options", {}).items())
    index = r["index"]["kind"] + (f" ({opts})" if opts else "")
    lines = [f"gallery {r['directory']}: {r['size']:,} items, {r['dim']}-d, {r['metric']} distance, {index} index "
             f"(generation {r['generation']}, {r['pending_edits']} edits logged since)",
             f"model {r['model_hash'][:12]} (run {r['run_dir']})",
             "labels: " + ", ".join(f"{k} ({v})" for k, v in sorted(r["labels"].items()))]  # fmt: skip
    lines += [f"  {it['id']:>6}  {it['label'] or '-':<16} {it['path']}" for it in r["items"]]
    emit(r, args.format, "\n".join(lines))


def _search(args: argparse.Namespace) -> None:
    from siamkit.index import ops

    r = ops.search(args.gallery_dir, args.queries, args.k, args.run_dir, backend=model_source(args),
                   figure=args.figure, figure_style=args.figure_style)  # fmt: skip
    mark = {True: "match", False: "     ", None: "     "}
    lines = []
    for res in r["results"]:
        lines.append(f"query {res['query']}" + (f"  (label {res['label']})" if res["label"] else ""))
        lines += [f"  {h['rank']:>3}  id {h['id']:<7} {h['distance']:.4f} {mark[h['match']]}  {h['label'] or '-':<14} "
                  f"{h['path']}" for h in res["neighbours"]]  # fmt: skip
    if "figure" in r:
        lines.append(f"figure: {r['figure']}")
    info = r.get("threshold_info") or {}
    if info.get("warning"):
        lines.append(f"warning: {info['warning']}")
    emit(r, args.format, "\n".join(lines))
