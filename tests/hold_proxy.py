"""A TCP proxy for tests that holds one HTTP request until the test lets it go.

It sits in front of the Hub emulator (tests/hub_server.py) on 127.0.0.1 and forwards bytes both
ways untouched. The first time the client-to-server stream of a connection holds `pattern` (the
start of a request line, e.g. b"POST /api/models/tester/tiny/preupload/"), the proxy stops
forwarding that connection, sets `holding`, and waits for `release`. The client is then waiting on
the Hub as a slow network would make it wait, and the test acts meanwhile: no sleep decides when.

    with HoldProxy(hub.url, b"POST /api/models/tester/tiny/preupload/") as proxy:
        ...start the push against proxy.url...
        assert proxy.holding.wait(300)
        ...edit the folder...
        proxy.release.set()
"""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit

_CHUNK = 64 * 1024


class HoldProxy:
    """Forward to `target_url`; hold the first request whose bytes contain `pattern`."""

    def __init__(self, target_url: str, pattern: bytes, *, hold_timeout: float = 600.0):
        target = urlsplit(target_url)
        self.target = (target.hostname or "127.0.0.1", target.port or 80)
        self.pattern = pattern
        self.hold_timeout = hold_timeout
        self.holding = threading.Event()  # set while (and after) the request is held
        self.release = threading.Event()  # set by the test: the held request goes on
        self._matched = False
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> HoldProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()  # never leave a client hanging on a failed test
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed by __exit__
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _should_hold(self, window: bytes) -> bool:
        with self._lock:
            if self._matched or self.pattern not in window:
                return False
            self._matched = True
            return True

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        tail = b""  # the end of the previous read: a pattern split across two reads still matches
        try:
            while data := src.recv(_CHUNK):
                if upstream and self._should_hold(tail + data):
                    self.holding.set()
                    self.release.wait(self.hold_timeout)
                tail = data[-len(self.pattern) :]
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
