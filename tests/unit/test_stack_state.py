"""The project's memory of its stack (.edgeops/stack.json): what a command takes from it, and when it does not."""

import os
from pathlib import Path

import pytest

from edgeops.stack.state import (
    BROKER,
    PREFECT,
    Service,
    StackState,
    StackStateError,
    adopt_stack,
    process_started,
    read_state,
    remove_state,
    stack_environment,
    state_path,
    write_state,
)

pytestmark = pytest.mark.unit
ME = os.getpid()


def stack(tmp_path: Path, *, broker_running: bool = True, server_running: bool = True,
          own_broker: bool = True) -> StackState:
    """A stack whose 'running' services are this very process (pid and start time), and whose stopped ones
    carry this pid with another start time: the pid now belongs to another process."""
    def service(name: str, running: bool) -> Service:
        return Service(name, ME, process_started(ME) if running else "0", None, None)

    services = ((service(BROKER, broker_running),) if own_broker else ()) + (service(PREFECT, server_running),)
    return StackState(project=str(tmp_path), broker_url="mqtt://127.0.0.1:41234", own_broker=own_broker,
                      prefect_api_url="http://127.0.0.1:41235/api", prefect_home=str(tmp_path / "prefect"),
                      telemetry_db="sqlite:///x.db", monitor_deployment="monitor/local-monitor",
                      ingest_ready_file=str(tmp_path / "ready"), created="2025-01-01T00:00:00+00:00",
                      services=services)


def test_the_state_file_round_trips_and_goes_away(tmp_path: Path) -> None:
    state = stack(tmp_path)
    path = write_state(tmp_path, state)
    assert path == state_path(tmp_path) == tmp_path / ".edgeops" / "stack.json"
    assert read_state(tmp_path) == state
    remove_state(tmp_path)
    assert read_state(tmp_path) is None
    remove_state(tmp_path)  # twice is fine


def test_a_running_stack_gives_commands_its_broker_prefect_api_and_home(tmp_path: Path) -> None:
    assert stack_environment(stack(tmp_path), {}) == {
        "EDGEOPS_MQTT_URL": "mqtt://127.0.0.1:41234", "PREFECT_API_URL": "http://127.0.0.1:41235/api",
        "PREFECT_HOME": str(tmp_path / "prefect")}


def test_the_users_variables_win(tmp_path: Path) -> None:
    env = {"EDGEOPS_MQTT_URL": "mqtt://broker:1883", "PREFECT_API_URL": "http://prefect:4200/api"}
    assert stack_environment(stack(tmp_path), env) == {}
    assert stack_environment(stack(tmp_path), {"PREFECT_HOME": "/mine"}) == {
        "EDGEOPS_MQTT_URL": "mqtt://127.0.0.1:41234", "PREFECT_API_URL": "http://127.0.0.1:41235/api"}


def test_a_stopped_service_or_a_reused_pid_is_not_used(tmp_path: Path) -> None:
    assert stack_environment(stack(tmp_path, server_running=False), {}) == {
        "EDGEOPS_MQTT_URL": "mqtt://127.0.0.1:41234"}
    assert stack_environment(stack(tmp_path, broker_running=False), {}).keys() == {"PREFECT_API_URL",
                                                                                   "PREFECT_HOME"}


def test_a_broker_the_stack_did_not_start_is_used_as_named(tmp_path: Path) -> None:
    assert stack_environment(stack(tmp_path, own_broker=False), {})["EDGEOPS_MQTT_URL"] == "mqtt://127.0.0.1:41234"


def test_adopt_puts_the_stack_into_the_environment_except_for_the_stacks_own_commands(tmp_path: Path) -> None:
    write_state(tmp_path, stack(tmp_path))
    env: dict[str, str] = {}
    assert adopt_stack(["models", "list"], env, tmp_path) is not None
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:41235/api"
    for command in ("up", "down", "status", "demo"):
        env = {}
        assert adopt_stack([command], env, tmp_path) is None
        assert env == {}


def test_a_stopped_stack_is_said_once_and_not_used(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_state(tmp_path, stack(tmp_path, server_running=False, broker_running=False))
    env: dict[str, str] = {}
    adopt_stack(["pipeline", "run"], env, tmp_path)
    assert env == {}
    assert "the local stack (.edgeops/stack.json) is not running" in capsys.readouterr().err


def test_a_broken_state_file_is_a_warning_for_other_commands_and_an_error_for_the_stacks(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state_path(tmp_path).parent.mkdir(parents=True)
    state_path(tmp_path).write_text("{not json")
    env: dict[str, str] = {}
    assert adopt_stack(["models", "list"], env, tmp_path) is None
    assert env == {}
    assert "is not a stack state file" in capsys.readouterr().err
    with pytest.raises(StackStateError, match="remove it if no stack of this project runs"):
        read_state(tmp_path)


def test_a_process_is_named_by_pid_and_start_time() -> None:
    assert process_started(ME) == process_started(ME) is not None
    assert Service("x", ME, process_started(ME)).running()
    assert not Service("x", ME, "0").running()
    assert not Service("x", None, None).running()
