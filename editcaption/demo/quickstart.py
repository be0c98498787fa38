"""`make demo` (= `editcaption quickstart`): Stage 1 synthesis that shows real output in minutes.

The committed miniature annotator and scorer (`data/miniature/`) run the real synthesis job on pairs
whose right answer is known: miniature-world pairs drawn from `WORLD_SEED` (the ground truth sits in
each pair's `meta.json`), next to the 30 bundled sample pairs. The kept instructions are then graded
against that ground truth with `grading.grade`, the share that is correct goes into `report.md`, and
the terminal gets a short summary and the commands that take this output further.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from editcaption.demo.world import WorldPair

# A world seed of its own: the miniature models were trained and checked on seeds 0, 7 and 1_000_003,
# and 2_000_003 / 3_000_003 are kept for their dev and test splits.
WORLD_SEED = 4_000_003
WORLD_PAIRS = 80
WORLD_PREFIX = "world"
SAMPLE_PAIRS = Path(__file__).resolve().parent.parent / "data" / "sample_pairs"
INPUTS = "inputs"
DEMO_OUTPUT = "runs/demo"  # where the demo configs of the next stages (train-*-demo, eval-demo) read from
GROUND_TRUTH = "ground_truth.json"
SHOWN_PAIRS = 3
CONFIG_HEADING = "## Config\n"
WIDTH = 120  # columns when the output is not a terminal (a log, a test, the README)


def write_inputs(folder: Path, world_pairs: int = WORLD_PAIRS, seed: int = WORLD_SEED) -> list[WorldPair]:
    """The demo's input folder: world pairs (`<id>/source.png, target.png, meta.json`) and a copy of
    the sample pairs, in the one folder layout the job reads. Same seed, same files."""
    from editcaption.demo.world import WorldConfig, generate, write_pairs

    pairs = list(generate(world_pairs, WorldConfig(seed=seed), prefix=WORLD_PREFIX))
    write_pairs(pairs, folder)
    shutil.copytree(SAMPLE_PAIRS, folder, dirs_exist_ok=True)
    return pairs


def grade_kept(output: str | Path, world: list[WorldPair]) -> dict[str, Any]:
    """Kept and filtered world pairs, and how many kept instructions are correct (exactly the canonical
    instruction) or which error they make, graded against the world's ground truth."""
    from editcaption.demo.grading import grade
    from editcaption.synthesis.shards import iter_committed

    truth = {pair.pair_id: pair for pair in world}
    columns = ["pair_id", "status", "best_instruction", "best_overall", "filter_reason"]
    rows = [r for r in iter_committed(str(Path(output) / "pairs"), columns=columns) if r["pair_id"] in truth]
    kept = [r for r in rows if r["status"] == "kept"]
    graded = {r["pair_id"]: grade(r["best_instruction"], truth[r["pair_id"]]) for r in rows}
    correct_kept = sum(graded[r["pair_id"]].exact for r in kept)
    filtered = [r for r in rows if r["status"] == "filtered"]
    return {
        "world_pairs": len(world),
        "world_pairs_done": len(rows),
        "kept": len(kept),
        "kept_share": len(kept) / len(world) if world else None,
        "kept_correct": correct_kept,
        "kept_correct_share": correct_kept / len(kept) if kept else None,
        "kept_errors": dict(
            Counter(graded[r["pair_id"]].error_type for r in kept if not graded[r["pair_id"]].exact)
        ),
        "filtered": len(filtered),
        "filtered_correct": sum(graded[r["pair_id"]].exact for r in filtered),
        "examples": [
            {
                "pair_id": r["pair_id"],
                "kind": truth[r["pair_id"]].kind,
                "kept_instruction": r["best_instruction"],
                "ground_truth": truth[r["pair_id"]].instruction,
                "verdict": _verdict(graded[r["pair_id"]]),
                "overall": r["best_overall"],
            }
            for r in sorted(kept, key=lambda r: r["pair_id"])[:SHOWN_PAIRS]
        ],
    }


def _verdict(g: Any) -> str:
    return "correct" if g.exact else f"{g.error_type} error ({g.severity})"


