"""The CLI answers ``--version`` and every command's ``--help`` without importing torch (start-up in a tenth of
a second, not the seconds torch takes)."""

from __future__ import annotations

import subprocess
import sys

from siamkit.cli import build_parser

PROBE = """
import contextlib, io, sys
from siamkit.cli import main
for argv in {argvs!r}:
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
        except SystemExit as exc:
            assert exc.code == 0, (argv, exc.code)
heavy = sorted(m for m in ("torch", "numpy", "PIL", "matplotlib", "faiss", "onnxruntime") if m in sys.modules)
print(",".join(heavy))
"""


def _commands() -> list[list[str]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")  # argparse keeps sub-parsers here
    argvs = [["--version"], ["--help"]]
    for name, p in sub.choices.items():  # type: ignore[union-attr]
        argvs.append([name, "--help"])
        for action in p._actions:
            if getattr(action, "choices", None) and isinstance(action.choices, dict):  # nested groups (index …)
                argvs += [[name, nested, "--help"] for nested in action.choices]
    return argvs


def test_version_and_every_help_import_no_torch() -> None:
    argvs = _commands()
    assert ["embed", "--help"] in argvs and ["index", "build", "--help"] in argvs and len(argvs) > 15
    out = subprocess.run([sys.executable, "-c", PROBE.format(argvs=argvs)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported at start-up: {out.stdout.strip()}"
