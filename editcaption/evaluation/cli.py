"""`editcaption eval`: captioners × benchmarks, judged, with human metrics and a report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)


def eval_command(
    config: Annotated[Path, typer.Option(help="Eval YAML (see ray_jobs/configs/eval-demo.yaml).")],
    output: Annotated[
        str | None, typer.Option(help="Override the config's output folder (tables, metrics.json, report).")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="Read at most this many pairs per benchmark, for a quick trial.")
    ] = None,
) -> None:
    """Benchmarks → every captioner writes instructions → a VLM judge grades them → metrics and report."""
    from editcaption.config import ConfigError, load_config
    from editcaption.evaluation.job import EvalConfig, evaluate

    try:
        cfg = load_config(config, EvalConfig, {"output": output, "limit": limit})
    except ConfigError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from e
    try:
        metrics = evaluate(cfg)
    except ValueError as e:  # a benchmark or human source that cannot be read: say which
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from e
    finally:
        import ray

        ray.shutdown()
    keys = ("pairs_evaluated", "pairs_judged", "pairs_quarantined", "seconds", "judged_pairs_per_s")
    console.print_json(json.dumps({k: metrics["meta"][k] for k in keys}))
    console.print(f"metrics.json, report.md and report.html in {cfg.output}")
