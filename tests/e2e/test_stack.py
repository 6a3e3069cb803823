"""``edgeops up`` as a user runs it, in a fresh project directory, with the real CLI in subprocesses: the stack
starts on free ports and answers; the commands that follow use it without flags (no temporary Prefect server,
no ~/.prefect); a pipeline run, a rollout to a real agent and a monitor run go through it; ``edgeops down``
leaves no process. And ``down`` still cleans up after one of the services crashed."""

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_procs import AgentProcess
from services import free_port, processes_mentioning, wait_until

from edgeops.demo.parts import agent_config
from edgeops.demo.traffic import TrafficDriver, records_of
from edgeops.stack.state import process_started
from edgeops.stack.supervisor import group_alive, stop_groups
from edgeops.telemetry.store import TelemetryStore
from edgeops.train.samples import TARGETS, make_sample, write_sample

pytestmark = pytest.mark.e2e
EDGEOPS = Path(sys.executable).with_name("edgeops")
SERVICES = ["mosquitto", "prefect-server", "ingest", "monitor"]


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """An empty project directory. Afterwards nothing that mentions it may run, whatever the test did: what
    is left is killed (so a failing test leaks nothing) and fails the test."""
    project = tmp_path / "project"
    project.mkdir()
    yield project
    left = processes_mentioning(str(project))
    if left:
        groups = {os.getpgid(pid) for pid in (int(line.split(":")[0]) for line in left) if pid_exists(pid)}
        stop_groups(sorted(groups - {os.getpgid(0)}), 5.0)
    assert left == [], f"left running: {left}"


def pid_exists(pid: int) -> bool:
    return process_started(pid) is not None


def user_env(tmp_path: Path) -> dict[str, str]:
    """A user's shell with no broker or Prefect settings; HOME is the test's, so anything written to
    ~/.prefect shows."""
    env = {k: v for k, v in os.environ.items() if k not in ("EDGEOPS_MQTT_URL", "PREFECT_API_URL", "PREFECT_HOME")}
    env["HOME"] = str(tmp_path / "home")
    return env


def edgeops(project: Path, env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EDGEOPS), *args], cwd=project, env=env, capture_output=True, text=True,
                          timeout=timeout)


def status_json(project: Path, env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    proc = edgeops(project, env, "status", "--json", timeout=60)
    return proc.returncode, json.loads(proc.stdout)


def test_up_pipeline_rollout_monitor_down_leaves_nothing_running(project: Path, tmp_path: Path) -> None:
    env = user_env(tmp_path)
    first = edgeops(project, env, "up")
    assert first.returncode == 0, first.stderr
    assert "Prefect UI: http://127.0.0.1:" in first.stdout
    again = edgeops(project, env, "up")
    assert again.returncode == 0, again.stderr
    assert "already up" in again.stdout

    code, status = status_json(project, env)
    assert code == 0, status
    assert [s["name"] for s in status["services"]] == SERVICES
    assert all(s["running"] and s["answering"] for s in status["services"]), status
    broker, api = status["broker_url"], status["prefect_api_url"]
    pids = [s["pid"] for s in status["services"]]

    # the pipeline on the quickstart's sample data, through the stack's Prefect server
    keys = edgeops(project, env, "keys", "init")
    assert keys.returncode == 0, keys.stderr
    data = write_sample(project / ".edgeops" / "sample" / "churn.csv", "binary", 2000, seed=0)
    run = edgeops(project, env, "pipeline", "run", "--data", str(data), "--target", TARGETS["binary"], "--model",
                  "churn", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["version"] == 1
    assert "temporary" not in run.stderr
    runs = httpx.post(f"{api}/flow_runs/filter", json={}, timeout=10).json()
    assert any(r["state_type"] == "COMPLETED" for r in runs), runs  # the flow run is on the stack's server

    # a rollout to one real agent, on the stack's broker, and its telemetry into the stack's ingest
    port = free_port()
    config = agent_config(tmp_path / "agent", "edge-1", broker, "edgeops", project / ".edgeops" / "keys" /
                          "release.pub", port, interval_s=1.0)
    agent = AgentProcess("edge-1", config).start()
    traffic: TrafficDriver | None = None
    try:
        assert wait_until(lambda: '"online": true' in edgeops(project, env, "fleet", "ls", "--json").stdout, 60)
        rollout = edgeops(project, env, "rollout", "start", "churn@1", "--target", "fleet=demo", "--json")
        assert rollout.returncode == 0, rollout.stderr
        assert json.loads(rollout.stdout)["status"] == "completed"
        assert "temporary" not in rollout.stderr

        rows = records_of(make_sample("binary", 500, seed=1).to_dict("records"), drop=[TARGETS["binary"]])
        traffic = TrafficDriver({"edge-1": port}, rows).start()
        store = TelemetryStore(status["telemetry_db"])
        try:
            assert wait_until(lambda: sum(w.count for w in store.windows(model="churn", version=1)) >= 200, 90)
        finally:
            store.close()
    finally:
        if traffic is not None:
            traffic.stop()
        agent.stop()

    monitor = edgeops(project, env, "monitor", "run", "--json")
    assert monitor.returncode == 0, monitor.stderr
    fleet = [s for s in json.loads(monitor.stdout)["scopes"] if s["device"] is None]
    assert [(s["model"], s["version"], s["devices"]) for s in fleet] == [("churn", 1, 1)]

    down = edgeops(project, env, "down")
    assert down.returncode == 0, down.stderr
    assert not (project / ".edgeops" / "stack.json").exists()
    assert [pid for pid in pids if group_alive(pid)] == []
    assert processes_mentioning(str(project)) == []
    assert not (tmp_path / "home" / ".prefect").exists()  # Prefect's home was the project's, clients' too
    code, status = status_json(project, env)
    assert (code, status["state"]) == (3, "down")
    assert edgeops(project, env, "down").returncode == 0  # already down: nothing to do, no error


def test_down_after_a_crashed_service_still_cleans_up(project: Path, tmp_path: Path) -> None:
    env = user_env(tmp_path)
    up = edgeops(project, env, "up", "--json")
    assert up.returncode == 0, up.stderr
    services = {s["name"]: s for s in json.loads(up.stdout)["services"]}
    ingest = services["ingest"]["pid"]
    members = [pid for pid in group_members(ingest) if pid != ingest]
    assert members, "the ingest's writer process runs in its group"

    # A crash. Its writer process may outlive it for a moment or exit by itself (the orphan that stays is
    # tests/integration/test_stack_down.py's case); either way, status and down must cope.
    os.kill(ingest, signal.SIGKILL)
    assert wait_until(lambda: not pid_exists(ingest), 10)
    code, status = status_json(project, env)
    assert code == 4, status
    assert {s["name"]: s["running"] for s in status["services"]}["ingest"] is False

    down = edgeops(project, env, "down")
    assert down.returncode == 0, down.stderr
    assert [pid for pid in [*members, *(s["pid"] for s in services.values())] if pid_exists(pid)] == []
    assert processes_mentioning(str(project)) == []


def group_members(pgid: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                fields = (proc / "stat").read_text().rsplit(") ", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(proc.name))
    return found
