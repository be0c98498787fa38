"""Choose the EditScore filter thresholds from a labelled sample: `editcaption calibrate`.

The shipped thresholds (overall 6.0, SC 5.0) are guesses until they are checked against instructions
whose correctness is known: a review export (human verdicts) joined to the synthesis scores, or the
miniature world's drafts graded against its ground truth. Among all threshold pairs (each an observed
score, so every distinct filter is tried once), the chosen pair keeps the most instructions while the
kept ones are correct at least `target_precision` of the time. The precision/recall curve shows what a
stricter or looser filter would do.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

LABEL_COLUMNS = ("correct", "label", "verdict")
JOIN_KEYS = ("pair_id", "candidate_id", "instruction")


@dataclass(frozen=True)
class Cut:
    """One filter (keep overall >= min_overall and SC >= min_semantic_consistency) and how it does."""

    min_overall: float
    min_semantic_consistency: float
    kept: int
    kept_correct: int
    precision: float | None  # correct share of the kept; None when nothing is kept
    recall: float  # share of all correct instructions that are kept


@dataclass(frozen=True)
class Calibration:
    target_precision: float
    samples: int
    correct: int
    skipped_unscored: int
    chosen: Cut | None  # None when no filter reaches the target
    best_precision: Cut  # the most precise filter that keeps something, for when none reaches it
    curve: list[Cut]  # min_overall swept at the chosen SC threshold (or 0 when none reaches it)


def is_correct(value: Any) -> bool:
    """A label as written in review exports or graded drafts: a bool, 0/1, or a word."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value == 1
    if isinstance(value, str) and value.strip().lower() in ("correct", "true", "1", "yes"):
        return True
    if isinstance(value, str) and value.strip().lower() in (
        "incorrect",
        "false",
        "0",
        "no",
        "minor_error",
        "critical_error",
    ):
        return False
    raise ValueError(f"cannot read {value!r} as a correct/incorrect label")


def _cuts_at(
    rows: list[tuple[float, float, bool]], t_sc: float, overalls: list[float], correct: int
) -> list[Cut]:
    """Every min_overall at one SC threshold, from one sorted pass (sample size × thresholds stays cheap)."""
    eligible = sorted((overall, ok) for overall, sc, ok in rows if sc >= t_sc)
    values = [overall for overall, _ in eligible]
    hits_from = [0] * (len(eligible) + 1)  # correct rows at index i and above
    for i in range(len(eligible) - 1, -1, -1):
        hits_from[i] = hits_from[i + 1] + eligible[i][1]
    cuts = []
    for t_overall in overalls:
        start = bisect.bisect_left(values, t_overall)
        kept, hits = len(eligible) - start, hits_from[start]
        cuts.append(
            Cut(
                min_overall=t_overall,
                min_semantic_consistency=t_sc,
                kept=kept,
                kept_correct=hits,
                precision=hits / kept if kept else None,
                recall=hits / correct if correct else 0.0,
            )
        )
    return cuts


def calibrate(
    rows: list[tuple[float | None, float | None, bool]], target_precision: float = 0.9
) -> Calibration:
    """Thresholds for (overall, SC, correct) rows; rows without both scores (unparsed) are left out."""
    if not 0 < target_precision <= 1:
        raise ValueError(f"target precision must be in (0, 1], got {target_precision}")
    scored = [(float(o), float(s), ok) for o, s, ok in rows if o is not None and s is not None]
    if not scored:
        raise ValueError("no labelled row has both an overall and a semantic-consistency score")
    correct = sum(ok for _, _, ok in scored)
    overalls = sorted({o for o, _, _ in scored})
    scs = sorted({s for _, s, _ in scored})
    cuts = [c for t_s in scs for c in _cuts_at(scored, t_s, overalls, correct)]
    reaching = [c for c in cuts if c.precision is not None and c.precision >= target_precision]
    # Keep the most; then the more precise; then, among filters keeping the same sample, filter on the
    # overall score (the primary one) with the loosest SC threshold.
    chosen = max(
        reaching,
        key=lambda c: (c.kept, c.precision, -c.min_semantic_consistency, -c.min_overall),
        default=None,
    )
    best = max(
        (c for c in cuts if c.precision is not None),
        key=lambda c: (c.precision, c.kept, -c.min_semantic_consistency, -c.min_overall),
    )
    sc_at = chosen.min_semantic_consistency if chosen else scs[0]
    return Calibration(
        target_precision=target_precision,
        samples=len(scored),
        correct=correct,
        skipped_unscored=len(rows) - len(scored),
        chosen=chosen,
        best_precision=best,
        curve=[c for c in cuts if c.min_semantic_consistency == sc_at],
    )


