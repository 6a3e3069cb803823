"""The outbox keeps windows until acknowledged, survives reopening, and never loses data silently."""

import sqlite3
from pathlib import Path

import pytest

from edge_agent.outbox import Outbox, OutboxError

pytestmark = pytest.mark.unit


def fill(box: Outbox, n: int) -> list[int]:
    seqs = []
    for _ in range(n):
        seq = box.next_seq()
        box.put(seq, f"window {seq}".encode(), dropped=box.dropped())
        seqs.append(seq)
    return seqs


def test_windows_wait_until_acked_and_seq_survives_a_restart(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite3", max_windows=10)
    assert fill(box, 3) == [0, 1, 2]
    assert box.ack(1) and not box.ack(1)
    box.close()
    box = Outbox(tmp_path / "outbox.sqlite3", max_windows=10)
    assert box.pending(10) == [(0, b"window 0"), (2, b"window 2")]
    assert box.pending(10, after=0) == [(2, b"window 2")]
    assert box.next_seq() == 3  # acked windows do not give their seq back
    box.ack(0)
    box.ack(2)
    box.close()
    assert Outbox(tmp_path / "outbox.sqlite3", max_windows=10).next_seq() == 3  # even when empty


def test_next_seq_is_only_taken_by_put(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_windows=10)
    assert box.next_seq() == box.next_seq() == 0
    box.put(0, b"a")
    with pytest.raises(OutboxError, match="already used"):
        box.put(0, b"b")
    assert box.pending() == [(0, b"a")]


def test_full_outbox_drops_the_oldest_and_the_loss_is_always_accounted_for(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_windows=3)
    carried: dict[int, int] = {}
    for _ in range(6):
        seq, dropped = box.next_seq(), box.dropped()
        box.put(seq, b"w", dropped=dropped)
        carried[seq] = dropped
    kept = [seq for seq, _ in box.pending()]
    assert kept == [3, 4, 5]  # the oldest went first
    # every evicted window (0, 1, 2) is counted exactly once: by a kept window or by the counter
    assert sum(carried[seq] for seq in kept) + box.dropped() == 3


def test_a_dropped_window_gives_its_carried_count_back(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_windows=1)
    box.put(0, b"w0")
    box.put(1, b"w1", dropped=box.dropped())  # evicts w0: dropped = 1
    assert box.dropped() == 1
    box.put(2, b"w2", dropped=box.dropped())  # carries 1, evicts w1 (which carried 0): dropped = 1
    box.put(3, b"w3", dropped=box.dropped())  # carries 1, evicts w2 which carried 1: dropped = 1 + 1
    assert box.dropped() == 2
    assert box.pending() == [(3, b"w3")]
    # delivered w3 says 1 lost; the counter still holds 2 for the next window: 3 lost in total (w0, w1, w2)
    assert box.take_dropped() == 2 and box.dropped() == 0


def test_record_loss_counts_refused_windows(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_windows=5)
    box.record_loss(2)
    assert box.dropped() == 2


def test_the_file_is_sqlite_wal_with_full_sync(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_windows=5)
    assert box._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_a_broken_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutboxError, match="cannot open outbox"):
        Outbox(path, max_windows=5)
    newer = tmp_path / "newer.db"
    with sqlite3.connect(newer) as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(OutboxError, match="schema 99"):
        Outbox(newer, max_windows=5)


def test_the_epoch_is_drawn_once_per_outbox_file(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "a.db", max_windows=10)
    epoch = box.epoch
    assert len(epoch) == 16 and int(epoch, 16) >= 0
    box.close()
    assert Outbox(tmp_path / "a.db", max_windows=10).epoch == epoch  # the same outbox keeps it
    assert Outbox(tmp_path / "b.db", max_windows=10).epoch != epoch  # a replaced outbox counts seq anew


def test_a_schema_1_outbox_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)  # what an agent before epochs wrote
    db.executescript("""
        CREATE TABLE windows (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL,
                              carried_dropped INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT INTO counters (name, value) VALUES ('next_seq', 8), ('dropped', 2);
        INSERT INTO windows (seq, payload) VALUES (7, x'7b7d');
        PRAGMA user_version=1;""")
    db.close()
    box = Outbox(path, max_windows=10)
    assert box.pending(10) == [(7, b"{}")] and box.next_seq() == 8 and box.dropped() == 2  # nothing lost
    assert len(box.epoch) == 16
    box.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2

