"""``report.html`` for a run or a study: one self-contained page, readable offline (images embedded as data
URIs, no scripts, no outside links). ``write_report(DIR)`` (``siamkit report DIR``) regenerates it from the
files the run or study wrote: nothing is recomputed, so it works on any machine that has the folder.

A training run's page: config, metrics table (per split: AUC, EER, TPR at FPR 0.5/0.1/0.01/0.001, P@1, MAP@R,
verification and similarity accuracy), loss curves, ROC with annotations, distance box plot and histogram,
nearest neighbours of 5 random test queries, and the t-SNE map of the test embeddings. A study's page: its
tables and plots, with links to each trial's own report. A classification run's page: its metrics and figures.
An evaluation's page (``siamkit eval``'s folder inside the run: ``RUN/eval/`` or ``RUN/eval-<data>/`` of
``--as-test``): what was scored and with which threshold, its metrics table, ROC, distances, neighbours and t-SNE.

TPR figures resting on fewer than 3 distinct impostor pairs carry a ``*`` in every table, as on the terminal,
with the footnote :data:`SMALL_SAMPLE_NOTE` under the table.
"""

from __future__ import annotations

import base64
import csv
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from siamkit.errors import DataError
from siamkit.evaluate.fprs import FPR_LABELS
from siamkit.files import atomic_write_text
from siamkit.rundir import RunDir
from siamkit.text import name_list

