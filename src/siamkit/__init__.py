"""siamkit: Siamese networks and deep metric learning on images.

The Python API in two calls::

    import siamkit
    m = siamkit.train(data="digits", loss="contrastive", epochs=5)   # or siamkit.load("runs/default")
    m.verify(image_a, image_b)   # paths, PIL images, numpy arrays or tensors → distance, threshold, same
    m.embed(images)              # (D,) or (N, D) float32
    m.search("gallery/", image, k=5)

Importing ``siamkit`` imports nothing heavy; ``load`` and ``train`` import what they need on their first call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from siamkit.runs.model import Model

from siamkit.version import __version__

SHORTCUTS = {
    "data": "data.source", "loss": "loss.name", "backbone": "model.backbone", "epochs": "train.epochs",
    "name": "name", "runs_dir": "runs_dir", "recipe": "recipe",
}  # fmt: skip
"""Keyword shortcuts of :func:`train` (and the CLI's flags) → config keys."""


def load(run_dir: Any, backend: str = "torch", device: str = "cpu", onnx: str | None = None,
         threshold: float | None = None, *, faces: str | None = None, trust_code: bool = False) -> Model:  # fmt: skip
    """The trained run in ``run_dir`` (or a pretrained name: ``"dlib-face"``) as a :class:`siamkit.runs.Model`;
    ``faces="off"`` for face chips already aligned; ``trust_code=True`` to import code the run's files name
    (see :func:`siamkit.runs.load`)."""
    from siamkit.runs import load as load_run

    return load_run(run_dir, backend, device, onnx, threshold, faces=faces, trust_code=trust_code)


def train(
    config: Any = None, *, data: str | None = None, loss: str | None = None, log: bool = True, **overrides: Any
) -> Model:  # fmt: skip
    """Train a model and return it, evaluated, as a :class:`siamkit.runs.Model` (its metrics in ``.result``).

    ``config``: a YAML run config's path or a :class:`siamkit.config.RunConfig` (optional; the keys it sets count
    as given, as a file's would). ``data``, ``loss``, ``backbone``, ``epochs``, ``name``, ``runs_dir``, ``recipe``
    are shortcuts; any other config key is given with ``__`` for the dot (``train__lr=3e-4``) or as a dotted key
    (``**{"train.lr": 3e-4}``); values are used as they are (typed). Example::

        m = siamkit.train(data="my_faces/", recipe="open-set", epochs=10, eval__threshold="fpr:0.001")

    Progress is logged to stderr as the CLI logs it (one line per epoch and per stage), unless ``log=False`` or
    the program has configured :mod:`logging` itself (then siamkit's records go to its handlers).
    """
    from siamkit.config import load_config
    from siamkit.logs import stderr_logging
    from siamkit.training.pipeline import train_run

    values = shortcut_values({"data": data, "loss": loss, **overrides})
    with stderr_logging(log):
        result = train_run(load_config(config, values=values))
    model = load(result["run_dir"])
    model.result = result
    return model


def shortcut_values(given: dict[str, Any]) -> dict[str, Any]:
    """``{dotted config key: value}`` of keyword shortcuts (:data:`SHORTCUTS`), ``a__b`` keys and dotted keys;
    None values are left out (not given)."""
    return {SHORTCUTS.get(k, k.replace("__", ".")): v for k, v in given.items() if v is not None}


__all__ = ["SHORTCUTS", "__version__", "load", "shortcut_values", "train"]
