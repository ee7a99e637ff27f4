"""Model summary: each layer's output shape and parameter count, and the totals (trainable and frozen).

For convolutions and poolings the row also shows the output-size arithmetic of the course notes,
``out = ⌊(in + 2p − d·(k − 1) − 1) / s⌋ + 1`` with the layer's own kernel k, stride s, padding p, dilation d.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from siamkit.errors import ConfigError
from siamkit.models.blocks import BaseCNN, is_block_string

DEFAULT_INPUTS = {"seed_cnn": (1, 28, 28), "convnet": (1, 28, 28), "basecnn": (3, 32, 32)}


@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: list[int]
    params: int
    trainable: int
    arithmetic: str = ""


@dataclass
class Summary:
    model: str
    input_shape: list[int]
    layers: list[LayerRow]
    total_params: int
    trainable_params: int
    frozen_params: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        head = ["layer", "type", "output shape", "params", "output size"]
        rows = [
            [r.name, r.kind, "×".join(map(str, r.output_shape)), f"{r.params:,}", r.arithmetic] for r in self.layers
        ]
        widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]
        fmt = [str.ljust, str.ljust, str.rjust, str.rjust, str.ljust]
        lines = ["  ".join(f(c, w) for f, c, w in zip(fmt, r, widths, strict=True)).rstrip() for r in [head, *rows]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines += [
            f"model: {self.model}   input: {'×'.join(map(str, self.input_shape))}",
            f"total parameters: {self.total_params:,}   trainable: {self.trainable_params:,}   "
            f"frozen: {self.frozen_params:,}",
        ]
        return "\n".join(lines)


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def size_arithmetic(layer: nn.Module, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> str:
    """``(in + 2p − d(k−1) − 1)/s + 1 = out`` along the height, for conv and pooling layers."""
    if not isinstance(layer, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        return ""
    k, s = _pair(layer.kernel_size)[0], _pair(layer.stride or layer.kernel_size)[0]
    p = _pair(layer.padding)[0] if not isinstance(layer.padding, str) else 0
    d = _pair(getattr(layer, "dilation", 1))[0]
    if d > 1:
        return f"⌊({in_hw[0]} + 2·{p} − {d}·({k} − 1) − 1)/{s}⌋ + 1 = {out_hw[0]}"
    return f"⌊({in_hw[0]} + 2·{p} − {k})/{s}⌋ + 1 = {out_hw[0]}"


@torch.no_grad()
def summarize(model: nn.Module, input_shape: tuple[int, int, int], name: str = "") -> Summary:
    """Run one zero batch through ``model`` (eval mode) and record every leaf module's output."""
    rows: list[LayerRow] = []
    hooks = []
    names = {m: n for n, m in model.named_modules()}

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if not isinstance(output, torch.Tensor):
            return
        own = list(module.parameters(recurse=False))
        in_t = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        arith = ""
        if in_t is not None and in_t.ndim == 4 and output.ndim == 4:
            arith = size_arithmetic(module, (in_t.shape[-2], in_t.shape[-1]), (output.shape[-2], output.shape[-1]))
        rows.append(LayerRow(
            names.get(module, "?"), type(module).__name__, list(output.shape[1:]),
            sum(p.numel() for p in own), sum(p.numel() for p in own if p.requires_grad), arith,
        ))  # fmt: skip

    for m in model.modules():
        if next(iter(m.children()), None) is None or any(True for _ in m.parameters(recurse=False)):
            hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, *input_shape)
        embed = getattr(model, "embed", None)
        embed(x) if callable(embed) else model(x)
    except RuntimeError as exc:
        raise ConfigError(
            f"input {'×'.join(map(str, input_shape))} does not fit {name or 'the model'}: {exc}"
        ) from None
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return Summary(name, list(input_shape), rows, total, trainable, total - trainable)


def parse_input(text: str) -> tuple[int, int, int]:
    """``3x32x32`` (or ``3×32×32``) → ``(3, 32, 32)``."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        c, h, w = (int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"bad --input {text!r}: give CxHxW, e.g. 3x32x32") from None
    return c, h, w


def summarize_named(
    target: str, input_shape: tuple[int, int, int] | None = None, embedding_dim: int = 64,
    backbone_args: dict[str, Any] | None = None, num_classes: int = 10,
) -> Summary:  # fmt: skip
    """A block string (``AAAAAAAA``, ``Ddw``…) summarises the BaseCNN classifier; a backbone name the Siamese
    encoder siamkit trains with it (backbone + embedding head)."""
    from siamkit.config import ModelConfig
    from siamkit.models.siamese import build_model

    if is_block_string(target) or re.fullmatch(r"(Ddw|[A-E])+", target):
        shape = input_shape or (3, 32, 32)
        return summarize(BaseCNN(target, num_classes, in_channels=shape[0]), shape, f"BaseCNN[{target}]")
    args = dict(backbone_args or {})
    shape = input_shape or DEFAULT_INPUTS.get(target, (3, 224, 224))
    model = build_model(ModelConfig(backbone=target, backbone_args=args, embedding_dim=embedding_dim), shape[0])
    return summarize(model, shape, f"{target} + Linear({embedding_dim})")
