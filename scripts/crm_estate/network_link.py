"""A network line between the workers and one estate host that tests can slow down and cut.

A loopback TCP relay in front of a host's sshd: an Airflow SSH connection pointing at its port reaches
the same sshd (the pinned host key still verifies; it does not depend on the port), through a line
the test controls, the way a WAN between the vendor and a customer's data centre fails:

* **slow**: what goes toward the host is paced to ``bytes_per_second``, so a transfer lasts long
  enough to crash something in the middle of it;
* **cut**: every open connection dropped at once, by ``cut()`` or by a watcher the first time a
  condition holds (``cut_when``: e.g. "the host holds 64 KiB of the file being sent") -- a
  deterministic "the line went down mid-transfer", whatever the machine's speed.

Counters say what crossed the line and whether connections were opened after the last cut (a retry).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from crm_estate.layout import LOOPBACK

CHUNK = 4096
WATCH_INTERVAL = 0.02
"""How often a ``cut_when`` condition is checked (seconds)."""


@dataclass
class LinkStats:
    connections: int = 0
    bytes_to_host: int = 0
    cuts: int = 0
    last_cut_at: float | None = None
    """``time.time()`` of the last cut."""
    connections_since_cut: int = 0
    """Connections opened after the last cut (someone tried again)."""


@dataclass
class _Pair:
    client: socket.socket
    upstream: socket.socket
    closed: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        self.closed.set()
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class NetworkLink:
    """Relays ``127.0.0.1:<port>`` to ``127.0.0.1:<target_port>``; see the module docstring."""

    def __init__(self, target_port: int, bytes_per_second: float | None = None) -> None:
        self.target_port = target_port
        self.bytes_per_second = bytes_per_second
        self.stats = LinkStats()
        self._lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self._stopping = threading.Event()
        self._listener = socket.create_server((LOOPBACK, 0))
        self._listener.settimeout(0.2)  # accept() wakes up to see close()
        self.port: int = self._listener.getsockname()[1]
        self._threads = [threading.Thread(target=self._accept, name=f"link-{self.port}", daemon=True)]
        self._threads[0].start()

    # ------------------------------------------------------------------ control

    def set_rate(self, bytes_per_second: float | None) -> None:
        """Pace what goes toward the host to ``bytes_per_second`` (None: as fast as loopback goes)."""
        self.bytes_per_second = bytes_per_second

    def cut(self) -> int:
        """Drop every open connection at once (both ends see it closed); returns how many were open."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
            self.stats.cuts += 1
            self.stats.last_cut_at = time.time()
            self.stats.connections_since_cut = 0
        for pair in pairs:
            pair.close()
        return len(pairs)

    def cut_when(self, condition: Callable[[], bool]) -> None:
        """Cut the line once, the first time ``condition()`` holds (checked every WATCH_INTERVAL)."""

        def watch() -> None:
            while not self._stopping.wait(WATCH_INTERVAL):
                if condition():
                    self.cut()
                    return

        watcher = threading.Thread(target=watch, name=f"link-{self.port}-watch", daemon=True)
        self._threads.append(watcher)
        watcher.start()

    def close(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            pair.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> NetworkLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ relay

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection((LOOPBACK, self.target_port), timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            pair = _Pair(client, upstream)
            with self._lock:
                self._pairs.append(pair)
                self.stats.connections += 1
                self.stats.connections_since_cut += 1
            relay = threading.Thread(target=self._relay, args=(pair,), name=f"link-{self.port}", daemon=True)
            relay.start()

    def _relay(self, pair: _Pair) -> None:
        """Both directions in one thread; what goes toward the host is paced."""
        selector = selectors.DefaultSelector()
        selector.register(pair.client, selectors.EVENT_READ, pair.upstream)
        selector.register(pair.upstream, selectors.EVENT_READ, pair.client)
        try:
            while not pair.closed.is_set():
                for key, _ in selector.select(timeout=0.5):
                    data = key.fileobj.recv(CHUNK)  # type: ignore[union-attr]
                    if not data:
                        return
                    if key.fileobj is pair.client:
                        with self._lock:
                            self.stats.bytes_to_host += len(data)
                        rate = self.bytes_per_second
                        if rate:
                            time.sleep(len(data) / rate)
                        if pair.closed.is_set():  # cut while this chunk was on the line
                            return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            selector.close()
            pair.close()
            with self._lock:
                if pair in self._pairs:
                    self._pairs.remove(pair)
