"""The false-positive rates every TPR@FPR figure is read at (SPEC §8), defined once: the metrics, the tables'
columns, the report and the studies use these (importing this pulls in nothing heavy)."""

from __future__ import annotations

DEFAULT_FPRS = (0.5, 0.1, 0.01, 0.001)
FPR_LABELS = tuple(f"{f:g}" for f in DEFAULT_FPRS)
"""The FPRs as the tables' columns and ``tpr_at_fpr`` keys write them: ``0.5`` … ``0.001``."""
