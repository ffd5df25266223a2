"""`mythos-convert tokenizer ...` (placeholder until its issue lands)."""

from __future__ import annotations

import typer

from mythos_convert.errors import MythosError

app = typer.Typer(help="Train and inspect tokenizers.", no_args_is_help=True)


@app.command("train")
def train() -> None:
    """Not implemented yet."""
    raise MythosError("'tokenizer train' is not implemented yet")
