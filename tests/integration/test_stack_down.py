"""``edgeops down`` stops what the stack started — whole process groups, also after a service's leader crashed —
and nothing else: a pid the kernel gave to another program is left alone. One ``up``/``down`` at a time."""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from services import wait_until

from edgeops.stack.down import tear_down
from edgeops.stack.state import Service, StackState, process_started, write_state
from edgeops.stack.supervisor import Child, Supervisor, group_alive
from edgeops.stack.up import stack_lock

pytestmark = pytest.mark.integration
EDGEOPS = Path(sys.executable).with_name("edgeops")
GROUP = "sleep 300 & echo $! > {pidfile}; wait"
"""A leader with a child of its own: a service and what it started."""


def state_of(tmp_path: Path, *services: Service) -> StackState:
    return StackState(project=str(tmp_path), broker_url="mqtt://127.0.0.1:1", own_broker=True,
                      prefect_api_url="http://127.0.0.1:1/api", prefect_home=str(tmp_path), telemetry_db="sqlite://",
                      monitor_deployment="monitor/local-monitor", ingest_ready_file=str(tmp_path / "ready"),
                      created="2025-01-01T00:00:00+00:00", services=services)


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[Supervisor]:
    """Spawns detached groups like ``edgeops up`` does; stops whatever a failing test left."""
    sup = Supervisor(tmp_path / "logs", grace_s=2.0, die_with_parent=False)
    yield sup
    sup.stop_all()


def spawn_group(supervisor: Supervisor, tmp_path: Path, name: str) -> tuple[Child, int]:
    pidfile = tmp_path / f"{name}.pid"
    child = supervisor.spawn(name, ["sh", "-c", GROUP.format(pidfile=pidfile)])
    supervisor.wait_until(child, lambda: pidfile.exists() and pidfile.read_text().strip() != "", 10, "pid file")
    return child, int(pidfile.read_text())


def record(child: Child) -> Service:
    return Service(child.name, child.pid, process_started(child.pid))


def test_down_stops_whole_groups_also_of_a_crashed_leader(supervisor: Supervisor, tmp_path: Path) -> None:
    ingest, ingest_child = spawn_group(supervisor, tmp_path, "ingest")
    server, server_child = spawn_group(supervisor, tmp_path, "prefect-server")
    state = state_of(tmp_path, record(ingest), record(server))
    os.kill(ingest.pid, signal.SIGKILL)  # the leader crashes; its child runs on in the group
    ingest.proc.wait()
    assert process_started(ingest_child) is not None

    report = tear_down(state, grace_s=2.0)
    assert sorted(report.stopped) == ["ingest", "prefect-server"] and report.clean
    assert not group_alive(ingest.pid) and not group_alive(server.pid)
    assert wait_until(lambda: process_started(ingest_child) is None and process_started(server_child) is None, 10)


def test_down_leaves_alone_a_pid_that_now_belongs_to_another_program(tmp_path: Path) -> None:
    other = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        # the stack remembers a process with this pid that started at another time: it is not this one
        state = state_of(tmp_path, Service("ingest", other.pid, "1"))
        report = tear_down(state, grace_s=1.0)
        assert report.not_ours == ["ingest"] and report.stopped == []
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_down_of_a_stack_that_is_gone_already_is_clean(supervisor: Supervisor, tmp_path: Path) -> None:
    child, _ = spawn_group(supervisor, tmp_path, "monitor")
    state = state_of(tmp_path, record(child))
    supervisor.stop_all()
    report = tear_down(state, grace_s=1.0)
    assert report.already_gone == ["monitor"] and report.clean


def test_up_and_down_wait_for_no_one_while_another_holds_the_project(tmp_path: Path) -> None:
    write_state(tmp_path, state_of(tmp_path))
    env = {k: v for k, v in os.environ.items() if k not in ("EDGEOPS_MQTT_URL", "PREFECT_API_URL")}
    with stack_lock(tmp_path):
        for command in ("up", "down"):
            proc = subprocess.run([str(EDGEOPS), command], cwd=tmp_path, env=env, capture_output=True, text=True,
                                  timeout=60)
            assert proc.returncode == 1, proc.stderr
            assert "another `edgeops up` or `edgeops down` is running" in proc.stderr
    assert (tmp_path / ".edgeops" / "stack.json").exists()  # the refused down touched nothing
