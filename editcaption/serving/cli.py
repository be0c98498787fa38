"""`editcaption serve` (placeholder until issue #7 lands)."""

import typer


def serve_command() -> None:
    """Ray Serve endpoint for the captioner (not in this release yet: issue #7)."""
    typer.echo("`editcaption serve` is not in this release yet (issue #7).", err=True)
    raise typer.Exit(2)
