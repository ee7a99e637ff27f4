"""A trained run as an object (``load`` → :class:`Model`), and what it is read from (``artifact``), embedded with
(``embedders``: PyTorch or ONNX Runtime) and exported to (``export``). Imports nothing of training, evaluation,
studies or plotting."""

from siamkit.runs.model import Model, Verification, load, verify_pairs

__all__ = ["Model", "Verification", "load", "verify_pairs"]
