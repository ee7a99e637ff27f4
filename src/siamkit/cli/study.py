"""``study``: hyper-parameter search, margin sensitivity and loss comparison, each a folder of runs with tables,
figures and a report."""

from __future__ import annotations

import argparse
import shlex

from siamkit.cli.common import Subparsers, command, emit, fmt, output_flags, overrides_flag
from siamkit.studies.params import OBJECTIVE_NAMES, PRUNERS, STRATEGIES


def register(sub: Subparsers) -> None:
    st = command(sub, "study", None, "studies: hyper-parameter search, margin sensitivity, loss comparison", [
        "siamkit study search --param train.lr=1e-4,3e-4,1e-3 --trials 6",
        "siamkit study compare --losses triplet contrastive multi-similarity --epochs 10",
    ])  # fmt: skip
    ssub = st.add_subparsers(dest="study_command", required=True, metavar="KIND")
    ss = command(ssub, "search", _study, "random, grid or TPE search over config keys (Optuna; resumable)", [
        "siamkit study search --param train.lr=1e-4,3e-4,1e-3 --param loss.params.margin=0.2,0.5 --strategy grid",
        "siamkit study search --strategy tpe --param train.lr=log:1e-5:1e-2 --trials 20 --objective map_at_r",
    ], description=(
        "Each --param is KEY=v1,v2,... (a list to draw from) or, for tpe, KEY=float:LOW:HIGH, "
        "log:LOW:HIGH, int:LOW:HIGH. Run it again to resume."
    ))  # fmt: skip
    ss.add_argument("--param", dest="params", action="append", default=[], metavar="KEY=VALUES", required=True)
    ss.add_argument("--strategy", choices=STRATEGIES, default=STRATEGIES[0])
    ss.add_argument("--trials", type=int, default=10, help="finished trials the study should hold (random, tpe)")
    ss.add_argument("--objective", choices=OBJECTIVE_NAMES, default=OBJECTIVE_NAMES[0],
                    help="what ranks the trials: auto (default) = the runs' own checkpoint monitor, validation MAP@R "
                    "(the validation loss for pairs/triplets CSVs)")  # fmt: skip
    ss.add_argument("--storage", help="Optuna storage URL shared by workers (default: STUDY_DIR/study.db)")
    ss.add_argument("--pruner", choices=PRUNERS, default=PRUNERS[0])
    ss.add_argument("--seed", type=int, default=0)
    sm = command(ssub, "margins", _study, "TPR@FPR on train and validation per loss and margin",
                 ["siamkit study margins --losses triplet contrastive --margins 0.1 1 10"])  # fmt: skip
    sm.add_argument("--losses", nargs="+", default=["triplet", "contrastive"])
    sm.add_argument("--margins", nargs="+", type=float, default=[0.1, 1.0, 10.0])
    sc = command(ssub, "compare", _study, "one run per loss on the same data and budget, with an overlaid ROC",
                 ["siamkit study compare --losses triplet contrastive fdc fdt bce --epochs 5"])  # fmt: skip
    sc.add_argument("--losses", nargs="+", default=["triplet", "contrastive", "fdc", "fdt", "bce"])
    for sp in (ss, sm, sc):
        sp.add_argument("config", nargs="?", help="YAML run config every trial starts from")
        overrides_flag(sp, "data.limit=2000")
        sp.add_argument("--data", help="shortcut for --set data.source=...")
        sp.add_argument("--epochs", type=int, help="shortcut for --set train.epochs=...")
        sp.add_argument("--name", help="study folder under --runs-dir (default: the study kind)")
        sp.add_argument("--runs-dir", default="runs")
        output_flags(sp)


def _study(args: argparse.Namespace) -> None:
    from siamkit import studies

    base = list(args.overrides)
    if args.data:
        base.insert(0, f"data.source={args.data}")
    if args.epochs:
        base.insert(0, f"train.epochs={args.epochs}")
    name = args.name or args.study_command
    made_by = "siamkit " + shlex.join(args.argv)  # recorded in the study folder
    if args.study_command == "search":
        params = [studies.parse_param(p) for p in args.params]
        r = studies.search(name, params, base, args.config, strategy=args.strategy, n_trials=args.trials,
                           objective=args.objective, storage=args.storage, seed=args.seed, pruner=args.pruner,
                           runs_dir=args.runs_dir, command=made_by)  # fmt: skip
    elif args.study_command == "margins":
        r = studies.margins(name, args.losses, args.margins, base, args.config, runs_dir=args.runs_dir,
                            command=made_by)  # fmt: skip
    else:
        r = studies.compare(name, args.losses, base, args.config, runs_dir=args.runs_dir, command=made_by)
    lines = [f"study: {r['study_dir']}"]
    if r.get("best"):
        lines.append("best: " + ", ".join(f"{k}={fmt(v)}" for k, v in r["best"].items()))
    for t in r["tables"][:1]:
        lines.append(studies.text_table(t["columns"], t["rows"]))
    if r.get("note"):
        lines.append(r["note"])
    lines.append(f"report: {r['study_dir']}/report.html   tables: {r['study_dir']}/tables.md")
    emit(r, args.format, "\n".join(lines))
