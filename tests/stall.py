"""Run the `mythos-convert` CLI with one function made to stall: the pause a signal test controls.

    python -m stall MARKER MODULE:ATTR[.ATTR] before|after -- CLI ARGS...

The named function is replaced, then the CLI's `main` runs with CLI ARGS. When the function is
first called (in the command, or in a pool worker it starts), the replacement runs it (`after`) or
not (`before`), writes its pid to MARKER and sleeps until a signal ends it. A test waits for MARKER and only
then sends its signal, so the command is mid-write when the signal lands, however fast or loaded
the machine. The replacement is an instance of a class of this module, so a pool pickles it to its
workers (`spawn` ones import this module; this directory must be on their PYTHONPATH).
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
_ORIGINALS: dict[str, Callable[..., Any]] = {}  # by target: never pickled, found again in a forked worker


def _owner(target: str) -> tuple[Any, str]:
    module, _, path = target.partition(":")
    *parents, name = path.split(".")
    return functools.reduce(getattr, parents, importlib.import_module(module)), name


class Stalled:
    """Stands in for `target`: runs it or not (`when`), then creates `marker` and sleeps forever."""

    def __init__(self, target: str, when: str, marker: str):
        if when not in ("before", "after"):
            raise ValueError(f"when must be before or after, not {when!r}")
        self.target, self.when, self.marker = target, when, marker

    def __get__(self, obj: Any, owner: type | None = None) -> Any:  # stands in for a method too
        return self if obj is None else functools.partial(self, obj)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.when == "after":
            _ORIGINALS[self.target](*args, **kwargs)
        mine = Path(f"{self.marker}.{os.getpid()}")
        mine.write_text(f"{os.getpid()}\n")  # which process stalled
        os.replace(mine, self.marker)  # whole: a test may read it as soon as it exists
        while True:
            time.sleep(3600)


def patch(target: str, when: str, marker: str) -> None:
    owner, name = _owner(target)
    _ORIGINALS[target] = getattr(owner, name)
    setattr(owner, name, Stalled(target, when, marker))


def command(marker: Path, target: str, when: str, cli_args: list[str]) -> list[str]:
    """The command line that runs the CLI with `target` stalled (run it with `environment`)."""
    return [sys.executable, "-m", "stall", str(marker), target, when, "--", *cli_args]


def environment(env: dict[str, str]) -> dict[str, str]:
    """`env` with this folder first on PYTHONPATH: for the wrapper and for spawn workers."""
    path = [str(HERE), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    return {**env, "PYTHONPATH": os.pathsep.join(path)}


def main(argv: list[str]) -> None:
    marker, target, when, dashes, *cli_args = argv
    if dashes != "--":
        raise SystemExit("usage: python -m stall MARKER MODULE:ATTR before|after -- CLI ARGS...")
    patch(target, when, marker)
    from mythos_convert.cli import main as cli_main

    sys.argv = ["mythos-convert", *cli_args]
    cli_main()


if __name__ == "__main__":
    main(sys.argv[1:])
