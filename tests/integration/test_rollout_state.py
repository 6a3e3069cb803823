"""The rollout database: records, the overlap lock, controller claims, the abort flag. The same tests on SQLite
(a file in tmp) and on the machine's PostgreSQL (a database of the test's own; fails, never skips, when the
server is unreachable)."""

import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeops.cli.rollout import app as rollout_app
from edgeops.errors import RolloutError
from edgeops.rollout.plan import RolloutPolicy
from edgeops.rollout.state import RolloutStore, controller_identity, state_exists

pytestmark = pytest.mark.integration

SCOPE = "mqtt://127.0.0.1:1883|edgeops"
Where = Path | str


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Where:
    """Where the state lives, as ``rollout.state_url`` (or the default SQLite file) would say."""
    return tmp_path / "rollouts.db" if request.param == "sqlite" else str(request.getfixturevalue("pg_database"))


def create(store: RolloutStore, devices: list[str], scope: str = SCOPE) -> str:
    plan = [devices[:1], devices[1:]] if len(devices) > 1 else [devices]
    rec = store.create(model="churn", version=4, scope=scope, selector={"site": "berlin"}, policy=RolloutPolicy(),
                       plan=plan, previous={devices[0]: b'{"old": 1}'})
    return rec.id


def test_create_and_read_back(where: Where) -> None:
    store = RolloutStore(where)
    rid = create(store, ["d1", "d2", "d3"])
    rec = RolloutStore(where).get(rid)  # as another process sees it
    assert rec.status == "running" and rec.waves == 2 and rec.release == "churn@4"
    assert rec.devices["d1"].previous == b'{"old": 1}' and rec.devices["d2"].previous is None
    assert [d.device for d in rec.wave_devices(1)] == ["d2", "d3"]
    assert rec.to_json()["counts"]["pending"] == 3
    rec.devices["d2"].outcome, rec.devices["d2"].finished_at, rec.devices["d2"].restored = "failed", 12.5, True
    rec.wave, rec.heartbeat = 1, 1234.25
    store.save(rec, [rec.devices["d2"]])
    again = RolloutStore(where).get(rid)
    assert (again.wave, again.heartbeat, again.devices["d2"].outcome) == (1, 1234.25, "failed")
    assert again.devices["d2"].finished_at == 12.5 and again.devices["d2"].restored
    assert [r.id for r in store.records(active_only=True)] == [rid]


def test_overlapping_rollout_in_the_same_fleet_is_refused(where: Where) -> None:
    store = RolloutStore(where)
    first = create(store, ["d1", "d2"])
    with pytest.raises(RolloutError, match=f"rollout {first} \\(running\\) already targets 1 of these devices"):
        create(store, ["d2", "d9"])
    create(store, ["d3"])  # disjoint
    create(store, ["d1"], scope="mqtt://other:1883|edgeops")  # another fleet
    rec = store.get(first)
    rec.status = "completed"
    store.save(rec)
    create(store, ["d2", "d9"])  # finished rollouts hold nothing


