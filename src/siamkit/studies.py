"""Studies (SPEC §6–7): hyper-parameter search on Optuna, margin sensitivity, loss comparison.

Every study is a folder: one run directory per trial or per setting (each with its own ``report.html``), the
study's tables (CSV and in ``study.json``), its plots, and a ``report.html`` of its own.

**Search** (``search``): any config keys, each given as a list of choices (``train.lr=1e-4,1e-3,1e-2``: random
and grid search draw from lists, as source B did) or a range for TPE (``float:0.1:2``, ``log:1e-4:1e-2``,
``int:5:20``). Strategies: ``random`` and ``tpe`` (Optuna samplers), ``grid`` (every combination, each run once).
The study lives in Optuna storage — by default ``study.db`` (SQLite) in the study folder, so an interrupted
study resumes where it stopped: finished trials are kept and not rerun, the interrupted one is marked failed
and its setting tried again. With a database URL (``--storage postgresql://…``) several machines share one
study: each runs trials until the study holds ``n_trials`` finished ones (a worker that dies is noticed by
heartbeat). The objective is the validation loss (lowest over the epochs, SPEC §6) or a validation retrieval
metric; ``--pruner median`` stops trials whose per-epoch objective trails the others'.

**Margins** (``margins``) and **compare** (``compare``) train one run per (loss, margin) or per loss on the same
data and budget; a run already finished in the folder is reused, so these resume too.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import shlex
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from siamkit.config import load_config
from siamkit.errors import ConfigError, DataError
from siamkit.files import atomic_write_csv, atomic_write_text
from siamkit.report import METRIC_COLUMNS, STUDY_FILE, metrics_rows, write_report

log = logging.getLogger(__name__)
FPRS = ("0.5", "0.1", "0.01", "0.001")
OBJECTIVES = {"val_loss": "minimize", "map_at_r": "maximize", "precision_at_1": "maximize"}
OBJECTIVE_NAMES = ("auto", *OBJECTIVES)
"""``auto``: the objective a run's own checkpoint monitor uses — validation MAP@R, or the validation loss for
pairs/triplets CSVs (no class labels to rank by)."""
STRATEGIES = ("random", "grid", "tpe")


@dataclass
class Param:
    """One searched config key: ``choices`` (YAML texts) or a range ``kind`` in float/log/int."""

    key: str
    choices: list[str] | None = None
    kind: str = "choice"
    low: float = 0.0
    high: float = 0.0


def parse_param(spec: str) -> Param:
    """``key=a,b,c`` (choices, each parsed as YAML when applied) or ``key=float|log|int:low:high``."""
    key, sep, rhs = spec.partition("=")
    if not sep or not key.strip() or not rhs.strip():
        raise ConfigError(f"--param {spec!r}: give KEY=v1,v2,... or KEY=float:LOW:HIGH / log:LOW:HIGH / int:LOW:HIGH")
    _check_key(key.strip())
    head, _, rest = rhs.partition(":")
    if head in ("float", "log", "int") and rest:
        try:
            low, high = (float(x) for x in rest.split(":"))
        except ValueError:
            raise ConfigError(f"--param {spec!r}: a range is {head}:LOW:HIGH with two numbers") from None
        if not low < high or (head == "log" and low <= 0):
            raise ConfigError(f"--param {spec!r}: need LOW < HIGH (and LOW > 0 for log)")
        return Param(key.strip(), None, head, low, high)
    choices = _split_choices(rhs)
    if not choices:
        raise ConfigError(f"--param {spec!r}: no values")
    return Param(key.strip(), choices)


def _split_choices(text: str) -> list[str]:
    """Comma-separated values, commas inside brackets/braces kept (``[24, 48],[32, 64]``)."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def _check_key(key: str) -> None:
    from siamkit.config import check_key

    check_key(key.split("."))


def _override(key: str, value: Any) -> str:
    return f"{key}={value}" if isinstance(value, str) else f"{key}={json.dumps(value)}"


def resolve_objective(objective: str, config: str | None, base: list[str]) -> str:
    """``objective`` with ``auto`` resolved (``OBJECTIVE_NAMES``)."""
    if objective not in OBJECTIVE_NAMES:
        raise ConfigError(f"unknown --objective {objective!r}; choose one of: {', '.join(OBJECTIVE_NAMES)}")
    if objective != "auto":
        return objective
    from siamkit.data.readers import detect_layout

    cfg = load_config(config, base)
    layout = detect_layout(cfg.data.source) if cfg.data.layout == "auto" else cfg.data.layout
    return "val_loss" if layout in ("pairs-csv", "triplets-csv") else "map_at_r"


