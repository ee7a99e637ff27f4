"""Plain-text and Markdown tables of rows of cells: the one renderer of the CLI's and the studies' tables
(HTML tables are the report's, ``siamkit.report.html_table``). A float prints with 4 decimals, None as –."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def cell(v: Any) -> str:
    """One cell as text: a float with 4 decimals, None as an en dash."""
    return f"{v:.4f}" if isinstance(v, float) else ("–" if v is None else str(v))


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table.

    Example:
        >>> print(markdown_table(["a", "b"], [[1, 0.5]]))
        | a | b |
        |---|---|
        | 1 | 0.5000 |
    """
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows])


def text_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Right-aligned columns under a rule, two spaces apart.

    Example:
        >>> print(text_table(["loss", "AUC"], [["triplet", 0.91], ["bce", None]]))
           loss     AUC
        -------  ------
        triplet  0.9100
            bce       –
    """
    cells = [list(columns)] + [[cell(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
