"""Every docstring example in ``src/siamkit`` runs, and gives what it shows."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MODULES = sorted(
    ".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
    for p in (SRC / "siamkit").rglob("*.py")
    if ">>>" in p.read_text()
)


def test_there_are_examples_to_run():
    assert len(MODULES) >= 3 and "siamkit.tables" in MODULES
    ran = sum(doctest.testmod(importlib.import_module(m)).attempted for m in ("siamkit.tables", "siamkit.registry"))
    assert ran >= 3  # examples that run, not only ones marked +SKIP


@pytest.mark.parametrize("name", MODULES)
def test_the_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"
