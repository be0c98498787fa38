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
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a config field, KEY=VALUE with a YAML value; dotted keys reach nested fields and "
            "list items (--set captioners.0.engine.model=PATH); `model` is the captioner's model when the "
            "config has one captioner. Repeatable.",
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Print everything Ray and vLLM print (default: to a log file).")
    ] = False,
) -> None:
    """Benchmarks → every captioner writes instructions → a VLM judge grades them → metrics and report."""
    import yaml

    from editcaption.config import ConfigError, load_config, set_overrides
    from editcaption.evaluation.job import EvalConfig, evaluate
    from editcaption.joblog import log_path_for, run_job

    try:
        base = yaml.safe_load(config.read_text()) if config.is_file() else {}
        base = base if isinstance(base, dict) else {}
        aliases = _aliases(base)
        if "model" not in aliases and any(item.startswith("model=") for item in set_ or []):
            raise ConfigError(
                f"--set model=…: {config} has {len(base.get('captioners') or [])} captioners; "
                "choose one with --set captioners.<i>.engine.model=…"
            )
        overrides = set_overrides(base, set_ or [], aliases)
        overrides |= {"output": output, "limit": limit}
        cfg = load_config(config, EvalConfig, overrides, resolve_paths=True)
    except (ConfigError, yaml.YAMLError) as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from e
    names = ", ".join(c.name for c in cfg.captioners)
    status = f"eval: {names} on {', '.join(b.name for b in cfg.benchmarks)}"
    try:
        # a benchmark or human source that cannot be read says which (ValueError)
        metrics, log = run_job(
            lambda: evaluate(cfg), log_path_for(cfg.output, "eval"), verbose, status, expected=(ValueError,)
        )
    except ValueError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from e
    keys = ("pairs_evaluated", "pairs_judged", "pairs_quarantined", "seconds", "judged_pairs_per_s")
    console.print_json(json.dumps({k: metrics["meta"][k] for k in keys}))
    console.print(
        f"metrics.json, report.md and report.html in {cfg.output}" + (f"; log: {log}" if log else "")
    )


def _aliases(base: dict) -> dict[str, str]:
    """`--set model=…` means the captioner's model when there is exactly one captioner."""
    captioners = base.get("captioners")
    return (
        {"model": "captioners.0.engine.model"}
        if isinstance(captioners, list) and len(captioners) == 1
        else {}
    )
