"""The evaluation report: `metrics.json`, `report.md`, a self-contained `report.html` and PNG plots.

`summarise` turns `schema.Judgment`-shaped rows (VLM judges and `human:<annotator>` verdicts alike)
into the metrics dict; `write_eval_report` renders it. The dict is plain JSON, so a report can be
rebuilt from `metrics.json` alone. Its shape (every key optional; missing ones drop their sections):

    {
      "meta": {"judge_prompt_version": "judge-v1", ...},   # free-form, shown as given
      "judged": [                       # one cell per (VLM judge, captioner, benchmark)
        {"judge": "qwen3-vl-235b", "model": "ours-8b", "benchmark": "eval-400",
         "n": 400,                                        # judgment rows
         "parse_failures": {"verdict": 3, "overall": 3},  # rows without one; left out, never guessed
         "overall": {"n": 397, "mean": 3.91, "ci_low": 3.82, "ci_high": 4.0},  # 1-5, 95% bootstrap
         "overall_histogram": {"1": 10, "1.5": 0, ..., "5": 120},  # half-point bins
         "verdicts": {"n": 397, "missing": 3,              # as `agreement.human_eval_rates`
                      "counts": {"correct": 250, ...}, "percent": {"correct": 62.97, ...}},
         "error_types": {"orientation": 40, "viewpoint": 12, "attribute": 30, "other": 5},
         "dimensions": {"correctness": {"n": 397, "mean": 4.1, "ci_low": ..., "ci_high": ...}, ...},
         "categories": {"camera_zoom": {"n": 80, "overall": {...}, "verdicts": {...}}, ...}}
      ],
      "human": [                        # one cell per (captioner, benchmark); `judge` is "human"
        {..., "n": 800, "items": 400, "annotators": 3,    # annotations, distinct instructions, people
         "inter_annotator": {"items": 120, "agreement": 0.81, "fleiss_kappa": 0.64}}
      ],
      "judge_vs_human": [               # as `metrics.judge_human_agreement`, per judged cell
        {"judge": ..., "model": ..., "benchmark": ..., "items": 390, "skipped": 10,
         "agreement": 0.78, "kappa": 0.6, "confusion": {"correct": {"correct": 200, ...}, ...}}
      ],
      "consistency": {"self_consistency": {...}, "position_swap": {...}},  # from `metrics`, as given
      "judge_passes": [...], "comparisons": [...], "captions": [...],  # the eval job's cells (`summaries`)
      "quarantine": {"eval-400": {"empty_file": 1}},
      "published": [                    # reference rows, labelled as published in every table
        {"model": "paper-8b", "benchmark": "eval-400", "source": "paper, table 2",
         "mean": 4.2, "correct": 71.0, "minor_error": 18.5, "critical_error": 10.5}
      ]
    }

`dimensions` and `categories` are empty when the rows carry no `scores` / `category`. Human rates are
over annotations (each person's verdict counts once); items judged by several people feed
`inter_annotator`, and their majority verdict (ties skipped) is what the judge is compared with.

One module per part: `summary` (rows → cells), `plots`, and the sections, each a function from cells
to `tables.Block`s (`scores`, `verdicts`, `judge_replies`, `human`, `comparisons`, `captions`);
`render` writes the blocks as Markdown and HTML. This module puts them in order and writes the files.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

from editcaption.evaluation.report.captions import caption_tables
from editcaption.evaluation.report.comparisons import comparison_table
from editcaption.evaluation.report.human import human_tables
from editcaption.evaluation.report.judge_replies import consistency_tables, parse_failure_tables, pass_table
from editcaption.evaluation.report.plots import category_plot, error_plot, score_plot
from editcaption.evaluation.report.render import html_page, markdown
from editcaption.evaluation.report.scores import category_tables, dimension_table, score_tables
from editcaption.evaluation.report.summary import summarise
from editcaption.evaluation.report.tables import Block, plain, table
from editcaption.evaluation.report.verdicts import error_table, verdict_table
from editcaption.io.fs import open_fs
from editcaption.redaction import redact

__all__ = ["summarise", "write_eval_report"]

METRICS = "metrics.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
SCORES_PNG = "score_distributions.png"
ERRORS_PNG = "error_types.png"
CATEGORIES_PNG = "categories.png"


def write_eval_report(metrics: dict[str, Any], out_dir: str) -> list[str]:
    """Write metrics.json, report.md, report.html and the plots there is data for; returns the names.
    The run's description (`meta`, from its config) is written with credentials masked."""
    if "meta" in metrics:
        metrics = {**metrics, "meta": redact(metrics["meta"])}
    fs, root = open_fs(out_dir)
    fs.makedirs(root, exist_ok=True)
    plots = {
        name: png
        for name, png in (
            (SCORES_PNG, score_plot(metrics.get("judged") or [])),
            (ERRORS_PNG, error_plot([*(metrics.get("judged") or []), *(metrics.get("human") or [])])),
            (CATEGORIES_PNG, category_plot(metrics.get("judged") or [])),
        )
        if png is not None
    }
    blocks = report_blocks(metrics, list(plots))
    files = {
        METRICS: json.dumps(metrics, indent=2, allow_nan=False).encode(),
        REPORT_MD: markdown(blocks).encode(),
        REPORT_HTML: html_page(blocks, plots).encode(),
        **plots,
    }
    for name, data in files.items():
        with fs.open(posixpath.join(root, name), "wb") as f:
            f.write(data)
    return list(files)


def report_blocks(metrics: dict[str, Any], plots: list[str]) -> list[Block]:
    """The report's sections in reading order; a section without data adds nothing."""
    judged, human = metrics.get("judged") or [], metrics.get("human") or []
    published = metrics.get("published") or []
    blocks: list[Block] = [("h1", "Evaluation report")]
    if metrics.get("meta"):
        blocks += [
            ("h2", "Run"),
            table(["key", "value"], [[k, plain(v)] for k, v in metrics["meta"].items()]),
        ]
    if judged or human:
        blocks += score_tables(judged, published)
        blocks += verdict_table(judged, human, published)
        blocks += parse_failure_tables(judged)
        blocks += pass_table(metrics.get("judge_passes") or [])
        blocks += dimension_table(judged)
        blocks += error_table([*judged, *human])
        blocks += category_tables([*judged, *human])
        blocks += human_tables(human, metrics.get("judge_vs_human") or [])
    else:
        blocks.append(("p", "No judgments to report."))
    blocks += comparison_table(metrics.get("comparisons") or [])
    blocks += caption_tables(metrics.get("captions") or [], metrics.get("quarantine") or {})
    blocks += consistency_tables(metrics.get("consistency") or {})
    if plots:
        blocks += [("h2", "Plots"), *(("img", name) for name in plots)]
    return blocks
