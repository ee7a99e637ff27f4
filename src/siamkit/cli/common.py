"""What every command shares: the output flags (``--format table|json``, ``-q``, ``--debug``), the model flags
(``--backend``, ``--onnx``, ``--device``, ``--threshold``, ``--trust-code``), one way to add a command with an
example, and one way to print a result."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

Handler = Callable[[argparse.Namespace], None]
Subparsers = Any  # argparse's private _SubParsersAction


def command(sub: Subparsers, name: str, handler: Handler | None, help: str, examples: list[str],
            *, description: str | None = None) -> argparse.ArgumentParser:  # fmt: skip
    """A sub-command ``name`` running ``handler(args)``, with ``examples`` shown under its ``--help``."""
    epilog = "example" + ("s" if len(examples) > 1 else "") + ":\n" + "\n".join(f"  {e}" for e in examples)
    p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=description or help, epilog=epilog,
                                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    if handler is not None:
        p.set_defaults(func=handler)
    return p


def output_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and the result")


def overrides_flag(p: argparse.ArgumentParser, example: str = "train.lr=3e-4") -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override a config key, e.g. --set {example} (repeatable)")  # fmt: skip


def shortcut_overrides(args: argparse.Namespace, shortcuts: dict[str, str]) -> list[str]:
    """``--set`` overrides then one ``key=value`` per shortcut flag given (``--epochs 5`` → ``train.epochs=5``),
    parsed as ``--set`` values are."""
    out = list(getattr(args, "overrides", None) or [])
    out += [f"{key}={getattr(args, flag)}" for flag, key in shortcuts.items() if getattr(args, flag, None) is not None]
    return out


def model_flags(p: argparse.ArgumentParser, threshold: bool = False) -> None:
    """How to run the model: ``--backend torch|onnx``, ``--onnx FILE``, ``--device``; ``--threshold``."""
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                   help="PyTorch (default) or ONNX Runtime (RUN_DIR/model.onnx, or --onnx FILE)")  # fmt: skip
    p.add_argument("--onnx", dest="onnx_path", help="the ONNX file for --backend onnx")
    p.add_argument("--device", default="cpu", help="torch backend: cpu (default), cuda, cuda:1, mps or auto")
    trust_flag(p)
    if threshold:
        p.add_argument("--threshold", type=float, metavar="DISTANCE",
                       help="decide same/different at this distance for this call (default: the run's)")  # fmt: skip


def trust_flag(p: argparse.ArgumentParser) -> None:
    """``--trust-code``: import code a run's files name (``model.backbone: package.module:Object``)."""
    p.add_argument("--trust-code", action="store_true",
                   help="import code named in the run's files (package.module:Object plugins); only for runs you "
                        "trust: importing runs their code")  # fmt: skip


def model_source(args: argparse.Namespace) -> Any:
    """The :class:`~siamkit.runs.embedders.ModelSource` of the model flags."""
    from siamkit.runs.embedders import ModelSource

    return ModelSource(args.backend, args.onnx_path, args.device, getattr(args, "threshold", None),
                       bool(getattr(args, "trust_code", False)))  # fmt: skip


def fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def emit(result: dict[str, Any], output: str, table: str) -> None:
    """Print ``result`` as one JSON line (``--format json``) or ``table``; under torchrun, rank 0 alone."""
    from siamkit.distributed import current

    if current().is_main:
        print(json.dumps(result, default=float) if output == "json" else table, flush=True)
