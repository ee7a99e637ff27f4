"""User-facing errors: one line that says what went wrong, where, and how to fix it."""

from __future__ import annotations


class SiamkitError(Exception):
    """Base class for errors whose message is shown to the user as one line, without a traceback."""


class ConfigError(SiamkitError):
    """A configuration key or value is unknown or of the wrong type."""


class DataError(SiamkitError):
    """Input data is missing, malformed or unusable (names the file and the fix)."""


class CheckpointError(SiamkitError):
    """A run directory or weights file is missing or inconsistent."""


class TrainingError(SiamkitError):
    """Training cannot go on (the loss diverged)."""
