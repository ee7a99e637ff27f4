"""Where a run's threshold holds: its rule, the pairs it was set on, and its error rates there and on new people.

A threshold is a decision a deployment trusts, so every one carries its provenance (``threshold_info`` in
``metrics.json``, the calibration entry of ``threshold.json``)::

    {"threshold": 0.61, "rule": "accuracy", "set_on": "the run's validation identities", "identities": 12,
     "genuine_pairs": 4980, "impostor_pairs": 5000, "false_accept_rate": 0.021, "false_reject_rate": 0.11,
     "test": {"on": "the run's test identities", "false_accept_rate": 0.71, "false_reject_rate": 0.02,
              "impostor_pairs": 5000},
     "warning": "do not deploy this threshold as is: ..."}

The warning is raised when the false-accept rate on people the threshold was not set on is above
``DEPLOY_MAX_FAR`` or ``DEPLOY_FACTOR`` times the rate it was set for. Nothing here imports torch or the training
code: ``verify``, ``serve`` and the report read it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from siamkit.rundir import RunDir

DEPLOY_MAX_FAR = 0.05
"""A threshold accepting more than this share of impostors of new people is flagged."""
DEPLOY_FACTOR = 10.0
"""... as is one accepting more than this many times the false-accept rate it was set for."""
MIN_IMPOSTORS_PER_FPR = 3.0
"""A false-accept rate ``f`` means something on at least ``3 / f`` distinct impostor pairs (SPEC §8)."""


def target_rate(rule: str, far_on_set: float | None) -> float | None:
    """The false-accept rate a threshold was set for: the rate of an ``fpr:<rate>`` rule, else the rate it had on
    the pairs it was set on."""
    kind, _, value = str(rule).strip().lower().partition(":")
    if kind in ("fpr", "far") and value:
        try:
            return float(value)
        except ValueError:
            return far_on_set
    return far_on_set


def deploy_warning(info: dict[str, Any], run: str = "RUN") -> str | None:
    """One plain sentence when ``info``'s false-accept rate on new people (``test``, else ``held_out``) is above
    ``DEPLOY_MAX_FAR`` or ``DEPLOY_FACTOR`` × the rate it was set for; None when it holds (or nothing measures it)."""
    new = info.get("held_out") or info.get("test") or {}
    far = new.get("false_accept_rate")
    if far is None:
        return None
    target = target_rate(str(info.get("rule", "")), info.get("false_accept_rate"))
    too_many = far > DEPLOY_MAX_FAR
    too_far = target is not None and target > 0 and far > DEPLOY_FACTOR * target
    if not (too_many or too_far):
        return None
    where = new.get("on", "new identities")
    return (f"do not deploy this threshold as is: on {where} it accepts {far:.1%} of impostor pairs (false-accept "
            f"rate {far:.4f}{_against(info, far, target)}) — calibrate on your own people, e.g. siamkit calibrate "
            f"{run} --data YOUR_PEOPLE --fpr 0.01 --hold-out 0.3")  # fmt: skip


def _against(info: dict[str, Any], far: float, target: float | None) -> str:
    """How a false-accept rate ``far`` on new people compares with the ``target`` rate the threshold was set for."""
    if target is None:
        return ""
    set_on = info.get("set_on", "the pairs it was set on")
    how = "was set for" if str(info.get("rule", "")).startswith(("fpr", "far")) else "had"
    if far >= 2 * target:
        return f", far above the {target:.4f} it {how} on {set_on}"
    return f"; {target:.4f} on {set_on}: more impostors than a deployment takes (above {DEPLOY_MAX_FAR})"


def too_few_impostors(fpr: float, impostor_pairs: int) -> str | None:
    """One line when ``impostor_pairs`` distinct impostor pairs are too few for a false-accept rate of ``fpr``."""
    if fpr <= 0:
        return None
    need = int(-(-MIN_IMPOSTORS_PER_FPR // fpr))
    if impostor_pairs >= need:
        return None
    behind = fpr * impostor_pairs
    return (
        f"a false-accept rate of {fpr:g} on {impostor_pairs:,} distinct impostor pairs rests on {behind:.1f} "
        f"false accepts: give at least {need:,} (3 / FPR), e.g. more identities or --pairs-per-kind {need}"
    )


def describe(info: dict[str, Any]) -> str:
    """One line for a table: the threshold, its rule, where it was set and its rates there and on new people."""
    n_ids = info.get("identities")
    ids = f", {n_ids} identities" if n_ids and f"{n_ids} " not in str(info.get("set_on")) else ""
    far, frr = _rate(info, "false_accept_rate"), _rate(info, "false_reject_rate")
    line = (
        f"threshold {info['threshold']:.4f} (rule {info.get('rule')}; set on {info.get('set_on')}{ids}, "
        f"{info.get('impostor_pairs') or 0:,} distinct impostor pairs: false-accept {far}, false-reject {frr})"
    )
    for key in ("held_out", "test"):
        new = info.get(key)
        if new and new.get("false_accept_rate") is not None:
            line += (f"; on {new.get('on', key)}: false-accept {_rate(new, 'false_accept_rate')}, false-reject "
                     f"{_rate(new, 'false_reject_rate')}")  # fmt: skip
    return line


def _rate(d: dict[str, Any], key: str) -> str:
    v = d.get(key)
    return "?" if v is None else f"{v:.4f}"


def with_warning(info: dict[str, Any], run: str = "RUN") -> dict[str, Any]:
    """``info`` with its ``warning`` (or None) filled in."""
    return {**info, "warning": deploy_warning(info, run)}


def run_threshold_info(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The provenance of the threshold ``run_dir`` uses: the calibration (``threshold.json``) when there is one,
    else the training threshold's ``threshold_info`` in ``metrics.json``; None when neither says."""
    run = Path(run_dir)
    cal = RunDir(run).read_calibration()
    if cal is not None and "threshold" in cal:
        info = {k: v for k, v in cal.items() if k != "history"}
        info.setdefault("set_on", info.get("data"))
        return with_warning(info, str(run))
    metrics = RunDir(run).read_metrics()
    if metrics is None:
        return None
    saved = metrics.get("threshold_info")
    return with_warning(saved, str(run)) if isinstance(saved, dict) else None


