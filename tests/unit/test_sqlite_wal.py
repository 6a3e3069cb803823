"""use_wal waits for another connection's write lock instead of failing at once, and gives up when told."""

import sqlite3
import threading
from pathlib import Path

import pytest

from edgeops.rollout.state import RolloutStore
from edgeops.sqlite_wal import use_wal

pytestmark = pytest.mark.unit


def rollback_journal_file(path: Path) -> sqlite3.Connection:
    """A file in rollback-journal mode, and a second connection holding a write lock on it."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (a)")
    db.close()
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    return writer


def test_without_the_wait_sqlite_fails_at_once(tmp_path: Path) -> None:
    """What use_wal is for: the busy timeout does not cover this case."""
    writer = rollback_journal_file(tmp_path / "x.db")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        sqlite3.connect(tmp_path / "x.db", timeout=30).execute("PRAGMA journal_mode=WAL")
    writer.close()


def test_use_wal_gives_up_after_its_wait(tmp_path: Path) -> None:
    writer = rollback_journal_file(tmp_path / "x.db")
    db = sqlite3.connect(tmp_path / "x.db")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        use_wal(db, 0.1)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    writer.close()


def test_a_rollout_store_opens_once_the_writer_commits(tmp_path: Path) -> None:
    writer = rollback_journal_file(tmp_path / "rollouts.db")
    commit = threading.Timer(0.3, writer.execute, ("COMMIT",))
    commit.start()
    store = RolloutStore(tmp_path / "rollouts.db")
    commit.join()
    writer.close()
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
