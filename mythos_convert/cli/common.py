"""Options shared by several commands, defined once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

CheckpointArg = Annotated[Path, typer.Argument(help="Native checkpoint (ckpt.pt), ours or the reference's.")]
TokenizerOpt = Annotated[
    Path | None,
    typer.Option(help="tokenizer.json (default: beside the checkpoint, else the copy inside it)."),
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="YAML with a `model:` mapping, for checkpoints without a config.")
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing output (atomically).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or chatter.")]


def apply_quiet(quiet: bool) -> None:
    """Commands take --quiet too, so it works after the command name as well as before it."""
    if quiet:
        from mythos_convert.ui import set_quiet

        set_quiet(True)
