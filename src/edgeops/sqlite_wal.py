"""Switching a SQLite file to WAL when other processes may be using it.

WAL lets readers (a monitor, ``rollout status``) run while a writer commits. It is a setting of the file, kept
once made, but making it needs the file to itself: while another connection holds a write lock on a file still
in rollback-journal mode (a second ingest process upgrading the same old store, say), SQLite answers "database
is locked" at once instead of waiting out the busy timeout. So the wait is here.
"""

import sqlite3
import time
from typing import Protocol

BUSY_S = 30.0  # how long a connection waits for another's write lock: SQLite's busy timeout, and use_wal's wait


class _Executes(Protocol):
    def execute(self, sql: str, /) -> object: ...


def use_wal(db: _Executes, wait_s: float = BUSY_S) -> None:
    """Put the file in WAL mode, waiting up to ``wait_s`` for other connections' write locks."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