def report_section(result: dict[str, Any]) -> str:
    """The ground-truth section appended to the run's report.md."""
    share = result["kept_correct_share"]
    lines = [
        "## Ground truth (miniature-world pairs)",
        "",
        f"{result['world_pairs']} world pairs (seed {result['world_seed']}) have a known right instruction. "
        f"Kept: {result['kept']} of them ({_pct(result['kept_share'])}); "
        f"**correct share of kept instructions: {_pct(share)}** ({result['kept_correct']} of {result['kept']}, "
        "exact match with the canonical instruction, graded by `editcaption/demo/grading.py`).",
        "",
        "| error in a kept instruction | pairs |",
        "|---|---:|",
        *[f"| {kind} | {n} |" for kind, n in sorted(result["kept_errors"].items())],
        "",
        f"Filtered world pairs: {result['filtered']}, of which {result['filtered_correct']} had a correct "
        "best instruction (what the filter threw away that it should have kept).",
        "",
    ]
    return "\n".join(lines) + "\n"


def add_to_report(report: Path, section: str) -> None:
    """Put the section before the report's config dump (the last section), where it is seen."""
    text = report.read_text(encoding="utf-8")
    head, marker, config = text.rpartition(CONFIG_HEADING)
    report.write_text(head + section + marker + config if marker else text + section, encoding="utf-8")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def overall_histogram(output: str | Path, bins: int = 10) -> list[tuple[str, int]]:
    """Best-candidate overall scores of every scored pair, in `bins` bins over EditScore's 0-10."""
    from editcaption.synthesis.shards import iter_committed

    counts = [0] * bins
    for row in iter_committed(str(Path(output) / "pairs"), columns=["pair_id", "best_overall"]):
        if row["best_overall"] is not None:
            counts[min(bins - 1, int(row["best_overall"] / 10 * bins))] += 1
    width = 10 / bins
    used = [i for i, n in enumerate(counts) if n]
    if not used:
        return []
    return [(f"{i * width:g}-{(i + 1) * width:g}", counts[i]) for i in range(used[0], used[-1] + 1)]


def next_steps(output: str) -> list[tuple[str, str]]:
    """(stage, command) to run on this output; the demo configs read `DEMO_OUTPUT`, so another output
    folder is passed with --set."""
    store = f"sqlite:///{output}/review.db"
    moved = output.rstrip("/") != DEMO_OUTPUT
    train_in = f" --set input={output}" if moved else ""
    dpo_in = f" --set input={output}/{INPUTS}" if moved else ""
    eval_in = f" --set benchmarks.0.uri={output}/{INPUTS}" if moved else ""
    return [
        ("review", f"editcaption review user add me --store {store}"),
        ("", f"editcaption review import --store {store} --from {output} --kind refine"),
        ("", f"editcaption review serve --store {store}"),
        ("train", f"editcaption train sft --config ray_jobs/configs/train-sft-demo.yaml{train_in}"),
        ("", f"editcaption train dpo --config ray_jobs/configs/train-dpo-demo.yaml{dpo_in}"),
        ("eval", f"editcaption eval --config ray_jobs/configs/eval-demo.yaml{eval_in}"),
        (
            "serve",
            "editcaption serve --config serve_configs/miniature.yaml --set model=runs/train/dpo-demo/model",
        ),
    ]


def print_summary(
    console: Console,
    summary: dict[str, Any],
    result: dict[str, Any],
    histogram: list[tuple[str, int]],
    steps: list[tuple[str, str]],
    output: str,
    log_path: Path | None,
) -> None:
    """What the terminal shows after the run: counts, the ground-truth figure, three kept pairs, a
    histogram of scores, the output files and what to run next (well under 60 lines)."""
    console.print(
        f"{summary['pairs']} pairs in {summary['seconds']:.0f} s: kept {summary['kept']}, "
        f"filtered {summary['filtered']}, quarantined {summary['quarantined']}, "
        f"routed to review {summary['routed_to_review']}",
        highlight=False,
    )
    console.print(
        f"world pairs kept: {result['kept']}/{result['world_pairs']} ({_pct(result['kept_share'])}); "
        f"correct share of kept instructions: {_pct(result['kept_correct_share'])} "
        f"({result['kept_correct']}/{result['kept']}, graded against the world's ground truth)",
        highlight=False,
    )
    table = Table(title=None, show_edge=False, pad_edge=False, box=None, header_style="bold")
    for column in ("pair", "kept instruction", "ground truth", "verdict"):
        table.add_column(column, overflow="fold")
    for ex in result["examples"]:
        table.add_row(ex["pair_id"], ex["kept_instruction"], ex["ground_truth"], ex["verdict"])
    console.print(table)
    if histogram:
        console.print("best overall score (EditScore 0-10), pairs:", highlight=False)
        peak = max(n for _, n in histogram)
        for label, n in histogram:
            console.print(
                f"  {label:>5} {'█' * max(1 if n else 0, round(24 * n / peak)):<24} {n}", highlight=False
            )
    console.print(
        f"outputs: {output}/ (report.md, sft.parquet, filtered.parquet, review_queue.parquet)",
        highlight=False,
    )
    if log_path is not None:  # as the outputs are named: relative to where the user stands
        shown = log_path.relative_to(Path.cwd()) if log_path.is_relative_to(Path.cwd()) else log_path
        console.print(f"log: {shown}", highlight=False)
    console.print("next, on this output:", highlight=False)
    for stage, command in steps:
        console.print(f"  {stage:<7}{command}", highlight=False, soft_wrap=True)


