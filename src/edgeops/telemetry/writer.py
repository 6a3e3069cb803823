"""The ingest's batch writer: parse a batch of received messages and store it in one transaction.

Why a module of its own: the writer can run in a process of its own (``WriterProcess``, the default). Parsing,
validation and the insert cost more CPU per message than paho's receive, and in one process they all hold the
same GIL, so the network thread and the writer took turns on one core. With the writer in a child process, the
ingest's main process only receives, forwards raw bytes over a pipe and acknowledges; the two run on two cores.
``BatchWriter`` is the same code either way (``IngestConfig.writer_process=False`` runs it on a thread).

The child owns nothing that matters for delivery: the parent acknowledges a message only after the child has
reported its batch committed, so if the child dies the parent starts a new one and sends the batch again
(already-committed windows are ignored: the store is idempotent on (device, epoch, seq)).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing as mp
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, cast

from sqlalchemy.exc import OperationalError, SQLAlchemyError

from edge_agent.protocol import AgentEvent, ProtocolError, Reported, Status, TelemetryWindow, Topics
from edgeops.errors import EdgeopsError
from edgeops.telemetry.drift import parse_ts
from edgeops.telemetry.events import EventSpec
from edgeops.telemetry.store import Message, StoreError, TelemetryStore

log = logging.getLogger("edgeops.telemetry")

Batch = list[tuple[str, bytes]]   # (topic, payload) in arrival order
PARSERS: dict[str, Any] = {"telemetry": TelemetryWindow, "status": Status, "reported": Reported,
                           "events": AgentEvent}


def parse_message(topics: Topics, topic: str, payload: bytes) -> Message | None:
    """A device message from its topic and payload; None for an empty payload (a cleared retained topic).
    ProtocolError (naming the problem) for anything malformed, including a payload that names another device
    than its topic (a device may only speak for itself)."""
    device, channel = topics.parse_device_topic(topic)
    if channel not in PARSERS:
        raise ProtocolError(f"channel {channel!r} is not ingested", field="topic")
    if not payload:
        return None
    message: Message = PARSERS[channel].parse(payload)
    if message.device != device:
        raise ProtocolError(f"payload is from {message.device!r} but the topic is {device!r}", field="device")
    if isinstance(message, TelemetryWindow):
        for name in ("start", "end"):
            try:
                parse_ts(getattr(message, name))
            except ValueError as exc:
                raise ProtocolError("is not an ISO-8601 timestamp", field=name) from exc
    return message


@dataclass
class BatchResult:
    """What a batch came to. ``problems`` are log lines about skipped messages (the parent logs them, since a
    child process has no logging set up)."""

    windows: int = 0        # new windows stored
    duplicates: int = 0     # windows / agent events already stored
    other: int = 0          # status, reported, agent events stored
    malformed: int = 0      # unparseable messages and messages the database rejected
    problems: list[str] = field(default_factory=list)
    events: list[EventSpec] = field(default_factory=list)   # to emit after the acknowledgement


class BatchWriter:
    """Parse and store batches. ``wait_stop(delay)`` sleeps between retries while the database is unreachable
    and returns True when the ingest is stopping (the batch is then given up, unacknowledged);
    ``on_db_error(reason)`` is told about each failed attempt."""

    def __init__(self, store: TelemetryStore, topics: Topics, wait_stop: Callable[[float], bool],
                 on_db_error: Callable[[str], None]) -> None:
        self.store = store
        self.topics = topics
        self.wait_stop = wait_stop
        self.on_db_error = on_db_error

    def write(self, batch: Batch) -> BatchResult | None:
        """None only when stopping with the database down: nothing was stored, nothing may be acknowledged."""
        result = BatchResult()
        messages: list[Message] = []
        payloads: list[bytes | None] = []
        for topic, payload in batch:
            try:
                message = parse_message(self.topics, topic, payload)
            except (ProtocolError, UnicodeDecodeError) as exc:
                result.malformed += 1
                result.problems.append(f"skipping malformed message on {topic}: {exc}")
                continue
            if message is not None:
                messages.append(message)
                payloads.append(payload)
        if not self._store(messages, payloads, result):
            return None
        result.other += sum(1 for m in messages if not isinstance(m, TelemetryWindow))
        return result

    def _store(self, messages: list[Message], payloads: list[bytes | None], result: BatchResult) -> bool:
        """Write the batch, retrying while the database is unreachable. A batch the database rejects for its
        content is written message by message so one bad row cannot block the rest."""
        delay = 0.2
        while True:
            try:
                written = self.store.write(messages, payloads)
            except OperationalError as exc:
                self.on_db_error(f"telemetry store unavailable ({str(exc).splitlines()[0]}); "
                                 f"retrying in {delay:.1f}s")
                if self.wait_stop(delay):
                    return False
                delay = min(delay * 2, 5.0)
                continue
            except SQLAlchemyError:
                self._store_one_by_one(messages, payloads, result)
                return True
            result.windows += written.windows
            result.duplicates += written.duplicates
            result.events.extend(written.events)
            return True

    def _store_one_by_one(self, messages: list[Message], payloads: list[bytes | None], result: BatchResult) -> None:
        for message, payload in zip(messages, payloads, strict=True):
            try:
                written = self.store.write([message], [payload])
            except SQLAlchemyError as exc:
                result.malformed += 1
                result.problems.append(f"store rejected a message from {message.device}: {str(exc).splitlines()[0]}")
                continue
            result.windows += written.windows
            result.duplicates += written.duplicates
            result.events.extend(written.events)


class WriterProcess:
    """A BatchWriter in a child process (spawned: the parent runs paho's thread, and forking a threaded process
    is unsafe). Batches go over a pipe, results come back in order; the parent keeps the messages (and their
    acknowledgements) until their batch's result is back."""

    def __init__(self, db_url: str, schema: str | None, prefix: str) -> None:
        self._args = (db_url, schema, prefix)
        self._ctx = mp.get_context("spawn")
        self._stop = self._ctx.Event()
        self._proc: Any = None
        self._conn: Connection | None = None
        self._sent: deque[Batch] = deque()   # submitted, result not received yet

    def start(self, timeout: float = 60.0) -> Connection:
        """Start the child and wait until its store is open (StoreError if it cannot open it); returns the pipe
        to it."""
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_serve, args=(child, self._stop, *self._args),
                                       name="edgeops-ingest-writer", daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent
        if not parent.poll(timeout):
            self._kill()
            raise StoreError(f"the ingest writer process did not start within {timeout:g}s")
        try:
            status, detail = parent.recv()
        except EOFError:
            status, detail = "failed", f"exit code {self._proc.exitcode}"
        if status != "ready":
            self._kill()
            raise StoreError(f"the ingest writer process failed to start: {detail}")
        return parent

    def submit(self, batch: Batch) -> None:
        """Send a batch; the child starts on it as soon as it is done with the ones before (``result`` gives the
        results in order). The parent submits the next batch before waiting, so the child never waits for the
        parent's acknowledgements and collecting."""
        self._sent.append(batch)
        if self._conn is not None:
            with contextlib.suppress(OSError):   # a dead child is noticed (and replaced) by result()
                self._conn.send(batch)

    def result(self, on_db_error: Callable[[str], None]) -> BatchResult | None:
        """The result of the oldest submitted batch; a child that dies on the way is replaced and every batch
        not yet reported is sent again. None when stopping with the database (or the child) down."""
        delay = 0.5
        while True:
            try:
                if self._conn is None:
                    raise EOFError("no writer process")
                kind, value = self._conn.recv()
                if kind == "db_error":
                    on_db_error(value)
                    continue
                self._sent.popleft()
                return cast(BatchResult, value)   # the child sends ("result", BatchResult) or ("db_error", str)
            except (EOFError, OSError) as exc:
                log.error("ingest writer process is gone (%s, exit code %s); starting a new one",
                          str(exc) or type(exc).__name__, self._proc.exitcode if self._proc else None)
            self._kill()
            if self._stop.wait(delay):
                self._sent.popleft()
                return None   # stopping: the batch stays unacknowledged
            delay = min(delay * 2, 10.0)
            try:
                conn = self.start()
                for batch in self._sent:
                    conn.send(batch)
            except (EdgeopsError, OSError) as exc:
                log.error("ingest: %s", exc)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def request_stop(self) -> None:
        """From any thread: a writer retrying against a database that is down gives up its batch."""
        self._stop.set()

    def close(self, timeout: float = 30.0) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):   # a child already gone
                self._conn.send(None)
        if self._proc is not None:
            self._proc.join(timeout)
        self._kill()

    def _kill(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        if self._conn is not None:
            self._conn.close()
        self._proc, self._conn = None, None


def _serve(conn: Connection, stop: Any, db_url: str, schema: str | None, prefix: str) -> None:
    """The child: open the store, then write batches until the parent sends None or goes away."""
    try:
        store = TelemetryStore(db_url, schema=schema)
    except Exception as exc:   # report any failure to open: the parent raises it
        conn.send(("failed", str(exc)))
        return
    writer = BatchWriter(store, Topics(prefix), stop.wait, lambda reason: conn.send(("db_error", reason)))
    # Everything alive now (modules, SQLAlchemy's metadata) lives as long as the process: keep the cyclic GC
    # from scanning it again and again (full collections cost ~15 µs per window at ingest rates).
    gc.freeze()
    conn.send(("ready", None))
    try:
        while True:
            try:
                batch = conn.recv()
            except EOFError:   # the parent is gone
                return
            if batch is None:
                return
            started = time.perf_counter()
            result = writer.write(batch)
            log.debug("wrote %d messages in %.1f ms", len(batch), (time.perf_counter() - started) * 1000)
            conn.send(("done", result))
    finally:
        store.close()
