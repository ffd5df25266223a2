"""Worker processes that end with the command that started them.

A pool's worker waits on a pipe from its parent. When the parent is killed (SIGKILL, the OOM
killer) nobody closes that pipe (a forked worker holds its write end too), so the worker would
wait forever, owned by init. `process_pool`'s workers ask Linux to SIGKILL them when their parent
dies (`PR_SET_PDEATHSIG`). They also ignore SIGINT and SIGTERM: Ctrl-C in a terminal (and systemd's
stop) reaches the whole process group, and the parent, not each worker, decides how the command
ends (its cleanup ends the pool; a worker's traceback would break the one-line ending). Calls that
may start workers run under `starting_workers`, so a worker is born with both signals blocked and
none reaches it before it ignores them.

PDEATHSIG fires when the *thread* that started the worker ends, so a pool must live inside the
thread that creates it: `ProcessPoolExecutor` starts its workers from the thread that submits
work. `close_pool` ends a pool; when the command is interrupted it does not wait for the workers.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor

PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_DECIDES = {signal.SIGINT, signal.SIGTERM}  # signals a worker leaves to the command


def process_pool(workers: int, start_method: str | None = None) -> ProcessPoolExecutor:
    """A `ProcessPoolExecutor` whose workers die with this process (`start_method`: fork, spawn; not
    forkserver, whose workers are the server's children, not ours)."""
    if start_method == "forkserver":
        raise ValueError("forkserver workers are not this process's children: use fork or spawn")
    context = multiprocessing.get_context(start_method)
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_bind_to_parent, initargs=(os.getpid(),))


def close_pool(pool: Executor, *, abandon: bool) -> None:
    """Shut `pool` down. `abandon` (the command failed or was interrupted): what is queued is
    cancelled and worker processes are killed at once, not waited for through their current task
    (a numpy quantizer's slice of a large tensor takes a while); threads finish theirs."""
    if not abandon or not isinstance(pool, ProcessPoolExecutor):
        pool.shutdown(wait=True, cancel_futures=abandon)
        return
    processes = list((pool._processes or {}).values())  # no public way before Python 3.14's kill_workers
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(ValueError):  # already closed
            process.kill()  # they write nothing, so nothing is left half done
    for process in processes:
        with contextlib.suppress(ValueError):
            process.join()


@contextlib.contextmanager
def starting_workers() -> Iterator[None]:
    """Around a pool's `submit`/`map` (which start its workers): SIGINT and SIGTERM blocked in this
    thread, a mask its workers inherit through fork and exec until their initializer ignores both.
    A signal meanwhile waits and is handled here when the block ends."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, PARENT_DECIDES)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _bind_to_parent(parent: int) -> None:
    """In the worker: SIGINT and SIGTERM left to the parent (ignored, then unblocked: one that
    came meanwhile is dropped), and SIGKILL when the parent dies."""
    for signum in PARENT_DECIDES:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, PARENT_DECIDES)
    prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)
    if prctl is None:  # not Linux: no such request, the workers then end as the platform lets them
        return
    if prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
