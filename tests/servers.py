"""Model servers for tests: started on 127.0.0.1 only, polled in bounded loops, always stopped.

Used by the llama.cpp server, vLLM and Space tests. Requests go through urllib (no proxy: the
opener has no ProxyHandler, so a proxy variable cannot send loopback traffic elsewhere).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """A port nothing listens on now (the kernel's pick on 127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def get_json(url: str, timeout: float = 10.0) -> object:
    with _OPENER.open(url, timeout=timeout) as response:
        return json.loads(response.read())


def post_json(url: str, body: dict, timeout: float = 120.0) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with _OPENER.open(request, timeout=timeout) as response:
        return json.loads(response.read())


@dataclass
class Server:
    """A running server process and where it listens; `log` holds its stdout and stderr."""

    process: subprocess.Popen
    url: str
    log: Path

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.is_file() else ""


@contextlib.contextmanager
def serve(
    argv: Sequence[str],
    *,
    port: int,
    ready_path: str,
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    startup_s: float = 300.0,
) -> Iterator[Server]:
    """Start `argv`, wait (at most `startup_s`, polling twice a second) until GET `ready_path` answers
    200, yield, then stop the whole process group: SIGTERM, 30 s grace, SIGKILL."""
    url = f"http://{HOST}:{port}"
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    server = Server(process, url, log)
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited with {process.returncode} before answering:\n{server.tail()}")
            try:
                with _OPENER.open(url + ready_path, timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{argv[0]} did not answer {ready_path} within {startup_s:.0f} s:\n{server.tail()}")
            time.sleep(0.5)
        yield server
    finally:
        stop(process)


def stop(process: subprocess.Popen, grace_s: float = 30.0) -> None:
    """Stop a server started in its own session, with every process it spawned (engine workers)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):  # whatever is left of the group, the leader included
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def cpu_flags() -> set[str]:
    """The CPU's feature flags as /proc/cpuinfo names them (empty where there is no such file)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()
