"""Hyper-parameter search on Optuna's public API: random, grid and TPE over ``--param`` keys, one run per trial,
resumable from its storage (``study.db`` in the folder, or a shared database URL)."""

from __future__ import annotations

import itertools
import logging
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from siamkit.checks import check_names
from siamkit.config import load_config
from siamkit.errors import ConfigError
from siamkit.studies.folder import write_study
from siamkit.studies.params import OBJECTIVES, Param, objective_value, override, read_history, resolve_objective
from siamkit.studies.settings import kept_label

log = logging.getLogger(__name__)
STRATEGIES = ("random", "grid", "tpe")


def open_storage(url: str | None, study_dir: Path) -> Any:
    import optuna

    url = url or f"sqlite:///{(study_dir / 'study.db').resolve()}"
    with warnings.catch_warnings():  # heartbeats are an "experimental" Optuna feature: no warning for using them
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180)


def search(
    name: str, params: list[Param], base: list[str], config: str | None = None, strategy: str = "random",
    n_trials: int = 10, objective: str = "auto", storage: str | None = None, seed: int = 0,
    pruner: str = "none", runs_dir: str = "runs",
    train: Callable[..., dict[str, Any]] | None = None, command: str = "",
) -> dict[str, Any]:  # fmt: skip
    """Run (or resume) a search study; returns its summary (best trial, table, files). ``objective``: ``auto``
    (the runs' own checkpoint monitor: validation MAP@R where the data has class labels), ``val_loss``,
    ``map_at_r`` or ``precision_at_1``. ``command``: the command line that made it, recorded in the folder."""
    import optuna

    from siamkit.training.pipeline import train_run

    started = time.perf_counter()
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown --strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    if not params:
        raise ConfigError("give at least one --param KEY=v1,v2,... to search over")
    if strategy in ("random", "grid") and any(p.choices is None for p in params):
        raise ConfigError(f"--strategy {strategy} draws from lists: give every --param as KEY=v1,v2,... (ranges: tpe)")
    check_names(load_config(config, base))  # a bad base config fails now, not in every trial
    objective = resolve_objective(objective, config, base)
    train = train or train_run
    study_dir = Path(runs_dir) / name
    study_dir.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = open_storage(storage, study_dir)
    n_existing = count_trials(store, name)
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
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
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
                overrides.append(override(p.key, trial.suggest_int(p.key, int(p.low), int(p.high))))
            else:
                overrides.append(override(p.key, trial.suggest_float(p.key, p.low, p.high, log=p.kind == "log")))
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
        value = objective_value(read_history(Path(r["run_dir"])), objective)
        log.info("trial %d/%d: %s %.4f, kept %s (%.0f s)", position, n_trials, objective, value, kept,
                 time.perf_counter() - started_trial)  # fmt: skip
        return value

    if remaining:
        stop = optuna.study.MaxTrialsCallback(n_trials, states=finished)
        study.optimize(run_trial, n_trials=remaining, callbacks=[stop], catch=())
    return summarize_search(study, study_dir, params, strategy, objective, started, command)


def count_trials(store: Any, name: str) -> int:
    import optuna

    try:
        return len(optuna.load_study(study_name=name, storage=store).trials)
    except KeyError:
        return 0


def summarize_search(
    study: Any, study_dir: Path, params: list[Param], strategy: str, objective: str, started: float | None = None,
    command: str = "",
) -> dict[str, Any]:  # fmt: skip
    """The search's table of trials, its best trial and optimisation-history figure, written to its folder."""
    import optuna

    from siamkit.studies.figures import plot_search_history

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
        minimize = study.direction.name == "MINIMIZE"
        plot_search_history(xs, ys, minimize, objective, f"Optimisation history ({strategy})",
                            study_dir / "history.png")  # fmt: skip
    summary = {
        "kind": "search", "strategy": strategy, "objective": objective, "command": command,
        "description": f"{strategy} search over {', '.join(keys)}; objective {objective} on the validation split "
                       f"({OBJECTIVES[objective]}).",
        "best": best, "tables": [{"title": "Trials", "file": "trials.csv", "columns": columns, "rows": rows,
                                  "best_row": [r[0] for r in rows].index(best["trial"]) if best else None}],
        "figures": [["Optimisation history", "history.png"]] if xs else [],
        "runs": [r[-1] for r in rows],
    }  # fmt: skip
    write_study(study_dir, summary, started)
    return {"study_dir": str(study_dir), **summary}
