"""Rollout state, written after every step, so that ``status`` and ``abort`` work from another process (or
another machine) and a restarted controller resumes where the last one stopped (STYLE: persist before
transition). SQLite (``rollouts.db``) is the embedded default; PostgreSQL, by URL (``rollout.state_url``), is
shared by every worker and operator of a team.

Creating a rollout checks for active rollouts on any of the same devices and inserts in one transaction that
no other creation can interleave with (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a transaction-scoped advisory
lock per fleet), so two concurrent rollouts on overlapping targets cannot both start: the second gets
RolloutError. Claims, the abort flag and the flow-run swap read and write their row under the same exclusion
(PostgreSQL: ``SELECT ... FOR UPDATE``).
"""

import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    bindparam,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from edgeops.config import ProjectConfig, is_url, local_state_dir
from edgeops.errors import RolloutError
from edgeops.rollout.plan import RolloutPolicy, Tally
from edgeops.sql_engine import (
    BEGIN_OPTION,
    create_all,
    create_schema,
    open_engine,
    shown_url,
    sqlite_file,
    sqlite_url,
)

ACTIVE = ("running", "paused", "aborting")
FINAL = ("completed", "aborted")
STALE_AFTER_S = 15.0
"""A controller whose heartbeat is older than this is presumed dead (its rollout may be resumed)."""

_metadata = MetaData()
# The same tables (names, columns, types) that earlier edgeops created in SQLite by hand: old files open as is.
rollouts = Table(
    "rollouts", _metadata,
    Column("id", Text, primary_key=True), Column("model", Text, nullable=False),
    Column("version", Integer, nullable=False), Column("scope", Text, nullable=False),
    Column("selector", Text, nullable=False), Column("policy", Text, nullable=False),
    Column("status", Text, nullable=False), Column("reason", Text, nullable=False, server_default=""),
    Column("wave", Integer, nullable=False, server_default="0"), Column("waves", Integer, nullable=False),
    Column("abort_requested", Text), Column("controller", Text), Column("heartbeat", Double),
    Column("created", Text, nullable=False), Column("updated", Text, nullable=False), Column("flow_run", Text))
rollout_devices = Table(
    "rollout_devices", _metadata,
    Column("rollout_id", Text, ForeignKey("rollouts.id"), primary_key=True), Column("device", Text, primary_key=True),
    Column("wave", Integer, nullable=False), Column("previous", LargeBinary),
    Column("outcome", Text, nullable=False, server_default="pending"),
    Column("detail", Text, nullable=False, server_default=""),
    Column("offline", Integer, nullable=False, server_default="0"), Column("desired_at", Double),
    Column("finished_at", Double), Column("restored", Integer, nullable=False, server_default="0"),
    Index("rollout_devices_device", "device"))
_R, _D = rollouts.c, rollout_devices.c


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def controller_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def controller_alive(identity: str | None, heartbeat: float | None, now: float | None = None) -> bool:
    """Is the controller ``host:pid`` still running? On this host the process table answers (a ``kill -9``
    is noticed at once); elsewhere only a fresh heartbeat counts."""
    if identity is None or heartbeat is None or (now or time.time()) - heartbeat >= STALE_AFTER_S:
        return False
    host, _, pid = identity.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return True


@dataclass
class DeviceRecord:
    device: str
    wave: int
    previous: bytes | None
    outcome: str = "pending"
    detail: str = ""
    offline: bool = False
    desired_at: float | None = None
    finished_at: float | None = None
    restored: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"device": self.device, "wave": self.wave, "outcome": self.outcome, "detail": self.detail,
                "offline": self.offline, "desired_at": self.desired_at, "finished_at": self.finished_at,
                "restored": self.restored}


