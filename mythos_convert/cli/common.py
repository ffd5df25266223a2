"""Options shared by several commands, defined once."""

from __future__ import annotations

import atexit
import gc
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
        from mythos_convert.support.ui import set_quiet

        set_quiet(True)


def skip_exit_collection() -> None:
    """Leave this process's objects to the OS at exit, not to Python's last garbage collection.

    That collection walks every object torch and transformers made (measured: 0.6-0.8 s of a
    verify, about 0.6 s of an `hf` or `eval` of the reference fixture) to free memory the OS frees
    anyway. Call it where a command's work is done (files written and closed, threads joined):
    objects still in reference cycles at exit are then never finalized. The freeze waits for the exit because commands also run inside other processes
    (typer's CliRunner in the tests), whose objects must stay collectable until then.
    """
    atexit.register(gc.freeze)
