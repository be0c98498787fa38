"""The human-readable run report of a synthesis job: score histograms and a Markdown summary.

A run's output is only trustworthy if every input pair is accounted for, so the report states the
identity input = kept + filtered + quarantined and shouts MISMATCH when it fails. It reads these
keys of the job's summary (missing optional ones are left out of the report):

- `pairs`, `kept`, `filtered`, `quarantined`, `routed_to_review`: pair counts;
- `quarantine_reasons`: {reason: count};
- `seconds`: wall time; `stage_seconds` (optional): {stage: seconds}; `new_pairs` (optional): pairs
  this run processed when it resumed an earlier one (throughput is over these);
- `thresholds` (optional): {"overall" / "semantic_consistency" / "perceptual_quality": threshold}, 0-10;
- `config` (optional): the job's config as plain data.
"""

from __future__ import annotations

import io
import posixpath
from typing import Any

import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from editcaption.io.fs import open_fs

HISTOGRAMS = "score_histograms.png"
REPORT = "report.md"
_BINS = [i / 2 for i in range(21)]  # 0, 0.5, ..., 10: EditScore's 0-10 scale in half points
_COUNTS = ("pairs", "kept", "filtered", "quarantined")


def write_report(
    summary: dict[str, Any],
    overall_scores: list[float],
    sc_scores: list[float],
    pq_scores: list[float],
    out_dir: str,
) -> list[str]:
    """Write `score_histograms.png` and `report.md` into `out_dir` (path or URI); returns their names."""
    fs, root = open_fs(out_dir)
    fs.makedirs(root, exist_ok=True)
    thresholds = summary.get("thresholds") or {}
    png = _histograms(
        [("overall", overall_scores), ("semantic_consistency", sc_scores), ("perceptual_quality", pq_scores)],
        thresholds,
    )
    with fs.open(posixpath.join(root, HISTOGRAMS), "wb") as f:
        f.write(png)
    with fs.open(posixpath.join(root, REPORT), "w", encoding="utf-8") as f:
        f.write(_markdown(summary, overall_scores, thresholds.get("overall")))
    return [HISTOGRAMS, REPORT]


def identity_check(summary: dict[str, Any]) -> tuple[bool, str]:
    """(holds, sentence) for input = kept + filtered + quarantined, and quarantine reasons = quarantined."""
    missing = [key for key in _COUNTS if summary.get(key) is None]
    if missing:
        return False, f"**MISMATCH**: the summary has no {', '.join(missing)} count, so pairs may be lost."
    pairs, kept, filtered, quarantined = (summary[key] for key in _COUNTS)
    total = kept + filtered + quarantined
    if total != pairs:
        return False, (
            f"**MISMATCH**: input {pairs} ≠ kept + filtered + quarantined = "
            f"{kept} + {filtered} + {quarantined} = {total} ({pairs - total:+d} pairs unaccounted for)."
        )
    reasons = summary.get("quarantine_reasons") or {}
    if reasons and sum(reasons.values()) != quarantined:
        return False, (
            f"**MISMATCH**: quarantine reasons add up to {sum(reasons.values())}, "
            f"but {quarantined} pairs are quarantined."
        )
    return (
        True,
        f"Input = kept + filtered + quarantined holds: {pairs} = {kept} + {filtered} + {quarantined}.",
    )


def _histograms(panels: list[tuple[str, list[float]]], thresholds: dict[str, float | None]) -> bytes:
    """One histogram per score on the 0-10 scale, with the keep threshold where that score has one."""
    fig = Figure(figsize=(12, 3.5), layout="constrained")
    FigureCanvasAgg(fig)  # render with Agg: no display, no pyplot global state
    for ax, (key, scores) in zip(fig.subplots(1, len(panels)), panels, strict=True):
        if scores:
            ax.hist(scores, bins=_BINS, color="#4c72b0", edgecolor="white")
        else:
            ax.text(0.5, 0.5, "no scores", ha="center", va="center", transform=ax.transAxes)
        threshold = thresholds.get(key)
        if threshold is not None:
            ax.axvline(threshold, color="#c44e52", linestyle="--", label=f"threshold {threshold:g}")
            ax.legend(loc="upper left")
        ax.set(
            title=f"{key.replace('_', ' ')} (n={len(scores)})",
            xlim=(0, 10),
            xlabel="score (0-10)",
            ylabel="count",
        )
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _markdown(summary: dict[str, Any], overall_scores: list[float], threshold: float | None) -> str:
    holds, identity = identity_check(summary)
    lines = ["# Synthesis run report", "", identity if holds else f"> {identity}", "", "## Counts", ""]
    lines += ["| outcome | pairs |", "|---|---:|"]
    for label, key in (("input", "pairs"), ("kept", "kept"), ("filtered", "filtered")):
        lines.append(f"| {label} | {_count(summary.get(key))} |")
    lines.append(f"| quarantined | {_count(summary.get('quarantined'))} |")
    for reason, count in sorted((summary.get("quarantine_reasons") or {}).items()):
        lines.append(f"| &nbsp;&nbsp;quarantined: {reason} | {count} |")
    lines += [f"| routed to review | {_count(summary.get('routed_to_review'))} |", ""]

    lines += ["## Time and throughput", "", *_throughput(summary), ""]

    stats = "No overall scores."
    if overall_scores:
        stats = f"{len(overall_scores)} overall scores, mean {sum(overall_scores) / len(overall_scores):.2f}."
    if threshold is not None:
        stats += f" Keep threshold on overall: {threshold:g}."
    lines += ["## Scores", "", f"![score histograms]({HISTOGRAMS})", "", stats, ""]

    lines += _checks(summary.get("checks") or {})

    config = summary.get("config")
    lines += ["## Config", ""]
    if config is None:
        lines.append("Not recorded in the summary.")
    else:
        lines += ["```yaml", yaml.safe_dump(config, sort_keys=False).rstrip(), "```"]
    return "\n".join(lines) + "\n"


def _checks(checks: dict[str, Any]) -> list[str]:
    """The failure-mode checks' findings, when the run had them on."""
    flip, lint = checks.get("flip_consistency"), checks.get("viewpoint_lint")
    if flip is None and lint is None:
        return []
    lines = ["## Failure-mode checks", ""]
    if flip is not None:
        rate = "n/a (no applicable pair)" if flip["rate"] is None else f"{flip['rate']:.1%}"
        lines.append(
            f"Flip consistency: {rate} of {flip['applicable']} applicable pairs "
            f"({flip['inconsistent']} inconsistent, sent to review; {flip['not_applicable']} not applicable)."
        )
    if lint is not None:
        found = ", ".join(f"{kind}: {n}" for kind, n in sorted(lint.items())) or "none"
        lines.append(f"Viewpoint lint findings on best instructions: {found}.")
    return [*lines, ""]


def _throughput(summary: dict[str, Any]) -> list[str]:
    """Rates over the pairs this run processed: a resumed run's `seconds` cover only its `new_pairs`."""
    pairs, seconds = summary.get("new_pairs", summary.get("pairs")), summary.get("seconds")
    if seconds is None:
        return ["Wall time: not recorded."]
    lines = [f"Wall time: {seconds:.1f} s.", "", "| stage | seconds | pairs/s |", "|---|---:|---:|"]
    stages = {"whole run": seconds, **(summary.get("stage_seconds") or {})}
    for stage, secs in stages.items():
        rate = f"{pairs / secs:.2f}" if pairs is not None and secs > 0 else "—"
        lines.append(f"| {stage} | {secs:.1f} | {rate} |")
    return lines


def _count(value: int | None) -> str:
    return "missing" if value is None else str(value)
