"""Small helpers for the text a person reads (log lines, tables, the report)."""

from __future__ import annotations

from collections.abc import Sequence


def name_list(names: Sequence[str], at_most: int) -> str:
    """``names`` joined by commas, the first ``at_most`` of them and then how many more: a split of 10,000
    identities is one readable line, not a page."""
    shown = ", ".join(names[:at_most])
    return shown + (f", … {len(names) - at_most} more" if len(names) > at_most else "")
