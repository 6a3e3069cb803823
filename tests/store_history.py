"""Telemetry store tables as older edgeops releases created them, to test that opening the store upgrades them.

Copied from the released definitions, never edited afterwards: they are history, like tests/fixtures/protocol.
"""

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from sqlalchemy import BigInteger, Column, DateTime, Engine, Index, Integer, MetaData, String, Table, Text, text
from sqlalchemy import UniqueConstraint as Unique

BIG_ID = BigInteger().with_variant(Integer, "sqlite")
T = TypeVar("T")


def windows_before_epochs(engine: Engine, schema: str | None = None) -> None:
    """Create telemetry_windows as it was before telemetry 1.1 (unique on device and seq) with one row:
    device "a", seq 1."""
    if schema:
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    meta = MetaData(schema=schema)
    table = Table(
        "telemetry_windows", meta,
        Column("id", BIG_ID, primary_key=True, autoincrement=True),
        Column("device", String(128), nullable=False), Column("seq", BigInteger, nullable=False),
        Column("model", String(128), nullable=False), Column("version", Integer, nullable=False),
        Column("window_start", DateTime, nullable=False), Column("window_end", DateTime, nullable=False),
        Column("count", Integer, nullable=False), Column("errors", Integer, nullable=False),
        Column("dropped", Integer, nullable=False), Column("body", Text, nullable=False),
        Column("received_at", DateTime, nullable=False),
        Unique("device", "seq", name="uq_telemetry_window_device_seq"),
        Index("ix_telemetry_window_model_end", "model", "version", "window_end"))
    meta.create_all(engine)
    when = datetime(2026, 1, 1, 0, 1)
    with engine.begin() as conn:
        conn.execute(table.insert().values(device="a", seq=1, model="churn", version=3, window_start=when,
                                           window_end=when, count=5, errors=0, dropped=0, body="{}",
                                           received_at=when))


def open_at_once(open_store: Callable[[], T], n: int = 2) -> list[T]:
    """Call ``open_store`` from ``n`` threads released together (ingest instances starting at once); raises
    the first failure of any of them."""
    barrier, opened, failed = threading.Barrier(n), [], []

    def run() -> None:
        barrier.wait()
        try:
            opened.append(open_store())
        except Exception as exc:  # re-raised below, on the test's thread
            failed.append(exc)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if failed:
        raise failed[0]
    assert len(opened) == n, "an opener did not finish within 60 s"
    return opened


@contextmanager
def write_lock_held(path: Path, commit_after_s: float | None = None) -> Iterator[None]:
    """Another connection holds a write lock on the SQLite file ``path`` (``BEGIN IMMEDIATE``), and commits
    after ``commit_after_s`` (None: it never does, and leaving rolls it back)."""
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    commit = None if commit_after_s is None else threading.Timer(commit_after_s, writer.execute, ("COMMIT",))
    if commit is not None:
        commit.start()
    try:
        yield
    finally:
        if commit is not None:
            commit.join()
        writer.close()
