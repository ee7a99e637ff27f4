"""Writing weights in safetensors (with string metadata; read back by ``siamkit.runs.artifact``) and the resumable
training state.

Nothing here unpickles arbitrary objects: weights are safetensors, and the resume state is read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as st_save
from torch import nn

from siamkit.errors import CheckpointError
from siamkit.files import atomic_write_bytes


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    """Atomically write the model's state dict as safetensors with ``metadata``."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, st_save(state, metadata=metadata))


def save_state(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_state(path: Path) -> dict[str, Any]:
    """The resume state in ``path``; a file that is not one (another program's pickle, a damaged file) is one
    :class:`CheckpointError` line — torch's own warnings about such a file (its pickle protocol) are not shown."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling failure means an unusable file
        raise CheckpointError(
            f"{path}: cannot read the training state ({type(exc).__name__}); delete it to restart"
        ) from None