def decision_info(run_dir: str | os.PathLike[str] | None, given: float | None = None) -> dict[str, Any] | None:
    """Where the threshold a decision (``verify``, ``search``) used holds: the run's (``run_threshold_info``), or
    ``given`` for this call only (``--threshold``: set on nothing the run knows)."""
    if given is not None:
        return {"threshold": given, "rule": "given (--threshold)", "set_on": "nothing the run recorded",
                "warning": None}  # fmt: skip
    return run_threshold_info(run_dir) if run_dir else None


def decision_rule(info: dict[str, Any] | None) -> str | None:
    """The rule behind a same/different verdict in one line, for a page or a table beside the verdict: the
    threshold, how it was chosen and where, and its false-accept rate there and on new people, e.g. ``same if
    distance ≤ 0.6100 (rule accuracy, set on the run's validation identities); false-accept rate 0.0210 there,
    0.7100 on the run's test identities``. None without a threshold."""
    if not info or info.get("threshold") is None:
        return None
    line = f"same if distance ≤ {info['threshold']:.4f} (rule {info.get('rule') or '?'}"
    line += f", set on {info['set_on']})" if info.get("set_on") else ")"
    rates = []
    if info.get("false_accept_rate") is not None:
        rates.append(f"{info['false_accept_rate']:.4f} there")
    for key in ("held_out", "test"):
        new = info.get(key)
        if isinstance(new, dict) and new.get("false_accept_rate") is not None:
            rates.append(f"{new['false_accept_rate']:.4f} on {new.get('on', key)}")
    return line + ("; false-accept rate " + ", ".join(rates) if rates else "; false-accept rate not measured")
