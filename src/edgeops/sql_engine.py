"""SQLAlchemy engines as every edgeops store opens them: SQLite embedded by default, PostgreSQL shared by a team.

SQLite: the file's folder is created, WAL lets readers (a monitor, ``rollout status``) run while a writer
commits, and the busy timeout lets two writers take turns. PostgreSQL: connections are checked before use (a
restarted server must not fail the next step), and ``schema`` puts the tables in a schema of their own (tests
use a throw-away one; ``create_schema`` makes it). Passwords never need to be in the URL: psycopg reads
PGPASSWORD and ~/.pgpass.
"""

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError

from edgeops.sqlite_wal import BUSY_S, use_wal

BEGIN_OPTION = "edgeops_sqlite_begin"
"""Execution option naming the statement that opens a SQLite transaction (``BEGIN IMMEDIATE``: take the write
lock at once, so that a check-then-write transaction cannot be overtaken between its read and its write)."""


def sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL (None for other databases and for ``:memory:``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def shown_url(url: str) -> str:
    """The URL for messages: any password masked."""
    return make_url(url).render_as_string(hide_password=True)


def open_engine(url: str, schema: str | None = None, *, explicit_begin: bool = False) -> Engine:
    """An engine for ``url``. ``explicit_begin`` (SQLite) has SQLAlchemy, not the sqlite3 module, open each
    transaction, with ``BEGIN`` or whatever the connection's ``BEGIN_OPTION`` says."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_file(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": BUSY_S})
        event.listen(engine, "connect", _sqlite_pragmas_autocommit if explicit_begin else _sqlite_pragmas)
        if explicit_begin:
            event.listen(engine, "begin", _sqlite_begin)
        return engine
    engine = create_engine(url, pool_pre_ping=True)
    return engine.execution_options(schema_translate_map={None: schema}) if schema else engine


def create_schema(engine: Engine, schema: str | None) -> None:
    """Create the PostgreSQL schema the tables go in, when one is asked for and missing."""
    if schema:
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))


def create_all(metadata: MetaData, engine: Engine, attempts: int = 3) -> None:
    """``create_all`` looks before it creates, so two processes opening a new store together can both see a table
    missing and the slower one fails with "already exists". Looking again settles it; an error that another look
    does not cure (permissions, say) is raised after the last attempt."""
    for attempt in range(attempts):
        try:
            metadata.create_all(engine)
            return
        except DBAPIError:
            if attempt == attempts - 1:
                raise


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    use_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")   # WAL + NORMAL: a killed process loses nothing committed
    cursor.close()


def _sqlite_pragmas_autocommit(dbapi_conn: Any, record: Any) -> None:
    dbapi_conn.isolation_level = None   # sqlite3 opens no transaction of its own; _sqlite_begin does
    _sqlite_pragmas(dbapi_conn, record)


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql(conn.get_execution_options().get(BEGIN_OPTION, "BEGIN"))


__all__ = ["BEGIN_OPTION", "create_all", "create_schema", "open_engine", "shown_url", "sqlite_file", "sqlite_url"]