def read_labelled(scores: str | Path, labels: str | Path | None = None) -> list[tuple[Any, Any, bool]]:
    """(overall, semantic_consistency, correct) rows from a Parquet or JSONL file with the scores and a
    label column (`correct`, `label` or a review `verdict`), or from scores plus a separate labels file
    joined on the keys they share (`pair_id`, `candidate_id`, `instruction`)."""
    table = _read(scores)
    if labels is not None:
        label_table = _read(labels)
        keys = [k for k in JOIN_KEYS if k in table.column_names and k in label_table.column_names]
        if not keys:
            raise ValueError(f"{scores} and {labels} share none of the join keys {', '.join(JOIN_KEYS)}")
        wanted = [c for c in label_table.column_names if c in keys or c in LABEL_COLUMNS]
        table = table.join(label_table.select(wanted), keys=keys, join_type="inner")
    for column in ("overall", "semantic_consistency"):
        if column not in table.column_names:
            raise ValueError(f"no `{column}` column (found: {', '.join(table.column_names)})")
    label = next((c for c in LABEL_COLUMNS if c in table.column_names), None)
    if label is None:
        raise ValueError(f"no label column: one of {', '.join(LABEL_COLUMNS)} is needed")
    data = table.select(["overall", "semantic_consistency", label]).to_pylist()
    return [(r["overall"], r["semantic_consistency"], is_correct(r[label])) for r in data]


def _read(path: str | Path) -> Any:
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    if path.suffix in (".jsonl", ".json"):
        return pajson.read_json(path)
    return pq.read_table(path)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def print_calibration(result: Calibration, console: Any) -> None:
    """The precision/recall curve as a table, and the chosen thresholds."""
    from rich.table import Table

    sc = result.curve[0].min_semantic_consistency
    table = Table(title=f"precision / recall by min_overall (min_semantic_consistency {sc:g})")
    for name in ("min_overall", "kept", "precision", "recall"):
        table.add_column(name, justify="right")
    for c in result.curve:
        mark = result.chosen is not None and c == result.chosen
        style = "bold green" if mark else None
        table.add_row(f"{c.min_overall:g}", str(c.kept), _fmt(c.precision), _fmt(c.recall), style=style)
    console.print(table)
    console.print(
        f"{result.samples} labelled instructions ({result.correct} correct), "
        f"{result.skipped_unscored} left out without both scores"
    )
    if result.chosen is None:
        b = result.best_precision
        console.print(
            f"[red]no thresholds reach precision {result.target_precision:g}[/red]; the most precise "
            f"keep {b.kept} at precision {_fmt(b.precision)} (min_overall {b.min_overall:g}, "
            f"min_semantic_consistency {b.min_semantic_consistency:g})"
        )
        return
    c = result.chosen
    console.print(
        f"filter:\n  min_overall: {c.min_overall:g}\n  min_semantic_consistency: {c.min_semantic_consistency:g}"
        f"\n# keeps {c.kept} of {result.samples}, precision {_fmt(c.precision)}, recall {_fmt(c.recall)}",
        highlight=False,
    )


def plot_calibration(result: Calibration, path: str | Path) -> None:
    """Precision and recall against min_overall, with the target and the chosen threshold marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [c.min_overall for c in result.curve]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(
        xs,
        [c.precision if c.precision is not None else float("nan") for c in result.curve],
        label="precision",
    )
    ax.plot(xs, [c.recall for c in result.curve], label="recall")
    ax.axhline(result.target_precision, linestyle=":", color="grey", label="target precision")
    if result.chosen is not None:
        ax.axvline(result.chosen.min_overall, linestyle="--", color="green", label="chosen min_overall")
    ax.set_xlabel(f"min_overall (min_semantic_consistency {result.curve[0].min_semantic_consistency:g})")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def calibrate_command(
    scores: Annotated[
        Path,
        typer.Option(
            help="Parquet or JSONL with `overall`, `semantic_consistency` and a label (`correct`, `label`, "
            "or a review `verdict`); or the synthesis scores when --labels gives the labels."
        ),
    ],
    target_precision: Annotated[
        float, typer.Option(help="Share of kept instructions that must be correct.")
    ] = 0.9,
    labels: Annotated[
        Path | None,
        typer.Option(
            help="Labels to join to --scores on pair_id / candidate_id / instruction (a review export)."
        ),
    ] = None,
    png: Annotated[Path | None, typer.Option(help="Also draw the precision/recall curve here.")] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the whole result as JSON here.")
    ] = None,
) -> None:
    """Choose the EditScore filter thresholds (min overall, min SC) that reach a target precision of
    kept instructions while keeping the most, and print the precision/recall curve. Exits 1 when no
    thresholds reach the target."""
    from rich.console import Console

    console = Console(soft_wrap=True)
    try:
        result = calibrate(read_labelled(scores, labels), target_precision)
    except ValueError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from e
    print_calibration(result, console)
    if png is not None:
        plot_calibration(result, png)
    if json_out is not None:
        json_out.write_text(json.dumps(asdict(result), indent=1) + "\n")
    if result.chosen is None:
        raise typer.Exit(1)
