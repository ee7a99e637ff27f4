"""Command line: thin — parses, calls the library, prints. Errors are one line on stderr (exit 2);
``--debug`` shows the traceback."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from siamkit.errors import SiamkitError

SHORTCUTS = {
    "data": "data.source", "loss": "loss.name", "backbone": "model.backbone", "epochs": "train.epochs",
    "name": "name", "runs_dir": "runs_dir",
}  # fmt: skip


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and the result")


def _backend(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                   help="PyTorch (default) or ONNX Runtime (RUN_DIR/model.onnx, or --onnx FILE)")  # fmt: skip
    p.add_argument("--onnx", dest="onnx_path", help="the ONNX file for --backend onnx")
    p.add_argument("--device", default="cpu", help="torch backend: cpu (default), cuda, cuda:1, mps or auto")


def _source(args: argparse.Namespace) -> Any:
    from siamkit.inference import ModelSource

    return ModelSource(args.backend, args.onnx_path, args.device, getattr(args, "threshold", None))


def _threshold_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threshold", type=float, metavar="DISTANCE",
                   help="decide same/different at this distance for this call (default: the run's)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="siamkit", description="Siamese networks and deep metric learning.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a Siamese model and evaluate it (default: on scikit-learn digits)",
                       description="Train from a YAML config plus overrides; writes runs/<name>/.")  # fmt: skip
    t.add_argument("config", nargs="?", help="YAML run config (optional; defaults otherwise)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.lr=3e-4 (repeatable)")  # fmt: skip
    t.add_argument("--data", help="digits | fashion-mnist | a folder, flat folder, IDX folder or pairs/triplets CSV")
    t.add_argument("--loss", help="contrastive, triplet, bce, huber, fdc, fdt, normalized-softmax or pkg.mod:Class")
    t.add_argument("--backbone", help="a registered backbone, e.g. convnet, seed_cnn")
    t.add_argument("--epochs", type=int)
    t.add_argument("--name", help="run name (folder under --runs-dir)")
    t.add_argument("--runs-dir", dest="runs_dir", help="where run folders go (default: runs)")
    t.add_argument("--resume", action="store_true",
                   help="continue runs/<name>/ from its last finished epoch, with its own saved config (only train.* "
                   "and eval.* may be changed, e.g. --epochs)")  # fmt: skip
    t.add_argument("--force", action="store_true",
                   help="with --resume: retrain a finished run that has no last.pt, overwriting its model")  # fmt: skip
    _common(t)

    e = sub.add_parser("eval", help="evaluate a trained run (optionally on other data)")
    e.add_argument("run_dir")
    e.add_argument("--data", help="evaluate on this source instead of the run's own")
    e.add_argument("--as-test", action="store_true",
                   help="all of --data is held-out test data: no split, scored with the run's threshold into "
                   "RUN_DIR/eval-<name>/ (a new folder each time)")  # fmt: skip
    e.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    _common(e)

    ca = sub.add_parser("calibrate", help="re-choose a run's verification threshold on your own pairs",
                        description="DATA is a pairs CSV (path_a,path_b,label; 1 = same) or labelled images (a folder "
                        "per identity, ...), whose distinct pairs are drawn. The new threshold is saved with the run "
                        "(RUN_DIR/threshold.json, earlier ones kept in its history) and used by verify, search, "
                        "serve and eval. Example: siamkit calibrate runs/default --data pairs.csv "
                        "--fpr 0.001")  # fmt: skip
    ca.add_argument("run_dir")
    ca.add_argument("--data", required=True, help="pairs CSV or labelled images")
    rule = ca.add_mutually_exclusive_group()
    rule.add_argument("--fpr", type=float, help="the largest threshold whose false-accept rate is at most this")
    rule.add_argument("--rule", help="accuracy (default), fpr:<rate>, or a distance")
    ca.add_argument("--pairs-per-kind", type=int, help="labelled images: genuine and impostor pairs to draw each "
                    "(default: the run's eval.n_pairs)")  # fmt: skip
    ca.add_argument("--skip-bad", action="store_true", help="drop pairs whose image cannot be read")
    _backend(ca)
    _common(ca)

    v = sub.add_parser("verify", help="are two images the same identity? (distance vs the saved threshold)",
                       description="Two images, or --pairs CSV (path_a,path_b[,label]).")  # fmt: skip
    v.add_argument("run_dir")
    v.add_argument("image_a", nargs="?")
    v.add_argument("image_b", nargs="?")
    v.add_argument("--pairs", metavar="CSV", help="decide every pair of this CSV (columns path_a, path_b, label?)")
    v.add_argument("--out", help="decisions CSV to write (default: <CSV>_decisions.csv beside it)")
    v.add_argument("--skip-bad", action="store_true", help="drop pairs whose image cannot be read")
    _threshold_flag(v)
    _backend(v)
    _common(v)

    ix = sub.add_parser("index", help="galleries: build, add to, remove from, describe (faiss + sidecar)")
    isub = ix.add_subparsers(dest="index_command", required=True)
    ib = isub.add_parser("build", help="embed images with a run's model into a new gallery",
                         description="IMAGES are image files, class-per-folder roots (labels = folder names), "
                         "flat folders, or CSVs with a path (and label) column.")  # fmt: skip
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
    ia = isub.add_parser("add", help="embed more images into a gallery")
    ia.add_argument("gallery_dir")
    ia.add_argument("images", nargs="+")
    ia.add_argument("--label", help="label for images not in a class folder")
    ia.add_argument("--run", dest="run_dir", help="the run to embed with (default: the gallery's own)")
    ir = isub.add_parser("remove", help="remove items by id")
    ir.add_argument("gallery_dir")
    ir.add_argument("ids", nargs="+", type=int)
    ii = isub.add_parser("info", help="size, model, index and labels of a gallery")
    ii.add_argument("gallery_dir")
    ii.add_argument("--limit", type=int, default=20, help="list this many items")
    for sp in (ib, ia):
        sp.add_argument("--skip-bad", action="store_true", help="skip unreadable images instead of stopping")
        _backend(sp)
    for sp in (ib, ia, ir, ii):
        _common(sp)

    se = sub.add_parser("search", help="nearest gallery items of query images")
    se.add_argument("gallery_dir")
    se.add_argument("queries", nargs="+", metavar="QUERY", help="image files or folders")
    se.add_argument("-k", type=int, default=10, help="neighbours per query (default 10)")
    se.add_argument("--run", dest="run_dir", help="the run to embed with (default: the gallery's own)")
    se.add_argument("--figure", metavar="PNG", help="write the neighbours figure (first 5 queries)")
    se.add_argument("--figure-style", choices=("grid", "hub"), default="grid")
    _threshold_flag(se)
    _backend(se)
    _common(se)

    ex = sub.add_parser("export", help="export a run's embedding model (ONNX, parity-checked against PyTorch)")
    ex.add_argument("run_dir")
    ex.add_argument("--format", dest="export_format", choices=("onnx",), default="onnx")
    ex.add_argument("--out", help="output file (default: RUN_DIR/model.onnx)")
    ex.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    ex.add_argument("--debug", action="store_true", help="show tracebacks")
    ex.add_argument("-q", "--quiet", action="store_true")

    sv = sub.add_parser("serve", help="HTTP service + web page: embed, verify, search, gallery edits")
    sv.add_argument("run_dir")
    sv.add_argument("--gallery", dest="gallery_dir", help="gallery for /search and /gallery")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--max-request-mb", type=float, default=16.0, help="request body limit (413 above)")
    sv.add_argument("--max-pixels", type=int, default=25_000_000, help="per-image pixel limit (422 above)")
    sv.add_argument("--allowed-host", dest="allowed_hosts", action="append", default=[], metavar="NAME",
                    help="also answer to this Host name (default: bind address, localhost; repeatable)")  # fmt: skip
    sv.add_argument("--token", default=None,
                    help="token for gallery edits (default: $SIAMKIT_TOKEN); needed beyond 127.0.0.1")  # fmt: skip
    _threshold_flag(sv)
    _backend(sv)
    sv.add_argument("--debug", action="store_true", help="show tracebacks")
    sv.add_argument("-q", "--quiet", action="store_true")

    s = sub.add_parser("summary", help="layer-by-layer output shapes and parameter counts of a model",
                       description="A block string (AAAAAAAA, BBBBBBBB, Ddw, ...) summarises the BaseCNN "
                       "classifier; a backbone (convnet, resnet18, timm/NAME, ...) the Siamese encoder.")  # fmt: skip
    s.add_argument("target", metavar="BACKBONE_OR_BLOCKS")
    s.add_argument("--input", help="input shape CxHxW (default: the model's usual, e.g. 3x32x32)")
    s.add_argument("--embedding-dim", type=int, default=64, help="embedding size of a Siamese encoder (default 64)")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a backbone option, e.g. --set widths=[32,64]")  # fmt: skip
    _common(s)

    st = sub.add_parser("study", help="studies: hyper-parameter search, margin sensitivity, loss comparison")
    ssub = st.add_subparsers(dest="study_command", required=True)
    ss = ssub.add_parser("search", help="random, grid or TPE search over config keys (Optuna; resumable)",
                         description="Each --param is KEY=v1,v2,... (a list to draw from) or, for tpe, "
                         "KEY=float:LOW:HIGH, log:LOW:HIGH, int:LOW:HIGH. Run it again to resume.")  # fmt: skip
    ss.add_argument("--param", dest="params", action="append", default=[], metavar="KEY=VALUES", required=True)
    ss.add_argument("--strategy", choices=("random", "grid", "tpe"), default="random")
    ss.add_argument("--trials", type=int, default=10, help="finished trials the study should hold (random, tpe)")
    ss.add_argument("--objective", choices=("val_loss", "map_at_r", "precision_at_1"), default="val_loss")
    ss.add_argument("--storage", help="Optuna storage URL shared by workers (default: STUDY_DIR/study.db)")
    ss.add_argument("--pruner", choices=("none", "median"), default="none")
    ss.add_argument("--seed", type=int, default=0)
    sm = ssub.add_parser("margins", help="TPR@FPR on train and validation per loss and margin")
    sm.add_argument("--losses", nargs="+", default=["triplet", "contrastive"])
    sm.add_argument("--margins", nargs="+", type=float, default=[0.1, 1.0, 10.0])
    sc = ssub.add_parser("compare", help="one run per loss on the same data and budget, with an overlaid ROC")
    sc.add_argument("--losses", nargs="+", default=["triplet", "contrastive", "fdc", "fdt", "bce"])
    for sp in (ss, sm, sc):
        sp.add_argument("config", nargs="?", help="YAML run config every trial starts from")
        sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every run of the study (repeatable)")  # fmt: skip
        sp.add_argument("--data", help="shortcut for --set data.source=...")
        sp.add_argument("--epochs", type=int, help="shortcut for --set train.epochs=...")
        sp.add_argument("--name", help="study folder under --runs-dir (default: the study kind)")
        sp.add_argument("--runs-dir", default="runs")
        _common(sp)

    rp = sub.add_parser("report", help="(re)write report.html of a run or study folder")
    rp.add_argument("directory", metavar="RUN_OR_STUDY_DIR")
    _common(rp)

    c = sub.add_parser("classify", help="the CIFAR-10 block-CNN classification study (BaseCNN blocks A–E)")
    csub = c.add_subparsers(dest="classify_command", required=True)
    ct = csub.add_parser("train", help="train one BaseCNN classifier and write its figures")
    ct.add_argument("--blocks", default="AAAAAAAA", help="block string, e.g. AAAAAAAA, BBBBBBBB, ABCDEABC, Ddw")
    cc = csub.add_parser("compare", help="train several block strings under one budget and tabulate them")
    cc.add_argument("--blocks", nargs="+", default=["A", "B", "C", "D", "Ddw", "E"],
                    help="block strings (one kind = all eight blocks of it)")  # fmt: skip
    for sp in (ct, cc):
        sp.add_argument("--data", default="cifar10",
                        help="cifar10 | a folder of CIFAR-10 batches | fashion-mnist (offline stand-in)")  # fmt: skip
        sp.add_argument("--epochs", type=int, default=20)
        sp.add_argument("--budget-seconds", type=float, help="stop training after this many seconds (per model)")
        sp.add_argument("--limit", type=int, help="train on this many training images only")
        sp.add_argument("--val-per-class", type=int, default=1000)
        sp.add_argument("--test-limit", type=int, help="score test accuracy on this many test images (0: none)")
        sp.add_argument("--batch-size", type=int, default=64)
        sp.add_argument("--lr", type=float, default=1e-3)
        sp.add_argument("--gamma", type=float, default=0.95, help="ExponentialLR decay per epoch")
        sp.add_argument("--augment", default="cifar", choices=("cifar", "none"))
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--device", default="auto")
        sp.add_argument("--name")
        sp.add_argument("--runs-dir", default="runs")
        _common(sp)
    return parser


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr)


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def summary_table(result: dict[str, Any]) -> str:
    """The human summary of a train/eval result: one row per split."""
    cols = ["split", "AUC", "EER", "TPR@.5", "TPR@.1", "TPR@.01", "TPR@.001", "P@1", "MAP@R", "VerAcc"]
    from siamkit.report import split_entries

    rows = []
    for split, m in split_entries(result):
        tprs = [t["tpr_interpolated"] for t in m["tpr_at_fpr"]]
        flags = ["" if t["reliable"] else "*" for t in m["tpr_at_fpr"]]
        tpr_cells = [f"{_fmt(x)}{f}" for x, f in zip(tprs, flags, strict=True)]
        extra = [m.get(k, "-") for k in ("precision_at_1", "map_at_r", "verification_accuracy")]
        rows.append([split, m["auc"], m["eer"], *tpr_cells, *extra])
    cells = [cols] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cols))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    head = [f"run: {result.get('run_dir')}"]
    if result.get("threshold") is not None:
        how = f"chosen on validation by {result['threshold_rule']}" if "threshold_rule" in result else "the run's"
        head.append(f"threshold ({how}): {result['threshold']:.4f}")
    if "train_seconds" in result:
        head.append(
            f"trainable parameters: {result['trainable_parameters']:,}   train time: {result['train_seconds']:.1f}s"
            f"   images/s: {result['images_per_second']:.0f}   best epoch: {result['best_epoch']}"
        )
    identities = result.get("identities")
    if identities:
        head.append("identity split (open set): " + "; ".join(
            f"{part} {len(ids)} ({_names(ids)})" for part, ids in identities.items()
        ))  # fmt: skip
    test = result.get("test") or {}
    if "verification_accuracy_10fold" in test:
        k = test["verification_accuracy_10fold"]
        far = f"; at the threshold: false-accept rate {test['false_accept_rate']:.4f}, false-reject rate " \
              f"{test['false_reject_rate']:.4f}" if "false_accept_rate" in test else ""  # fmt: skip
        lines.append(f"test verification accuracy, 10-fold (LFW protocol): {k['mean']:.4f} ± {k['std']:.4f}{far}")
    foot = ["(* = fewer than 3 distinct impostor pairs behind that FPR: not meaningful)"]
    if result.get("baselines"):
        foot.append("(raw pixels / untrained net: the same test pairs scored without training — the bar to beat)")
    if "train_seconds" in result:  # a finished training run: where to look, and what to do with the model
        run = result.get("run_dir")
        foot += [
            f"report: {run}/report.html",
            f"next:   siamkit verify {run} A.png B.png",
            f"        siamkit index build {run} IMAGES... --out GALLERY,  then: siamkit search GALLERY Q.png",
            f"        siamkit serve {run} [--gallery GALLERY]   (Python: siamkit.pipeline.verify_images)",
        ]
    return "\n".join(head + lines + foot)


def _names(ids: list[str], at_most: int = 6) -> str:
    return ", ".join(ids[:at_most]) + (f", … {len(ids) - at_most} more" if len(ids) > at_most else "")


def _emit(result: dict[str, Any], fmt: str, table: str) -> None:
    from siamkit.distributed import current

    if current().is_main:  # under torchrun, rank 0 alone reports
        print(json.dumps(result, default=float) if fmt == "json" else table)


def run(args: argparse.Namespace) -> int:
    from siamkit import pipeline

    if args.command == "train":
        from siamkit.config import load_config

        overrides = list(args.overrides)
        for flag, key in SHORTCUTS.items():
            value = getattr(args, flag, None)
            if value is not None:
                overrides.append(f"{key}={value}")
        if args.resume:
            config_path, overrides = resume_config(args.config, overrides)
            cfg = load_config(config_path, overrides)
        else:
            cfg = load_config(args.config, overrides)
        if args.quiet:
            cfg.train.progress = False
        result = pipeline.train_run(cfg, resume=args.resume, force=args.force)
        _emit(result, args.format, summary_table(result))
    elif args.command == "eval":
        result = pipeline.evaluate_run(args.run_dir, args.data, args.overrides, args.as_test)
        _emit(result, args.format, summary_table(result) + f"\nwritten: {result['eval_dir']}")
    elif args.command in HANDLERS:
        HANDLERS[args.command](args)
    elif args.command == "report":
        from siamkit.report import write_report

        path = write_report(args.directory)
        _emit({"report": str(path)}, args.format, f"written: {path}")
    return 0


RESUME_MAY_CHANGE = ("train.", "eval.", "name", "runs_dir")


def resume_config(config: str | None, overrides: list[str]) -> tuple[str, list[str]]:
    """``--resume``: the run's own ``config.yaml`` and the overrides that may change on a resumed run (``train.*``
    but the seed, ``eval.*``); an override that would change its data, model, loss or sampling is refused, as is a
    config file (the run has its own)."""
    import yaml

    from siamkit.config import load_config, set_key, to_dict
    from siamkit.errors import CheckpointError, ConfigError

    if config is not None:
        raise ConfigError(f"--resume continues a run with its own saved config; drop {config}")
    probe = load_config(None, overrides)
    run_dir = Path(probe.runs_dir) / probe.name
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise CheckpointError(f"nothing to resume: {saved} not found; check --name and --runs-dir")
    base = to_dict(load_config(saved))
    kept = []
    for item in overrides:
        key = item.partition("=")[0].strip()
        changed: dict[str, Any] = yaml.safe_load(yaml.safe_dump(base))
        set_key(changed, item)
        if (key.startswith(RESUME_MAY_CHANGE) and key != "train.seed") or _lookup(changed, key) == _lookup(base, key):
            kept.append(item)
            continue
        before, after = _lookup(base, key), _lookup(changed, key)
        raise ConfigError(f"--resume continues {run_dir} with its own config: {key} cannot change ({before!r} → "
                          f"{after!r}); start a new run with another --name")  # fmt: skip
    return str(saved), kept


def _lookup(data: dict[str, Any], key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _calibrate(args: argparse.Namespace) -> None:
    from siamkit.calibration import calibrate_run

    rule = f"fpr:{args.fpr}" if args.fpr is not None else (args.rule or "accuracy")
    r = calibrate_run(args.run_dir, args.data, rule, _source(args), args.skip_bad, args.pairs_per_kind)
    old = "none" if r["previous_threshold"] is None else f"{r['previous_threshold']:.4f}"
    _emit(r, args.format, f"threshold {r['threshold']:.4f} ({rule}; was {old}) on {r['genuine_pairs']} genuine + "
          f"{r['impostor_pairs']} impostor pairs: false-accept rate {r['false_accept_rate']:.4f}, false-reject rate "
          f"{r['false_reject_rate']:.4f}, accuracy {r['verification_accuracy']:.4f}\nwritten: {r['file']}")  # fmt: skip


def _export(args: argparse.Namespace) -> None:
    from siamkit.export import export_onnx

    r = export_onnx(args.run_dir, args.out, args.opset)
    print(f"written: {r['onnx']} ({r['bytes']:,} bytes, opset {r['opset']}, input {r['input']}); parity with "
          f"PyTorch: max |difference| {r['max_abs_diff']:.2e} (tolerance {r['tolerance']:g})")  # fmt: skip


def _serve(args: argparse.Namespace) -> None:
    from siamkit.serve.app import serve
    from siamkit.serve.uploads import UploadLimits

    limits = UploadLimits(int(args.max_request_mb * 1024 * 1024), args.max_pixels)
    import os

    token = args.token or os.environ.get("SIAMKIT_TOKEN")
    serve(args.run_dir, args.gallery_dir, args.host, args.port, _source(args), limits,
          "warning" if args.quiet else "info", args.allowed_hosts, token)  # fmt: skip


def _verify(args: argparse.Namespace) -> None:
    from siamkit import pipeline
    from siamkit.errors import ConfigError

    if args.pairs:
        if args.image_a or args.image_b:
            raise ConfigError("give either two images or --pairs CSV, not both")
        r = pipeline.verify_pairs(args.run_dir, args.pairs, args.out, _source(args), args.skip_bad)
        acc = f", accuracy {r['accuracy']:.4f} against the label column" if "accuracy" in r else ""
        same = f"{r['same']} judged same" if "same" in r else "no threshold saved"
        _emit(r, args.format, f"{r['pairs']} pairs: {same}{acc}\nwritten: {r['decisions']}")
        return
    if not (args.image_a and args.image_b):
        raise ConfigError("verify needs two images (IMAGE_A IMAGE_B) or --pairs CSV")
    r = pipeline.verify_images(args.run_dir, args.image_a, args.image_b, _source(args))
    verdict = "unknown (no threshold saved)" if r["same"] is None else ("same" if r["same"] else "different")
    thr = "none" if r["threshold"] is None else f"{r['threshold']:.4f}"
    _emit(r, args.format, f"distance {r['distance']:.4f}  threshold {thr}  → {verdict}")


def _index(args: argparse.Namespace) -> None:
    from siamkit.index import ops

    progress = not args.quiet and args.format != "json"
    if args.index_command == "build":
        names = ("m", "ef_construction", "ef_search", "nlist", "nprobe")
        options = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
        r = ops.build(args.run_dir, args.images, args.out, args.kind, options, _source(args), progress, args.skip_bad,
                      args.overwrite)  # fmt: skip
        text = f"gallery {r['directory']}: {r['added']} images embedded ({r['index']['kind']} index, {r['metric']})"
    elif args.index_command == "add":
        r = ops.add(args.gallery_dir, args.images, args.label, args.run_dir, _source(args), progress, args.skip_bad)
        ids = r["added_ids"]
        span = f"ids {ids[0]}–{ids[-1]}" if ids else "nothing"
        text = f"gallery {r['directory']}: added {len(ids)} ({span}); size {r['size']}"
    elif args.index_command == "remove":
        r = ops.remove(args.gallery_dir, args.ids)
        text = f"gallery {r['directory']}: removed {len(r['removed_ids'])}; size {r['size']}"
    else:
        r = ops.info(args.gallery_dir, args.limit)
        opts = ", ".join(f"{k} {v}" for k, v in r["index"].get("options", {}).items())
        index = r["index"]["kind"] + (f" ({opts})" if opts else "")
        lines = [f"gallery {r['directory']}: {r['size']:,} items, {r['dim']}-d, {r['metric']} distance, {index} index",
                 f"model {r['model_hash'][:12]} (run {r['run_dir']})",
                 "labels: " + ", ".join(f"{k} ({v})" for k, v in sorted(r["labels"].items()))]  # fmt: skip
        lines += [f"  {it['id']:>6}  {it['label'] or '-':<16} {it['path']}" for it in r["items"]]
        text = "\n".join(lines)
    if r.get("skipped"):
        text += f"\n{len(r['skipped'])} unreadable images skipped"
    _emit(r, args.format, text)


def _search(args: argparse.Namespace) -> None:
    from siamkit.index import ops

    r = ops.search(args.gallery_dir, args.queries, args.k, args.run_dir, _source(args), args.figure,
                   args.figure_style)  # fmt: skip
    mark = {True: "match", False: "     ", None: "     "}
    lines = []
    for res in r["results"]:
        lines.append(f"query {res['query']}" + (f"  (label {res['label']})" if res["label"] else ""))
        lines += [f"  {h['rank']:>3}  id {h['id']:<7} {h['distance']:.4f} {mark[h['match']]}  {h['label'] or '-':<14} "
                  f"{h['path']}" for h in res["neighbours"]]  # fmt: skip
    if "figure" in r:
        lines.append(f"figure: {r['figure']}")
    _emit(r, args.format, "\n".join(lines))


def _study(args: argparse.Namespace) -> None:
    from siamkit import studies

    base = list(args.overrides)
    if args.data:
        base.insert(0, f"data.source={args.data}")
    if args.epochs:
        base.insert(0, f"train.epochs={args.epochs}")
    name = args.name or args.study_command
    if args.study_command == "search":
        params = [studies.parse_param(p) for p in args.params]
        r = studies.search(name, params, base, args.config, args.strategy, args.trials, args.objective,
                           args.storage, args.seed, args.pruner, args.runs_dir)  # fmt: skip
    elif args.study_command == "margins":
        r = studies.margins(name, args.losses, args.margins, base, args.config, args.runs_dir)
    else:
        r = studies.compare(name, args.losses, base, args.config, args.runs_dir)
    lines = [f"study: {r['study_dir']}"]
    if r.get("best"):
        lines.append("best: " + ", ".join(f"{k}={_fmt(v)}" for k, v in r["best"].items()))
    for t in r["tables"][:1]:
        lines.append(studies.text_table(t["columns"], t["rows"]))
    lines.append(f"report: {r['study_dir']}/report.html   tables: {r['study_dir']}/tables.md")
    _emit(r, args.format, "\n".join(lines))


def _summary(args: argparse.Namespace) -> None:
    import yaml

    from siamkit.models.summary import parse_input, summarize_named

    options: dict[str, Any] = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            from siamkit.errors import ConfigError

            raise ConfigError(f"--set {item!r}: give KEY=VALUE")
        options[key] = yaml.safe_load(value)
    shape = parse_input(args.input) if args.input else None
    summ = summarize_named(args.target, shape, args.embedding_dim, options)
    _emit(summ.to_dict(), args.format, summ.table())


def _classify(args: argparse.Namespace) -> None:
    from siamkit.classify.study import ClassifyConfig, compare, compare_table, train_classifier

    cfg = ClassifyConfig(
        blocks=args.blocks if args.classify_command == "train" else "A", data=args.data, epochs=args.epochs,
        budget_seconds=args.budget_seconds, limit=args.limit, val_per_class=args.val_per_class,
        batch_size=args.batch_size, lr=args.lr, gamma=args.gamma, augment=args.augment, seed=args.seed,
        device=args.device, name=args.name, runs_dir=args.runs_dir, progress=not args.quiet,
        test_limit=args.test_limit,
    )  # fmt: skip
    if args.classify_command == "train":
        r = train_classifier(cfg)
        lines = [f"run: {r['run_dir']}", f"dataset: {r['dataset']}"] + ([r["note"]] if r["note"] else [])
        lines += [
            f"blocks {r['blocks']}: {r['trainable_parameters']:,} trainable parameters, {r['train_seconds']:.1f}s "
            f"training ({r['epochs_run']} epochs{', budget reached' if r['budget_reached'] else ''})",
            f"best validation accuracy {r['best_val_accuracy']:.4f} (epoch {r['best_epoch']})"
            + (f", test accuracy {r['test_accuracy']:.4f}" if "test_accuracy" in r else ""),
            "most confused: {} ↔ {} ({} mistakes)".format(*r["most_confused"]["names"], r["most_confused"]["count"]),
        ]
        _emit(r, args.format, "\n".join(lines))
    else:
        for b in args.blocks:
            from siamkit.models.blocks import parse_blocks

            parse_blocks(b)
        result = compare(cfg, list(args.blocks))
        _emit(result, args.format, compare_table(result) + f"\nwritten: {result['dir']}/compare.csv, compare.md")


HANDLERS: dict[str, Callable[[argparse.Namespace], None]] = {
    "calibrate": _calibrate, "verify": _verify, "index": _index, "search": _search, "export": _export,
    "serve": _serve, "summary": _summary, "classify": _classify, "study": _study,
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from siamkit.distributed import cleanup, env_info

    args = build_parser().parse_args(argv)
    _setup_logging(args.quiet or getattr(args, "format", "table") == "json" or not env_info().is_main)
    try:
        return run(args)
    except SiamkitError as exc:
        if args.debug:
            raise
        print(f"siamkit: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (siamkit search … | head): not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        cleanup()
