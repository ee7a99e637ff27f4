"""``siamkit export RUN_DIR``: the embedding network with its input normalisation as one ONNX graph
(float32 pixels in [0, 255], ``(batch, C, H, W)`` with a dynamic batch dimension → embeddings ``(batch, D)``),
checked against PyTorch on random inputs before it is written."""

from __future__ import annotations

import io
import json
import logging
import os
import warnings
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from siamkit.errors import CheckpointError, ConfigError
from siamkit.files import atomic_write_bytes, remove_temps
from siamkit.runs.embedders import ONNX_FILE, ONNX_META_KEY, TorchEmbedder

log = logging.getLogger(__name__)
PARITY_TOLERANCE = 1e-4
MIN_OPSET = 7
"""The oldest opset ONNX Runtime still runs."""


class EmbeddingGraph(nn.Module):
    """uint8-range float pixels ``(B, C, H, W)`` → ``(x / 255 − mean) / std`` → the Siamese encoder → ``(B, D)``."""

    def __init__(self, embedder: TorchEmbedder):
        super().__init__()
        self.model = embedder.run.model
        norm = embedder.run.preprocess.normalize
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", norm.mean.detach().clone().float().view(1, -1, 1, 1))
        self.register_buffer("std", norm.std.detach().clone().float().view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.embed((images / 255.0 - self.mean) / self.std)


def check_opset(opset: int | None) -> None:
    """Refuse an opset ONNX does not define (one line naming ``--opset`` and the range)."""
    import onnx

    newest = int(onnx.defs.onnx_opset_version())
    if opset is not None and not (isinstance(opset, int) and MIN_OPSET <= opset <= newest):
        raise ConfigError(f"--opset {opset}: not an opset the exporter writes; give {MIN_OPSET} to {newest}, or leave "
                          "it out for the exporter's default")  # fmt: skip


def _to_onnx(graph: nn.Module, example: torch.Tensor, opset: int | None) -> Any:
    batch = torch.export.Dim("batch", min=1)
    kwargs: dict[str, Any] = {"dynamo": True, "verbose": False, "optimize": True}
    if opset is not None:
        kwargs["opset_version"] = opset
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.disable(logging.INFO)  # the exporter's optimiser logs each pass ("Removed 38 unused nodes", …)
        try:
            program = torch.onnx.export(
                graph, (example,), input_names=["images"], output_names=["embeddings"],
                dynamic_shapes={"images": {0: batch}}, **kwargs,
            )  # fmt: skip
        except Exception as exc:  # the exporter's own error types; with a chosen opset, the opset is the cause
            if opset is None:
                raise
            raise ConfigError(f"--opset {opset}: the exporter cannot write this model at it "
                              f"({type(exc).__name__}); leave --opset out for its default") from None  # fmt: skip
        finally:
            logging.disable(logging.NOTSET)
    assert program is not None
    return program.model_proto


def parity(model_bytes: bytes, graph: nn.Module, shape: tuple[int, int, int], batches: tuple[int, ...] = (1, 3, 17),
           seed: int = 0) -> float:  # fmt: skip
    """Largest absolute difference between ONNX Runtime and PyTorch embeddings on random pixel batches of several
    sizes (so the batch dimension is shown to be dynamic)."""
    import onnxruntime as ort

    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for n in batches:
        x = torch.randint(0, 256, (n, *shape), generator=gen).float()
        with torch.no_grad():
            ref = graph(x).numpy()
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        if got.shape != ref.shape:
            raise CheckpointError(f"ONNX output shape {got.shape} differs from PyTorch's {ref.shape} for batch {n}")
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst


def export_onnx(
    run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, opset: int | None = None,
    tolerance: float = PARITY_TOLERANCE, trust_code: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Write ``out`` (default ``RUN_DIR/model.onnx``) atomically, only if its outputs match PyTorch's within
    ``tolerance`` (max absolute difference over random batches of 1, 3 and 17 images); returns what was
    measured. Raises ``CheckpointError`` on a parity failure (nothing is written). The metadata records the
    weights' hash and the threshold, so a later ``--backend onnx`` refuses this file once the weights change.
    ``trust_code``: import code the run's files name (see :func:`siamkit.runs.artifact.load_run`)."""
    try:
        import onnx
    except ImportError:
        raise ConfigError("ONNX export needs onnx, onnxscript and onnxruntime: pip install 'siamkit[serve]'") from None
    check_opset(opset)
    embedder = TorchEmbedder(run_dir, trust_code=trust_code)
    graph = EmbeddingGraph(embedder).eval()
    example = torch.zeros(2, *embedder.input_shape)
    log.info("tracing the network to ONNX…")
    proto = _to_onnx(graph, example, opset)
    from siamkit.data.faces import resolve_mode

    faces = resolve_mode(embedder.run.cfg.data.faces, embedder.run.cfg.model.backbone)  # how images are read
    meta = {**embedder.describe(), "normalize": embedder.normalize, "backend": "onnx", "faces": faces}
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_META_KEY, json.dumps(meta)
    payload = proto.SerializeToString()
    onnx.checker.check_model(onnx.load_from_string(payload))
    log.info("checking ONNX Runtime against PyTorch on batches of 1, 3 and 17 images…")
    diff = parity(payload, graph, embedder.input_shape)
    if not diff <= tolerance:
        raise CheckpointError(
            f"ONNX export of {run_dir} differs from PyTorch by {diff:.3g} (> {tolerance:g}); nothing written — "
            "report this with the model's backbone name"
        )
    path = Path(out) if out is not None else Path(run_dir) / ONNX_FILE
    remove_temps(path)  # what a cut export left
    atomic_write_bytes(path, payload)
    opset_used = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return {
        "onnx": str(path), "bytes": len(payload), "max_abs_diff": diff, "tolerance": tolerance, "opset": opset_used,
        "input": ["batch", *embedder.input_shape], "model_hash": embedder.model_hash,
    }  # fmt: skip
