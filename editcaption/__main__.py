"""`python -m editcaption` is the `editcaption` command."""

from editcaption.cli import app

app(prog_name="editcaption")