def at_once(n: int, action: Callable[[int], object]) -> list[object]:
    """Run ``action(i)`` in ``n`` threads released together; each result, or the exception it raised."""
    barrier, results = threading.Barrier(n), [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = action(i)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_overlapping_rollouts_started_at_once_let_exactly_one_through(where: Where) -> None:
    """Every creation checks for overlap and inserts; without one creation at a time per fleet (BEGIN IMMEDIATE,
    PostgreSQL's advisory lock) two could both see no overlap and both start."""
    stores = [RolloutStore(where) for _ in range(6)]   # one connection pool each, as separate processes have
    for round_no in range(5):
        results = at_once(6, lambda i, r=round_no: create(stores[i], [f"shared-{r}", f"own-{r}-{i}"]))
        started = [r for r in results if isinstance(r, str)]
        assert len(started) == 1, results
        assert all("already targets 1 of these devices" in str(r) for r in results if r not in started)


def test_a_live_controller_keeps_its_claim_a_dead_one_loses_it(where: Where) -> None:
    store = RolloutStore(where)
    rid = create(store, ["d1"])
    store.claim(rid, controller_identity())  # this very process: alive
    with pytest.raises(RolloutError, match="being run by controller"):
        store.claim(rid, "elsewhere:1")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = controller_identity().rpartition(":")[0]
    rec = store.get(rid)
    rec.controller, rec.heartbeat = f"{host}:{dead.stdout.strip()}", time.time()
    store.save(rec)
    assert store.claim(rid, "elsewhere:1").controller == "elsewhere:1"  # the dead pid lost its claim
    rec = store.get(rid)
    rec.heartbeat = time.time() - 3600
    store.save(rec)
    assert store.claim(rid, "third:2").controller == "third:2"  # a stale heartbeat loses it too
    store.release_claim(rid, "third:2")
    assert store.get(rid).controller is None


def test_controllers_on_other_hosts_claiming_at_once_get_one_owner(where: Where) -> None:
    stores = [RolloutStore(where) for _ in range(4)]
    for _ in range(5):
        rid = create(stores[0], ["d1"])
        results = at_once(4, lambda i, rid=rid: stores[i].claim(rid, f"host-{i}:1").controller)
        owners = [r for r in results if isinstance(r, str)]
        assert len(owners) == 1 and stores[0].get(rid).controller == owners[0], results
        assert all("being run by controller" in str(r) for r in results if r not in owners), results
        rec = stores[0].get(rid)
        rec.status = "completed"
        stores[0].save(rec)


def test_abort_flag_and_finished_rollouts(where: Where) -> None:
    store = RolloutStore(where)
    rid = create(store, ["d1"])
    assert store.abort_requested(rid) is None
    store.request_abort(rid, "operator says no")
    assert store.abort_requested(rid) == "operator says no"
    rec = store.get(rid)
    rec.status = "aborted"
    store.save(rec)
    with pytest.raises(RolloutError, match="already aborted"):
        store.request_abort(rid)
    with pytest.raises(RolloutError, match="no rollout 'nope'"):
        store.get("nope")
    assert store.swap_flow_run(rid, "run-1") is None
    assert store.swap_flow_run(rid, "run-2") == "run-1"
    with pytest.raises(RolloutError, match="no rollout"):
        store.swap_flow_run("nope", "run-3")


def test_status_commands_read_without_creating_a_database(where: Where, tmp_path: Path) -> None:
    config = tmp_path / "edgeops.yaml"
    config.write_text("registry:\n  root: .edgeops/registry\n" if isinstance(where, Path) else
                      f"rollout:\n  state_url: {where}\n")
    where = tmp_path / ".edgeops" / "rollouts.db" if isinstance(where, Path) else where
    runner = CliRunner()
    result = runner.invoke(rollout_app, ["status", "--config", str(config)])
    assert result.exit_code == 0 and "no rollouts yet" in result.output
    result = runner.invoke(rollout_app, ["abort", "churn-v4-x", "--config", str(config)])
    assert result.exit_code == 1 and "no rollout 'churn-v4-x'" in result.output
    assert not state_exists(where)
    rid = create(RolloutStore(where), ["d1"])
    result = runner.invoke(rollout_app, ["status", rid, "--config", str(config), "--json"])
    assert result.exit_code == 0 and f'"id": "{rid}"' in result.output


def test_tables_in_a_postgresql_schema_of_their_own(pg_database: str) -> None:
    store = RolloutStore(pg_database, schema="team_a")
    rid = create(store, ["d1"])
    assert RolloutStore(pg_database, schema="team_a").get(rid).release == "churn@4"
    with pytest.raises(RolloutError, match="no rollout"):
        RolloutStore(pg_database).get(rid)   # the default schema has tables of its own, without it
    store.drop_schema()


def test_a_database_made_by_an_earlier_edgeops_opens_and_gains_the_flow_run_column(tmp_path: Path) -> None:
    """The tables as edgeops created them with sqlite3 before the store used SQLAlchemy, before flow_run existed
    (history: copied once, never edited)."""
    path = tmp_path / "rollouts.db"
    with sqlite3.connect(path) as db:
        db.executescript("""
CREATE TABLE IF NOT EXISTS rollouts (
    id TEXT PRIMARY KEY, model TEXT NOT NULL, version INTEGER NOT NULL, scope TEXT NOT NULL,
    selector TEXT NOT NULL, policy TEXT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
    wave INTEGER NOT NULL DEFAULT 0, waves INTEGER NOT NULL, abort_requested TEXT,
    controller TEXT, heartbeat REAL, created TEXT NOT NULL, updated TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rollout_devices (
    rollout_id TEXT NOT NULL REFERENCES rollouts(id), device TEXT NOT NULL, wave INTEGER NOT NULL,
    previous BLOB, outcome TEXT NOT NULL DEFAULT 'pending', detail TEXT NOT NULL DEFAULT '',
    offline INTEGER NOT NULL DEFAULT 0, desired_at REAL, finished_at REAL, restored INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (rollout_id, device));
CREATE INDEX IF NOT EXISTS rollout_devices_device ON rollout_devices(device);
INSERT INTO rollouts (id, model, version, scope, selector, policy, status, waves, created, updated)
    VALUES ('old-1', 'churn', 3, 'mqtt://127.0.0.1:1883|edgeops', '{}', '{}', 'running', 1, '2026-01-01T00:00:00Z',
            '2026-01-01T00:00:00Z');
INSERT INTO rollout_devices (rollout_id, device, wave, previous) VALUES ('old-1', 'd1', 0, x'7b7d');
""")
    db.close()
    store = RolloutStore(path)
    old = store.get("old-1")
    assert (old.release, old.devices["d1"].previous, old.devices["d1"].outcome) == ("churn@3", b"{}", "pending")
    assert store.swap_flow_run("old-1", "run-1") is None
    with pytest.raises(RolloutError, match="already targets 1 of these devices"):
        create(store, ["d1"])
