"""The telemetry store's database engine: SQLite (WAL, a busy timeout) or PostgreSQL (a schema of its own when
asked), and creating the tables when several ingest instances open a new store together."""

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from edgeops.sqlite_wal import BUSY_S, use_wal
from edgeops.telemetry.tables import Base


def create_tables(engine: Engine, attempts: int = 3) -> None:
    """``create_all`` looks before it creates, so two ingest instances opening a new store together can both
    see a table missing and the slower one fails with "already exists". Looking again settles it; an error that
    another look does not cure (permissions, say) is raised after the last attempt."""
    for attempt in range(attempts):
        try:
            Base.metadata.create_all(engine)
            return
        except DBAPIError:
            if attempt == attempts - 1:
                raise


def open_engine(url: str, schema: str | None) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": BUSY_S})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(url, pool_pre_ping=True)
    return engine.execution_options(schema_translate_map={None: schema}) if schema else engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """WAL lets readers (the monitor) run while the ingest writes; the connection's busy timeout (``timeout``
    above) lets two writers take turns."""
    cursor = dbapi_conn.cursor()
    use_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
