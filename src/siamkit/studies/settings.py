"""Margin sensitivity and loss comparison (SPEC §6–7): one run per (loss, margin) or per loss on the same data
and budget; a run already finished in the study folder with the same overrides is reused."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from siamkit.config import load_config
from siamkit.evaluate.fprs import FPR_LABELS
from siamkit.files import atomic_write_text
from siamkit.report import METRIC_COLUMNS, metrics_rows
from siamkit.rundir import RunDir
from siamkit.studies.folder import best_row, write_study

log = logging.getLogger(__name__)


def run_setting(
    study_dir: Path, run_name: str, config: str | None, overrides: list[str],
    train: Callable[..., dict[str, Any]] | None,
) -> dict[str, Any]:  # fmt: skip
    """Train one setting into ``study_dir/run_name`` unless a finished run with the same config is there."""
    from siamkit.training.pipeline import train_run

    run_dir = study_dir / run_name
    cfg = load_config(config, [*overrides, f"runs_dir={study_dir}", f"name={run_name}", "train.progress=false"])
    done = RunDir(run_dir).metrics
    stamp = RunDir(run_dir).study_overrides
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
    return [table.get(f) for f in FPR_LABELS]


def margins(
    name: str, losses: list[str], margin_values: list[float], base: list[str], config: str | None = None, *,
    runs_dir: str = "runs", train: Callable[..., dict[str, Any]] | None = None, command: str = "",
) -> dict[str, Any]:  # fmt: skip
    """Margin sensitivity (SPEC §6, source C): TPR at each FPR on train and validation, and similarity
    accuracy, per loss and margin."""
    started = time.perf_counter()
    study_dir = Path(runs_dir) / name
    study_dir.mkdir(parents=True, exist_ok=True)
    columns = ["loss", "margin", *(f"train TPR@{f}" for f in FPR_LABELS), *(f"val TPR@{f}" for f in FPR_LABELS),
               "train SimAcc", "val SimAcc", "val AUC", "test AUC", "run"]  # fmt: skip
    rows, runs = [], []
    for loss in losses:
        for m in margin_values:
            run_name = f"{loss}-m{m:g}"
            overrides = [f"loss.name={loss}", *base, f"loss.params.margin={m}"]
            r = run_setting(study_dir, run_name, config, overrides, train)
            tr, va = r["train"], r["validation"]
            rows.append([loss, m, *_tpr(tr), *_tpr(va), tr.get("similarity_accuracy"), va.get("similarity_accuracy"),
                         va.get("auc"), r["test"].get("auc"), run_name])  # fmt: skip
            runs.append(run_name)
    summary = {
        "kind": "margins", "command": command, "runs": runs, "figures": [],
        "description": "Margin sensitivity: TPR at FPR 0.5/0.1/0.01/0.001 on the training and "
                       "validation splits (interpolated), and similarity accuracy d(a,p) < d(a,n), per loss and "
                       "margin.",
        "tables": [{"title": "TPR at FPR by loss and margin", "file": "margins.csv", "columns": columns, "rows": rows,
                    "best_row": best_row(rows, columns.index("val AUC"))}],
    }  # fmt: skip
    write_study(study_dir, summary, started)
    return {"study_dir": str(study_dir), **summary}


def compare(
    name: str, losses: list[str], base: list[str], config: str | None = None, *, runs_dir: str = "runs",
    train: Callable[..., dict[str, Any]] | None = None, command: str = "",
) -> dict[str, Any]:  # fmt: skip
    """Loss comparison (SPEC §7): one run per loss on the same data, backbone and budget; the table of test
    TPR@FPR, AUC, EER, P@1 and MAP@R, the per-split metrics of each run, and an overlaid test ROC."""
    from siamkit.evaluate.plots import plot_roc_overlay

    started = time.perf_counter()
    study_dir = Path(runs_dir) / name
    study_dir.mkdir(parents=True, exist_ok=True)
    columns = ["loss", *(f"TPR@{f}" for f in FPR_LABELS), "AUC", "EER", "P@1", "MAP@R", "kept", "train s", "run"]
    rows, runs, curves, per_split = [], [], {}, []
    for loss in losses:
        r = run_setting(study_dir, loss, config, [f"loss.name={loss}", *base], train)
        t = r["test"]
        rows.append([loss, *_tpr(t), t.get("auc"), t.get("eer"), t.get("precision_at_1"), t.get("map_at_r"),
                     kept_label(r), r.get("train_seconds"), loss])  # fmt: skip
        per_split += [[f"{loss}: {row[0]}", *row[1:]] for row in metrics_rows(r, baselines=False)]
        if loss == losses[0]:  # the same test pairs for every loss: the baselines once
            per_split += [[f"baseline: {row[0]}", *row[1:]] for row in metrics_rows(r)[3:]]
        runs.append(loss)
        scores = RunDir(r["run_dir"]).scores
        if scores.is_file():
            with np.load(scores) as z:
                curves[loss] = (z["test_labels"], z["test_distances"])
    figures = []
    if curves:
        plot_roc_overlay(curves, study_dir / "roc_compare.png", "Test ROC by loss")
        figures.append(["Test ROC by loss", "roc_compare.png"])
    note = tie_note(rows, columns.index("kept"))
    summary = {
        "kind": "compare", "command": command, "runs": runs, "figures": figures, "note": note,
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
    write_study(study_dir, summary, started)
    return {"study_dir": str(study_dir), **summary}
