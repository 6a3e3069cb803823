"""The durable telemetry outbox: windows wait in SQLite until the broker has acknowledged them.

A window is written here *before* it is published and deleted only when its PUBACK arrives, so a broker
outage, a crash or ``kill -9`` loses nothing that was closed. The outbox also owns the device's telemetry
``seq``: it is persisted in the same transaction as the window, so it is gapless and monotonic across
restarts (the control plane dedupes on ``(device, epoch, seq)``; a reused seq would be discarded there).

Durability: WAL journal with ``synchronous=FULL``. NORMAL would survive a process crash but may lose the
last commits on power loss, which is the usual way an edge device stops; a window is committed about once a
minute, so an fsync per commit costs nothing that matters.

Epoch: a random id drawn when the outbox file is created, carried by every window. ``seq`` counts within it,
so a device whose outbox is replaced (a reflash, a new data directory) restarts seq at 0 under a new epoch and
the control plane, which dedupes on ``(device, epoch, seq)``, stores its windows instead of discarding them as
redeliveries of the old outbox's. An outbox of schema 1 (before epochs) gets its epoch when first opened.

Bounded: past ``max_windows`` rows the OLDEST window is dropped and counted. The count is carried by the next
window written (its ``dropped`` field) and stays in the row, so when that window is dropped as well its count
returns to the counter: loss is always reported, never silent.
"""

import secrets
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import AgentError

SCHEMA_VERSION = 2  # 2: the meta table (epoch); a schema 1 outbox is upgraded in place
_SCHEMA = """
CREATE TABLE IF NOT EXISTS windows (
    seq INTEGER PRIMARY KEY,
    payload BLOB NOT NULL,
    carried_dropped INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters (name, value) VALUES ('next_seq', 0), ('dropped', 0);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class OutboxError(AgentError):
    """The outbox file cannot be opened or written (disk full, corrupt file, wrong permissions)."""


class Outbox:
    """SQLite-backed queue of serialized telemetry windows, keyed by ``seq``.

    Used by the agent's owner thread; a lock makes it safe anyway (the HTTP or CLI thread may read counts).
    """

    def __init__(self, path: Path, max_windows: int) -> None:
        if max_windows < 1:
            raise OutboxError("outbox_max_windows must be at least 1")
        self.path = Path(path)
        self.max_windows = max_windows
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in range(SCHEMA_VERSION + 1):
                raise OutboxError(f"outbox {self.path} has schema {version}, this agent knows {SCHEMA_VERSION}")
            self._db.executescript(_SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO meta (name, value) VALUES ('epoch', ?)", (secrets.token_hex(8),))
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self.epoch: str = self._db.execute("SELECT value FROM meta WHERE name = 'epoch'").fetchone()[0]
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open outbox {self.path}: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise OutboxError(f"outbox {self.path}: {exc}") from exc

    def _counter(self, db: sqlite3.Connection, name: str) -> int:
        return int(db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0])

    def next_seq(self) -> int:
        """The seq the next ``put`` must use. It is taken for good only by ``put``, so a window that turns
        out empty leaves no gap."""
        with self._transaction() as db:
            return self._counter(db, "next_seq")

    def put(self, seq: int, payload: bytes, dropped: int = 0) -> None:
        """Store a window durably. ``dropped`` is the drop count this window carries (from ``dropped()``);
        it is subtracted from the counter in the same transaction, so it is reported exactly once."""
        with self._transaction() as db:
            expected = self._counter(db, "next_seq")
            if seq < expected:
                raise OutboxError(f"seq {seq} was already used (next is {expected})")
            db.execute("INSERT INTO windows (seq, payload, carried_dropped) VALUES (?, ?, ?)",
                       (seq, sqlite3.Binary(payload), dropped))
            db.execute("UPDATE counters SET value = ? WHERE name = 'next_seq'", (seq + 1,))
            db.execute("UPDATE counters SET value = MAX(value - ?, 0) WHERE name = 'dropped'", (dropped,))
            self._evict_overflow(db)

    def _evict_overflow(self, db: sqlite3.Connection) -> None:
        excess = int(db.execute("SELECT COUNT(*) FROM windows").fetchone()[0]) - self.max_windows
        if excess <= 0:
            return
        rows = db.execute("SELECT seq, carried_dropped FROM windows ORDER BY seq LIMIT ?", (excess,)).fetchall()
        lost = sum(1 + carried for _, carried in rows)
        db.execute("DELETE FROM windows WHERE seq <= ?", (rows[-1][0],))
        db.execute("UPDATE counters SET value = value + ? WHERE name = 'dropped'", (lost,))

    def pending(self, limit: int = 100, after: int = -1) -> list[tuple[int, bytes]]:
        """Up to ``limit`` stored windows with seq > ``after``, oldest first (the publish order)."""
        with self._lock:
            rows = self._db.execute("SELECT seq, payload FROM windows WHERE seq > ? ORDER BY seq LIMIT ?",
                                    (after, limit)).fetchall()
        return [(int(seq), bytes(payload)) for seq, payload in rows]

    def get(self, seq: int) -> bytes | None:
        """The stored window ``seq``, or None when it is gone (acknowledged, or evicted by the bound)."""
        with self._lock:
            row = self._db.execute("SELECT payload FROM windows WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else bytes(row[0])

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM windows").fetchone()[0])

    def ack(self, seq: int) -> bool:
        """The broker has the window: forget it. False when it was not (or no longer) stored."""
        with self._transaction() as db:
            return db.execute("DELETE FROM windows WHERE seq = ?", (seq,)).rowcount > 0

    def dropped(self) -> int:
        """Windows lost (evicted, or refused by the broker) and not yet reported by a stored window."""
        with self._transaction() as db:
            return self._counter(db, "dropped")

    def take_dropped(self) -> int:
        """Read and reset the drop count (for a caller that reports it some other way than ``put``)."""
        with self._transaction() as db:
            value = self._counter(db, "dropped")
            db.execute("UPDATE counters SET value = 0 WHERE name = 'dropped'")
            return value

    def record_loss(self, windows: int = 1) -> None:
        """Count windows lost outside the outbox (e.g. the broker refused them), so they are reported too."""
        with self._transaction() as db:
            db.execute("UPDATE counters SET value = value + ? WHERE name = 'dropped'", (windows,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