def objective_value(history: list[dict[str, Any]], objective: str) -> float:
    """Lowest validation loss, or highest validation P@1 / MAP@R, over the epochs."""
    if objective == "val_loss":
        return float(min(float(r["val_loss"]) for r in history))
    key = f"val_{objective}"
    if key not in history[0]:
        raise DataError(f"objective {objective} needs class labels on the validation images; use --objective val_loss")
    return float(max(float(r[key]) for r in history))


def _read_history(run_dir: Path) -> list[dict[str, Any]]:
    with (run_dir / "history.csv").open() as f:
        return list(csv.DictReader(f))


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else ("–" if v is None else str(v))

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows])


def text_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(columns)] + [[f"{v:.4f}" if isinstance(v, float) else ("–" if v is None else str(v)) for v in r]
                               for r in rows]  # fmt: skip
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _write_study(study_dir: Path, study: dict[str, Any], started: float | None = None) -> None:
    if started is not None:
        study["wall_seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_text(study_dir / STUDY_FILE, json.dumps(study, indent=2, default=float) + "\n")
    for t in study["tables"]:
        atomic_write_csv(study_dir / t["file"], t["columns"], t["rows"])
    md = [f"# {study['kind']} study: {study_dir.name}", "", study.get("description", ""), ""]
    if study.get("command"):
        md += ["Made by:", "", "```bash", study["command"], "```", ""]
    if study.get("wall_seconds") is not None:
        md += [f"Wall time of this invocation: {study['wall_seconds']:.0f} s.", ""]
    if study.get("best"):
        best = study["best"]
        md += ["## Best trial", "", markdown_table(list(best), [list(best.values())]), ""]
    for t in study["tables"]:
        md += [f"## {t['title']}", "", markdown_table(t["columns"], t["rows"]), ""]
    atomic_write_text(study_dir / "tables.md", "\n".join(md))
    write_report(study_dir)


def _command() -> str:
    return "siamkit " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else ""


# ---------------------------------------------------------------------------------------------------- search


def _storage(url: str | None, study_dir: Path) -> Any:
    import optuna

    url = url or f"sqlite:///{(study_dir / 'study.db').resolve()}"
    with warnings.catch_warnings():  # heartbeats are an "experimental" Optuna feature: no warning for using them
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180)