@dataclass
class RolloutRecord:
    id: str
    model: str
    version: int
    scope: str
    selector: dict[str, str]
    policy: RolloutPolicy
    status: str
    waves: int
    wave: int = 0
    reason: str = ""
    abort_requested: str | None = None
    controller: str | None = None
    heartbeat: float | None = None
    created: str = ""
    updated: str = ""
    devices: dict[str, DeviceRecord] = field(default_factory=dict)

    @property
    def release(self) -> str:
        return f"{self.model}@{self.version}"

    def tally(self) -> Tally:
        return Tally.of(d.outcome for d in self.devices.values())

    def wave_devices(self, wave: int) -> list[DeviceRecord]:
        return [d for d in self.devices.values() if d.wave == wave]

    def progress(self) -> float:
        """Fraction of devices that reached a final outcome (1.0 once completed or aborted)."""
        if self.status in FINAL or not self.devices:
            return 1.0
        return sum(d.outcome not in ("pending", "updating") for d in self.devices.values()) / len(self.devices)

    def controller_alive(self, now: float | None = None) -> bool:
        return controller_alive(self.controller, self.heartbeat, now)

    def to_json(self) -> dict[str, Any]:
        tally = self.tally()
        return {"id": self.id, "release": self.release, "model": self.model, "version": self.version,
                "status": self.status, "reason": self.reason, "wave": self.wave, "waves": self.waves,
                "selector": self.selector, "policy": self.policy.to_display(), "created": self.created,
                "updated": self.updated, "abort_requested": self.abort_requested,
                "counts": {k: tally[k] for k in ("pending", "updating", "succeeded", "failed", "timed_out",
                                                  "offline")},
                "devices": [d.to_json() for d in sorted(self.devices.values(), key=lambda d: (d.wave, d.device))]}


