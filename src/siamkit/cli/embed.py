"""``embed``: a run's vectors for image files and folders, to ``.npy`` + CSV, Parquet, or JSON lines."""

from __future__ import annotations

import argparse
import sys

from siamkit.cli.common import Subparsers, command, emit, model_flags, model_source, output_flags


def register(sub: Subparsers) -> None:
    p = command(sub, "embed", _embed, "a run's embedding vectors for images, to a file or as JSON lines", [
        "siamkit embed runs/default photos/ --out vectors.npy        # + vectors.csv (row, path, label)",
        "siamkit embed runs/default people/ --out vectors.parquet",
        "siamkit embed runs/default a.png b.png --format json         # one JSON line per image",
    ], description=(
        "IMAGES are image files, class-per-folder roots (labels = folder names, images at any depth), "
        "flat folders, or CSVs with a path (and label) column — as index build lists them."
    ))  # fmt: skip
    p.add_argument("run_dir", metavar="RUN")
    p.add_argument("images", nargs="+", metavar="IMAGES")
    p.add_argument("--out", metavar="FILE", help="FILE.npy (with FILE.csv of paths and labels beside it) or "
                   "FILE.parquet; without it, --format json prints one JSON line per image")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=256, help="images decoded and embedded at a time (256)")
    p.add_argument("--label", help="the label of images not under a class folder")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images (listed) instead of stopping")
    model_flags(p)
    output_flags(p)


def _embed(args: argparse.Namespace) -> None:
    from siamkit.errors import ConfigError
    from siamkit.vectors import embed_images, json_lines, out_format, write_vectors

    if args.out is None and args.format != "json":
        raise ConfigError("give --out FILE.npy or FILE.parquet, or --format json for one JSON line per image")
    if args.out is not None:
        out_format(args.out)  # a bad extension fails before any image is read
    progress = not args.quiet and sys.stderr.isatty()
    vectors, kept, skipped, model = embed_images(args.run_dir, args.images, args.batch_size, progress, args.skip_bad,
                                                 source=model_source(args), label=args.label)  # fmt: skip
    if args.out is None:
        for line in json_lines(vectors, kept):
            print(line)
        return
    files = write_vectors(args.out, vectors, kept)
    r = {"files": files, "images": len(kept), "dim": int(vectors.shape[1]), "skipped": skipped,
         "distance": model.distance, "model_hash": model.model_hash}  # fmt: skip
    text = f"{len(kept)} vectors of {r['dim']} dimensions ({model.distance} distance) → {', '.join(files)}"
    if skipped:
        text += f"\n{len(skipped)} unreadable images skipped"
    emit(r, args.format, text)
