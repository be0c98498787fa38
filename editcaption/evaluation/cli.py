"""`editcaption eval` (placeholder until issue #6 lands)."""

import typer


def eval_command() -> None:
    """Benchmarks, VLM judge, human-eval metrics, reports (not in this release yet: issue #6)."""
    typer.echo("`editcaption eval` is not in this release yet (issue #6).", err=True)
    raise typer.Exit(2)
