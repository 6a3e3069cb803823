"""The SQLite window insert bypasses SQLAlchemy's per-row processing (executemany in C, datetimes formatted by
``sqlite_datetime``): rows must still read back exactly as SQLAlchemy wrote them before."""

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import DateTime, create_engine, select
from store_history import open_at_once, windows_before_epochs, write_lock_held

from edge_agent.protocol import Counts, TelemetryWindow
from edgeops.telemetry.store import TelemetryStore, WindowRow, sqlite_datetime

pytestmark = pytest.mark.unit
SQLITE = create_engine("sqlite://").dialect
SQLALCHEMY_FORMAT = DateTime().dialect_impl(SQLITE).bind_processor(SQLITE)


@given(st.datetimes())
def test_sqlite_datetime_is_sqlalchemys_format(value: datetime) -> None:
    assert SQLALCHEMY_FORMAT is not None
    assert sqlite_datetime(value) == SQLALCHEMY_FORMAT(value)


def window(device: str, seq: int, end: str) -> TelemetryWindow:
    return TelemetryWindow(device=device, seq=seq, model="churn", version=3, start="2026-01-01T00:00:00.5+02:00",
                           end=end, count=10, errors={"input": 2, "model": 1}, features={"x": Counts((3, 7))},
                           ts="2026-01-03T00:00:00Z")


def test_windows_read_back_with_their_columns_and_duplicates_are_counted(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 't.db'}")
    first = store.write([window("a", 1, "2026-01-01T00:01:00Z"), window("a", 1, "2026-01-01T00:01:00Z"),
                         window("b", 1, "2026-01-02T00:00:00Z")])
    again = store.write([window("a", 1, "2026-01-01T00:01:00Z"), window("a", 2, "2026-01-03T00:00:00Z")])
    assert (first.windows, first.duplicates, again.windows, again.duplicates) == (2, 1, 1, 1)
    assert store.windows(since=datetime(2026, 1, 1, 12, tzinfo=UTC)) == [window("b", 1, "2026-01-02T00:00:00Z"),
                                                                         window("a", 2, "2026-01-03T00:00:00Z")]
    table = WindowRow.__table__
    with store.engine.connect() as conn:
        row = conn.execute(select(table).where(table.c.device == "a", table.c.seq == 1)).one()
    assert (row.window_start, row.window_end) == (datetime(2025, 12, 31, 22, 0, 0, 500000), datetime(2026, 1, 1, 0, 1))
    assert (row.count, row.errors, row.dropped, row.model, row.version) == (10, 3, 0, "churn", 3)
    assert isinstance(row.received_at, datetime)
    store.close()


def test_windows_of_a_replaced_outbox_are_new_facts(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 't.db'}")
    old, new = window("a", 1, "2026-01-01T00:01:00Z"), replace(window("a", 1, "2026-01-02T00:00:00Z"), epoch="beef")
    assert store.write([old]).windows == 1
    result = store.write([new, old, new])  # the same seq in another epoch, and redeliveries of both
    assert (result.windows, result.duplicates) == (1, 2)
    assert sorted(w.epoch for w in store.windows(device="a")) == ["", "beef"]
    store.close()


def test_a_store_from_before_epochs_is_upgraded_and_keeps_its_windows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    windows_before_epochs(create_engine(url))
    store = TelemetryStore(url)
    assert store.window_keys() == [("a", 1)]  # kept, under epoch ""
    assert store.write([window("a", 1, "2026-01-01T00:01:00Z")]).duplicates == 1  # a 1.0 redelivery
    assert store.write([replace(window("a", 1, "2026-01-01T00:01:00Z"), epoch="beef")]).windows == 1
    store.close()
    assert TelemetryStore(url).window_keys() == [("a", 1), ("a", 1)]  # opening it again changes nothing


def test_two_stores_opening_an_old_file_at_once_upgrade_it_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    windows_before_epochs(create_engine(url))
    opened = open_at_once(lambda: TelemetryStore(url))
    assert all(store.window_keys() == [("a", 1)] for store in opened)
    for store in opened:
        store.close()


def test_opening_an_old_file_waits_while_another_connection_writes_to_it(tmp_path: Path) -> None:
    """A file in rollback-journal mode cannot switch to WAL while another connection holds a write lock, and
    SQLite says "locked" at once rather than after the busy timeout; the store must wait for the writer (CI saw
    two ingests opening one old store fail so, one of them upgrading it)."""
    path = tmp_path / "old.db"
    windows_before_epochs(create_engine(f"sqlite:///{path}"))
    with write_lock_held(path, commit_after_s=0.5):
        store = TelemetryStore(f"sqlite:///{path}")
    assert store.window_keys() == [("a", 1)]
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
    store.close()
