"""The telemetry store's database engine: edgeops.sql_engine's (SQLite with WAL and a busy timeout, or
PostgreSQL with a schema of its own when asked), shared with the rollout state; and creating the tables when
several ingest instances open a new store together."""

from sqlalchemy import Engine

from edgeops.sql_engine import create_all, open_engine
from edgeops.telemetry.tables import Base


def create_tables(engine: Engine, attempts: int = 3) -> None:
    """The telemetry tables, created once however many ingest instances open a new store at once."""
    create_all(Base.metadata, engine, attempts)


__all__ = ["create_tables", "open_engine"]
