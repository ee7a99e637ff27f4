"""A study's folder: ``study.json``, its tables as CSV and Markdown (``tables.md``), and its ``report.html``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from siamkit.files import atomic_write_csv, atomic_write_text
from siamkit.report import STUDY_FILE, write_report
from siamkit.tables import markdown_table


def write_study(study_dir: Path, study: dict[str, Any], started: float | None = None) -> None:
    """Write the study folder's files from its summary ``study`` (``started``: its invocation's start, for the wall
    time)."""
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


def best_row(rows: list[list[Any]], column: int) -> int | None:
    """The row with the highest value in ``column`` (None when no row has one): highlighted in the report."""
    scored = [(r[column], i) for i, r in enumerate(rows) if isinstance(r[column], (int, float))]
    return max(scored)[1] if scored else None
