"""``verify``, ``export`` and ``summary``: using a trained model on images, writing it for other runtimes, and
looking inside a network."""

from __future__ import annotations

import argparse
from typing import Any

from siamkit.cli.common import Subparsers, command, emit, model_flags, model_source, output_flags, trust_flag


def register(sub: Subparsers) -> None:
    v = command(sub, "verify", _verify, "are two images the same identity? (distance vs the run's threshold)", [
        "siamkit verify runs/default a.png b.png",
        "siamkit verify runs/default --pairs pairs.csv --out decisions.csv",
        "siamkit verify dlib-face photo_a.jpg photo_b.jpg      # dlib's pretrained face model, no training",
    ], description=(
        "Two images, or --pairs CSV (path_a,path_b[,label]). RUN_DIR may be a pretrained name "
        "(dlib-face)."
    ))  # fmt: skip
    v.add_argument("run_dir")
    v.add_argument("image_a", nargs="?")
    v.add_argument("image_b", nargs="?")
    v.add_argument("--pairs", metavar="CSV", help="decide every pair of this CSV (columns path_a, path_b, label?)")
    v.add_argument("--out", help="decisions CSV to write (default: <CSV>_decisions.csv beside it)")
    v.add_argument("--skip-bad", action="store_true", help="drop pairs whose image cannot be read")
    v.add_argument("--faces", choices=("align", "off"),
                   help="find and align the face of each image (default: as the run was trained; off for images "
                   "that are already face chips)")  # fmt: skip
    model_flags(v, threshold=True)
    output_flags(v)

    ex = command(sub, "export", _export, "export a run's embedding model (ONNX, parity-checked against PyTorch)", [
        "siamkit export runs/default                      # runs/default/model.onnx",
        "siamkit export runs/default --out model.onnx --opset 18 --format json",
    ])  # fmt: skip
    ex.add_argument("run_dir")
    ex.add_argument("--to", dest="target", choices=("onnx",), default="onnx", help="what to write (default: onnx)")
    ex.add_argument("--out", help="output file (default: RUN_DIR/model.onnx)")
    ex.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    trust_flag(ex)
    output_flags(ex)

    s = command(sub, "summary", _summary, "layer-by-layer output shapes and parameter counts of a model", [
        "siamkit summary BBBBBBBB --input 3x32x32",
        "siamkit summary convnet --input 1x28x28 --embedding-dim 128 --set widths=[32,64]",
    ], description=(
        "A block string (AAAAAAAA, BBBBBBBB, Ddw, ...) summarises the BaseCNN classifier; a backbone "
        "(convnet, resnet18, timm/NAME, ...) the Siamese encoder."
    ))  # fmt: skip
    s.add_argument("target", metavar="BACKBONE_OR_BLOCKS")
    s.add_argument("--input", help="input shape CxHxW (default: the model's usual, e.g. 3x32x32)")
    s.add_argument("--embedding-dim", type=int, default=64, help="embedding size of a Siamese encoder (default 64)")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a backbone option, e.g. --set widths=[32,64]")  # fmt: skip
    output_flags(s)


def _verify(args: argparse.Namespace) -> None:
    from siamkit.errors import ConfigError
    from siamkit.runs.model import open_model, verify_pairs
    from siamkit.thresholds import decision_info

    if args.pairs:
        if args.image_a or args.image_b:
            raise ConfigError("give either two images or --pairs CSV, not both")
        model = open_model(args.run_dir, model_source(args), args.faces)
        r = verify_pairs(model, args.pairs, args.out, args.skip_bad)
        r["threshold_info"] = decision_info(model.run_dir, args.threshold)
        acc = f", accuracy {r['accuracy']:.4f} against the label column" if "accuracy" in r else ""
        same = f"{r['same']} judged same" if "same" in r else "no threshold saved"
        info = r["threshold_info"]
        warn = f"\nwarning: {info['warning']}" if info and info.get("warning") else ""
        emit(r, args.format, f"{r['pairs']} pairs: {same}{acc}{warn}\nwritten: {r['decisions']}")
        return
    if not (args.image_a and args.image_b):
        raise ConfigError("verify needs two images (IMAGE_A IMAGE_B) or --pairs CSV")
    model = open_model(args.run_dir, model_source(args), args.faces)
    v = model.verify_many(args.image_a, args.image_b)[0]
    r = {"image_a": args.image_a, "image_b": args.image_b, **v.to_dict()}
    info = decision_info(model.run_dir, args.threshold)
    r["threshold_info"] = info
    verdict = "unknown (no threshold saved)" if v.same is None else ("same" if v.same else "different")
    thr = "none" if v.threshold is None else f"{v.threshold:.4f}"
    warn = f"\nwarning: {info['warning']}" if info and info.get("warning") else ""
    emit(r, args.format, f"distance {v.distance:.4f}  threshold {thr}  → {verdict}{warn}")


def _export(args: argparse.Namespace) -> None:
    from siamkit.runs.embedders import ModelSource
    from siamkit.runs.model import open_model

    r = open_model(args.run_dir, ModelSource(trust_code=args.trust_code)).export(args.out, args.opset)
    emit(r, args.format, f"written: {r['onnx']} ({r['bytes']:,} bytes, opset {r['opset']}, input {r['input']}); "
         f"parity with PyTorch: max |difference| {r['max_abs_diff']:.2e} (tolerance {r['tolerance']:g})")  # fmt: skip


def _summary(args: argparse.Namespace) -> None:
    import yaml

    from siamkit.errors import ConfigError
    from siamkit.models.summary import parse_input, summarize_named

    options: dict[str, Any] = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: give KEY=VALUE")
        options[key] = yaml.safe_load(value)
    shape = parse_input(args.input) if args.input else None
    summ = summarize_named(args.target, shape, args.embedding_dim, options)
    emit(summ.to_dict(), args.format, summ.table())
