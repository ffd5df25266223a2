"""How many cores the rest of the machine leaves free: the thread count verify's torch work runs with.

On a shared machine every torch parallel region ends at a barrier that waits a scheduler slice for
a thread that was descheduled. Measured on 2 cores while other jobs ran (load average 4.3), the five
native logit forwards of mythos-172m took 1.2-1.3 s on one thread and 3.2-11.4 s on two, and one
115-token forward 0.44 s against 1.2-1.7 s; with the machine to itself two threads are faster. So
verify counts the CPU time the rest of the machine used while it started (`/proc/stat` less its own
rusage: other processes, and time the hypervisor stole) and gives torch only the cores left free.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

PROC_STAT = Path("/proc/stat")
MIN_WINDOW_S = 0.3  # at 100 ticks/s, a shorter window counts too few ticks to tell 0.2 cores from 0
FREE_MARGIN = 0.25  # a core counts as free while others use under a quarter of it (2 cores: 2 threads below 0.25)


def _machine_busy_s() -> float | None:
    """CPU seconds all CPUs spent busy since boot (user, nice, system, irq, softirq, steal), or None."""
    try:
        fields = PROC_STAT.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class OtherLoad:
    """The cores other processes kept busy from construction to `cores()` (None where unknown)."""

    def __init__(self) -> None:
        self._wall, self._busy, self._own = time.perf_counter(), _machine_busy_s(), _own_cpu_s()

    def cores(self) -> float | None:
        if self._busy is None:
            return None
        elapsed = time.perf_counter() - self._wall
        if elapsed < MIN_WINDOW_S:
            time.sleep(MIN_WINDOW_S - elapsed)
            elapsed = MIN_WINDOW_S
        busy = _machine_busy_s()
        if busy is None:
            return None
        return max(0.0, (busy - self._busy) - (_own_cpu_s() - self._own)) / elapsed


def free_threads(wanted: int, others: float | None, cpus: int | None = None) -> int:
    """`wanted` threads, fewer when other processes hold cores (`others`, from `OtherLoad.cores`); at least 1."""
    if others is None:
        return wanted
    cpus = cpus or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    return max(1, min(wanted, int(cpus - others + FREE_MARGIN)))
