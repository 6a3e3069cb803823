"""Upgrades of an existing telemetry store's tables, run when the store is opened (``create_all`` only ever
creates what is missing, so a changed table needs a step here).

Epochs (telemetry 1.1): windows were unique on ``(device, seq)``; they are now unique on ``(device, epoch,
seq)``, because a device whose outbox is replaced counts seq from 0 again under a new epoch, and under the old
key its new windows were silently discarded as redeliveries. Existing rows get epoch ``""`` (what a 1.0
sender's windows carry), so a 1.0 agent's redeliveries still find them.

Each step first looks without a lock (the common case: nothing to do, and opening a store must not block the
writers of a running one). When it has work, it runs in one transaction that takes the table exclusively and
looks again, so two ingest processes starting together upgrade it once, and a failure leaves it as it was.
"""

import contextlib
import logging

from sqlalchemy import Connection, Engine
from sqlalchemy.schema import CreateIndex, CreateTable

from edge_agent.protocol.window import EPOCH_CHARS
from edgeops.telemetry.tables import WindowRow

log = logging.getLogger(__name__)

OLD_KEY = "uq_telemetry_window_device_seq"
NEW_KEY = "uq_telemetry_window_device_epoch_seq"


def upgrade(engine: Engine, schema: str | None) -> list[str]:
    """Bring the tables to the current shape; returns what was done (empty when nothing was needed)."""
    done = _windows_epoch_pg(engine, schema) if engine.dialect.name == "postgresql" else _windows_epoch_sqlite(engine)
    for step in done:
        log.warning("telemetry store upgraded: %s", step)
    return done


def _windows_epoch_pg(engine: Engine, schema: str | None) -> list[str]:
    table = WindowRow.__tablename__
    qualified = f'"{schema}".{table}' if schema else table
    if not _pg_lacks_epoch(engine, qualified, lock=False):
        return []
    with engine.begin() as conn:
        if not _pg_lacks_epoch(conn, qualified, lock=True):
            return []
        conn.exec_driver_sql(f"ALTER TABLE {qualified} ADD COLUMN epoch VARCHAR({EPOCH_CHARS}) NOT NULL DEFAULT ''")
        conn.exec_driver_sql(f"ALTER TABLE {qualified} DROP CONSTRAINT IF EXISTS {OLD_KEY}")
        conn.exec_driver_sql(f"ALTER TABLE {qualified} ADD CONSTRAINT {NEW_KEY} UNIQUE (device, epoch, seq)")
    return [f"{qualified}: added epoch; windows are unique on (device, epoch, seq)"]


def _pg_lacks_epoch(bind: Engine | Connection, qualified: str, *, lock: bool) -> bool:
    """Whether the windows table exists without an epoch column; with ``lock``, take it exclusively first
    (``bind`` is then the upgrading transaction's connection)."""
    with contextlib.ExitStack() as stack:
        conn = bind if isinstance(bind, Connection) else stack.enter_context(bind.connect())
        if conn.exec_driver_sql("SELECT to_regclass(%(t)s)", {"t": qualified}).scalar_one() is None:
            return False
        if lock:
            conn.exec_driver_sql(f"LOCK TABLE {qualified} IN ACCESS EXCLUSIVE MODE")
        return conn.exec_driver_sql(
            "SELECT 1 FROM pg_attribute WHERE attrelid = %(t)s::regclass AND attname = 'epoch' AND NOT attisdropped",
            {"t": qualified}).first() is None


def _windows_epoch_sqlite(engine: Engine) -> list[str]:
    """SQLite cannot drop a table's UNIQUE constraint, so the table is rebuilt: renamed, created anew, copied."""
    table, old = WindowRow.__tablename__, f"{WindowRow.__tablename__}_before_epochs"
    with engine.connect() as conn:
        columns = [row[1] for row in conn.exec_driver_sql(f"PRAGMA table_info({table})")]
    if not columns or "epoch" in columns:
        return []
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("BEGIN IMMEDIATE")  # DDL included: the whole rebuild commits or none of it
        try:
            columns = [row[1] for row in cursor.execute(f"PRAGMA table_info({table})")]
            if not columns or "epoch" in columns:  # another process upgraded it meanwhile
                raw.rollback()
                return []
            cursor.execute(f"ALTER TABLE {table} RENAME TO {old}")
            for index in WindowRow.__table__.indexes:  # index names are global: the renamed table holds them
                cursor.execute(f"DROP INDEX IF EXISTS {index.name}")
            cursor.execute(str(CreateTable(WindowRow.__table__).compile(dialect=engine.dialect)))
            for index in WindowRow.__table__.indexes:
                cursor.execute(str(CreateIndex(index).compile(dialect=engine.dialect)))
            kept = ", ".join(columns)
            cursor.execute(f"INSERT INTO {table} ({kept}) SELECT {kept} FROM {old}")
            cursor.execute(f"DROP TABLE {old}")
            raw.commit()
        except BaseException:
            raw.rollback()
            raise
    finally:
        raw.close()
    return [f"{table}: added epoch; windows are unique on (device, epoch, seq)"]