class RolloutStore:
    """The rollout state at ``where``: a SQLAlchemy URL (``postgresql+psycopg://host/db``,
    ``sqlite:///path``) or the path of a SQLite file (``.edgeops/rollouts.db`` beside the registry by default).
    ``schema`` puts the tables in a PostgreSQL schema of their own (tests use a throw-away one)."""

    def __init__(self, where: Path | str, *, schema: str | None = None) -> None:
        self.url = str(where) if is_url(where) else sqlite_url(Path(where))
        self.path = sqlite_file(self.url)
        self.schema = schema
        try:
            self.engine = open_engine(self.url, schema, explicit_begin=True)
            self.dialect = self.engine.dialect.name
            create_schema(self.engine, schema)
            create_all(_metadata, self.engine)
            self._add_flow_run_column()
        except SQLAlchemyError as exc:
            raise RolloutError(f"cannot open the rollout state at {self.where}: {str(exc).splitlines()[0]}") from exc

    @property
    def where(self) -> str:
        """The file, or the URL without its password, for messages."""
        return str(self.path) if self.path is not None else shown_url(self.url)

    def _add_flow_run_column(self) -> None:
        """SQLite files made before the column existed gain it (PostgreSQL stores were created with it)."""
        with self.engine.connect() as conn:
            if "flow_run" in {c["name"] for c in inspect(conn).get_columns("rollouts", schema=self.schema)}:
                return
        try:
            with self._begin() as db:
                db.execute(text("ALTER TABLE rollouts ADD COLUMN flow_run TEXT"))
        except SQLAlchemyError:  # another process added it just now
            pass

    def close(self) -> None:
        self.engine.dispose()

    def drop_schema(self) -> None:
        """Remove the tables (and the schema, if one was given). For tests."""
        _metadata.drop_all(self.engine)
        if self.schema:
            with self.engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))

    @contextmanager
    def _begin(self, immediate: bool = False) -> Iterator[Connection]:
        """One transaction; ``immediate`` takes SQLite's write lock at once (PostgreSQL locks rows or the fleet)."""
        with self.engine.connect() as conn:
            if immediate:
                conn.execution_options(**{BEGIN_OPTION: "BEGIN IMMEDIATE"})
            with conn.begin():
                yield conn

    def _locked_row(self, db: Connection, rollout_id: str, *columns: Any) -> Any:
        row = db.execute(select(*columns).where(_R.id == rollout_id).with_for_update()).first()
        if row is None:
            raise RolloutError(f"no rollout {rollout_id!r} in {self.where}")
        return row

    def create(self, *, model: str, version: int, scope: str, selector: Mapping[str, str], policy: RolloutPolicy,
               plan: Sequence[Sequence[str]], previous: Mapping[str, bytes | None],
               rollout_id: str | None = None) -> RolloutRecord:
        """Record a planned rollout, refusing it when an active rollout in ``scope`` targets any of its devices."""
        rid = rollout_id or f"{model}-v{version}-{uuid.uuid4().hex[:8]}"
        devices = [d for wave in plan for d in wave]
        with self._begin(immediate=True) as db:
            if self.dialect == "postgresql":   # creations in one fleet take turns; other fleets are not held up
                db.execute(select(func.pg_advisory_xact_lock(_fleet_lock(scope))))
            self._refuse_overlap(db, scope, devices)
            now = _now()
            db.execute(rollouts.insert().values(
                id=rid, model=model, version=version, scope=scope, selector=json.dumps(dict(selector)),
                policy=json.dumps(policy.to_json()), status="running", waves=len(plan), created=now, updated=now))
            if devices:
                db.execute(rollout_devices.insert(), [{"rollout_id": rid, "device": d, "wave": i,
                                                      "previous": previous.get(d)}
                                                     for i, wave in enumerate(plan) for d in wave])
        return self.get(rid)

    @staticmethod
    def _refuse_overlap(db: Connection, scope: str, devices: Sequence[str]) -> None:
        rows = db.execute(select(_R.id, _R.status, _D.device).select_from(rollout_devices.join(rollouts))
                          .where(_R.scope == scope, _R.status.in_(ACTIVE))).all()
        wanted = set(devices)
        clash: dict[tuple[str, str], list[str]] = {}
        for rid, status, device in rows:
            if device in wanted:
                clash.setdefault((rid, status), []).append(device)
        if clash:
            (rid, status), hit = next(iter(clash.items()))
            shown = ", ".join(sorted(hit)[:5]) + (" ..." if len(hit) > 5 else "")
            raise RolloutError(f"rollout {rid} ({status}) already targets {len(hit)} of these devices ({shown}); "
                               f"wait for it, abort it, or resume it with `edgeops rollout resume {rid}`")

    def get(self, rollout_id: str) -> RolloutRecord:
        with self._begin() as db:
            row = db.execute(select(_R.id, _R.model, _R.version, _R.scope, _R.selector, _R.policy, _R.status,
                                    _R.waves, _R.wave, _R.reason, _R.abort_requested, _R.controller, _R.heartbeat,
                                    _R.created, _R.updated).where(_R.id == rollout_id)).first()
            if row is None:
                raise RolloutError(f"no rollout {rollout_id!r} in {self.where}")
            devs = db.execute(select(_D.device, _D.wave, _D.previous, _D.outcome, _D.detail, _D.offline,
                                     _D.desired_at, _D.finished_at, _D.restored)
                              .where(_D.rollout_id == rollout_id)).all()
        rec = RolloutRecord(id=row[0], model=row[1], version=row[2], scope=row[3], selector=json.loads(row[4]),
                            policy=RolloutPolicy.from_json(json.loads(row[5])), status=row[6], waves=row[7],
                            wave=row[8], reason=row[9], abort_requested=row[10], controller=row[11],
                            heartbeat=row[12], created=row[13], updated=row[14])
        for d in devs:
            rec.devices[d[0]] = DeviceRecord(device=d[0], wave=d[1], previous=None if d[2] is None else bytes(d[2]),
                                             outcome=d[3], detail=d[4], offline=bool(d[5]), desired_at=d[6],
                                             finished_at=d[7], restored=bool(d[8]))
        return rec

    def records(self, *, active_only: bool = False) -> list[RolloutRecord]:
        query = select(_R.id).order_by(_R.created, _R.id)
        with self._begin() as db:
            ids = db.execute(query.where(_R.status.in_(ACTIVE)) if active_only else query).scalars().all()
        return [self.get(rid) for rid in ids]

    def save(self, rec: RolloutRecord, devices: Sequence[DeviceRecord] = ()) -> None:
        """Persist the rollout row (status, wave, reason, heartbeat) and the given device rows in one step.
        The abort flag is never overwritten here: it belongs to ``request_abort``."""
        rec.updated = _now()
        with self._begin() as db:
            db.execute(update(rollouts).where(_R.id == rec.id).values(
                status=rec.status, wave=rec.wave, reason=rec.reason, controller=rec.controller,
                heartbeat=rec.heartbeat, updated=rec.updated))
            if devices:
                db.execute(_DEVICE_UPDATE, [{"b_rid": rec.id, "b_device": d.device, "b_outcome": d.outcome,
                                             "b_detail": d.detail, "b_offline": int(d.offline),
                                             "b_desired_at": d.desired_at, "b_finished_at": d.finished_at,
                                             "b_restored": int(d.restored)} for d in devices])

    def claim(self, rollout_id: str, controller: str) -> RolloutRecord:
        """Become the rollout's controller; refused while another live controller heartbeats on it."""
        with self._begin(immediate=True) as db:
            owner, beat = self._locked_row(db, rollout_id, _R.controller, _R.heartbeat)
            if owner not in (None, controller) and controller_alive(owner, beat):
                raise RolloutError(f"rollout {rollout_id} is being run by controller {owner} "
                                   f"(heartbeat {time.time() - beat:.0f}s ago)")
            db.execute(update(rollouts).where(_R.id == rollout_id).values(controller=controller,
                                                                           heartbeat=time.time()))
        return self.get(rollout_id)

    def release_claim(self, rollout_id: str, controller: str) -> None:
        with self._begin() as db:
            db.execute(update(rollouts).where(_R.id == rollout_id, _R.controller == controller)
                       .values(controller=None, heartbeat=None))

    def swap_flow_run(self, rollout_id: str, flow_run: str) -> str | None:
        """Record the Prefect flow run now driving the rollout; returns the one recorded before (None at first)."""
        previous: str | None
        with self._begin(immediate=True) as db:
            (previous,) = self._locked_row(db, rollout_id, _R.flow_run)
            db.execute(update(rollouts).where(_R.id == rollout_id).values(flow_run=flow_run))
        return previous

    def request_abort(self, rollout_id: str, reason: str = "aborted by operator") -> RolloutRecord:
        """Set the abort flag the controller polls; RolloutError when the rollout already finished."""
        with self._begin(immediate=True) as db:
            (status,) = self._locked_row(db, rollout_id, _R.status)
            if status in FINAL:
                raise RolloutError(f"rollout {rollout_id} already {status}; nothing to abort")
            db.execute(update(rollouts).where(_R.id == rollout_id).values(abort_requested=reason))
        return self.get(rollout_id)

    def abort_requested(self, rollout_id: str) -> str | None:
        with self._begin() as db:
            return db.execute(select(_R.abort_requested).where(_R.id == rollout_id)).scalar()


