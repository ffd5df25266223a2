"""What several commands do once their work is done (their options are in `cli.options`)."""

from __future__ import annotations

import atexit
import gc


def skip_exit_collection() -> None:
    """Leave this process's objects to the OS at exit, not to Python's last garbage collection.

    That collection walks every object torch and transformers made (measured: 0.6-0.8 s of a
    verify, about 0.6 s of an `hf` or `eval` of the reference fixture) to free memory the OS frees
    anyway. Call it where a command's work is done (files written and closed, threads joined):
    objects still in reference cycles at exit are then never finalized. The freeze waits for the exit
    because commands also run inside other processes (typer's CliRunner in the tests), whose objects
    must stay collectable until then.
    """
    atexit.register(gc.freeze)