def search(
    name: str, params: list[Param], base: list[str], config: str | None = None, strategy: str = "random",
    n_trials: int = 10, objective: str = "auto", storage: str | None = None, seed: int = 0,
    pruner: str = "none", runs_dir: str = "runs",
    train: Callable[..., dict[str, Any]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Run (or resume) a search study; returns its summary (best trial, table, files). ``objective``: ``auto``
    (the runs' own checkpoint monitor: validation MAP@R where the data has class labels), ``val_loss``,
    ``map_at_r`` or ``precision_at_1``."""
    import optuna

    from siamkit.training.pipeline import train_run

    started = time.perf_counter()
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown --strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    if not params:
        raise ConfigError("give at least one --param KEY=v1,v2,... to search over")
    if strategy in ("random", "grid") and any(p.choices is None for p in params):
        raise ConfigError(f"--strategy {strategy} draws from lists: give every --param as KEY=v1,v2,... (ranges: tpe)")
    load_config(config, base)  # a bad base config fails now, not in every trial
    objective = resolve_objective(objective, config, base)
    train = train or train_run
    study_dir = Path(runs_dir) / name
    study_dir.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = _storage(storage, study_dir)
    n_existing = _n_trials(store, name)
    samplers = {"random": optuna.samplers.RandomSampler, "grid": optuna.samplers.RandomSampler,
                "tpe": optuna.samplers.TPESampler}  # fmt: skip
    sampler = samplers[strategy](seed=seed + n_existing)  # a resumed study does not replay the same draws
    prune = optuna.pruners.MedianPruner(n_warmup_steps=1) if pruner == "median" else optuna.pruners.NopPruner()
    if pruner not in ("none", "median"):
        raise ConfigError(f"unknown --pruner {pruner!r}; choose none or median")
    study = optuna.create_study(study_name=name, storage=store, sampler=sampler, pruner=prune,
                                direction=OBJECTIVES[objective],  # type: ignore[arg-type]
                                load_if_exists=True)  # fmt: skip
    if storage is None:  # the local file has one worker: a trial still RUNNING was interrupted
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            log.warning("trial %d was interrupted: marked failed, its setting will be tried again", t.number)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = study.get_trials(deepcopy=False, states=finished)
    if strategy == "grid":
        grid = [dict(zip([p.key for p in params], combo, strict=True))
                for combo in itertools.product(*[p.choices or [] for p in params])]  # fmt: skip
        waiting_state = (optuna.trial.TrialState.WAITING,)
        seen = [t.params for t in study.get_trials(deepcopy=False, states=finished)]
        seen += [t.system_attrs.get("fixed_params", {}) for t in study.get_trials(deepcopy=False, states=waiting_state)]
        missing = [g for g in grid if g not in seen]
        for g in missing:
            study.enqueue_trial(g)
        waiting = len(study.get_trials(deepcopy=False, states=waiting_state))
        n_trials = len(done) + waiting
        remaining = waiting
    else:
        remaining = max(0, n_trials - len(done))
    if done:
        log.info("study %s: %d finished trials kept, %d to run", name, len(done), remaining)

    def run_trial(trial: Any) -> float:
        started_trial = time.perf_counter()
        overrides = []
        for p in params:
            if p.choices is not None:
                overrides.append(f"{p.key}={trial.suggest_categorical(p.key, p.choices)}")
            elif p.kind == "int":
                overrides.append(_override(p.key, trial.suggest_int(p.key, int(p.low), int(p.high))))
            else:
                overrides.append(_override(p.key, trial.suggest_float(p.key, p.low, p.high, log=p.kind == "log")))
        # the checkpoint and early stopping follow the study's objective unless the base config says otherwise
        position = len(study.get_trials(deepcopy=False, states=finished)) + 1
        log.info("trial %d/%d (number %d): %s", position, n_trials, trial.number, " ".join(overrides))
        monitor = f"train.monitor={objective}"
        cfg = load_config(config, [monitor, *base, *overrides, f"runs_dir={study_dir}",
                                   f"name=trial-{trial.number:03d}", "train.progress=false"])  # fmt: skip

        def report_epoch(row: dict[str, float]) -> None:
            value = row["val_loss"] if objective == "val_loss" else row.get(f"val_{objective}")
            if value is None or not math.isfinite(value):
                return
            trial.report(float(value), int(row["epoch"]))
            if trial.should_prune():
                raise optuna.TrialPruned()

        r = train(cfg, run_dir=study_dir / f"trial-{trial.number:03d}", on_epoch=report_epoch)
        trial.set_user_attr("run_dir", Path(r["run_dir"]).name)
        trial.set_user_attr("best_val_loss", r.get("best_val_loss"))
        trial.set_user_attr("train_seconds", r.get("train_seconds"))
        test = r.get("test") or {}
        trial.set_user_attr("test_auc", test.get("auc"))
        trial.set_user_attr("test_map_at_r", test.get("map_at_r"))
        kept = kept_label(r)
        trial.set_user_attr("kept", kept)
        value = objective_value(_read_history(Path(r["run_dir"])), objective)
        log.info("trial %d/%d: %s %.4f, kept %s (%.0f s)", position, n_trials, objective, value, kept,
                 time.perf_counter() - started_trial)  # fmt: skip
        return value

    if remaining:
        stop = optuna.study.MaxTrialsCallback(n_trials, states=finished)
        study.optimize(run_trial, n_trials=remaining, callbacks=[stop], catch=())
    return summarize_search(study, study_dir, params, strategy, objective, started)


def _n_trials(store: Any, name: str) -> int:
    import optuna

    try:
        return len(optuna.load_study(study_name=name, storage=store).trials)
    except KeyError:
        return 0


def best_row(rows: list[list[Any]], column: int) -> int | None:
    """The row with the highest value in ``column`` (None when no row has one): highlighted in the report."""
    scored = [(r[column], i) for i, r in enumerate(rows) if isinstance(r[column], (int, float))]
    return max(scored)[1] if scored else None


def summarize_search(
    study: Any, study_dir: Path, params: list[Param], strategy: str, objective: str, started: float | None = None
) -> dict[str, Any]:
    import matplotlib.pyplot as plt
    import optuna
    from matplotlib.ticker import MaxNLocator

    from siamkit.evaluate.plots import save_figure

    keys = [p.key for p in params]
    columns = ["trial", "state", *keys, objective, "best val loss", "kept", "test AUC", "test MAP@R", "train s",
               "run"]  # fmt: skip
    rows, xs, ys = [], [], []
    for t in study.trials:
        a = t.user_attrs
        rows.append([t.number, t.state.name, *(t.params.get(k) for k in keys), t.value, a.get("best_val_loss"),
                     a.get("kept"), a.get("test_auc"), a.get("test_map_at_r"), a.get("train_seconds"),
                     a.get("run_dir", f"trial-{t.number:03d}")])  # fmt: skip
        if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None:
            xs.append(t.number)
            ys.append(t.value)
    best: dict[str, Any] = {}
    if xs:
        bt = study.best_trial
        best = {"trial": bt.number, objective: bt.value, **bt.params,
                "best val loss": bt.user_attrs.get("best_val_loss"),
                "run": bt.user_attrs.get("run_dir")}  # fmt: skip
        fig, ax = plt.subplots(figsize=(6.5, 4))
        ax.plot(xs, ys, "o", label=objective)
        running = np.minimum.accumulate(ys) if study.direction.name == "MINIMIZE" else np.maximum.accumulate(ys)
        ax.step(xs, running, where="post", color="C3", label="best so far")
        ax.set_xlabel("trial")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trials are numbered, never 2.5
        ax.set_ylabel(objective)
        ax.set_title(f"Optimisation history ({strategy})")
        ax.grid(alpha=0.3)
        ax.legend()
        save_figure(fig, study_dir / "history.png")
    summary = {
        "kind": "search", "strategy": strategy, "objective": objective, "command": _command(),
        "description": f"{strategy} search over {', '.join(keys)}; objective {objective} on the validation split "
                       f"({OBJECTIVES[objective]}).",
        "best": best, "tables": [{"title": "Trials", "file": "trials.csv", "columns": columns, "rows": rows,
                                  "best_row": [r[0] for r in rows].index(best["trial"]) if best else None}],
        "figures": [["Optimisation history", "history.png"]] if xs else [],
        "runs": [r[-1] for r in rows],
    }  # fmt: skip
    _write_study(study_dir, summary, started)
    return {"study_dir": str(study_dir), **summary}


# ------------------------------------------------------------------------------------------- margins, compare


def _run_setting(
    study_dir: Path, run_name: str, config: str | None, overrides: list[str],
    train: Callable[..., dict[str, Any]] | None,
) -> dict[str, Any]:  # fmt: skip
    """Train one setting into ``study_dir/run_name`` unless a finished run with the same config is there."""
    from siamkit.training.pipeline import train_run

    run_dir = study_dir / run_name
    cfg = load_config(config, [*overrides, f"runs_dir={study_dir}", f"name={run_name}", "train.progress=false"])
    done = run_dir / "metrics.json"
    stamp = run_dir / "study-overrides.json"
    if done.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == overrides:
        log.info("%s: finished earlier, reused", run_dir)
        return {"run_dir": str(run_dir), **json.loads(done.read_text())}
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)  # an interrupted or different earlier run
    r = (train or train_run)(cfg, run_dir=run_dir)
    atomic_write_text(stamp, json.dumps(overrides))
    return r


def kept_label(r: dict[str, Any]) -> str:
    """The model a run kept, in words: ``epoch N``, or ``untrained`` / ``pretrained`` when no epoch beat the
    initial weights (or none was run)."""
    epoch = r.get("best_epoch")
    if epoch:
        return f"epoch {epoch}"
    return "pretrained" if r.get("initial_model") == "pretrained" else "untrained"


def tie_note(rows: list[list[Any]], kept: int, first: int = 0) -> str:
    """A sentence naming the rows (by their ``first`` column) that kept the initial weights, when two or more
    did: their figures tie because no training is in them."""
    same = [str(r[first]) for r in rows if r[kept] in ("untrained", "pretrained")]
    if len(same) < 2:
        return ""
    return (
        f"{', '.join(same)} kept the initial weights (no epoch beat them on validation): their figures tie "
        "because none of their training is in them."
    )


def _tpr(m: dict[str, Any]) -> list[float | None]:
    table = {str(t["fpr"]): t["tpr_interpolated"] for t in m.get("tpr_at_fpr", [])}
    return [table.get(f) for f in FPRS]


def margins(
    name: str, losses: list[str], margin_values: list[float], base: list[str], config: str | None = None,
    runs_dir: str = "runs", train: Callable[..., dict[str, Any]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Margin sensitivity (SPEC §6, source C): TPR at each FPR on train and validation, and similarity
    accuracy, per loss and margin."""
    started = time.perf_counter()
    study_dir = Path(runs_dir) / name
    study_dir.mkdir(parents=True, exist_ok=True)
    columns = ["loss", "margin", *(f"train TPR@{f}" for f in FPRS), *(f"val TPR@{f}" for f in FPRS),
               "train SimAcc", "val SimAcc", "val AUC", "test AUC", "run"]  # fmt: skip
    rows, runs = [], []
    for loss in losses:
        for m in margin_values:
            run_name = f"{loss}-m{m:g}"
            overrides = [f"loss.name={loss}", *base, f"loss.params.margin={m}"]
            r = _run_setting(study_dir, run_name, config, overrides, train)
            tr, va = r["train"], r["validation"]
            rows.append([loss, m, *_tpr(tr), *_tpr(va), tr.get("similarity_accuracy"), va.get("similarity_accuracy"),
                         va.get("auc"), r["test"].get("auc"), run_name])  # fmt: skip
            runs.append(run_name)
    summary = {
        "kind": "margins", "command": _command(), "runs": runs, "figures": [],
        "description": "Margin sensitivity: TPR at FPR 0.5/0.1/0.01/0.001 on the training and "
                       "validation splits (interpolated), and similarity accuracy d(a,p) < d(a,n), per loss and "
                       "margin.",
        "tables": [{"title": "TPR at FPR by loss and margin", "file": "margins.csv", "columns": columns, "rows": rows,
                    "best_row": best_row(rows, columns.index("val AUC"))}],
    }  # fmt: skip
    _write_study(study_dir, summary, started)
    return {"study_dir": str(study_dir), **summary}


def compare(
    name: str, losses: list[str], base: list[str], config: str | None = None, runs_dir: str = "runs",
    train: Callable[..., dict[str, Any]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Loss comparison (SPEC §7): one run per loss on the same data, backbone and budget; the table of test
    TPR@FPR, AUC, EER, P@1 and MAP@R, the per-split metrics of each run, and an overlaid test ROC."""
    from siamkit.evaluate.plots import plot_roc_overlay
    from siamkit.training.pipeline import SCORES

    started = time.perf_counter()
    study_dir = Path(runs_dir) / name
    study_dir.mkdir(parents=True, exist_ok=True)
    columns = ["loss", *(f"TPR@{f}" for f in FPRS), "AUC", "EER", "P@1", "MAP@R", "kept", "train s", "run"]
    rows, runs, curves, per_split = [], [], {}, []
    for loss in losses:
        r = _run_setting(study_dir, loss, config, [f"loss.name={loss}", *base], train)
        t = r["test"]
        rows.append([loss, *_tpr(t), t.get("auc"), t.get("eer"), t.get("precision_at_1"), t.get("map_at_r"),
                     kept_label(r), r.get("train_seconds"), loss])  # fmt: skip
        per_split += [[f"{loss}: {row[0]}", *row[1:]] for row in metrics_rows(r, baselines=False)]
        if loss == losses[0]:  # the same test pairs for every loss: the baselines once
            per_split += [[f"baseline: {row[0]}", *row[1:]] for row in metrics_rows(r)[3:]]
        runs.append(loss)
        scores = Path(r["run_dir"]) / SCORES
        if scores.is_file():
            with np.load(scores) as z:
                curves[loss] = (z["test_labels"], z["test_distances"])
    figures = []
    if curves:
        plot_roc_overlay(curves, study_dir / "roc_compare.png", "Test ROC by loss")
        figures.append(["Test ROC by loss", "roc_compare.png"])
    note = tie_note(rows, columns.index("kept"))
    summary = {
        "kind": "compare", "command": _command(), "runs": runs, "figures": figures, "note": note,
        "description": "Loss comparison on one dataset, backbone and budget: test-split TPR at FPR "
                       "(interpolated), AUC, EER, leave-one-out P@1 and MAP@R, and the model each run kept."
                       + (f" {note}" if note else ""),
        "tables": [
            {"title": "Test metrics by loss", "file": "compare.csv", "columns": columns, "rows": rows,
             "best_row": best_row(rows, columns.index("MAP@R"))},
            {"title": "Every split of every run", "file": "compare_splits.csv", "columns": METRIC_COLUMNS,
             "rows": per_split},
        ],
    }  # fmt: skip
    _write_study(study_dir, summary, started)
    return {"study_dir": str(study_dir), **summary}
