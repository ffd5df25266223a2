"""SIGINT and SIGTERM end a command the same way: its cleanup runs, then one line and 128+signal.

Python turns SIGINT into `KeyboardInterrupt`, which unwinds every `with` and `finally` (temporary
outputs removed, pools shut down, locks released). SIGTERM, what `kill`, systemd, Kubernetes and CI
runners send, would kill the process at once and leave its temporaries; `handled` makes it raise
the same exception. Python runs the handler in the main thread, so the exception surfaces there
and the main thread's cleanup waits for the threads and pools it started.

A rename that must not be cut in half (the old output swapped out, the new one in) runs under
`deferred`: a signal arriving inside it is raised when the block ends.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

HANDLED = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}  # what the CLI's last line says


class Interrupted(KeyboardInterrupt):
    """A handled signal arrived (a `KeyboardInterrupt`, so code written for Ctrl-C cleans up for both)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _State:
    first: int | None = None  # the signal that decides the exit
    pending: int | None = None  # arrived inside `deferred`, raised when it ends
    depth = 0  # nesting of `deferred`


def _handler(signum: int, frame: FrameType | None) -> None:
    if _State.first is None:
        _State.first = signum
    if _State.depth:
        _State.pending = _State.pending or signum
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """SIGINT and SIGTERM raise `Interrupted` in the block; the handlers before it come back after
    (a program calling the CLI in-process keeps its own). Outside the main thread, nothing changes
    (Python accepts handlers only there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _State.first = _State.pending = None  # a new command: no signal yet
    before = {signum: signal.signal(signum, _handler) for signum in HANDLED}
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def received() -> int | None:
    """The first handled signal this process got, if any (it decides the exit code and line)."""
    return _State.first


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold a signal that arrives inside the block until it ends, then raise it. Only the main
    thread is interrupted by a signal, so in another thread the block simply runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
        pending = _State.pending
        if not _State.depth and pending is not None:
            _State.pending = None
            raise Interrupted(pending)
