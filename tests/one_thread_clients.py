"""Many paho clients driven by one thread through one selector (paho's external-loop API), for the simulated
fleet (tests/simulated_fleet.py): the transport half, which knows clients by name and nothing of devices.

Why one thread: a thousand paho network threads would measure the Python scheduler, not the broker. All
client callbacks and timers run on that thread; another thread talks to it through ``call`` (a queue).
"""

import contextlib
import heapq
import itertools
import logging
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from edge_agent.mqtt_client import mqtt

log = logging.getLogger(__name__)


def _cork(sock: socket.socket, on: bool) -> socket.socket:
    """TCP_CORK while a device handles what it read: its PUBACKs and replies leave as one segment when it is
    done, not one segment per packet. A thousand devices share this one thread, and every segment on loopback
    costs the sender the receiver's TCP work too, which a real device would spend on its own CPU (Linux only;
    elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, int(on))
    return sock


class OneThreadClients:
    """Named paho clients on one thread. A subclass makes and connects each client, then ``_attach``es it;
    ``_later`` runs an action for a client after a delay; ``_reconnect_lost`` (about once a second) is where
    a subclass reconnects what it wants connected."""

    def __init__(self, thread_name: str) -> None:
        self._clients: dict[str, mqtt.Client] = {}
        self._socks: dict[str, socket.socket] = {}
        self._sel = selectors.DefaultSelector()
        self._calls: queue.Queue[Callable[[], None]] = queue.Queue()
        self._timers: list[tuple[float, int, str, Callable[[], None]]] = []  # (due, tie-break, client, action)
        self._writing: set[str] = set()
        self._seq = itertools.count()
        self._run = True
        self._thread = threading.Thread(target=self._loop, name=thread_name, daemon=True)

    def _start(self) -> None:
        self._thread.start()

    def _stop(self) -> None:
        self._run = False
        self._thread.join(10)

    def call(self, fn: Callable[[], Any], wait: bool = True) -> None:
        """Run ``fn`` on the fleet thread (and wait for it by default)."""
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            finally:
                done.set()
        self._calls.put(run)
        if wait and not done.wait(60):
            raise TimeoutError("the simulated fleet thread did not answer within 60s")

    def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
            time.sleep(0.02)

    # the loop (fleet thread) ---------------------------------------------------------------------------
    def _loop(self) -> None:
        last_misc = time.monotonic()  # not 0: a first pass at once would connect every device before __enter__ does
        while self._run:
            touched: set[str] = set()  # clients that may have something to write: only those are looked at
            while True:
                try:
                    self._calls.get_nowait()()
                except queue.Empty:
                    break
                touched.update(self._clients)
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                _due, _seq, name, action = heapq.heappop(self._timers)
                action()
                touched.add(name)  # only that client can have something new to write
            wait = min(0.01, max(0.0, self._timers[0][0] - now)) if self._timers else 0.01
            corked = []
            for key, _events in self._sel.select(timeout=wait) if self._socks else ():
                touched.add(key.data)
                corked.append(_cork(self._socks[key.data], True))
                try:
                    self._clients[key.data].loop_read(100)
                except Exception:  # a bug in one device's handler must not stop the whole fleet
                    log.exception("simulated %s: error while handling a message", key.data)
            for name in touched | self._writing:
                self._flush(name)
            for sock in corked:
                _cork(sock, False)
            if not self._socks:
                time.sleep(0.01)
            if now - last_misc > 1.0:
                last_misc = now
                for name, client in self._clients.items():
                    client.loop_misc()
                    self._flush(name)
                self._reconnect_lost()

    def _flush(self, name: str) -> None:
        """Write what the client queued; notice a connection it lost (its socket changed)."""
        client = self._clients[name]
        if client.want_write():
            client.loop_write()
        if client.want_write():
            self._writing.add(name)
        else:
            self._writing.discard(name)
        if self._socks.get(name) is not None and client.socket() is not self._socks[name]:
            self._forget(name)

    def _later(self, delay: float, name: str, fn: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), name, fn))

    def _forget(self, name: str) -> None:
        sock = self._socks.pop(name, None)
        if sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(sock)

    def _attach(self, name: str, client: mqtt.Client) -> None:
        """Drive the connected ``client`` from the loop under ``name`` (no Nagle delay: messages are small)."""
        sock = client.socket()
        assert isinstance(sock, socket.socket)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._socks[name] = sock
        self._sel.register(sock, selectors.EVENT_READ, name)

    def _drop(self, name: str) -> None:
        """Cut the connection without a DISCONNECT (the broker then publishes the Will)."""
        sock = self._socks.get(name)
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)

    def _reconnect_lost(self) -> None:
        """Called by the loop about once a second: reconnect the clients that lost their connection."""
