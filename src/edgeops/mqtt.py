"""A small MQTT client for the control plane (publish releases, read the fleet, drive rollouts).

Why a wrapper: every control-plane command needs the same three things from paho — connect with an error
that names the broker URL, publish and *wait for the PUBACK* (a retained release or desired state that never
reached the broker must not be reported as done), and read the retained state under a topic filter. paho's
callbacks run on its network thread, so they only put messages on a queue; the owner thread does the work.

Reading is done at QoS 0 (publishing stays QoS 1, waited on). The session is clean, so QoS 1 on a
subscription would guarantee nothing more: a message in flight when the connection drops is gone either way,
and after reconnecting the subscriptions are renewed and the broker sends the retained state again. Within a
connection TCP already delivers in order, and Mosquitto applies the same queue limits (``max_queued_messages``)
to both. What QoS 1 would add is a PUBACK per message — about half the client's receive cost (measured with
1,000 devices: 33 vs 18 µs a message), which is what a rollout controller reading a fleet spends its time on.
"""

import contextlib
import queue
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from paho.mqtt.enums import MQTTProtocolVersion

from edge_agent.mqtt_client import ClientOptions, ClientSetupError, TLSParameters, connect, make_client, mqtt
from edge_agent.protocol import BrokerAddress, ProtocolError
from edgeops.errors import BrokerError

DEFAULT_TIMEOUT_S = 10.0
READ_QOS = 0


def broker_address(url: str) -> BrokerAddress:
    """Parse a broker URL with the protocol's parser; a bad one is a BrokerError naming it."""
    try:
        return BrokerAddress.parse(url)
    except ProtocolError as exc:
        raise BrokerError(f"{exc.reason} (expected mqtt://host:port or mqtts://host:port)") from exc


@dataclass(frozen=True)
class Received:
    """One message as the control client hands it on, off paho's network thread."""

    topic: str
    payload: bytes
    retained: bool


