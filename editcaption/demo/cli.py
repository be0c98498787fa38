"""`editcaption demo` (placeholder until issue #9 lands)."""

import typer


def demo_command() -> None:
    """The miniature world, end to end (not in this release yet: issue #9)."""
    typer.echo("`editcaption demo` is not in this release yet (issue #9).", err=True)
    raise typer.Exit(2)
