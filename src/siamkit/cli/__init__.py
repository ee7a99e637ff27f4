"""Command line: thin — parses, calls the library, prints. One module per command group registers its
sub-commands (``register(subparsers)``), each bound to its handler; errors are one line on stderr (exit 2),
``--debug`` shows the traceback.

Groups: ``train`` (train, eval, calibrate, report), ``model`` (verify, export, summary), ``embed``, ``gallery``
(index, search), ``serve``, ``study``, ``classify``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from siamkit.cli import classify, embed, gallery, model, serve, study, train
from siamkit.errors import SiamkitError
from siamkit.version import __version__

GROUPS = (train, model, embed, gallery, serve, study, classify)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="siamkit", description="Siamese networks and deep metric learning on images.",
        epilog="examples:\n  siamkit train --data my_faces/ --recipe open-set\n"
        "  siamkit verify runs/my_faces a.jpg b.jpg",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"siamkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return parser


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # --version and --help end here, before torch is imported
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command line, as a study records it
    from siamkit.distributed import cleanup, env_info

    _setup_logging(args.quiet or getattr(args, "format", "table") == "json" or not env_info().is_main)
    try:
        args.func(args)
        return 0
    except SiamkitError as exc:
        if args.debug:
            raise
        print(f"siamkit: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (siamkit search … | head): not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        cleanup()


__all__ = ["build_parser", "main"]