REPORT = RunDir.REPORT
STUDY_FILE = "study.json"
RUN_SECTIONS = (
    ("Loss curves", RunDir.LOSS_CURVE),
    ("ROC (TPR at FPR annotated)", "roc.png"),
    ("Distance distributions", "distances.png"),
    ("Nearest neighbours of 5 random test queries", "neighbours.png"),
    ("t-SNE map of test embeddings", "tsne.png"),
)
EVAL_SECTIONS = (
    ("ROC (TPR at FPR annotated)", "roc.png"),
    ("Distance distributions", "distances.png"),
    ("Nearest neighbours of 5 random queries", "neighbours.png"),
    ("t-SNE map of the scored embeddings", "tsne.png"),
)
SMALL_SAMPLE_MARK = "*"
SMALL_SAMPLE_NOTE = "* = fewer than 3 distinct impostor pairs behind that FPR: not meaningful"
"""The footnote of a TPR figure marked ``*`` (``TprAtFpr.reliable`` false), in the report as on the terminal."""
CLASSIFY_SECTIONS = (
    ("Accuracy and loss curves", "curves.png"),
    ("Confusion matrix", "confusion.png"),
    ("t-SNE of penultimate features", "tsne.png"),
    ("Feature maps of every conv layer", "feature_maps.png"),
    ("Random training images", "samples.png"),
    ("Validation class distribution", "val_classes.png"),
    ("Augmentation preview", "augment.png"),
)
CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee}pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.85em}
.note{color:#a33}tr.best td{background:#e6f4ea;font-weight:600}
code{background:#f3f3f3;padding:0 .2em}
"""


def _img(path: Path, what: str = "run") -> str:
    if not path.is_file():
        return f'<p class="note">{html.escape(path.name)} was not produced for this {what}.</p>'
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _fmt(v: Any) -> str:
    """Metrics (floats) to 4 decimals, counts with thousands separators, rates and seconds readable."""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 1000 else f"{v:.4f}"
    return html.escape("–" if v is None else str(v))


def html_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], best: int | None = None) -> str:
    """A table; row ``best`` (e.g. a study's best setting) highlighted."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(("<tr class='best'>" if i == best else "<tr>") + "".join(f"<td>{_fmt(v)}</td>" for v in r)
                   + "</tr>" for i, r in enumerate(rows))  # fmt: skip
    return f"<table><tr>{head}</tr>{body}</table>"


def _page(title: str, parts: list[str]) -> str:
    head = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{CSS}</style>"
    return f"{head}</head><body><h1>{html.escape(title)}</h1>{''.join(parts)}</body></html>\n"


def _tpr(m: dict[str, Any]) -> dict[str, float]:
    return {str(t["fpr"]): t["tpr_interpolated"] for t in m.get("tpr_at_fpr", [])}


BASELINE_NAMES = {"pixels": "raw pixels", "untrained": "untrained net", "descriptor": "descriptor"}


def episode_rows(metrics: dict[str, Any]) -> tuple[list[str], list[list[str]], str]:
    """The N-way K-shot table of a run's test identities: one row for the model and one per baseline, one column
    per setting (``accuracy ± ci95``), and a line on the protocol; empty when no episodes were scored."""
    test = (metrics.get("test") or {}).get("episodes") or {}
    keys = [k for k, v in test.items() if "accuracy" in v]
    if not keys:
        return [], [], ""
    entries = [("model", test)] + [
        (baseline_name(metrics, name), (b.get("test") or {}).get("episodes") or {})
        for name, b in (metrics.get("baselines") or {}).items()
    ]
    rows = [[who, *(f"{e[k]['accuracy']:.4f} ± {e[k]['ci95']:.4f}" if "accuracy" in e.get(k, {}) else "-"
                    for k in keys)] for who, e in entries]  # fmt: skip
    first = test[keys[0]]
    within = "classes drawn within one group" if first.get("within_group") else "classes drawn from all"
    skipped = [f"{k} ({v['skipped']})" for k, v in test.items() if "skipped" in v]
    note = (f"{first['episodes']} episodes per setting, {first['query']} queries per class, nearest prototype (mean "
            f"of the K support embeddings), {within}; ± is the 95 % interval; chance is 1/N"
            + (f"; not scored: {', '.join(skipped)}" if skipped else ""))  # fmt: skip
    return ["test episodes", *(k.replace("way", "-way ").replace("shot", "-shot") for k in keys)], rows, note


def split_entries(metrics: dict[str, Any], baselines: bool = True) -> list[tuple[str, dict[str, Any]]]:
    """(row name, metrics) for train, validation and test, then (``baselines``) the test split of each baseline
    (raw pixels, the untrained network): what a summary table shows."""
    entries = [(split, metrics[split]) for split in ("train", "validation", "test") if metrics.get(split)]
    for key, b in (metrics.get("baselines") or {}).items() if baselines else ():
        if b.get("test"):
            entries.append((f"test: {baseline_name(metrics, key)}", b["test"]))
    return entries


def baseline_name(metrics: dict[str, Any], key: str) -> str:
    """How a baseline is shown: the ``untrained`` one of a run that starts from pretrained weights is that
    pretrained model, unchanged."""
    if key == "untrained" and metrics.get("initial_model") == "pretrained":
        return "pretrained, unchanged"
    return BASELINE_NAMES.get(key, key)


def _tpr_marked(m: dict[str, Any]) -> dict[str, Any]:
    """TPR at each FPR, a small-sample one as text with its ``*`` (``1.0000*``), the others as numbers."""
    out: dict[str, Any] = {}
    for t in m.get("tpr_at_fpr", []):
        v = t["tpr_interpolated"]
        small = t.get("reliable") is False and v is not None
        out[str(t["fpr"])] = f"{_fmt(float(v))}{SMALL_SAMPLE_MARK}" if small else v
    return out


def metrics_rows(metrics: dict[str, Any], baselines: bool = True, marks: bool = False) -> list[list[Any]]:
    """One row per split (and baseline): AUC, EER, TPR at the four FPRs, P@1, MAP@R, verification and similarity
    accuracy. ``marks``: a TPR resting on fewer than 3 distinct impostor pairs is shown with its ``*`` (text), as on
    the terminal; without, every cell is a number (a CSV's)."""
    rows = []
    for split, m in split_entries(metrics, baselines):
        tpr = _tpr_marked(m) if marks else _tpr(m)
        rows.append([split, m.get("auc"), m.get("eer"), *(tpr.get(f) for f in FPR_LABELS), m.get("precision_at_1"),
                     m.get("map_at_r"), m.get("verification_accuracy"), m.get("similarity_accuracy")])  # fmt: skip
    return rows


METRIC_COLUMNS = ["split", "AUC", "EER", *(f"TPR@{f}" for f in FPR_LABELS), "P@1", "MAP@R", "VerAcc", "SimAcc"]


def metrics_section(metrics: dict[str, Any]) -> str:
    """The metrics table of a run or an evaluation, small-sample TPR figures marked ``*`` and, when any is, the
    footnote saying what the mark means."""
    rows = metrics_rows(metrics, marks=True)
    starred = any(isinstance(v, str) and v.endswith(SMALL_SAMPLE_MARK) for r in rows for v in r[3:7])
    note = f'<p class="small-sample">{html.escape(SMALL_SAMPLE_NOTE)}.</p>' if starred else ""
    return "<h2>Metrics</h2>" + html_table(METRIC_COLUMNS, rows) + note


def test_decision_rows(test: dict[str, Any], rates: bool = True) -> list[tuple[str, Any]]:
    """The test split's decision figures: error rates at the threshold (``rates``) and the LFW 10-fold accuracy."""
    rows: list[tuple[str, Any]] = []
    if rates and "false_accept_rate" in test:
        rows += [("test false-accept rate at the threshold", test["false_accept_rate"]),
                 ("test false-reject rate at the threshold", test["false_reject_rate"])]  # fmt: skip
    k = test.get("verification_accuracy_10fold")
    if k:
        folds = {"identity": ", identity-disjoint folds", "pairs": ", folds of pairs"}.get(k.get("folds_by"), "")
        rows.append((f"test verification accuracy, 10-fold (LFW protocol{folds})", f"{k['mean']:.4f} ± {k['std']:.4f}"))
    return rows


def _plain(v: float | None, decimals: int) -> str | None:
    """A rate or a duration as a person reads it (``1,234.5``), not to metric precision."""
    return None if v is None else f"{v:,.{decimals}f}"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read it ({exc}); is this a finished run or study?") from None
    return data


def verdict(metrics: dict[str, Any]) -> str | None:
    """One plain sentence on whether training learned a similarity for this data: the test figures (MAP@R, AUC)
    against the same test pairs scored by the raw pixels and by the network before training; None without a test
    split with retrieval figures and baselines."""
    test = metrics.get("test") or {}
    base = {name: (b.get("test") or {}) for name, b in (metrics.get("baselines") or {}).items()}
    if "map_at_r" not in test or not all("map_at_r" in b for b in base.values()) or "pixels" not in base:
        return None
    who = "test identities (never seen in training)" if metrics.get("split") == "identity" else "test images"
    t, px = test["map_at_r"], base["pixels"]["map_at_r"]
    un = base["untrained"]["map_at_r"] if "untrained" in base else None
    pretrained = metrics.get("initial_model") == "pretrained"
    before = "for the pretrained model unchanged" if pretrained else "untrained"
    figures = f"MAP@R {t:.3f} against {px:.3f} for raw pixels" + ("" if un is None else f" and {un:.3f} {before}")
    kept = ""
    if metrics.get("best_epoch") == 0 and metrics.get("epochs_run"):
        kept = ("The kept model is the pretrained one, unchanged (no epoch beat it on validation). " if pretrained
                else "The kept model is the untrained network (no epoch beat it on validation). ")  # fmt: skip
    margin = 0.01
    if pretrained and not metrics.get("epochs_run") and metrics.get("as_test"):
        return f"A pretrained model, not trained on this data: on the {who}, MAP@R {t:.3f} against {px:.3f} for pixels."
    if metrics.get("recipe") == "descriptor" and not metrics.get("epochs_run"):
        count = len((metrics.get("identities") or {}).get("train") or [])
        return (f"Not trained: {count or 'too few'} training identities are too few to learn a similarity that "
                f"carries to new ones, so the model is the descriptor (gradient histograms, nothing learned) — on "
                f"the {who}, MAP@R {t:.3f} against {px:.3f} for raw pixels. With more identities (30 or more) the "
                "default trains; --recipe open-set trains anyway.")  # fmt: skip
    said = _verdict_vs(t, px, un, margin, who, figures=figures, kept=kept)
    desc = base.get("descriptor", {}).get("map_at_r")
    if desc is not None and desc > t + margin and metrics.get("recipe") != "open-set":
        said += (f" The descriptor (gradient histograms, nothing learned) ranks them better still (MAP@R {desc:.3f}): "
                 "--recipe descriptor keeps it (the default with fewer than 30 training identities), --recipe "
                 "open-set trains from it.")  # fmt: skip
    return said


def _verdict_vs(t: float, px: float, un: float | None, margin: float, who: str, *, figures: str, kept: str) -> str:
    if t >= px + margin and (un is None or t >= un + margin):
        return f"{kept}Training helped: on the {who}, {figures}."
    if t < px - margin:
        return (f"{kept}Raw pixels rank the {who} better than the model ({figures}): it has not learned a similarity "
                "that carries to them — more identities, augmentation or a pretrained backbone (--backbone resnet18 "
                "--set model.backbone_args={weights: FILE}) are the levers.")  # fmt: skip
    if un is not None and t < un - margin:
        return (f"{kept}The network before training ranks the {who} better ({figures}): training hurt on them, and "
                "the validation split did not show it.")  # fmt: skip
    return f"{kept}On a par with the baselines on the {who} ({figures}): training added little here."


def threshold_rows(run_dir: Path, metrics: dict[str, Any]) -> list[tuple[str, Any]]:
    """The threshold in use (a calibration's when there is one: ``siamkit.thresholds.run_threshold_info``), its
    rule, where it was set and its rates there, on held-out identities and on the test identities."""
    from siamkit.thresholds import run_threshold_info

    info = run_threshold_info(run_dir)
    if info is None:
        return [("threshold (validation)", metrics.get("threshold")), ("threshold rule", metrics.get("threshold_rule"))]
    return threshold_info_rows(info, RunDir(run_dir).is_calibrated())


def threshold_info_rows(info: dict[str, Any], calibrated: bool = False) -> list[tuple[str, Any]]:
    """:func:`threshold_rows` of a threshold's provenance ``info`` (``siamkit.thresholds``)."""
    n_ids = info.get("identities")
    ids = f" ({n_ids} identities)" if n_ids and f"{n_ids} " not in str(info.get("set_on")) else ""
    rows: list[tuple[str, Any]] = [
        ("threshold in use" + (" (calibrated)" if calibrated else ""), info.get("threshold")),
        ("threshold rule", info.get("rule")), ("threshold set on", f"{info.get('set_on')}{ids}"),
        ("distinct impostor pairs it was set on", info.get("impostor_pairs")),
        ("false-accept / false-reject rate there", _pair(info)),
    ]  # fmt: skip
    for key, label in (("held_out", "held out"), ("test", "test")):
        new = info.get(key)
        if new and new.get("false_accept_rate") is not None:
            rows.append((f"false-accept / false-reject rate, {label}: {new.get('on')}", _pair(new)))
    return rows


def _pair(d: dict[str, Any]) -> str | None:
    far, frr = d.get("false_accept_rate"), d.get("false_reject_rate")
    return None if far is None or frr is None else f"{far:.4f} / {frr:.4f}"


def run_report(run_dir: Path) -> str:
    from siamkit.thresholds import run_threshold_info

    metrics = _read_json(RunDir(run_dir).metrics)
    parts = []
    summary = [
        ("dataset", metrics.get("dataset")), ("trainable parameters", metrics.get("trainable_parameters")),
        ("train seconds", _plain(metrics.get("train_seconds"), 1)),
        ("images/s", _plain(metrics.get("images_per_second"), 0)),
        ("recipe", metrics.get("recipe")), ("why this recipe", metrics.get("recipe_reason")),
        ("epochs run", metrics.get("epochs_run")), ("best epoch", metrics.get("best_epoch")),
        ("checkpoint chosen by", metrics.get("monitor")), *threshold_rows(run_dir, metrics),
        ("split", metrics.get("split")),
        *test_decision_rows(metrics.get("test") or {}, rates=run_threshold_info(run_dir) is None),
    ]  # fmt: skip
    said = verdict(metrics)
    if said:
        parts.append(f"<p><b>{html.escape(said)}</b></p>")
    warning = (run_threshold_info(run_dir) or {}).get("warning")
    if warning:
        parts.append(f'<p class="note"><b>{html.escape(warning[0].upper() + warning[1:])}.</b></p>')
    parts.append("<h2>Summary</h2>" + html_table(["", "value"], [[k, v] for k, v in summary if v is not None]))
    parts.append(metrics_section(metrics))
    if RunDir(run_dir).is_calibrated():
        parts.append(
            '<p class="note">VerAcc is at the training threshold (metrics.json); the calibrated threshold '
            "in use and its rates are in the summary above, and the ROC marks its operating point.</p>"
        )
    parts.append(PROTOCOL)
    parts.append(_episodes_section(metrics))
    identities = metrics.get("identities")
    if identities:
        rows = [[part, len(ids), name_list(ids, 100)] for part, ids in identities.items()]  # all: metrics.json
        parts.append("<h2>Identities (open-set split: pairwise disjoint)</h2>"
                     + html_table(["split", "identities", "names"], rows))  # fmt: skip
    parts.append(use_section(run_dir))
    for title, name in RUN_SECTIONS:
        parts.append(f"<h2>{html.escape(title)}</h2>{_img(run_dir / name)}")
    history = RunDir(run_dir).history
    if history.is_file():
        rows = list(csv.reader(history.open()))
        parts.append("<h2>History</h2>" + html_table(rows[0], [[_num(v) for v in r] for r in rows[1:]]))
    config = RunDir(run_dir).config
    if config.is_file():
        parts.append(f"<h2>Config</h2><pre>{html.escape(config.read_text())}</pre>")
    return _page(f"siamkit run: {run_dir.name}", parts)


PROTOCOL = (
    "<p>TPR at FPR is interpolated on the ROC; retrieval is leave-one-out on each split. The baselines are scored "
    "on the same test pairs: raw pixels (flattened, L2-normalised) and the network before training — a model "
    "that does not beat them has not learned a similarity for this data.</p>"
)


def _episodes_section(metrics: dict[str, Any]) -> str:
    columns, rows_e, note = episode_rows(metrics)
    if not rows_e:
        return ""
    return f"<h2>N-way K-shot episodes (test)</h2>{html_table(columns, rows_e)}<p>{html.escape(note)}.</p>"


def is_eval_folder(directory: Path) -> bool:
    """A ``siamkit eval`` folder: its ``metrics.json`` inside a run folder (``RUN/eval/``, ``RUN/eval-<data>/``),
    with no config of its own."""
    d = Path(directory)
    named = d.name == "eval" or d.name.startswith("eval-")
    return (
        RunDir(d).metrics.is_file() and not RunDir(d).config.is_file() and named and RunDir(d.parent).config.is_file()
    )


def eval_report(eval_dir: Path) -> str:
    """The page of an evaluation (``siamkit eval``, ``--as-test`` or not): which run scored what with which
    threshold, the verdict against the baselines, the metrics (small samples marked) and the figures."""
    metrics = _read_json(RunDir(eval_dir).metrics)
    run_dir = eval_dir.parent
    info = metrics.get("threshold_info")
    calibrated = RunDir(run_dir).is_calibrated()
    how = ("all of it as held-out test data (--as-test): no split, the run's threshold" if metrics.get("as_test")
           else "split as the run's data is, with the run's threshold")  # fmt: skip
    if not isinstance(info, dict) or info.get("threshold") is None:
        info = None
    saved = metrics.get("threshold")
    threshold = threshold_info_rows(info, calibrated) if info else [
        ("threshold (the run's)", "none saved with the run" if saved is None else saved)]  # fmt: skip
    summary = [
        ("run", str(run_dir.resolve())), ("data", metrics.get("data")), ("dataset", metrics.get("dataset")),
        ("scored", how),
        *((f"{split} images", n) for split, n in (metrics.get("split_sizes") or {}).items()),
        ("split", metrics.get("split")), *threshold,
        *test_decision_rows(metrics.get("test") or {}, rates=info is None),
    ]  # fmt: skip
    parts = []
    said = verdict(metrics)
    if said:
        parts.append(f"<p><b>{html.escape(said)}</b></p>")
    warning = (info or {}).get("warning")
    if warning:
        parts.append(f'<p class="note"><b>{html.escape(warning[0].upper() + warning[1:])}.</b></p>')
    parts.append("<h2>Summary</h2>" + html_table(["", "value"], [[k, v] for k, v in summary if v is not None]))
    parts.append(metrics_section(metrics))
    parts.append(PROTOCOL)
    parts.append(_episodes_section(metrics))
    for title, name in EVAL_SECTIONS:
        parts.append(f"<h2>{html.escape(title)}</h2>{_img(eval_dir / name, 'evaluation')}")
    if (run_dir / REPORT).is_file():
        parts.append(f'<p>The run\'s own report (training, config, history): <a href="../{REPORT}">../{REPORT}</a></p>')
    return _page(f"siamkit eval: {run_dir.name} on {metrics.get('dataset') or eval_dir.name}", parts)


def use_section(run_dir: Path) -> str:
    """How to use this run's model: the commands and the Python call, with its own path filled in."""
    run = html.escape(str(run_dir.resolve()))
    commands = "\n".join([
        f"siamkit verify {run} a.png b.png                 # same identity? (distance vs the threshold)",
        f"siamkit calibrate {run} --data pairs.csv --fpr 0.001   # a threshold for your false-accept rate",
        f"siamkit index build {run} my_images/ --out gallery   # a searchable gallery",
        "siamkit search gallery query.png -k 5",
        f"siamkit serve {run} --gallery gallery            # HTTP service and web page on 127.0.0.1:8000",
        f"siamkit export {run}                             # ONNX",
    ])  # fmt: skip
    python = (f"import siamkit\n"
              f"model = siamkit.load({run!r})\n"
              "model.verify('a.png', 'b.png')   # paths, PIL images or arrays → distance, threshold, same\n"
              "model.embed(images)              # (N, D) float32")  # fmt: skip
    return f"<h2>Use the model</h2><pre>{commands}</pre><pre>{python}</pre>"


def _num(v: str) -> Any:
    try:
        return float(v) if "." in v or "e" in v else int(v)
    except ValueError:
        return v


def classify_report(run_dir: Path) -> str:
    m = _read_json(RunDir(run_dir).metrics)
    keys = ("blocks", "dataset", "note", "trainable_parameters", "train_seconds", "epochs_run", "best_epoch",
            "best_val_accuracy", "test_accuracy")  # fmt: skip
    parts = ["<h2>Summary</h2>" + html_table(["", "value"], [[k, m.get(k)] for k in keys if m.get(k) is not None])]
    mc = m.get("most_confused", {})
    if mc:
        parts.append(f"<p>Most confused pair: {html.escape(' ↔ '.join(mc['names']))} ({mc['count']} mistakes)</p>")
    for title, name in CLASSIFY_SECTIONS:
        parts.append(f"<h2>{html.escape(title)}</h2>{_img(run_dir / name)}")
    return _page(f"siamkit classification run: {run_dir.name}", parts)


def study_report(study_dir: Path) -> str:
    study = _read_json(study_dir / STUDY_FILE)
    parts = [f"<p>{html.escape(study.get('description', ''))}</p>"]
    if study.get("command"):
        parts.append(f"<pre>{html.escape(study['command'])}</pre>")
    if study.get("best"):
        best = study["best"]
        parts.append("<h2>Best trial</h2>" + html_table(["", "value"], [[k, v] for k, v in best.items()]))
    for table in study.get("tables", []):
        best = table.get("best_row")
        note = "<p>The best row is highlighted.</p>" if best is not None else ""
        parts.append(f"<h2>{html.escape(table['title'])}</h2>{note}"
                     + html_table(table["columns"], table["rows"], best))  # fmt: skip
    for title, name in study.get("figures", []):
        parts.append(f"<h2>{html.escape(title)}</h2>{_img(study_dir / name)}")
    runs = [r for r in study.get("runs", []) if (study_dir / r / REPORT).is_file()]
    if runs:
        links = "".join(f'<li><a href="{html.escape(r)}/{REPORT}">{html.escape(r)}</a></li>' for r in runs)
        parts.append(f"<h2>Runs</h2><ul>{links}</ul>")
    return _page(f"siamkit study: {study.get('kind', '')} — {study_dir.name}", parts)


def write_report(directory: str | Path) -> Path:
    """(Re)write ``report.html`` for the run, classification run, evaluation (``RUN/eval-<data>/``) or study in
    ``directory``."""
    d = Path(directory)
    if (d / STUDY_FILE).is_file():
        text = study_report(d)
    elif RunDir(d).is_finished():
        is_classify = "blocks" in _read_json(RunDir(d).metrics)
        text = classify_report(d) if is_classify else run_report(d)
    elif is_eval_folder(d):
        text = eval_report(d)
    else:
        raise DataError(
            f"{d}: neither a run (metrics.json + config.yaml), an evaluation (RUN/eval-<data>/ with metrics.json) "
            f"nor a study ({STUDY_FILE}); give such a folder"
        )
    atomic_write_text(d / REPORT, text)
    return d / REPORT
