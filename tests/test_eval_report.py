"""The evaluation report: metrics from judgment rows, and files that survive empty or partial metrics."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from editcaption.evaluation.metrics import bootstrap_ci
from editcaption.evaluation.report import summarise, write_eval_report


def _row(pair: str, model: str, benchmark: str, judge: str, verdict: str | None, **extra: object) -> dict:
    errors = [] if verdict in (None, "correct") else ["orientation"]
    return {
        "pair_id": pair,
        "instruction": f"{model}: turn the chair to face the viewer's left ({pair})",
        "model": model,
        "benchmark": benchmark,
        "judge": judge,
        "verdict": verdict,
        "error_types": errors,
        "overall": None,
        **extra,
    }


def _judged(
    pair: str, model: str, benchmark: str, verdict: str | None, overall: float | None, **extra: object
):
    scores = {} if overall is None else {"correctness": overall, "orientation": max(1, overall - 1)}
    return _row(pair, model, benchmark, "vlm-judge", verdict, overall=overall, scores=scores, **extra)


OURS = [5, 4, 4, 5, 3, 2, 4, 5]
VERDICT_OF = {5: "correct", 4: "correct", 3: "minor_error", 2: "critical_error"}


def _rows() -> list[dict]:
    rows = []
    for i, score in enumerate(OURS):
        category = "camera" if i % 2 else "object"
        rows.append(_judged(f"p{i}", "ours", "bytemorph", VERDICT_OF[score], score, category=category))
        rows.append(_judged(f"p{i}", "base", "bytemorph", "critical_error", 2, category=category))
        rows.append(_judged(f"q{i}", "ours", "eval-400", VERDICT_OF[score], score))
    rows.append(_judged("p8", "ours", "bytemorph", None, None, category="camera"))  # two parse failures
    rows.append(_judged("p9", "ours", "bytemorph", None, None, category="object"))
    # Humans on ours/bytemorph: p0 and p1 by two people (agreeing / tied), p5 by one.
    rows += [
        _row("p0", "ours", "bytemorph", "human:ann", "correct"),
        _row("p0", "ours", "bytemorph", "human:bob", "correct"),
        _row("p1", "ours", "bytemorph", "human:ann", "correct"),
        _row("p1", "ours", "bytemorph", "human:bob", "minor_error"),
        _row("p5", "ours", "bytemorph", "human:ann", "minor_error"),
        _row("p6", "ours", "bytemorph", "human:ann", None),
    ]
    return rows


PUBLISHED = [
    {
        "model": "paper-8b",
        "benchmark": "bytemorph",
        "source": "paper, table 2",
        "mean": 4.3,
        "correct": 70.0,
        "minor_error": 20.0,
        "critical_error": 10.0,
    }
]


@pytest.fixture(scope="module")
def metrics() -> dict:
    return summarise(_rows(), published=PUBLISHED)


def _cell(cells: list[dict], model: str, benchmark: str) -> dict:
    (cell,) = [c for c in cells if c["model"] == model and c["benchmark"] == benchmark]
    return cell


def test_summarise_judged_cells(metrics: dict) -> None:
    assert [(c["model"], c["benchmark"]) for c in metrics["judged"]] == [
        ("base", "bytemorph"),
        ("ours", "bytemorph"),
        ("ours", "eval-400"),
    ]
    ours = _cell(metrics["judged"], "ours", "bytemorph")
    assert ours["judge"] == "vlm-judge" and ours["n"] == 10
    assert ours["parse_failures"] == {"verdict": 2, "overall": 2}
    mean, low, high = bootstrap_ci(OURS)
    assert ours["overall"] == {"n": 8, "mean": pytest.approx(np.mean(OURS)), "ci_low": low, "ci_high": high}
    assert low < mean < high
    assert ours["overall_histogram"] == {
        "1": 0,
        "1.5": 0,
        "2": 1,
        "2.5": 0,
        "3": 1,
        "3.5": 0,
        "4": 3,
        "4.5": 0,
        "5": 3,
    }
    assert ours["verdicts"]["counts"] == {"correct": 6, "minor_error": 1, "critical_error": 1}
    assert ours["verdicts"]["missing"] == 2
    assert ours["error_types"] == {"orientation": 2, "viewpoint": 0, "attribute": 0, "other": 0}
    assert list(ours["dimensions"]) == ["correctness", "orientation"]
    assert ours["dimensions"]["correctness"]["mean"] == pytest.approx(np.mean(OURS))
    assert ours["categories"]["camera"]["n"] == 5 and ours["categories"]["camera"]["overall"]["n"] == 4
    assert _cell(metrics["judged"], "ours", "eval-400")["categories"] == {}


def test_summarise_human_cells_and_agreement(metrics: dict) -> None:
    (human,) = metrics["human"]
    assert (human["model"], human["benchmark"], human["judge"]) == ("ours", "bytemorph", "human")
    assert human["n"] == 6 and human["items"] == 4 and human["annotators"] == 2
    assert human["verdicts"]["counts"] == {"correct": 3, "minor_error": 2, "critical_error": 0}
    assert human["verdicts"]["missing"] == 1
    assert human["inter_annotator"]["items"] == 2
    assert human["inter_annotator"]["agreement"] == pytest.approx(0.5)

    (versus,) = metrics["judge_vs_human"]
    assert (versus["judge"], versus["model"], versus["benchmark"]) == ("vlm-judge", "ours", "bytemorph")
    # p0: both correct; p5: judge critical, human minor; p1 tied and p6 unlabelled: skipped.
    assert versus["items"] == 2 and versus["skipped"] == 2
    assert versus["agreement"] == pytest.approx(0.5)
    assert versus["confusion"]["critical_error"]["minor_error"] == 1
    assert metrics["published"] == PUBLISHED


def test_summarise_rejects_rows_outside_the_schema() -> None:
    with pytest.raises(ValueError):
        summarise([_judged("p0", "ours", "b", "mostly_fine", 4)])
    with pytest.raises(ValueError):
        summarise([{**_judged("p0", "ours", "b", "correct", 4), "scores": {"correctness": "high"}}])
    with pytest.raises(ValueError):
        summarise([{k: v for k, v in _judged("p0", "ours", "b", "correct", 4).items() if k != "model"}])


def test_full_report(metrics: dict, tmp_path: Path) -> None:
    metrics = {**metrics, "meta": {"judge_prompt_version": "judge-v1"}}
    metrics["consistency"] = {"position_swap": {"pairs": 10, "consistent": 8, "agreement": 0.8}}
    names = write_eval_report(metrics, str(tmp_path / "out"))
    assert names == [
        "metrics.json",
        "report.md",
        "report.html",
        "score_distributions.png",
        "error_types.png",
        "categories.png",
    ]
    out = tmp_path / "out"
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    for png in names[3:]:
        assert Image.open(out / png).format == "PNG"

    md = (out / "report.md").read_text()
    ours = _cell(metrics["judged"], "ours", "bytemorph")["overall"]
    ci = f"{ours['mean']:.2f} [{ours['ci_low']:.2f}, {ours['ci_high']:.2f}] (n=8)"
    assert "| model | bytemorph | eval-400 |" in md and f"| ours | {ci} |" in md
    assert "| paper-8b (published: paper, table 2) | 4.30 |  |" in md
    assert "2 of 26 judge replies gave no verdict" in md
    assert "| vlm-judge | ours | bytemorph | 10 | 2 | 2 |" in md
    assert "| human | ours | bytemorph | 5 | 60.0% (3) | 40.0% (2) | 0.0% (0) |" in md
    assert "70.0% | 20.0% | 10.0% |" in md
    for section in ("Per dimension", "Error types", "Per category", "Human evaluation", "Judge vs human"):
        assert f"## {section}" in md
    assert "Judge consistency: position swap" in md and "judge-v1" in md
    assert "![categories.png](categories.png)" in md

    page = (out / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "<table>" in page
    assert "<th>bytemorph</th><th>eval-400</th>" in page and f"<td>{ci}</td>" in page
    assert 'class="alert"' in page
    images = re.findall(r'src="([^"]+)"', page)
    assert len(images) == 3 and all(src.startswith("data:image/png;base64,") for src in images)
    assert base64.b64decode(images[0].split(",", 1)[1]) == (out / "score_distributions.png").read_bytes()


def test_empty_metrics(tmp_path: Path) -> None:
    for i, metrics in enumerate(({}, summarise([]))):
        out = tmp_path / str(i)
        assert write_eval_report(metrics, str(out)) == ["metrics.json", "report.md", "report.html"]
        assert "No judgments to report." in (out / "report.md").read_text()
        assert "No judgments to report." in (out / "report.html").read_text()
        assert json.loads((out / "metrics.json").read_text()) == metrics


def test_human_only_and_clean_judge_runs(tmp_path: Path) -> None:
    human = summarise([r for r in _rows() if r["judge"].startswith("human:")])
    names = write_eval_report(human, str(tmp_path / "human"))
    assert names == ["metrics.json", "report.md", "report.html", "error_types.png"]
    md = (tmp_path / "human" / "report.md").read_text()
    assert "## Human evaluation" in md and "## Judge scores" not in md and "Judge vs human" not in md
    assert "Parse failures" not in md

    clean = summarise([r for r in _rows() if r["benchmark"] == "eval-400"])
    names = write_eval_report(clean, str(tmp_path / "clean"))
    assert "categories.png" not in names and "score_distributions.png" in names
    md = (tmp_path / "clean" / "report.md").read_text()
    assert "All 8 judge replies parsed." in md and "Per category" not in md and "Human evaluation" not in md
