"""siamkit's progress lines for Python callers: the CLI configures :mod:`logging` itself; ``siamkit.train()``
logs the same lines to stderr for the length of the call, unless the program has configured logging (its handlers
then get them) or asked for silence."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def stderr_logging(enabled: bool = True) -> Iterator[None]:
    """Send the ``siamkit`` logger's INFO and above to stderr as ``%(message)s`` lines while the block runs —
    only when ``enabled`` and nobody configured logging (no handler on the root or ``siamkit`` logger)."""
    logger = logging.getLogger("siamkit")
    if not enabled or logging.getLogger().handlers or logger.handlers:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
