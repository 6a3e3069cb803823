"""The telemetry store's tables (SQLAlchemy 2 declarative): what each row is and which keys make writes
idempotent. Kept apart from ``store.py``, which holds how batches are written and read back."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, DateTime, Float, Index, Integer, String, Table, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from edge_agent.protocol.window import EPOCH_CHARS

BIG_ID = BigInteger().with_variant(Integer, "sqlite")   # SQLite autoincrements INTEGER PRIMARY KEY only


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, datetime: DateTime()}
    # Every class here declares a table (SQLAlchemy types __table__ as any FromClause, a subquery included).
    __table__: ClassVar[Table]


class WindowRow(Base):
    __tablename__ = "telemetry_windows"
    __table_args__ = (UniqueConstraint("device", "epoch", "seq", name="uq_telemetry_window_device_epoch_seq"),
                      Index("ix_telemetry_window_model_end", "model", "version", "window_end"))
    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    device: Mapped[str] = mapped_column(String(128))
    epoch: Mapped[str] = mapped_column(String(EPOCH_CHARS), server_default="")  # "" for a 1.0 sender
    seq: Mapped[int] = mapped_column(BigInteger)
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[int]
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    count: Mapped[int]
    errors: Mapped[int]
    dropped: Mapped[int]
    body: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime]


class DeviceRow(Base):
    __tablename__ = "telemetry_devices"
    device: Mapped[str] = mapped_column(String(128), primary_key=True)
    status: Mapped[str | None] = mapped_column(String(16))
    status_ts: Mapped[str | None] = mapped_column(String(40))
    status_at: Mapped[datetime | None]
    state: Mapped[str | None] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(String(128))
    version: Mapped[int | None]
    reported: Mapped[dict[str, Any] | None]
    reported_at: Mapped[datetime | None]


class EventRow(Base):
    __tablename__ = "telemetry_agent_events"
    __table_args__ = (UniqueConstraint("device", "event", "model", "version", "ts", name="uq_telemetry_event"),)
    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    device: Mapped[str] = mapped_column(String(128))
    event: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[int]
    reason: Mapped[str | None] = mapped_column(String(2000))
    rollout_id: Mapped[str | None] = mapped_column(String(128))
    ts: Mapped[str] = mapped_column(String(40))
    received_at: Mapped[datetime]


class EpisodeRow(Base):
    """An open or closed episode of a condition (``drift``, ``health``) of a model version in a scope (a device,
    or ``*`` for the fleet), so the monitor raises one event per episode rather than one per run. A new version
    that drifts again is a new episode."""

    __tablename__ = "telemetry_episodes"
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(128), primary_key=True)
    active: Mapped[bool] = mapped_column(default=False)
    started_at: Mapped[datetime | None]
    updated_at: Mapped[datetime | None]
    detail: Mapped[dict[str, Any] | None]


class LabelRow(Base):
    """Labels credited to the release and window of their predictions (telemetry 1.2 ``feedback_for``, or a label
    table ingested by ``edgeops labels ingest``). ``key`` says where the credit came from and makes writing it
    idempotent: ``w/{device}/{epoch}/{seq}/{model}@{version}/{start}`` for a window's credit (a redelivered window
    credits nothing twice), ``p/{prediction id}`` for an ingested label (the first label of a prediction wins).
    ``device`` is null for ingested labels: a prediction id does not name its device."""

    __tablename__ = "telemetry_labels"
    __table_args__ = (UniqueConstraint("key", name="uq_telemetry_label_key"),
                      Index("ix_telemetry_label_model_start", "model", "version", "window_start"))
    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(16))     # "agent" or "import"
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[int]
    device: Mapped[str | None] = mapped_column(String(128))
    window_start: Mapped[datetime]
    labelled: Mapped[int]
    correct: Mapped[int | None]
    abs_error_sum: Mapped[float | None] = mapped_column(Float)
    abs_error_sq_sum: Mapped[float | None] = mapped_column(Float)
    received_at: Mapped[datetime]
