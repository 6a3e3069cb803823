"""Label credits in the telemetry store: ground truth counted for the release and the time of its prediction.

Two sources write them (tables.LabelRow): the ingest, from the ``feedback_for`` of telemetry 1.2 windows — one
row per credit, keyed by the window that carried it, so a redelivered window credits nothing twice — and
``edgeops labels ingest`` (label_import.py), one row per prediction id, so re-ingesting a table counts nothing
twice. The monitor reads them summed per model version and device, and fleet-wide, by the time of the
*predictions* (their window's start), not by when the labels arrived: late labels make an old window's realized
accuracy complete instead of making today's look like something it is not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, literal_column, select

from edge_agent.protocol import TelemetryWindow
from edgeops.telemetry.drift import Scope, parse_ts
from edgeops.telemetry.realized import LabelTotals
from edgeops.telemetry.tables import LabelRow


def window_credit_rows(window: TelemetryWindow, now: datetime) -> list[dict[str, Any]]:
    """The rows of a window's ``feedback_for`` (its start instants were checked when it was parsed)."""
    return [{"key": f"w/{window.device}/{window.epoch}/{window.seq}/{c.model}@{c.version}/{c.start}",
             "source": "agent", "model": c.model, "version": c.version, "device": window.device,
             "window_start": parse_ts(c.start).replace(tzinfo=None), "labelled": c.labelled, "correct": c.correct,
             "abs_error_sum": c.abs_error_sum, "abs_error_sq_sum": c.abs_error_sq_sum, "received_at": now}
            for c in window.feedback_for]


def insert_credits(conn: Connection, insert: Callable[[Any], Any], rows: Iterable[dict[str, Any]]) -> list[str]:
    """Insert the rows whose key is new (the first of rows sharing a key); returns their keys. ``insert`` is the
    dialect's ``insert`` (``ON CONFLICT DO NOTHING`` on both SQLite and PostgreSQL)."""
    unique: dict[str, dict[str, Any]] = {}
    for row in rows:
        unique.setdefault(row["key"], row)
    if not unique:
        return []
    table = LabelRow.__table__
    stmt = insert(table).on_conflict_do_nothing(index_elements=["key"]).returning(table.c.key)
    return [key for (key,) in conn.execute(stmt, list(unique.values())).all()]


def label_totals(engine: Engine, since: datetime | None = None, model: str | None = None) -> dict[Scope, LabelTotals]:
    """Credits summed per (model, version, device) and per (model, version, None) for the fleet, for predictions
    made at or after ``since``. Ingested labels name no device: they count fleet-wide only."""
    table = LabelRow.__table__
    query = select(table.c.model, table.c.version, table.c.device, func.sum(table.c.labelled),
                   func.sum(table.c.correct), func.sum(table.c.abs_error_sum), func.sum(table.c.abs_error_sq_sum)
                   ).group_by(table.c.model, table.c.version, table.c.device)
    if since is not None:
        query = query.where(table.c.window_start >= since.astimezone(UTC).replace(tzinfo=None))
    if model is not None:
        query = query.where(table.c.model == model)
    totals: dict[Scope, LabelTotals] = {}
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    for name, version, device, labelled, correct, abs_sum, sq_sum in rows:
        scopes = [(name, version, None)] if device is None else [(name, version, device), (name, version, None)]
        for scope in scopes:
            totals.setdefault(scope, LabelTotals()).add(
                int(labelled or 0), float(correct or 0), None if abs_sum is None else float(abs_sum),
                None if abs_sum is None else float(sq_sum or 0.0))
    return totals


def hourly_label_totals(engine: Engine, since: datetime | None = None,
                        model: str | None = None) -> dict[tuple[str, int], dict[datetime, LabelTotals]]:
    """Fleet-wide credits per model version and UTC hour of their predictions (the hour their window started),
    for the report's chart of realized performance over time. The database truncates to the hour, so a week of
    a large fleet comes back as at most 168 rows per version."""
    table = LabelRow.__table__
    if engine.dialect.name == "postgresql":
        hour = func.date_trunc(literal_column("'hour'"), table.c.window_start)
    else:       # SQLite keeps datetimes as text: 2026-01-01 12:34:56.000000
        hour = func.strftime("%Y-%m-%d %H:00:00", table.c.window_start)
    query = select(table.c.model, table.c.version, hour.label("hour"), func.sum(table.c.labelled),
                   func.sum(table.c.correct), func.sum(table.c.abs_error_sum), func.sum(table.c.abs_error_sq_sum)
                   ).group_by(table.c.model, table.c.version, hour)
    if since is not None:
        query = query.where(table.c.window_start >= since.astimezone(UTC).replace(tzinfo=None))
    if model is not None:
        query = query.where(table.c.model == model)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    out: dict[tuple[str, int], dict[datetime, LabelTotals]] = {}
    for name, version, at, labelled, correct, abs_sum, sq_sum in rows:
        start = (at if isinstance(at, datetime) else datetime.fromisoformat(at)).replace(tzinfo=UTC)
        out.setdefault((name, version), {}).setdefault(start, LabelTotals()).add(
            int(labelled or 0), float(correct or 0), None if abs_sum is None else float(abs_sum),
            None if abs_sum is None else float(sq_sum or 0.0))
    return out
