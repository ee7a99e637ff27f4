"""``classify``: the CIFAR-10 block-CNN classification study (BaseCNN blocks A–E), configured like ``train``: a
YAML file of :class:`~siamkit.classify.study.ClassifyConfig` keys and ``--set KEY=VALUE`` overrides."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from siamkit.classify.study import ClassifyConfig

from siamkit.cli.common import Subparsers, command, emit, output_flags, overrides_flag, shortcut_overrides

SHORTCUTS = {"data": "data", "epochs": "epochs", "name": "name", "runs_dir": "runs_dir"}
BLOCK_KINDS = ("A", "B", "C", "D", "Ddw", "E")
"""``siamkit.models.blocks.BLOCK_KINDS``, written out here because that module imports torch and ``--help`` must
not (tests/test_cifar_classify.py keeps the two equal)."""
DEFAULT_BLOCKS = "AAAAAAAA"
"""``ClassifyConfig.blocks``'s default, for the same reason (kept equal by the same test)."""


def register(sub: Subparsers) -> None:
    c = command(sub, "classify", None, "the CIFAR-10 block-CNN classification study (BaseCNN blocks A–E)", [
        "siamkit classify train --blocks BBBBBBBB",
        "siamkit classify compare --blocks A B C D Ddw E --set budget_seconds=600",
    ])  # fmt: skip
    csub = c.add_subparsers(dest="classify_command", required=True, metavar="ACTION")
    ct = command(csub, "train", _train, "train one BaseCNN classifier and write its figures", [
        "siamkit classify train --blocks BBBBBBBB                 # CIFAR-10: Adam 1e-3, ExponentialLR γ 0.95",
        "siamkit classify train --data fashion-mnist --blocks A --set limit=5000 --set lr=3e-4",
    ])  # fmt: skip
    ct.add_argument("--blocks", help=f"block string of the kinds {', '.join(BLOCK_KINDS)}, e.g. {DEFAULT_BLOCKS} "
                    "(default), BBBBBBBB, ABCDEABC, Ddw")  # fmt: skip
    cc = command(csub, "compare", _compare, "train several block strings under one budget and tabulate them", [
        "siamkit classify compare --blocks A B C D Ddw E --set budget_seconds=600",
    ])  # fmt: skip
    cc.add_argument("--blocks", nargs="+", default=list(BLOCK_KINDS),
                    help="block strings (one kind = all eight blocks of it; default: "
                         f"{' '.join(BLOCK_KINDS)})")  # fmt: skip
    for sp in (ct, cc):
        sp.add_argument("config", nargs="?", help="YAML file of classify keys (optional; defaults otherwise)")
        overrides_flag(sp, "budget_seconds=60")
        sp.add_argument("--data", help="cifar10 (default) | a folder of CIFAR-10 batches | fashion-mnist (stand-in)")
        sp.add_argument("--epochs", type=int)
        sp.add_argument("--name", help="run name (folder under --runs-dir)")
        sp.add_argument("--runs-dir", dest="runs_dir", help="where run folders go (default: runs)")
        output_flags(sp)


def _config(args: argparse.Namespace, blocks: str | None) -> ClassifyConfig:
    from siamkit.classify.study import ClassifyConfig
    from siamkit.config import load_dataclass

    overrides = shortcut_overrides(args, SHORTCUTS)
    if blocks is not None:
        overrides.append(f"blocks={blocks}")
    if args.quiet:
        overrides.append("progress=false")
    return load_dataclass(ClassifyConfig, args.config, overrides)


def _train(args: argparse.Namespace) -> None:
    from siamkit.classify.study import train_classifier

    r = train_classifier(_config(args, args.blocks))
    lines = [f"run: {r['run_dir']}", f"dataset: {r['dataset']}"] + ([r["note"]] if r["note"] else [])
    lines += [
        f"blocks {r['blocks']}: {r['trainable_parameters']:,} trainable parameters, {r['train_seconds']:.1f}s "
        f"training ({r['epochs_run']} epochs{', budget reached' if r['budget_reached'] else ''})",
        f"best validation accuracy {r['best_val_accuracy']:.4f} (epoch {r['best_epoch']})"
        + (f", test accuracy {r['test_accuracy']:.4f}" if "test_accuracy" in r else ""),
        "most confused: {} ↔ {} ({} mistakes)".format(*r["most_confused"]["names"], r["most_confused"]["count"]),
    ]
    emit(r, args.format, "\n".join(lines))


def _compare(args: argparse.Namespace) -> None:
    from siamkit.classify.study import compare, compare_table
    from siamkit.models.blocks import parse_blocks

    for b in args.blocks:
        parse_blocks(b)
    result = compare(_config(args, "A"), list(args.blocks))
    emit(result, args.format, compare_table(result) + f"\nwritten: {result['dir']}/compare.csv, compare.md")
