"""The ingest service: MQTT → telemetry store, in batches, acknowledging each message only after it is stored.

Delivery: QoS 1 with a *persistent* MQTT 5 session (fixed client id per instance, ``clean_start=False``, a
session expiry), so while an instance restarts the broker queues its messages. Telemetry and agent events come
through a *shared subscription* (``$share/{group}/...``): instances in one group split the load and each
message goes to one of them. Status and reported state are retained and small, so every instance subscribes to
them directly (retained messages are never sent to shared subscriptions) and the store's conditional update
makes sure only one instance raises each presence event.

At least once, and nothing lost: paho runs with ``manual_ack=True``; the callback thread only queues messages;
the writer thread parses a batch, commits it, and only then sends the PUBACKs (in arrival order, as MQTT
requires). A crash before the commit loses nothing (the broker redelivers unacked messages to the session); a
crash after the commit but before the PUBACK causes a redelivery that the store ignores (idempotent on
(device, epoch, seq)). PUBACKs are only sent on the connection that received the message — after a reconnect the
packet ids belong to the new connection, so acking an old id could acknowledge an unstored message.
Malformed messages are logged, counted, acknowledged and skipped: redelivering them would not fix them.

Parsing and storing run in a child process by default (see writer.py: they cost more CPU than the receive, and
in one process the two took turns on the GIL); the child only reports results, acknowledging stays here.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from paho.mqtt.subscribeoptions import SubscribeOptions

from edge_agent.mqtt_client import (
    ClientOptions,
    ClientSetupError,
    Reconnect,
    Session,
    TLSParameters,
    connect,
    make_client,
    mqtt,
)
from edge_agent.protocol import DEFAULT_PREFIX, Topics
from edgeops.errors import BrokerError
from edgeops.mqtt import broker_address
from edgeops.telemetry import DEFAULT_DB_URL
from edgeops.telemetry.events import Emitter, discard
from edgeops.telemetry.store import TelemetryStore
from edgeops.telemetry.writer import BatchResult, BatchWriter, WriterProcess, parse_message

__all__ = ["IngestConfig", "IngestService", "IngestStats", "parse_message"]

log = logging.getLogger("edgeops.telemetry")

@dataclass(frozen=True)
class IngestConfig:
    broker_url: str = "mqtt://127.0.0.1:1883"
    db_url: str = DEFAULT_DB_URL
    prefix: str = DEFAULT_PREFIX
    group: str = "edgeops-ingest"
    instance: str = "0"                 # part of the fixed client id: give each instance of a group its own
    client_id: str | None = None        # overrides the derived id
    batch_size: int = 500               # flush after this many messages ...
    flush_ms: int = 200                 # ... or this long after the first message of a batch
    session_expiry_s: int = 7 * 24 * 3600   # how long the broker keeps our queue while we are away
    keepalive_s: int = 30
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    writer_process: bool = True         # parse and store in a child process (False: on a thread of this one)

    @property
    def mqtt_client_id(self) -> str:
        return self.client_id or f"{self.group}-{socket.gethostname()}-{self.instance}"[:128]


def client_options(config: IngestConfig) -> ClientOptions:
    """A persistent MQTT 5 session under the instance's fixed client id; each message is acknowledged by hand,
    after it is stored. An empty user name counts as none."""
    return ClientOptions(
        broker=broker_address(config.broker_url), client_id=config.mqtt_client_id,
        username=config.username or None, password=config.password if config.username else None,
        tls=TLSParameters(config.ca_file), keepalive_s=config.keepalive_s, reconnect=Reconnect(1, 10),
        # the receive maximum lets a whole batch be in flight
        session=Session(config.session_expiry_s, receive_maximum=min(65535, max(20, 2 * config.batch_size))),
        manual_ack=True)


@dataclass
class IngestStats:
    received: int = 0
    stored: int = 0          # new windows
    duplicates: int = 0      # redelivered windows / agent events (ignored)
    other: int = 0           # status, reported, agent events stored
    malformed: int = 0
    batches: int = 0
    acked: int = 0
    db_errors: int = 0
    subscribed: int = 0      # successful (re)subscriptions: one per connection


class _Raw(NamedTuple):
    """A received message waiting for the writer (a tuple: one is made per message on paho's thread)."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    epoch: int


class IngestService:
    """Run with ``start()`` / ``stop()`` (or as a context manager)."""

    def __init__(self, config: IngestConfig, store: TelemetryStore | None = None, emit: Emitter = discard) -> None:
        self.config = config
        self.topics = Topics(config.prefix)
        self.store = store if store is not None else TelemetryStore(config.db_url)
        self._own_store = store is None
        self.emit = emit
        self._stats = IngestStats()
        self._stats_lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Raw] = queue.SimpleQueue()   # C-level put/get: two per message
        self._ack_lock = threading.Lock()
        self._epoch = 0
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="edgeops-ingest-writer", daemon=True)
        self._process: WriterProcess | None = None
        self._thread_writer: BatchWriter | None = None
        self._prepared = False
        self.options = client_options(config)
        self._client = self._make_client()

    # --- lifecycle ---------------------------------------------------------------------------------------
    def prepare(self) -> IngestService:
        """Start the writer (its process, by default) without connecting; ``start()`` does it when needed. For
        callers that want the process start-up (about a second) done before messages flow, like the benchmark."""
        if self._prepared:
            return self
        if self.config.writer_process:
            self._process = WriterProcess(self.store.url, self.store.schema, self.config.prefix)
            self._process.start()
        else:
            self._thread_writer = BatchWriter(self.store, self.topics, self._stopping.wait, self._db_error)
        self._writer.start()
        self._prepared = True
        return self

    def start(self, wait_s: float | None = 10.0) -> IngestService:
        """Connect (reconnecting for ever in the background) and start writing. With ``wait_s``, raise
        BrokerError if the first connection does not succeed in time."""
        self.prepare()
        connect(self._client, self.options, background=True)
        self._client.loop_start()
        if wait_s is not None and not self._connected.wait(wait_s):
            self.stop()
            raise BrokerError(f"ingest cannot connect to {self.config.broker_url} within {wait_s:g}s")
        return self

    def stop(self) -> None:
        """Disconnect (the session and its subscriptions stay on the broker), then store what is queued. Those
        last messages are not acknowledged, so the broker redelivers them next time and the store ignores them."""
        self._stopping.set()
        if self._process is not None:
            self._process.request_stop()
        with self._ack_lock:
            self._epoch += 1
        self._client.disconnect()
        self._client.loop_stop()
        if self._writer.is_alive():
            self._writer.join()
        if self._process is not None:
            self._process.close()
        if self._own_store:
            self.store.close()

    def __enter__(self) -> IngestService:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def stats(self) -> IngestStats:
        with self._stats_lock:
            return replace(self._stats)

    @property
    def writer_pid(self) -> int | None:
        """The writer process's pid (None when writing on a thread, or between a crash and its replacement)."""
        return self._process.pid if self._process is not None else None

    @property
    def connected(self) -> bool:
        """Connected and subscribed."""
        return self._connected.is_set()

    def wait_until(self, predicate: Callable[[IngestStats], bool], timeout: float) -> bool:
        """Poll ``predicate(stats)`` until true or ``timeout`` (for tests, benchmarks and the CLI)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.stats):
                return True
            time.sleep(0.02)
        return predicate(self.stats)

    # --- MQTT (paho's network thread: queue and return) --------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        try:
            client = make_client(self.options)
        except ClientSetupError as exc:
            raise BrokerError(f"ingest: the MQTT broker at {self.config.broker_url}: {exc}") from exc
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def subscriptions(self) -> list[tuple[str, SubscribeOptions]]:
        shared = SubscribeOptions(qos=1)
        direct = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_ON_SUBSCRIBE)
        return [(self.topics.shared(self.config.group, self.topics.all_devices("telemetry")), shared),
                (self.topics.shared(self.config.group, self.topics.all_devices("events")), shared),
                (self.topics.all_devices("status"), direct), (self.topics.all_devices("reported"), direct)]

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("ingest: broker %s refused the connection: %s", self.config.broker_url, reason)
            return
        with self._ack_lock:
            self._epoch += 1
        # Always, whatever session_present says: Mosquitto 2.0 restores a persistent session from its file but not
        # its $share subscriptions, and until we subscribe again devices are told "no matching subscribers".
        client.subscribe(self.subscriptions())
        log.info("ingest %s connected (session present: %s)", self.config.mqtt_client_id, flags.session_present)

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, codes: list[Any], _p: Any) -> None:
        failed = [str(code) for code in codes if code.is_failure]
        if failed:
            log.error("ingest: broker refused subscriptions: %s", ", ".join(failed))
        with self._stats_lock:
            self._stats.subscribed += 1
        self._connected.set()   # ready: connected *and* subscribed (a restarted broker may have lost the session)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        with self._ack_lock:
            self._epoch += 1
        self._connected.clear()
        if not self._stopping.is_set():
            log.warning("ingest disconnected from %s (%s); reconnecting", self.config.broker_url, reason)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._queue.put(_Raw(msg.topic, bytes(msg.payload), msg.mid, msg.qos, self._epoch))  # bytes: no copy
        with self._stats_lock:
            self._stats.received += 1

    # --- writer thread -----------------------------------------------------------------------------------
    def _write_loop(self) -> None:
        # With a writer process, up to two batches are out: the child works on one while this thread acknowledges
        # the previous one and collects the next (the receive maximum, two batches, lets the broker send them).
        depth = 1 if self._process is None else 2
        in_flight: deque[list[_Raw]] = deque()
        while True:
            batch = self._collect() if len(in_flight) < depth else []
            if batch:
                if self._process is not None:
                    self._process.submit([(r.topic, r.payload) for r in batch])
                in_flight.append(batch)
            if in_flight and (not batch or len(in_flight) >= depth):
                self._finish(in_flight.popleft())
            elif not batch and self._stopping.is_set():
                return

    def _collect(self) -> list[_Raw]:
        try:
            batch = [self._queue.get(timeout=0.1)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.config.flush_ms / 1000
        size, get = self.config.batch_size, self._queue.get
        while len(batch) < size:
            try:   # take what is already queued without timers; wait (until the deadline) only when empty
                while len(batch) < size:
                    batch.append(get(block=False))
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(get(timeout=remaining))
                except queue.Empty:
                    break
        return batch

    def _finish(self, batch: list[_Raw]) -> None:
        """Wait for (or, on a thread, compute) the batch's result, then acknowledge it."""
        if self._process is not None:
            result = self._process.result(self._db_error)
        else:
            assert self._thread_writer is not None
            result = self._thread_writer.write([(r.topic, r.payload) for r in batch])
        if result is None:
            return   # stopping with the database down: nothing acked, the broker redelivers
        self._ack(batch)
        self._account(result)

    def _account(self, result: BatchResult) -> None:
        for problem in result.problems:
            log.warning("ingest: %s", problem)
        with self._stats_lock:
            s = self._stats
            s.stored += result.windows
            s.duplicates += result.duplicates
            s.other += result.other
            s.malformed += result.malformed
            s.batches += 1
        for spec in result.events:
            try:
                self.emit(spec)
            except Exception as exc:   # an events backend outage must not stop ingestion
                log.warning("ingest: could not emit %s: %s", spec.event, exc)

    def _db_error(self, reason: str) -> None:
        with self._stats_lock:
            self._stats.db_errors += 1
        log.error("ingest: %s", reason)

    def _ack(self, batch: list[_Raw]) -> None:
        acked = 0
        with self._ack_lock:
            for raw in batch:
                if raw.qos > 0 and raw.epoch == self._epoch:
                    self._client.ack(raw.mid, raw.qos)
                    acked += 1
        with self._stats_lock:
            self._stats.acked += acked

