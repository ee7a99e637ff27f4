"""``train``, ``eval``, ``calibrate`` and ``report``: making a run, scoring it, re-choosing its threshold, and
rewriting its report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from siamkit import SHORTCUTS
from siamkit.cli.common import (
    Subparsers,
    command,
    emit,
    fmt,
    model_flags,
    model_source,
    output_flags,
    overrides_flag,
    shortcut_overrides,
    trust_flag,
)
from siamkit.text import name_list


def register(sub: Subparsers) -> None:
    _register_train(sub)
    _register_eval(sub)
    _register_calibrate(sub)
    _register_report(sub)


def _register_train(sub: Subparsers) -> None:
    t = command(sub, "train", _train, "train a Siamese model and evaluate it (default: on scikit-learn digits)", [
        "siamkit train                                   # digits, the default recipe",
        "siamkit train my_faces/                         # a folder per identity: tested on unseen identities",
        "siamkit train --data my_faces/ --recipe open-set --epochs 20",
        "siamkit train config.yaml --set train.lr=3e-4 --set loss.name=triplet",
    ], description=(
        "Train from a YAML config plus overrides; writes runs/<name>/ (weights, metrics, figures, "
        "report)."
    ))  # fmt: skip
    t.add_argument("config", nargs="?", help="YAML run config (optional; defaults otherwise); a data folder or CSV "
                   "here is taken as --data")  # fmt: skip
    overrides_flag(t)
    t.add_argument("--data", help="digits | fashion-mnist | a folder, flat folder, IDX folder or pairs/triplets CSV")
    t.add_argument("--loss", help="contrastive, triplet, bce, huber, fdc, fdt, multi-similarity, arcface, cosface, "
                   "normalized-softmax or pkg.mod:Class")  # fmt: skip
    t.add_argument("--backbone", help="a registered backbone, e.g. convnet, seed_cnn, resnet18, timm/NAME")
    t.add_argument("--recipe", help="auto (default), closed-set or open-set")
    t.add_argument("--epochs", type=int)
    t.add_argument("--name", help="run name (folder under --runs-dir)")
    t.add_argument("--runs-dir", dest="runs_dir", help="where run folders go (default: runs)")
    t.add_argument("--resume", action="store_true",
                   help="continue runs/<name>/ from its last finished epoch, with its own saved config (only train.* "
                   "and eval.* may be changed, e.g. --epochs)")  # fmt: skip
    t.add_argument("--force", action="store_true",
                   help="with --resume: retrain a finished run that has no last.pt, overwriting its model")  # fmt: skip
    t.add_argument("--skip-bad", action="store_true",
                   help="skip unreadable images (counted, listed) instead of stopping: data.skip_bad=true")  # fmt: skip
    output_flags(t)


def _register_eval(sub: Subparsers) -> None:
    e = command(sub, "eval", _eval, "evaluate a trained run (optionally on other data)", [
        "siamkit eval runs/default",
        "siamkit eval runs/my_faces --data new_people/ --as-test",
    ])  # fmt: skip
    e.add_argument("run_dir")
    e.add_argument("--data", help="evaluate on this source instead of the run's own")
    e.add_argument("--as-test", action="store_true",
                   help="all of --data is held-out test data: no split, scored with the run's threshold into "
                   "RUN_DIR/eval-<name>/ (a new folder each time, with its report.html)")  # fmt: skip
    e.add_argument("--episodes", type=int, help="N-way K-shot episodes per setting on the test identities "
                   "(default 1000; 0: none)")  # fmt: skip
    e.add_argument("--way", help="classes per episode, e.g. 5 or 5,20 (default 5,20)")
    e.add_argument("--shot", help="support images per class, e.g. 1 or 1,5 (default 1,5)")
    e.add_argument("--query", type=int, help="query images per class (default 15)")
    e.add_argument("--seed", type=int, help="seed of the episodes (default 0)")
    e.add_argument("--within-group", action="store_true", help="draw each episode's classes from one group "
                   "(root/<group>/<class>/ folders: within alphabet)")  # fmt: skip
    e.add_argument("--skip-bad", action="store_true", help="skip unreadable images of --data instead of stopping")
    trust_flag(e)
    overrides_flag(e, "eval.n_pairs=20000")
    output_flags(e)


def _register_calibrate(sub: Subparsers) -> None:
    ca = command(sub, "calibrate", _calibrate, "re-choose a run's verification threshold on your own pairs", [
        "siamkit calibrate runs/default --data pairs.csv --fpr 0.001",
        "siamkit calibrate runs/my_faces --data held_out_people/",
        "siamkit calibrate dlib-face --data my_people/ --fpr 0.001 --out runs/dlib-face-mine",
    ], description=(
        "DATA is a pairs CSV (path_a,path_b,label; 1 = same) or labelled images (a folder per identity, "
        "...), whose distinct pairs are drawn. The new threshold is saved with the run "
        "(RUN_DIR/threshold.json, earlier ones kept in its history) and used by verify, search, serve and"
        " eval."
    ))  # fmt: skip
    ca.add_argument("run_dir")
    ca.add_argument("--data", required=True, help="pairs CSV or labelled images")
    rule = ca.add_mutually_exclusive_group()
    rule.add_argument("--fpr", type=float, help="the largest threshold whose false-accept rate is at most this")
    rule.add_argument("--rule", help="accuracy (default), fpr:<rate>, or a distance")
    ca.add_argument("--pairs-per-kind", type=int, help="labelled images: genuine and impostor pairs to draw each "
                    "(default: the run's eval.n_pairs)")  # fmt: skip
    ca.add_argument("--skip-bad", action="store_true", help="drop pairs whose image cannot be read")
    ca.add_argument("--out", help="write the calibrated run to this new folder (a copy) instead of RUN_DIR; "
                    "needed for a pretrained name such as dlib-face")  # fmt: skip
    ca.add_argument("--hold-out", dest="hold_out", type=float, default=0.0, metavar="SHARE",
                    help="keep this share of DATA's identities (of a CSV's pairs) out of the choice and report the "
                    "threshold's rates on them: does it carry to people it was not set on? (e.g. 0.3)")  # fmt: skip
    overrides_flag(ca, "data.faces=off")
    model_flags(ca)
    output_flags(ca)


def _register_report(sub: Subparsers) -> None:
    rp = command(sub, "report", _report, "(re)write report.html of a run, evaluation or study folder",
                 ["siamkit report runs/default", "siamkit report runs/default/eval-new_people"])  # fmt: skip
    rp.add_argument("directory", metavar="RUN_EVAL_OR_STUDY_DIR",
                    help="a run folder, an evaluation's (RUN/eval/, RUN/eval-<data>/ of eval --as-test) or a "
                    "study's")  # fmt: skip
    output_flags(rp)


def _train(args: argparse.Namespace) -> None:
    from siamkit.config import load_config
    from siamkit.training.pipeline import train_run

    _data_in_config_place(args)
    overrides = shortcut_overrides(args, SHORTCUTS)
    if args.skip_bad:
        overrides.append("data.skip_bad=true")
    config_path = args.config
    if args.resume:
        config_path, overrides = resume_config(args.config, overrides)
    cfg = load_config(config_path, overrides, values={"train.progress": False} if args.quiet else None)
    result = train_run(cfg, resume=args.resume, force=args.force)
    emit(result, args.format, summary_table(result))


def _eval(args: argparse.Namespace) -> None:
    from siamkit.evaluate.run import evaluate_run
    from siamkit.report import write_report

    overrides = list(args.overrides) + (["data.skip_bad=true"] if args.skip_bad else [])
    for flag, key in EPISODE_FLAGS.items():
        value = getattr(args, flag)
        if value is not None and value is not False:
            value = f"[{value}]" if flag in ("way", "shot") else value
            overrides.append(f"eval.{key}={str(value).lower() if isinstance(value, bool) else value}")
    result = evaluate_run(args.run_dir, args.data, overrides, args.as_test, trust_code=args.trust_code)
    result["report"] = str(write_report(result["eval_dir"]))  # the evaluation's own page, in its folder
    emit(result, args.format, summary_table(result) + f"\nwritten: {result['eval_dir']}\nreport: {result['report']}")


EPISODE_FLAGS = {"episodes": "episodes", "way": "way", "shot": "shot", "query": "query", "seed": "episode_seed",
                 "within_group": "within_group"}  # fmt: skip


def _report(args: argparse.Namespace) -> None:
    from siamkit.report import write_report

    path = write_report(args.directory)
    emit({"report": str(path)}, args.format, f"written: {path}")


def _calibrate(args: argparse.Namespace) -> None:
    from siamkit.calibration import calibrate_run
    from siamkit.errors import ConfigError

    if args.pairs_per_kind is not None and args.pairs_per_kind < 1:
        raise ConfigError(f"--pairs-per-kind must be at least 1; got {args.pairs_per_kind}")
    rule = f"fpr:{args.fpr}" if args.fpr is not None else (args.rule or "accuracy")
    r = calibrate_run(args.run_dir, args.data, rule, model_source(args), args.skip_bad, n_pairs=args.pairs_per_kind,
                      out=args.out, overrides=args.overrides, hold_out=args.hold_out)  # fmt: skip
    emit(r, args.format, calibration_table(r))


def calibration_table(r: dict[str, Any]) -> str:
    """The human summary of a calibration: the new threshold, its rates where it was set, on held-out identities
    and on the run's test pairs; the deploy warning."""
    old = "none" if r["previous_threshold"] is None else f"{r['previous_threshold']:.4f}"
    lines = [f"threshold {r['threshold']:.4f} ({r['rule']}; was {old}) set on {r['set_on']}: {r['genuine_pairs']:,} "
             f"genuine + {r['impostor_pairs']:,} distinct impostor pairs: false-accept rate "
             f"{r['false_accept_rate']:.4f}, false-reject rate {r['false_reject_rate']:.4f}, accuracy "
             f"{r['verification_accuracy']:.4f}"]  # fmt: skip
    for key in ("held_out", "test"):
        new = r.get(key)
        if new:
            lines.append(f"on {new['on']}: false-accept rate {new['false_accept_rate']:.4f}, false-reject rate "
                         f"{new['false_reject_rate']:.4f} ({new['impostor_pairs']:,} impostor pairs)")  # fmt: skip
    if r.get("warning"):
        lines.append(f"warning: {r['warning']}")
    lines.append(f"written: {r['file']}")
    return "\n".join(lines)