class ControlClient:
    """One paho client on a background network thread; use as a context manager.

    Subscriptions are remembered and renewed after a reconnect (clean session), so the broker resends the
    retained state and a long-running rollout controller recovers from a broker restart.
    """

    def __init__(self, url: str, *, username: str | None = None, password: str | None = None,
                 ca_file: Path | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 client_id: str | None = None) -> None:
        self.url = url
        self.address = broker_address(url)
        self.timeout_s = timeout_s
        self._inbox: queue.SimpleQueue[Received] = queue.SimpleQueue()  # C-level: no Condition per message
        self._stash: deque[Received] = deque()
        self._filters: list[str] = []
        self._cond = threading.Condition()
        self._acked: set[int] = set()
        self._sync: tuple[str, bytes, threading.Event] | None = None  # collect_retained's marker: topic, nonce
        self._connected = False
        self._connect_error: str | None = None
        self.published = self.received = 0  # PUBLISH messages sent / delivered to us (benchmarks count them)
        self._client_id = client_id or f"edgeops-ctl-{uuid.uuid4().hex[:12]}"
        # No client-side window (max_inflight 0): with one set, paho walks its outgoing messages from the start
        # on every PUBACK looking for the next queued one, O(window) work per message. An MQTT 3.1.1 broker
        # takes QoS 1 publishes without a limit, and a burst is bounded by the caller's batch (a wave's
        # desired states).
        self.options = ClientOptions(broker=self.address, client_id=self._client_id, username=username,
                                     password=password, tls=TLSParameters(ca_file),
                                     protocol=MQTTProtocolVersion.MQTTv311, keepalive_s=30, max_inflight=0)
        try:
            self._client = make_client(self.options)
        except ClientSetupError as exc:
            raise BrokerError(f"the MQTT broker at {url}: {exc}") from exc
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_ack
        self._client.on_unsubscribe = self._on_ack

    # paho callbacks (network thread): record and hand over, nothing else ------------------------------
    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        with self._cond:
            if reason.is_failure:
                self._connect_error = str(reason)
            else:
                self._connected = True
                if self._filters:
                    client.subscribe([(f, READ_QOS) for f in self._filters])
            self._cond.notify_all()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, _reason: Any, _p: Any) -> None:
        with self._cond:
            self._connected = False
            self._cond.notify_all()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.received += 1
        topic, payload = msg.topic, bytes(msg.payload)
        self._inbox.put(Received(topic, payload, bool(msg.retain)))
        sync = self._sync
        if sync is not None and topic == sync[0] and payload == sync[1]:
            sync[2].set()

    def _on_ack(self, _c: mqtt.Client, _u: Any, mid: int, _codes: Any, _p: Any) -> None:
        with self._cond:
            self._acked.add(mid)
            self._cond.notify_all()

    # lifecycle --------------------------------------------------------------------------------------
    def connect(self) -> "ControlClient":
        try:
            connect(self._client, self.options)
        except (OSError, ValueError) as exc:
            raise BrokerError(f"cannot reach the MQTT broker at {self.url}: {exc}") from exc
        sock = self._client.socket()
        if isinstance(sock, socket.socket):  # control messages are small and latency-bound: no Nagle delay
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._client.loop_start()
        with self._cond:
            self._cond.wait_for(lambda: self._connected or self._connect_error is not None, self.timeout_s)
            error, connected = self._connect_error, self._connected
        if not connected:
            self.close()
            why = f"refused the connection: {error}" if error else f"did not answer within {self.timeout_s:g}s"
            raise BrokerError(f"the MQTT broker at {self.url} {why}")
        return self

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> "ControlClient":
        return self.connect()

    def __exit__(self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None) -> None:
        self.close()

    # publishing -------------------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1 and return only after the broker's PUBACK."""
        self.publish_many([(topic, payload, retain)])

    def publish_many(self, messages: Iterable[tuple[str, bytes, bool]], *, wait: bool = True) -> "Publication":
        """Publish all messages (QoS 1) in order; with ``wait`` return only after every PUBACK, else return
        a ``Publication`` to wait on later (a controller keeps watching devices meanwhile)."""
        batch = list(messages)
        infos = [self._send(message) for message in batch]
        self.published += len(infos)
        publication = Publication(self, batch, infos, time.monotonic() + self.timeout_s + 0.01 * len(infos))
        if wait:
            publication.wait()
        return publication

    def _send(self, message: tuple[str, bytes, bool]) -> mqtt.MQTTMessageInfo:
        topic, payload, retain = message
        return self._client.publish(topic, payload, qos=1, retain=retain)

    def wait_connected(self, deadline: float) -> bool:
        """Block until the client is connected again (paho reconnects by itself) or ``deadline`` passes."""
        with self._cond:
            return self._cond.wait_for(lambda: self._connected, max(0.0, deadline - time.monotonic()))

    # subscribing ------------------------------------------------------------------------------------
    def subscribe(self, *filters: str) -> None:
        """Subscribe (QoS 0: see the module docstring) and wait for the SUBACK; messages then arrive through
        ``next_message``."""
        new = [f for f in filters if f not in self._filters]
        if not new:
            return
        self._filters.extend(new)
        _rc, mid = self._client.subscribe([(f, READ_QOS) for f in new])
        self._wait_ack(mid, "subscribe")

    def unsubscribe(self, *filters: str) -> None:
        gone = [f for f in filters if f in self._filters]
        if not gone:
            return
        for f in gone:
            self._filters.remove(f)
        _rc, mid = self._client.unsubscribe(gone)
        self._wait_ack(mid, "unsubscribe")

    def _wait_ack(self, mid: int | None, what: str) -> None:
        with self._cond:
            if mid is None or not self._cond.wait_for(lambda: mid in self._acked, self.timeout_s):
                raise BrokerError(f"the MQTT broker at {self.url} did not acknowledge a {what} "
                                  f"within {self.timeout_s:g}s")
            self._acked.discard(mid)

    def next_message(self, timeout: float | None) -> Received | None:
        """The next message of any subscription, or None after ``timeout`` seconds."""
        if self._stash:
            return self._stash.popleft()
        try:
            return self._inbox.get(timeout=timeout) if timeout else self._inbox.get_nowait()
        except queue.Empty:
            return None

    def subscribed(self, topic_filter: str) -> bool:
        return topic_filter in self._filters

    def pending(self) -> list[Received]:
        """Messages set aside by ``collect_retained`` for ``next_message`` (not consumed by this call)."""
        return list(self._stash)

    def drain(self, first_timeout: float) -> Iterator[Received]:
        """Everything already received, waiting up to ``first_timeout`` for the first message."""
        msg = self.next_message(first_timeout)
        while msg is not None:
            yield msg
            msg = self.next_message(None)

    def collect_retained(self, *filters: str, quiet_s: float = 0.3, sync_root: str | None = None
                         ) -> dict[str, bytes]:
        """The retained state under ``filters``: subscribe, gather, unsubscribe (unless a filter was already
        ours). Later messages on a topic replace earlier ones; an empty payload deletes the topic. Messages of
        other subscriptions, and copies of those under a filter that was already ours, are kept for
        ``next_message``: its reader must not miss them.

        When is everything in? With ``sync_root`` (the topic prefix), a marker is published to this client's
        own ``{sync_root}/control/{client id}/sync`` right after the SUBACK: the broker queues it behind the
        retained messages it is sending us, so its arrival ends the wait (Mosquitto keeps one ordered queue
        per client). Without it, or if the marker never comes (an ACL may drop it), the wait ends after
        ``quiet_s`` without a message.
        """
        owned = [f for f in filters if f not in self._filters]
        shared = [f for f in filters if f in self._filters]
        marker, nonce = None, b""
        if sync_root is not None:
            marker, nonce = f"{sync_root}/control/{self._client_id}/sync", uuid.uuid4().hex.encode()
            self.subscribe(marker)
        self.subscribe(*owned)
        if shared:  # subscribing again makes the broker send the retained messages again
            _rc, mid = self._client.subscribe([(f, READ_QOS) for f in shared])
            self._wait_ack(mid, "subscribe")
        if marker is not None:
            self._sync = (marker, nonce, threading.Event())
            # Without TCP_NODELAY on the broker's side (Mosquitto's default), Nagle holds the marker back while
            # anything it wrote before is unacknowledged, and Linux delays our ACKs by up to 40 ms: that wait
            # was most of `edgeops fleet ls`. So the marker goes at QoS 0 (no PUBACK written ahead of it) and
            # we ACK the retained messages as they come. A lost marker costs the quiet wait below, as before.
            self._ack_quickly()
            self._client.publish(marker, nonce, qos=0)
            self.published += 1
        wanted, again = filter_matcher(filters), filter_matcher(shared)
        found: dict[str, bytes] = {}
        others: list[Received] = []
        for msg in self._retained_messages(marker, nonce, quiet_s):
            if wanted(msg.topic):
                if again(msg.topic):
                    others.append(msg)  # the other reader of that subscription must still see it
                if msg.payload:
                    found[msg.topic] = msg.payload
                else:
                    found.pop(msg.topic, None)
            else:
                others.append(msg)
        if owned:
            self.unsubscribe(*owned)
        self._stash.extend(others)
        return found

    def _ack_quickly(self) -> None:
        """TCP_QUICKACK (Linux; elsewhere nothing): ACK at once what arrives for a while, instead of delaying."""
        sock, flag = self._client.socket(), getattr(socket, "TCP_QUICKACK", None)
        if flag is not None and isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, flag, 1)

    def _retained_messages(self, marker: str | None, nonce: bytes, quiet_s: float) -> Iterator[Received]:
        """The messages that arrive up to our marker (not included), or until none came for a while.

        With a marker the caller sleeps until paho's thread has seen it and then takes everything in one go:
        waking for each of thousands of retained messages made both threads trade the GIL once per message,
        which cost more than reading them (benchmarks/control_client.py: 3,000 retained messages took 1.87×
        bare paho's time that way, 0.86× this way)."""
        deadline = time.monotonic() + max(self.timeout_s, 30.0)
        if marker is None:
            while time.monotonic() < deadline:
                try:
                    yield self._inbox.get(timeout=quiet_s)
                except queue.Empty:
                    return
            return
        assert self._sync is not None
        arrived, seen = self._sync[2], self.received
        try:
            while not arrived.wait(max(quiet_s, 2.0)) and time.monotonic() < deadline:
                if self.received == seen:
                    break  # no message for a while: the marker was dropped (an ACL?); take what came
                seen = self.received
        finally:
            self._sync = None
        while True:
            try:
                msg = self._inbox.get_nowait()
            except queue.Empty:
                return
            if msg.topic == marker:
                if msg.payload == nonce:
                    return  # what came after it stays in the inbox for next_message
                continue
            yield msg


