"""Run the whole bad-input corpus and print one JSON line of counts (issue 30's "Must show").

    .venv/bin/python benchmarks/corpus.py [--timeout 120] [--no-crash-matrix]

Every case of ``tests/test_corpus.py`` really runs, as the test suite runs it — the CLI cases (``CASES``: bad
input that must end in one clean refusal), the handled cases (``HANDLED``: good input beside the bad that must
work) and the HTTP cases (``classify_http``) — with the module's own classification (``classify_case``,
``classify_handled``): ``clean`` = exit 2 and one line naming the case's fragment, nothing left behind;
``handled`` = exit 0 and the right output; ``tracebacks`` = a traceback reached the user; ``silent`` = bad input
accepted; ``left_behind`` = the case's folder or the shared run changed; ``security`` = a payload's marker file
appeared; ``hang`` = no answer within ``--timeout`` seconds; ``messy`` = refused, but not in one line naming the
fragment; ``wrong`` = good input refused or answered wrongly. The crash-injection matrices
(``tests/test_crash_matrix.py``, ``tests/test_crash_runs.py``) run under pytest in a child process: each failed
scenario is an artefact a cut left unusable, counted as ``lost``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
CRASH_MATRICES = ("tests/test_crash_matrix.py", "tests/test_crash_runs.py")


class Hang(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise Hang()


def build_world(root: Path) -> dict[str, Path]:
    """What the test suite's fixtures give the corpus: digits 0–199 as PNGs, a 2-epoch run, a gallery of it."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    from siamkit.cli import main
    from siamkit.index.ops import build

    images = root / "digit_pngs"
    d = load_digits()
    for i in range(200):
        folder = images / str(d.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(d.images[i] * 255 / 16).astype(np.uint8)).save(folder / f"{i:03d}.png")
    argv = ["train", "--epochs", "2", "--runs-dir", str(root / "runs"), "--name", "small", "--format", "json", "-q"]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        if main(argv) != 0:
            raise SystemExit("benchmarks/corpus.py: the shared run did not train")
        build(str(root / "runs" / "small"), [str(images / "0"), str(images / "1")], str(root / "gallery"))
    return {"run": root / "runs" / "small", "images": images, "image": images / "0" / "000.png",
            "gallery": root / "gallery"}  # fmt: skip


def make_runner(logs: io.StringIO, timeout: int) -> Any:
    from siamkit.cli import main

    def run(argv: list[str]) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        logs.seek(0)
        logs.truncate()
        signal.alarm(timeout)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(argv)
        finally:
            signal.alarm(0)
        # log records go to their own stream (as pytest captures them apart); a traceback there still counts
        return code, out.getvalue(), err.getvalue() + ("\nTraceback (in the log)" if "Traceback" in logs.getvalue()
                                                       else "")  # fmt: skip

    return run


def crash_matrices() -> dict[str, int]:
    """Run the crash-injection tests under pytest (a child process); their scenario counts from its JUnit XML."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", *CRASH_MATRICES, "-q", "-p", "no:cacheprovider", f"--junitxml={xml}"]
        subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        if not xml.is_file():
            return {"tried": 0, "passed": 0, "failed": 1, "skipped": 0}
        counts: Counter[str] = Counter()
        for suite in ET.parse(xml).getroot().iter("testsuite"):
            for key in ("tests", "failures", "errors", "skipped"):
                counts[key] += int(suite.get(key, 0))
    failed = counts["failures"] + counts["errors"]
    return {"tried": counts["tests"], "passed": counts["tests"] - failed - counts["skipped"], "failed": failed,
            "skipped": counts["skipped"]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=int, default=120, help="seconds a case may take before it counts as a hang")
    ap.add_argument("--no-crash-matrix", action="store_true", help="skip the crash-injection matrices")
    ap.add_argument("--verbose", action="store_true", help="say every case that did not end as expected (stderr)")
    args = ap.parse_args()
    started = time.perf_counter()
    os.environ.pop("SIAMKIT_TOKEN", None)
    work = Path(tempfile.mkdtemp(prefix="siamkit-corpus-"))
    os.environ["SIAMKIT_CACHE"] = str(work / "cache")
    logs = io.StringIO()
    logging.basicConfig(level=logging.INFO, stream=logs, format="%(message)s")  # the CLI's basicConfig: a no-op
    signal.signal(signal.SIGALRM, _alarm)
    try:
        import test_corpus as corpus

        world = build_world(work / "world")
        run = make_runner(logs, args.timeout)
        outcomes: Counter[str] = Counter()
        problems: list[str] = []

        def record(name: str, result: tuple[str, str], expected: str) -> None:
            outcomes[result[0]] += 1
            if result[0] != expected:
                problems.append(f"{name}: {result[0]}: {result[1][:300]}")

        groups = (("cases", corpus.CASES, corpus.classify_case, "clean"),
                  ("handled", corpus.HANDLED, corpus.classify_handled, "handled"))  # fmt: skip
        for group, names, classify, expected in groups:
            for i, name in enumerate(sorted(names)):
                folder = work / group / f"{i:04d}"
                folder.mkdir(parents=True)
                try:
                    result = classify(name, folder, world, run)
                except Hang:
                    result = ("hang", f"no answer in {args.timeout} s")
                record(name, result, expected)
        signal.alarm(args.timeout * 4)
        try:
            with corpus.http_client(world, Path(tempfile.mkdtemp(dir=work))) as client:
                http = corpus.classify_http(client, world)
        except Hang:
            http = {"http": ("hang", "the HTTP cases did not finish")}
        finally:
            signal.alarm(0)
        for name, result in http.items():
            record(f"http/{name}", result, "clean")
        crash = None if args.no_crash_matrix else crash_matrices()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.verbose:
        for line in problems:
            print(line, file=sys.stderr)
    report: dict[str, Any] = {
        "tried": sum(outcomes.values()),
        "clean": outcomes["clean"],
        "handled": outcomes["handled"],
        "tracebacks": outcomes["traceback"],
        "silent": outcomes["silent"],
        "left_behind": outcomes["left_behind"],
        "lost": crash["failed"] if crash else 0,
        "security": outcomes["security"],
        "hang": outcomes["hang"],
        "messy": outcomes["messy"],
        "wrong": outcomes["wrong"],
        "cli_cases": len(corpus.CASES),
        "handled_cases": len(corpus.HANDLED),
        "http_cases": len(http),
    }
    if crash is not None:
        report["crash_matrix"] = crash
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