def summary_table(result: dict[str, Any]) -> str:
    """The human summary of a train/eval result: one row per split."""
    cols = ["split", "AUC", "EER", "TPR@.5", "TPR@.1", "TPR@.01", "TPR@.001", "P@1", "MAP@R", "VerAcc"]
    from siamkit.report import split_entries, verdict

    rows = []
    for split, m in split_entries(result):
        tprs = [t["tpr_interpolated"] for t in m["tpr_at_fpr"]]
        flags = ["" if t["reliable"] else "*" for t in m["tpr_at_fpr"]]
        tpr_cells = [f"{fmt(x)}{f}" for x, f in zip(tprs, flags, strict=True)]
        extra = [m.get(k, "-") for k in ("precision_at_1", "map_at_r", "verification_accuracy")]
        rows.append([split, m["auc"], m["eer"], *tpr_cells, *extra])
    lines, widths = aligned([cols] + [[fmt(c) for c in r] for r in rows])
    lines.insert(1, "  ".join("-" * w for w in widths))
    head = [f"run: {result.get('run_dir')}"]
    head += threshold_lines(result)
    if "train_seconds" in result and result.get("epochs_run") == 0:
        head.append(f"parameters: {result['trainable_parameters']:,}   not trained (train.epochs=0): the initial model")
    elif "train_seconds" in result:
        head.append(
            f"trainable parameters: {result['trainable_parameters']:,}   train time: {result['train_seconds']:.1f}s"
            f"   images/s: {result['images_per_second']:.0f}   best epoch: {result['best_epoch']}"
        )
    if result.get("recipe_reason"):
        head.append(f"recipe: {result['recipe']} ({result['recipe_reason']})")
    identities = result.get("identities")
    if identities:
        head.append("identity split (open set): " + "; ".join(
            f"{part} {len(ids)} ({name_list(ids, 6)})" for part, ids in identities.items()
        ))  # fmt: skip
    test = result.get("test") or {}
    if "verification_accuracy_10fold" in test:
        k = test["verification_accuracy_10fold"]
        far = f"; at the threshold: false-accept rate {test['false_accept_rate']:.4f}, false-reject rate " \
              f"{test['false_reject_rate']:.4f}" if "false_accept_rate" in test else ""  # fmt: skip
        folds = {"identity": ", identity-disjoint folds", "pairs": ", folds of pairs"}.get(k.get("folds_by"), "")
        lines.append(
            f"test verification accuracy, 10-fold (LFW protocol{folds}): {k['mean']:.4f} ± {k['std']:.4f}{far}"
        )
    from siamkit.report import episode_rows

    columns, rows_e, note = episode_rows(result)
    if rows_e:
        lines += ["", *aligned([columns, *rows_e])[0], f"({note})"]
    foot = ["(* = fewer than 3 distinct impostor pairs behind that FPR: not meaningful)"]
    if result.get("baselines"):
        before = "pretrained, unchanged" if result.get("initial_model") == "pretrained" else "untrained net"
        foot.append(f"(raw pixels / {before} / descriptor: the same test pairs scored without training — the bar to "
                    "beat)")  # fmt: skip
    said = verdict(result)
    if said:
        foot.append(said)
    warning = (result.get("threshold_info") or {}).get("warning")
    if warning:
        foot.append(f"warning: {warning}")
    if "train_seconds" in result:  # a finished training run: where to look, and what to do with the model
        run = result.get("run_dir")
        foot += [
            f"report: {run}/report.html",
            f"next:   siamkit verify {run} A.png B.png",
            f"        siamkit index build {run} IMAGES... --out GALLERY,  then: siamkit search GALLERY Q.png",
            f"        siamkit serve {run} [--gallery GALLERY]   (Python: siamkit.load({str(run)!r}).verify(a, b))",
        ]
    return "\n".join(head + lines + foot)


