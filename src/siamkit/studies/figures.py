"""A search study's figure: the objective of each finished trial and the best so far."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from siamkit.evaluate.plots import save_figure


def plot_search_history(
    trials: Sequence[int], values: Sequence[float], path: Path, *, minimize: bool, objective: str, title: str
) -> Path:  # fmt: skip
    """Each finished trial's ``objective`` and the best so far (stepped), on integer trial numbers."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(trials, values, "o", label=objective)
    running = np.minimum.accumulate(values) if minimize else np.maximum.accumulate(values)
    ax.step(trials, running, where="post", color="C3", label="best so far")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trials are numbered, never 2.5
    ax.set_ylabel(objective)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)
    return path
