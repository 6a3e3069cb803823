"""Rollout state in SQLite, written after every step, so that ``status`` and ``abort`` work from another
process and a restarted controller resumes where the last one stopped (STYLE: persist before transition).

Creation runs in one ``BEGIN IMMEDIATE`` transaction that checks for active rollouts on any of the same
devices, so two concurrent rollouts on overlapping targets cannot both start: the second gets RolloutError.
"""

import contextlib
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgeops.errors import RolloutError
from edgeops.rollout.plan import RolloutPolicy, Tally
from edgeops.sqlite_wal import BUSY_S, use_wal

ACTIVE = ("running", "paused", "aborting")
FINAL = ("completed", "aborted")
STALE_AFTER_S = 15.0
"""A controller whose heartbeat is older than this is presumed dead (its rollout may be resumed)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
    id TEXT PRIMARY KEY, model TEXT NOT NULL, version INTEGER NOT NULL, scope TEXT NOT NULL,
    selector TEXT NOT NULL, policy TEXT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
    wave INTEGER NOT NULL DEFAULT 0, waves INTEGER NOT NULL, abort_requested TEXT,
    controller TEXT, heartbeat REAL, created TEXT NOT NULL, updated TEXT NOT NULL, flow_run TEXT);
CREATE TABLE IF NOT EXISTS rollout_devices (
    rollout_id TEXT NOT NULL REFERENCES rollouts(id), device TEXT NOT NULL, wave INTEGER NOT NULL,
    previous BLOB, outcome TEXT NOT NULL DEFAULT 'pending', detail TEXT NOT NULL DEFAULT '',
    offline INTEGER NOT NULL DEFAULT 0, desired_at REAL, finished_at REAL, restored INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (rollout_id, device));
CREATE INDEX IF NOT EXISTS rollout_devices_device ON rollout_devices(device);
"""


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
    """The rollouts database (``.edgeops/rollouts.db`` next to the registry by default)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # one connection per store, shared under a lock: opening one per step costs a WAL checkpoint each time
        self._db = sqlite3.connect(self.path, timeout=BUSY_S, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        use_wal(self._db)
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process loses nothing committed
        with self._lock:
            self._db.executescript(_SCHEMA)
            self._add_column("rollouts", "flow_run TEXT")  # databases made before the column existed

    def _add_column(self, table: str, column: str) -> None:
        if column.split()[0] in {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}:
            return
        with contextlib.suppress(sqlite3.OperationalError):  # another process added it just now
            self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _connect(self, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def create(self, *, model: str, version: int, scope: str, selector: Mapping[str, str], policy: RolloutPolicy,
               plan: Sequence[Sequence[str]], previous: Mapping[str, bytes | None],
               rollout_id: str | None = None) -> RolloutRecord:
        """Record a planned rollout, refusing it when an active rollout in ``scope`` targets any of its devices."""
        rid = rollout_id or f"{model}-v{version}-{uuid.uuid4().hex[:8]}"
        devices = [d for wave in plan for d in wave]
        with self._connect(immediate=True) as db:
            self._refuse_overlap(db, scope, devices)
            now = _now()
            db.execute("INSERT INTO rollouts (id, model, version, scope, selector, policy, status, waves, created,"
                       " updated) VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?, ?)",
                       (rid, model, version, scope, json.dumps(dict(selector)), json.dumps(policy.to_json()),
                        len(plan), now, now))
            db.executemany("INSERT INTO rollout_devices (rollout_id, device, wave, previous) VALUES (?, ?, ?, ?)",
                           [(rid, d, i, previous.get(d)) for i, wave in enumerate(plan) for d in wave])
        return self.get(rid)

    @staticmethod
    def _refuse_overlap(db: sqlite3.Connection, scope: str, devices: Sequence[str]) -> None:
        marks = ",".join("?" * len(ACTIVE))
        rows = db.execute(
            f"SELECT r.id, r.status, d.device FROM rollout_devices d JOIN rollouts r ON r.id = d.rollout_id "
            f"WHERE r.scope = ? AND r.status IN ({marks})", (scope, *ACTIVE)).fetchall()
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
        with self._connect() as db:
            row = db.execute("SELECT id, model, version, scope, selector, policy, status, waves, wave, reason, "
                             "abort_requested, controller, heartbeat, created, updated FROM rollouts WHERE id = ?",
                             (rollout_id,)).fetchone()
            if row is None:
                raise RolloutError(f"no rollout {rollout_id!r} in {self.path}")
            devs = db.execute("SELECT device, wave, previous, outcome, detail, offline, desired_at, finished_at,"
                              " restored FROM rollout_devices WHERE rollout_id = ?", (rollout_id,)).fetchall()
        rec = RolloutRecord(id=row[0], model=row[1], version=row[2], scope=row[3], selector=json.loads(row[4]),
                            policy=RolloutPolicy.from_json(json.loads(row[5])), status=row[6], waves=row[7],
                            wave=row[8], reason=row[9], abort_requested=row[10], controller=row[11],
                            heartbeat=row[12], created=row[13], updated=row[14])
        for d in devs:
            rec.devices[d[0]] = DeviceRecord(device=d[0], wave=d[1], previous=d[2], outcome=d[3], detail=d[4],
                                             offline=bool(d[5]), desired_at=d[6], finished_at=d[7],
                                             restored=bool(d[8]))
        return rec

    def records(self, *, active_only: bool = False) -> list[RolloutRecord]:
        with self._connect() as db:
            query = "SELECT id FROM rollouts"
            if active_only:
                query += f" WHERE status IN ({','.join('?' * len(ACTIVE))})"
            ids = [r[0] for r in db.execute(query + " ORDER BY created, id", ACTIVE if active_only else ())]
        return [self.get(rid) for rid in ids]

    def save(self, rec: RolloutRecord, devices: Sequence[DeviceRecord] = ()) -> None:
        """Persist the rollout row (status, wave, reason, heartbeat) and the given device rows in one step.
        The abort flag is never overwritten here: it belongs to ``request_abort``."""
        rec.updated = _now()
        with self._connect() as db:
            db.execute("UPDATE rollouts SET status = ?, wave = ?, reason = ?, controller = ?, heartbeat = ?, "
                       "updated = ? WHERE id = ?",
                       (rec.status, rec.wave, rec.reason, rec.controller, rec.heartbeat, rec.updated, rec.id))
            db.executemany("UPDATE rollout_devices SET outcome = ?, detail = ?, offline = ?, desired_at = ?, "
                           "finished_at = ?, restored = ? WHERE rollout_id = ? AND device = ?",
                           [(d.outcome, d.detail, int(d.offline), d.desired_at, d.finished_at, int(d.restored),
                             rec.id, d.device) for d in devices])

    def claim(self, rollout_id: str, controller: str) -> RolloutRecord:
        """Become the rollout's controller; refused while another live controller heartbeats on it."""
        with self._connect(immediate=True) as db:
            row = db.execute("SELECT controller, heartbeat, status FROM rollouts WHERE id = ?",
                             (rollout_id,)).fetchone()
            if row is None:
                raise RolloutError(f"no rollout {rollout_id!r} in {self.path}")
            owner, beat, _status = row
            if owner not in (None, controller) and controller_alive(owner, beat):
                raise RolloutError(f"rollout {rollout_id} is being run by controller {owner} "
                                   f"(heartbeat {time.time() - beat:.0f}s ago)")
            db.execute("UPDATE rollouts SET controller = ?, heartbeat = ? WHERE id = ?",
                       (controller, time.time(), rollout_id))
        return self.get(rollout_id)

    def release_claim(self, rollout_id: str, controller: str) -> None:
        with self._connect() as db:
            db.execute("UPDATE rollouts SET controller = NULL, heartbeat = NULL WHERE id = ? AND controller = ?",
                       (rollout_id, controller))

    def swap_flow_run(self, rollout_id: str, flow_run: str) -> str | None:
        """Record the Prefect flow run now driving the rollout; returns the one recorded before (None at first)."""
        with self._connect(immediate=True) as db:
            row = db.execute("SELECT flow_run FROM rollouts WHERE id = ?", (rollout_id,)).fetchone()
            if row is None:
                raise RolloutError(f"no rollout {rollout_id!r} in {self.path}")
            db.execute("UPDATE rollouts SET flow_run = ? WHERE id = ?", (flow_run, rollout_id))
        return row[0]  # type: ignore[no-any-return]

    def request_abort(self, rollout_id: str, reason: str = "aborted by operator") -> RolloutRecord:
        """Set the abort flag the controller polls; RolloutError when the rollout already finished."""
        with self._connect(immediate=True) as db:
            row = db.execute("SELECT status FROM rollouts WHERE id = ?", (rollout_id,)).fetchone()
            if row is None:
                raise RolloutError(f"no rollout {rollout_id!r} in {self.path}")
            if row[0] in FINAL:
                raise RolloutError(f"rollout {rollout_id} already {row[0]}; nothing to abort")
            db.execute("UPDATE rollouts SET abort_requested = ? WHERE id = ?", (reason, rollout_id))
        return self.get(rollout_id)

    def abort_requested(self, rollout_id: str) -> str | None:
        with self._connect() as db:
            row = db.execute("SELECT abort_requested FROM rollouts WHERE id = ?", (rollout_id,)).fetchone()
        return None if row is None else row[0]
