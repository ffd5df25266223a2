"""Console output shared by every command: progress bars, info lines and tables, all silenced by --quiet.

Library code calls `progress()` and `info()`; the CLI decides once (`set_quiet`) whether they show.
Results that are the point of a command (a verify table, a commit URL) use `result()` and are
printed even when quiet. rich is imported on first output, not with this module: a quiet library
call (a GGUF export in a script) never pays for it (about 0.035 s of imports).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

T = TypeVar("T")

_state = {"quiet": os.environ.get("MYTHOS_QUIET", "") not in ("", "0")}


@functools.cache
def console() -> Console:
    """Progress and chatter go to stderr."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


@functools.cache
def out_console() -> Console:
    """Results go to stdout."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def set_quiet(quiet: bool) -> None:
    _state["quiet"] = quiet


def is_quiet() -> bool:
    return _state["quiet"]


def info(message: str) -> None:
    """A progress line for a human; hidden by --quiet."""
    if not _state["quiet"]:
        console().print(message)


def warn(message: str) -> None:
    """A warning is shown even when quiet: it tells the user something is off."""
    console().print(f"[yellow]warning:[/yellow] {message}")


def result(renderable) -> None:
    """The output a command exists to produce (tables, paths, URLs): always shown, on stdout.

    The stdout console soft-wraps: long lines are left to the terminal, so a command or path is
    never cut by a newline.
    """
    out_console().print(renderable)


def stream(text: str, pieces: Iterable[str]) -> None:
    """`text`, then each piece on stdout as soon as it comes (generate's continuation), then a newline.

    A non-UTF-8 terminal gets '?' rather than a crash.
    """
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")
    print(text, end="", flush=True)
    for piece in pieces:
        print(piece, end="", flush=True)
    print(flush=True)


def results(renderables: Iterable) -> None:
    """Each of a library's rendered outputs (`render_export`, `render_report`, ...), in order, as `result`."""
    for renderable in renderables:
        result(renderable)


def _bar_hidden() -> bool:
    return _state["quiet"] or (not sys.stderr.isatty() and os.environ.get("MYTHOS_FORCE_PROGRESS") is None)


def make_progress() -> Progress:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console(),
        disable=_bar_hidden(),
        transient=False,
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a rich progress bar (silent under --quiet or without a terminal)."""
    if _bar_hidden():
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with make_progress() as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


@contextlib.contextmanager
def progress_task(description: str, total: float | None) -> Iterator[Callable[..., None]]:
    """A context yielding `advance(n)` for work that is not a simple loop (bytes written, steps)."""
    if _bar_hidden():
        yield lambda n=1: None
        return
    with make_progress() as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


def human_size(n: int) -> str:
    """Bytes in binary units, as `ls -h` and the Hub's file list show them."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    return f"{size:.2f} TiB"