def run_quickstart(
    config: str | Path,
    output: str | None = None,
    world_pairs: int = WORLD_PAIRS,
    resume: bool = False,
    verbose: bool = False,
) -> dict[str, Any]:
    """Write the inputs, run the synthesis job quietly, grade it, extend its report, print the summary."""
    from editcaption.config import load_config
    from editcaption.paths import resolve_config_paths
    from editcaption.progress import run_synthesis_job
    from editcaption.synthesis.config import SynthesisConfig

    cfg = load_config(config, SynthesisConfig, {"output": output})
    shown = cfg.output  # as typed, so the printed commands can be pasted
    if not resume:
        start_over(Path(cfg.output))
    inputs = Path(cfg.output) / INPUTS
    world = write_inputs(inputs, world_pairs)
    cfg = resolve_config_paths(cfg.model_copy(update={"input": str(inputs)}))
    summary, log_path = run_synthesis_job(cfg, verbose=verbose, job="quickstart")
    result = {**grade_kept(cfg.output, world), "world_seed": WORLD_SEED}
    (Path(cfg.output) / GROUND_TRUTH).write_text(json.dumps(result, indent=1) + "\n")
    add_to_report(Path(cfg.output) / "report.md", report_section(result))
    print_summary(
        Console(width=None if sys.stdout.isatty() else WIDTH),
        summary,
        result,
        overall_histogram(cfg.output),
        next_steps(shown),
        shown,
        log_path,
    )
    return {"summary": summary, "ground_truth": result}


def start_over(output: Path) -> None:
    """Drop the committed pairs of an earlier demo run (the only thing a rerun would resume from), so
    the run reflects the models and code as they are now. Refuses a folder that is not a demo run."""
    pairs = output / "pairs"
    if not pairs.exists():
        return
    if not (output / GROUND_TRUTH).is_file():
        raise FileExistsError(
            f"{output} holds a synthesis run that `editcaption quickstart` did not write; "
            "choose another --out, or pass --resume to continue it"
        )
    shutil.rmtree(pairs)


def quickstart_command(
    config: Annotated[Path, typer.Option(help="The synthesis job config.")] = Path(
        "ray_jobs/configs/demo.yaml"
    ),
    out: Annotated[str | None, typer.Option(help="Output folder (default: the config's, runs/demo).")] = None,
    world_pairs: Annotated[
        int, typer.Option(min=1, help="Miniature-world pairs to write and grade.")
    ] = WORLD_PAIRS,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Keep the pairs an earlier run committed instead of starting over."),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", help="Print everything Ray and vLLM print instead of one progress line."),
    ] = False,
) -> None:
    """`make demo`: Stage 1 synthesis with the committed miniature models, graded against ground truth.

    The inputs are miniature-world pairs (their right instruction is known) and the bundled sample
    pairs; the kept instructions are graded, and the commands that take this output further printed.
    """
    from editcaption.config import ConfigError
    from editcaption.synthesis.shards import ShardFormatError

    try:
        run_quickstart(config, out, world_pairs, resume=resume, verbose=verbose)
    except (ConfigError, FileExistsError, ShardFormatError) as e:
        Console(stderr=True).print(f"[red]{e}[/red]")
        raise typer.Exit(2) from e
