"""Hyper-parameter search on Optuna's public API: random, grid and TPE over ``--param`` keys, one run per trial,
resumable from its storage (``study.db`` in the folder, or a shared database URL)."""

from __future__ import annotations

import itertools
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from siamkit.checks import check_names
from siamkit.config import load_config
from siamkit.errors import ConfigError
from siamkit.studies.folder import write_study
from siamkit.studies.params import (
    OBJECTIVES,
    PRUNERS,
    STRATEGIES,
    Param,
    objective_value,
    override,
    read_history,
    resolve_objective,
)
from siamkit.studies.settings import kept_label

log = logging.getLogger(__name__)


def open_storage(url: str | None, study_dir: Path) -> Any:
    import optuna

    url = url or f"sqlite:///{(study_dir / 'study.db').resolve()}"
    with warnings.catch_warnings():  # heartbeats are an "experimental" Optuna feature: no warning for using them
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180)


def search(
    name: str, params: list[Param], base: list[str], config: str | None = None, *, strategy: str = "random",
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
    check_search(params, strategy)
    check_names(load_config(config, base))  # a bad base config fails now, not in every trial
    objective = resolve_objective(objective, config, base)
    study_dir = Path(runs_dir) / name
    study_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(name, study_dir, storage=storage, strategy=strategy, seed=seed, pruner=pruner,
                       direction=OBJECTIVES[objective])  # fmt: skip
    n_trials, remaining = plan_trials(study, params, strategy, n_trials)
    if remaining:
        runner = TrialRunner(study=study, params=params, objective=objective, config=config, base=base,
                             study_dir=study_dir, train=train or train_run, n_trials=n_trials)  # fmt: skip
        stop = optuna.study.MaxTrialsCallback(n_trials, states=finished_states())
        study.optimize(runner, n_trials=remaining, callbacks=[stop], catch=())
    return summarize_search(study, study_dir, params, strategy=strategy, objective=objective, started=started,
                            command=command)  # fmt: skip


def check_search(params: list[Param], strategy: str) -> None:
    """Refuse an unknown strategy, no ``params``, or ranges for a strategy that draws from lists."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown --strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    if not params:
        raise ConfigError("give at least one --param KEY=v1,v2,... to search over")
    if strategy in ("random", "grid") and any(p.choices is None for p in params):
        raise ConfigError(f"--strategy {strategy} draws from lists: give every --param as KEY=v1,v2,... (ranges: tpe)")


def finished_states() -> tuple[Any, ...]:
    """The trial states a study counts as finished (its ``n_trials``): complete and pruned."""
    import optuna

    return (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def open_study(
    name: str, study_dir: Path, *, storage: str | None, strategy: str, seed: int, pruner: str, direction: str
) -> Any:  # fmt: skip
    """The Optuna study ``name`` in ``storage`` (default: ``study_dir/study.db``), created or loaded; with the
    local file (one worker), a trial still running was interrupted: it is marked failed."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = open_storage(storage, study_dir)
    n_existing = count_trials(store, name)
    samplers = {"random": optuna.samplers.RandomSampler, "grid": optuna.samplers.RandomSampler,
                "tpe": optuna.samplers.TPESampler}  # fmt: skip
    sampler = samplers[strategy](seed=seed + n_existing)  # a resumed study does not replay the same draws
    prune = optuna.pruners.MedianPruner(n_warmup_steps=1) if pruner == "median" else optuna.pruners.NopPruner()
    if pruner not in PRUNERS:
        raise ConfigError(f"unknown --pruner {pruner!r}; choose none or median")
    study = optuna.create_study(study_name=name, storage=store, sampler=sampler, pruner=prune,
                                direction=direction,  # type: ignore[arg-type]
                                load_if_exists=True)  # fmt: skip
    if storage is None:  # the local file has one worker: a trial still RUNNING was interrupted
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            with warnings.catch_warnings():  # Optuna's note that heartbeats go with optimize(): this is its cleanup
                warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
                study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            log.warning("trial %d was interrupted: marked failed, its setting will be tried again", t.number)
    return study


def plan_trials(study: Any, params: list[Param], strategy: str, n_trials: int) -> tuple[int, int]:
    """(finished trials the study should hold, trials left to run). A grid enqueues every combination not yet
    finished or waiting, and holds as many trials as it has combinations."""
    import optuna

    finished = finished_states()
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
        log.info("study %s: %d finished trials kept, %d to run", study.study_name, len(done), remaining)
    return n_trials, remaining


@dataclass(kw_only=True)
class TrialRunner:
    """The objective Optuna calls once per trial: the trial's overrides drawn from ``params``, one run trained into
    ``study_dir/trial-NNN`` (reporting each epoch's objective, so a pruner can stop it), its objective read back."""

    study: Any
    params: list[Param]
    objective: str
    config: str | None
    base: list[str]
    study_dir: Path
    train: Callable[..., dict[str, Any]]
    n_trials: int

    def overrides(self, trial: Any) -> list[str]:
        out = []
        for p in self.params:
            if p.choices is not None:
                out.append(f"{p.key}={trial.suggest_categorical(p.key, p.choices)}")
            elif p.kind == "int":
                out.append(override(p.key, trial.suggest_int(p.key, int(p.low), int(p.high))))
            else:
                out.append(override(p.key, trial.suggest_float(p.key, p.low, p.high, log=p.kind == "log")))
        return out

    def report_epochs(self, trial: Any) -> Callable[[dict[str, float]], None]:
        """The ``on_epoch`` callback: the epoch's objective reported to the trial; pruned when the pruner says."""
        import optuna

        def report_epoch(row: dict[str, float]) -> None:
            value = row["val_loss"] if self.objective == "val_loss" else row.get(f"val_{self.objective}")
            if value is None or not math.isfinite(value):
                return
            trial.report(float(value), int(row["epoch"]))
            if trial.should_prune():
                raise optuna.TrialPruned()

        return report_epoch

    def __call__(self, trial: Any) -> float:
        started_trial = time.perf_counter()
        overrides = self.overrides(trial)
        position = len(self.study.get_trials(deepcopy=False, states=finished_states())) + 1
        log.info("trial %d/%d (number %d): %s", position, self.n_trials, trial.number, " ".join(overrides))
        # the checkpoint and early stopping follow the study's objective unless the base config says otherwise
        monitor = f"train.monitor={self.objective}"
        cfg = load_config(self.config, [monitor, *self.base, *overrides, f"runs_dir={self.study_dir}",
                                        f"name=trial-{trial.number:03d}", "train.progress=false"])  # fmt: skip
        r = self.train(cfg, run_dir=self.study_dir / f"trial-{trial.number:03d}", on_epoch=self.report_epochs(trial))
        trial.set_user_attr("run_dir", Path(r["run_dir"]).name)
        trial.set_user_attr("best_val_loss", r.get("best_val_loss"))
        trial.set_user_attr("train_seconds", r.get("train_seconds"))
        test = r.get("test") or {}
        trial.set_user_attr("test_auc", test.get("auc"))
        trial.set_user_attr("test_map_at_r", test.get("map_at_r"))
        kept = kept_label(r)
        trial.set_user_attr("kept", kept)
        value = objective_value(read_history(Path(r["run_dir"])), self.objective)
        log.info("trial %d/%d: %s %.4f, kept %s (%.0f s)", position, self.n_trials, self.objective, value, kept,
                 time.perf_counter() - started_trial)  # fmt: skip
        return value


def count_trials(store: Any, name: str) -> int:
    import optuna

    try:
        return len(optuna.load_study(study_name=name, storage=store).trials)
    except KeyError:
        return 0


def summarize_search(
    study: Any, study_dir: Path, params: list[Param], *, strategy: str, objective: str, started: float | None = None,
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
        plot_search_history(xs, ys, study_dir / "history.png", minimize=minimize, objective=objective,
                            title=f"Optimisation history ({strategy})")  # fmt: skip
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
