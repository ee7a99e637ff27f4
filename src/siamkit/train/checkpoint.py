"""Weights in safetensors (with string metadata) and resumable training state.

Nothing here unpickles arbitrary objects: weights are safetensors, and the resume state is read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from siamkit.config import atomic_write_bytes
from siamkit.errors import CheckpointError


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    """Atomically write the model's state dict as safetensors with ``metadata``."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, st_save(state, metadata=metadata))


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file: (state dict, metadata)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found; train a model first (siamkit train)")
    raw = path.read_bytes()
    try:
        state = st_load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        import json

        meta = json.loads(raw[8 : 8 + header_len]).get("__metadata__", {}) or {}
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not a valid safetensors file ({exc})") from None
    return state, meta


def save_state(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling failure means an unusable file
        raise CheckpointError(
            f"{path}: cannot read the training state ({type(exc).__name__}); delete it to restart"
        ) from None
