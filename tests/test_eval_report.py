"""A report for every evaluation: ``eval --as-test`` writes report.html in its own folder, with that evaluation's
figures and numbers, ``siamkit report`` rewrites it from the folder, and small-sample TPR figures carry the
terminal's ``*`` and its footnote in the page's tables."""

from __future__ import annotations

import base64
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

from siamkit.cli import main
from siamkit.report import SMALL_SAMPLE_NOTE, metrics_rows, metrics_section

VOID = {"meta", "img", "br", "hr", "link", "input"}


class Page(HTMLParser):
    """The page's images (alt → PNG bytes), table rows (text cells) and paragraphs, checking every element closes
    in order."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.images: dict[str, bytes] = {}
        self.rows: list[list[str]] = []
        self.paragraphs: list[str] = []
        self._text: list[str] | None = None
        self.feed(text)
        self.close()
        assert not self.stack, f"unclosed: {self.stack}"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            src = a.get("src") or ""
            assert src.startswith("data:image/png;base64,")  # embedded: the page works offline
            self.images[a.get("alt") or ""] = base64.b64decode(src.partition(",")[2])
        if tag in VOID:
            return
        self.stack.append(tag)
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th", "p"):
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()
        if tag in ("td", "th") and self._text is not None:
            self.rows[-1].append("".join(self._text))
        if tag == "p" and self._text is not None:
            self.paragraphs.append("".join(self._text))
        if tag in ("td", "th", "p"):
            self._text = None

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)

    def row(self, name: str) -> list[str]:
        return next(r for r in self.rows if r and r[0] == name)


def _held_out(digits_images: Path, to: Path, per_class: int = 6) -> Path:
    """A small labelled folder (a few images per digit): few impostor pairs, so TPR@0.001 is a small sample."""
    for folder in sorted(p for p in digits_images.iterdir() if p.is_dir()):
        (to / folder.name).mkdir(parents=True)
        for f in sorted(folder.glob("*.png"))[:per_class]:
            shutil.copy(f, to / folder.name / f.name)
    return to


def test_eval_as_test_writes_its_report_and_siamkit_report_accepts_the_folder(small_run, digits_images, tmp_path,
                                                                              capsys):  # fmt: skip
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    held = _held_out(digits_images, tmp_path / "held")
    argv = ["eval", str(run), "--data", str(held), "--as-test", "--episodes", "0", "--set", "eval.tsne_points=0"]
    assert main([*argv, "--format", "json"]) == 0
    r = json.loads(capsys.readouterr().out)
    eval_dir = Path(r["eval_dir"])
    page_file = eval_dir / "report.html"
    assert eval_dir == run / "eval-held" and r["report"] == str(page_file) and page_file.is_file()
    page = Page(page_file.read_text())

    # the evaluation's own figures, embedded (not the run's)
    for name in ("roc", "distances", "neighbours"):
        assert page.images[name] == (eval_dir / f"{name}.png").read_bytes()
    assert page.images["roc"] != (run / "roc.png").read_bytes()
    assert "loss_curve" not in page.images  # nothing trained here

    # its numbers: the test row and one per baseline, the threshold it was scored with and where it holds
    test = r["test"]
    row = page.row("test")
    assert row[1] == f"{test['auc']:.4f}" and row[8] == f"{test['map_at_r']:.4f}"
    table = page.rows[page.rows.index(["split", "AUC", "EER", "TPR@0.5", "TPR@0.1", "TPR@0.01", "TPR@0.001", "P@1",
                                       "MAP@R", "VerAcc", "SimAcc"]) + 1 :]  # fmt: skip
    assert [r[0] for r in table[:4]] == ["test", "test: raw pixels", "test: untrained net", "test: descriptor"]
    assert page.row("threshold in use")[1] == f"{r['threshold']:.4f}"
    assert page.row("test images")[1] == str(r["split_sizes"]["test"])
    on_this = next(k for k in (r[0] for r in page.rows) if k.startswith("false-accept / false-reject rate, test:"))
    assert "held (all of it, as test data)" in on_this

    # small samples marked as on the terminal, with the footnote
    unreliable = [t for t in test["tpr_at_fpr"] if not t["reliable"]]
    assert unreliable  # 60 images: too few impostor pairs behind FPR 0.001
    cells = row[3:7]
    assert cells == [f"{t['tpr_interpolated']:.4f}" + ("" if t["reliable"] else "*") for t in test["tpr_at_fpr"]]
    assert f"{SMALL_SAMPLE_NOTE}." in page.paragraphs
    assert main(argv) == 0  # the terminal's table marks the same cells, with the same footnote
    out = capsys.readouterr().out
    assert f"({SMALL_SAMPLE_NOTE})" in out and f"{unreliable[0]['tpr_interpolated']:.4f}*" in out
    assert f"report: {run / 'eval-held-2' / 'report.html'}" in out

    # siamkit report rewrites the page from the folder alone
    page_file.unlink()
    assert main(["report", str(eval_dir)]) == 0
    assert capsys.readouterr().out.strip() == f"written: {page_file}"
    assert Page(page_file.read_text()).row("test") == row


def test_report_refuses_a_folder_that_is_neither_in_one_line(tmp_path, capsys):
    (tmp_path / "eval-x").mkdir()
    assert main(["report", str(tmp_path / "eval-x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "evaluation" in err and err.count("\n") == 0


def _tpr(values, reliable):
    return [{"fpr": f, "tpr_interpolated": v, "reliable": ok}
            for f, v, ok in zip((0.5, 0.1, 0.01, 0.001), values, reliable, strict=True)]  # fmt: skip


def test_the_run_report_marks_small_samples_and_explains_the_mark(small_run):
    m = {"test": {"auc": 0.9, "tpr_at_fpr": _tpr([0.9, 0.8, 0.5, 0.25], [True, True, True, False])},
         "baselines": {"pixels": {"test": {"auc": 0.7, "tpr_at_fpr": _tpr([0.8, 0.6, 0.3, 1.0],
                                                                       [True, True, False, False])}}}}  # fmt: skip
    rows = metrics_rows(m, marks=True)
    assert rows[0][3:7] == [0.9, 0.8, 0.5, "0.2500*"] and rows[1][3:7] == [0.8, 0.6, "0.3000*", "1.0000*"]
    assert metrics_rows(m)[0][6] == 0.25  # a CSV's cells stay numbers
    assert SMALL_SAMPLE_NOTE in metrics_section(m)
    m["test"]["tpr_at_fpr"][3]["reliable"] = True
    del m["baselines"]
    assert SMALL_SAMPLE_NOTE not in metrics_section(m)  # no mark, no footnote
    # a training run's page: the marks of its metrics.json, the footnote when there is one
    metrics = json.loads((small_run / "metrics.json").read_text())
    from siamkit.report import write_report

    page = Page(write_report(small_run).read_text())
    for split in ("train", "validation", "test"):
        want = [f"{t['tpr_interpolated']:.4f}" + ("" if t["reliable"] else "*") for t in metrics[split]["tpr_at_fpr"]]
        assert page.row(split)[3:7] == want
    starred = any(not t["reliable"] for s in ("train", "validation", "test") for t in metrics[s]["tpr_at_fpr"])
    assert (f"{SMALL_SAMPLE_NOTE}." in page.paragraphs) == starred
