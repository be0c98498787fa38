"""`editcaption train …` commands (placeholder until issue #5 lands)."""

import typer

app = typer.Typer(help="SFT and HAE-DPO on Ray Train + DeepSpeed (issue #5).", no_args_is_help=True)


@app.command("sft")
def sft() -> None:
    """Supervised fine-tuning (not in this release yet: issue #5)."""
    typer.echo("`editcaption train sft` is not in this release yet (issue #5).", err=True)
    raise typer.Exit(2)
