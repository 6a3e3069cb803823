"""use_wal waits for another connection's write lock instead of failing at once, and gives up when told."""

import sqlite3
from pathlib import Path

import pytest
from store_history import write_lock_held

from edgeops.rollout.state import RolloutStore
from edgeops.sqlite_wal import use_wal

pytestmark = pytest.mark.unit


@pytest.fixture
def old_file(tmp_path: Path) -> Path:
    """A file in rollback-journal mode (SQLite's default)."""
    path = tmp_path / "x.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (a)")
    db.close()
    return path


def test_without_the_wait_sqlite_fails_at_once(old_file: Path) -> None:
    """What use_wal is for: the busy timeout does not cover this case."""
    with write_lock_held(old_file), pytest.raises(sqlite3.OperationalError, match="locked"):
        sqlite3.connect(old_file, timeout=30).execute("PRAGMA journal_mode=WAL")


def test_use_wal_gives_up_after_its_wait(old_file: Path) -> None:
    db = sqlite3.connect(old_file)
    with write_lock_held(old_file), pytest.raises(sqlite3.OperationalError, match="locked"):
        use_wal(db, 0.1)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_a_rollout_store_opens_once_the_writer_commits(old_file: Path) -> None:
    with write_lock_held(old_file, commit_after_s=0.3):
        store = RolloutStore(old_file)
    store.close()
    assert sqlite3.connect(old_file).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
