"""A study's searched keys and its objective: ``--param`` specs, the config overrides they make, and the
objective read from a run's history."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from siamkit.config import check_key, load_config
from siamkit.errors import ConfigError, DataError
from siamkit.rundir import RunDir

STRATEGIES = ("random", "grid", "tpe")
"""How a search picks its trials' settings: Optuna's random or TPE sampler, or every combination (grid)."""
PRUNERS = ("none", "median")
"""``median``: stop a trial whose per-epoch objective trails the others' median (Optuna's ``MedianPruner``)."""
OBJECTIVES = {"val_loss": "minimize", "map_at_r": "maximize", "precision_at_1": "maximize"}
OBJECTIVE_NAMES = ("auto", *OBJECTIVES)
"""``auto``: the objective a run's own checkpoint monitor uses — validation MAP@R, or the validation loss for
pairs/triplets CSVs (no class labels to rank by)."""


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
    check_key(key.strip().split("."))
    head, _, rest = rhs.partition(":")
    if head in ("float", "log", "int") and rest:
        try:
            low, high = (float(x) for x in rest.split(":"))
        except ValueError:
            raise ConfigError(f"--param {spec!r}: a range is {head}:LOW:HIGH with two numbers") from None
        if not low < high or (head == "log" and low <= 0):
            raise ConfigError(f"--param {spec!r}: need LOW < HIGH (and LOW > 0 for log)")
        return Param(key.strip(), None, head, low, high)
    choices = split_choices(rhs)
    if not choices:
        raise ConfigError(f"--param {spec!r}: no values")
    return Param(key.strip(), choices)


def split_choices(text: str) -> list[str]:
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


def override(key: str, value: Any) -> str:
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


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    with RunDir(run_dir).history.open() as f:
        return list(csv.DictReader(f))
