"""`editcaption review …` commands (placeholder until issue #4 lands)."""

import typer

app = typer.Typer(help="Human review web app: refine, prefer, judge (issue #4).", no_args_is_help=True)


@app.command("serve")
def serve() -> None:
    """Start the review web app (not in this release yet: issue #4)."""
    typer.echo("`editcaption review serve` is not in this release yet (issue #4).", err=True)
    raise typer.Exit(2)