@dataclass
class Publication:
    """QoS 1 messages handed to paho; waiting means: until every PUBACK arrived or the deadline passed.

    A message published while the broker was away carries paho's MQTT_ERR_NO_CONN for good: paho queues and
    resends it after reconnecting, but its ``is_published()`` raises forever after. So such a message is sent
    again once the client is connected, and that copy is the one waited on (QoS 1 is at-least-once anyway,
    and every message we publish is idempotent: retained state or a deduplicated sequence number).
    """

    client: "ControlClient"
    messages: list[tuple[str, bytes, bool]]
    infos: list[mqtt.MQTTMessageInfo]
    deadline: float

    def __len__(self) -> int:
        return len(self.infos)

    def wait(self) -> None:
        if self.infos:  # PUBACKs come back in order: block once, on the last, and the rest are already in
            with contextlib.suppress(RuntimeError, ValueError):
                self.infos[-1].wait_for_publish(max(0.0, self.deadline - time.monotonic()))
        for i, message in enumerate(self.messages):
            while not self._acknowledged(i, message):
                if time.monotonic() >= self.deadline:
                    raise BrokerError(f"the MQTT broker at {self.client.url} did not acknowledge a publish in "
                                      "time (is it still up?)")

    def _acknowledged(self, i: int, message: tuple[str, bytes, bool]) -> bool:
        info = self.infos[i]
        try:
            if info.is_published():
                return True
            info.wait_for_publish(max(0.0, min(self.deadline - time.monotonic(), 0.5)))
            return info.is_published()
        except (RuntimeError, ValueError):  # never sent (not connected, or paho's queue was full)
            if self.client.wait_connected(self.deadline):
                self.infos[i] = self.client._send(message)
            return False


def filter_matcher(filters: Iterable[str]) -> Callable[[str], bool]:
    """One compiled test "does a topic match any of these filters" (MQTT rules: ``+`` one level, ``#`` the rest,
    wildcards never match a first level starting with ``$``; tests/unit/test_topic_match.py checks it against
    paho's ``topic_matches_sub``).

    Reading a fleet's retained state tests thousands of topics against the same few filters; paho's
    ``topic_matches_sub`` re-parses the filter on every call (~8 µs), one regular expression does it in ~1 µs."""
    patterns = [_filter_pattern(f) for f in filters]
    if not patterns:
        return lambda _topic: False
    match = re.compile("|".join(f"(?:{p})" for p in patterns)).fullmatch
    return lambda topic: match(topic) is not None


def _filter_pattern(topic_filter: str) -> str:
    levels = topic_filter.split("/")
    pattern = r"(?!\$)" if levels[0] in ("+", "#") else ""  # wildcards never match $SYS-style topics' first level
    for i, level in enumerate(levels):
        if level == "#":
            return pattern + (r"(?:/.*)?" if i else ".*")  # "a/#" also matches "a" itself
        pattern += ("/" if i else "") + ("[^/]*" if level == "+" else re.escape(level))
    return pattern