def threshold_lines(result: dict[str, Any]) -> list[str]:
    """The threshold in use and where it holds (``siamkit.thresholds.describe``); a bare value for a result
    without provenance."""
    from siamkit.thresholds import describe

    info = result.get("threshold_info")
    if info and info.get("threshold") is not None:
        return [describe(info)]
    if result.get("threshold") is not None:
        rule = result.get("threshold_rule")
        how = f"rule {rule}" if rule else "the run's"
        return [f"threshold {result['threshold']:.4f} ({how})"]
    return []


def aligned(cells: list[list[str]]) -> tuple[list[str], list[int]]:
    """Rows of text cells right-aligned in columns two spaces apart, and the column widths."""
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    return ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells], widths


RESUME_MAY_CHANGE = ("train.", "eval.", "name", "runs_dir")


def _data_in_config_place(args: argparse.Namespace) -> None:
    """``siamkit train my_faces/``: a folder (or a CSV, or an IDX file) where the YAML config goes is the data."""
    from siamkit.data.readers import LAYOUTS
    from siamkit.errors import ConfigError

    given = args.config
    if given is None or Path(given).suffix.lower() in (".yaml", ".yml", ".json"):
        return
    path = Path(given)
    named = given in {name for name, lay in LAYOUTS.items() if lay.by_name}
    missing_folder = not path.exists() and not path.suffix  # "my_faces/" mistyped: say the data is not found
    if not (path.is_dir() or path.suffix.lower() in (".csv", ".gz") or named or missing_folder):
        return
    if args.data is not None:
        raise ConfigError(f"{given} is data, and --data {args.data} gives data too; give one of them")
    args.data, args.config = given, None


def resume_config(config: str | None, overrides: list[str]) -> tuple[str, list[str]]:
    """``--resume``: the run's own ``config.yaml`` and the overrides that may change on a resumed run (``train.*``
    but the seed, ``eval.*``); an override that would change its data, model, loss or sampling is refused, as is a
    config file (the run has its own)."""
    import yaml

    from siamkit.config import load_config, set_key, to_dict
    from siamkit.errors import CheckpointError, ConfigError
    from siamkit.rundir import RunDir

    if config is not None:
        raise ConfigError(f"--resume continues a run with its own saved config; drop {config}")
    probe = load_config(None, overrides)
    run_dir = Path(probe.runs_dir) / probe.name
    saved = RunDir(run_dir).config
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
