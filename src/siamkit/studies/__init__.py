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

The package: ``params`` (searched keys, objectives), ``tuning`` (the Optuna search), ``settings`` (margins,
compare), ``folder`` (a study's files), ``figures``. Importing the package imports none of them (nor torch or
Optuna): each name below is loaded on first use, so the command line reads ``STRATEGIES``, ``PRUNERS`` and
``OBJECTIVE_NAMES`` for its ``--help`` without them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from siamkit.studies.folder import best_row, write_study
    from siamkit.studies.params import (
        OBJECTIVE_NAMES,
        OBJECTIVES,
        PRUNERS,
        STRATEGIES,
        Param,
        objective_value,
        parse_param,
        resolve_objective,
    )
    from siamkit.studies.settings import compare, kept_label, margins, tie_note
    from siamkit.studies.tuning import search, summarize_search
    from siamkit.tables import markdown_table, text_table

__all__ = [
    "OBJECTIVES", "OBJECTIVE_NAMES", "PRUNERS", "STRATEGIES", "Param", "best_row", "compare", "kept_label", "margins",
    "markdown_table", "objective_value", "parse_param", "resolve_objective", "search", "summarize_search",
    "text_table", "tie_note", "write_study",
]  # fmt: skip
HOMES = {
    "siamkit.studies.folder": ("best_row", "write_study"),
    "siamkit.studies.params": ("OBJECTIVES", "OBJECTIVE_NAMES", "PRUNERS", "STRATEGIES", "Param", "objective_value",
                               "parse_param", "resolve_objective"),
    "siamkit.studies.settings": ("compare", "kept_label", "margins", "tie_note"),
    "siamkit.studies.tuning": ("search", "summarize_search"),
    "siamkit.tables": ("markdown_table", "text_table"),
}  # fmt: skip
"""The module each public name lives in (loaded on first use, PEP 562)."""
_HOME = {name: module for module, names in HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