_DEVICE_UPDATE = update(rollout_devices).where(
    _D.rollout_id == bindparam("b_rid"), _D.device == bindparam("b_device")).values(
    outcome=bindparam("b_outcome"), detail=bindparam("b_detail"), offline=bindparam("b_offline"),
    desired_at=bindparam("b_desired_at"), finished_at=bindparam("b_finished_at"), restored=bindparam("b_restored"))


def _fleet_lock(scope: str) -> int:
    """A stable signed 64-bit key for PostgreSQL's advisory lock on one fleet's rollout creations."""
    return int.from_bytes(hashlib.sha256(scope.encode()).digest()[:8], "big", signed=True)


def state_location(cfg: ProjectConfig) -> Path | str:
    """Where the project's rollout state lives: ``rollout.state_url``, else ``rollouts.db`` in the local state
    folder (beside a local registry: ``.edgeops/rollouts.db``)."""
    return cfg.rollout.state_url or local_state_dir(cfg) / "rollouts.db"


def open_rollout_store(cfg: ProjectConfig) -> RolloutStore:
    """The rollout state edgeops.yaml names (what the CLI, the rollout flow and retrain share)."""
    return RolloutStore(state_location(cfg))


def state_exists(where: Path | str) -> bool:
    """Whether rollout state was ever written there, without creating any (``status`` must not create it)."""
    if not is_url(where):
        return Path(where).exists()
    path = sqlite_file(str(where))
    if path is not None:
        return path.exists()
    engine = open_engine(str(where))
    try:
        with engine.connect() as conn:
            return inspect(conn).has_table("rollouts")
    except SQLAlchemyError as exc:
        raise RolloutError(f"cannot read the rollout state at {shown_url(str(where))}: "
                           f"{str(exc).splitlines()[0]}") from exc
    finally:
        engine.dispose()
