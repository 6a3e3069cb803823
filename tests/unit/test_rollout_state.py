"""The rollout database: records, the overlap lock, controller claims, the abort flag (SQLite in tmp only)."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeops.cli.rollout import app as rollout_app
from edgeops.errors import RolloutError
from edgeops.rollout.plan import RolloutPolicy
from edgeops.rollout.state import RolloutStore, controller_identity

pytestmark = pytest.mark.unit

SCOPE = "mqtt://127.0.0.1:1883|edgeops"


def create(store: RolloutStore, devices: list[str], scope: str = SCOPE) -> str:
    plan = [devices[:1], devices[1:]] if len(devices) > 1 else [devices]
    rec = store.create(model="churn", version=4, scope=scope, selector={"site": "berlin"}, policy=RolloutPolicy(),
                       plan=plan, previous={devices[0]: b'{"old": 1}'})
    return rec.id


def test_create_and_read_back(tmp_path: Path) -> None:
    store = RolloutStore(tmp_path / "rollouts.db")
    rid = create(store, ["d1", "d2", "d3"])
    rec = RolloutStore(tmp_path / "rollouts.db").get(rid)  # as another process sees it
    assert rec.status == "running" and rec.waves == 2 and rec.release == "churn@4"
    assert rec.devices["d1"].previous == b'{"old": 1}' and rec.devices["d2"].previous is None
    assert [d.device for d in rec.wave_devices(1)] == ["d2", "d3"]
    assert rec.to_json()["counts"]["pending"] == 3


def test_overlapping_rollout_in_the_same_fleet_is_refused(tmp_path: Path) -> None:
    store = RolloutStore(tmp_path / "rollouts.db")
    first = create(store, ["d1", "d2"])
    with pytest.raises(RolloutError, match=f"rollout {first} \\(running\\) already targets 1 of these devices"):
        create(store, ["d2", "d9"])
    create(store, ["d3"])  # disjoint
    create(store, ["d1"], scope="mqtt://other:1883|edgeops")  # another fleet
    rec = store.get(first)
    rec.status = "completed"
    store.save(rec)
    create(store, ["d2", "d9"])  # finished rollouts hold nothing


def test_a_live_controller_keeps_its_claim_a_dead_one_loses_it(tmp_path: Path) -> None:
    store = RolloutStore(tmp_path / "rollouts.db")
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


def test_abort_flag_and_finished_rollouts(tmp_path: Path) -> None:
    store = RolloutStore(tmp_path / "rollouts.db")
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


def test_status_commands_read_without_creating_a_database(tmp_path: Path) -> None:
    config = tmp_path / "edgeops.yaml"
    config.write_text("registry:\n  root: .edgeops/registry\n")
    runner = CliRunner()
    result = runner.invoke(rollout_app, ["status", "--config", str(config)])
    assert result.exit_code == 0 and "no rollouts yet" in result.output
    result = runner.invoke(rollout_app, ["abort", "churn-v4-x", "--config", str(config)])
    assert result.exit_code == 1 and "no rollout 'churn-v4-x'" in result.output
    assert not (tmp_path / ".edgeops" / "rollouts.db").exists()


def test_flow_run_is_recorded_and_a_database_from_before_the_column_gains_it(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "rollouts.db"
    rid = create(RolloutStore(path), ["d1", "d2"])
    with sqlite3.connect(path) as db:  # as a database written before the flow_run column existed
        db.execute("ALTER TABLE rollouts DROP COLUMN flow_run")
    store = RolloutStore(path)
    assert store.swap_flow_run(rid, "run-1") is None
    assert store.swap_flow_run(rid, "run-2") == "run-1"
    assert store.get(rid).status == "running"
    with pytest.raises(RolloutError, match="no rollout"):
        store.swap_flow_run("nope", "run-3")
